"""tunebook.unsloth_varlen (the GPU-only switch of Unsloth's packed attention): on a machine without CUDA or Unsloth
it must change nothing; its self-test must accept a correct causal GQA varlen function and refuse wrong ones; it
must refuse Unsloth versions it was not checked with, and disable() must put Unsloth's own values back. Checked
here against a stand-in module object; the GPU side is benchmarks/gpu_varlen.sh (and RESULTS.md, run 7)."""

import types
import warnings

import pytest
import torch
import torch.nn.functional as F

from tunebook import train, unsloth_varlen as uv


def _fake_lean(causal=True, interleave=True):
    """A stand-in for Unsloth's _LeanFlashVarlen: per-row SDPA over (tokens, heads, dim) tensors."""

    class Lean:
        @staticmethod
        def apply(q, k, v, cu, max_len, is_causal, scale, left, right):
            rep = q.shape[1] // k.shape[1]
            expand = (lambda x: x.repeat_interleave(rep, 1)) if interleave else (lambda x: x.repeat(1, rep, 1))
            k2, v2 = expand(k), expand(v)
            bounds = cu.tolist()
            outs = [F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k2[a:b].transpose(0, 1),
                                                   v2[a:b].transpose(0, 1), is_causal=causal).transpose(0, 1)
                    for a, b in zip(bounds, bounds[1:])]
            return torch.cat(outs)

    return Lean


def _dispatch(with_cudnn=True):
    """A stand-in for unsloth.utils.attention_dispatch as 2026.10.9 has it on torch 2.11."""
    own_cudnn = lambda *a, **k: True  # noqa: E731
    d = types.SimpleNamespace(_LeanFlashVarlen=_fake_lean(), _TORCH_VARLEN_ATTN=None, _LEAN_VARLEN=False)
    if with_cudnn:
        d._varlen_can_use_cudnn = own_cudnn
    return d, own_cudnn


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("TUNEBOOK_UNSLOTH_VARLEN", raising=False)
    monkeypatch.delenv("UNSLOTH_TORCH_VARLEN", raising=False)
    yield
    uv.disable()


def test_self_test_accepts_a_correct_varlen_and_refuses_wrong_ones():
    assert uv.matches_sdpa(_fake_lean(), device="cpu")
    assert not uv.matches_sdpa(_fake_lean(causal=False), device="cpu")  # rows see later tokens
    assert not uv.matches_sdpa(_fake_lean(interleave=False), device="cpu")  # wrong KV head per group


def test_switch_changes_nothing_without_cuda_or_when_turned_off(monkeypatch):
    monkeypatch.setenv("TUNEBOOK_UNSLOTH_VARLEN", "0")
    assert uv.enable() is False
    monkeypatch.delenv("TUNEBOOK_UNSLOTH_VARLEN")
    if not torch.cuda.is_available():  # CI: no GPU (and usually no Unsloth): nothing to switch
        assert uv.enable() is False
        assert uv.SAVED == {} and not uv.active()


def test_version_gate():
    assert uv.version_checked("2026.10.9") and uv.version_checked("2026.10.12")
    for v in ("2026.10.8", "2026.11", "2026.11.1", "2025.10.3", "", None, "not-a-version"):
        assert not uv.version_checked(v), v


def test_enable_and_disable_on_a_checked_version():
    d, own_cudnn = _dispatch()
    assert uv.enable(d, version="2026.10.9", self_test=lambda lean: uv.matches_sdpa(lean, device="cpu"))
    assert d._LEAN_VARLEN is True and callable(d._TORCH_VARLEN_ATTN) and d._varlen_can_use_cudnn() is False
    assert uv.active() and uv.SAVED["_TORCH_VARLEN_ATTN"] is None
    assert train._UNSLOTH_ATTENTION_ORIGINAL is uv.SAVED  # the benchmark reads it through train
    assert uv.enable(d, version="2026.10.9") is True  # a second call keeps it on and keeps Unsloth's own values
    assert uv.SAVED["_varlen_can_use_cudnn"] is own_cudnn
    # the switched function forwards to the lean class: causal window → is_causal
    q, k, v = torch.randn(6, 4, 8), torch.randn(6, 2, 8), torch.randn(6, 2, 8)
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    out = d._TORCH_VARLEN_ATTN(q, k, v, cu, cu, 4, 4, window_size=(-1, 0))
    assert torch.allclose(out, _fake_lean().apply(q, k, v, cu, 4, True, None, -1, 0))
    assert uv.disable() is True
    assert d._TORCH_VARLEN_ATTN is None and d._LEAN_VARLEN is False and d._varlen_can_use_cudnn is own_cudnn
    assert not uv.active() and uv.SAVED == {}
    assert uv.disable() is False  # nothing left to undo


def test_disable_removes_names_the_module_did_not_have():
    d, _ = _dispatch(with_cudnn=False)
    assert uv.enable(d, version="2026.10.9", self_test=lambda lean: True)
    assert uv.disable() and not hasattr(d, "_varlen_can_use_cudnn")


def test_an_unchecked_version_is_refused_with_a_warning_and_changes_nothing():
    d, own_cudnn = _dispatch()
    with pytest.warns(UserWarning, match="checked with unsloth >=2026.10.9,<2026.11, this is 2026.11.2"):
        assert uv.enable(d, version="2026.11.2", self_test=lambda lean: True) is False
    assert d._TORCH_VARLEN_ATTN is None and d._LEAN_VARLEN is False and d._varlen_can_use_cudnn is own_cudnn
    assert not uv.active()


def test_no_switch_where_unsloth_has_the_path_or_the_self_test_fails():
    d, _ = _dispatch()
    d._TORCH_VARLEN_ATTN = "torch's own"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no version warning either: nothing would be switched
        assert uv.enable(d, version="2099.1", self_test=lambda lean: True) is False
    d, _ = _dispatch()
    assert uv.enable(d, version="2026.10.9", self_test=lambda lean: False) is False
    assert d._TORCH_VARLEN_ATTN is None and not uv.active()


def test_gpu_varlen_probe_tells_the_paths_apart(monkeypatch):
    """benchmarks/gpu_varlen.py's probe: counts Unsloth's dispatch calls (and puts the functions back), reads SDPA
    out of a profile, and calls a step varlen / sdpa / none / mixed only when counters and aten ops agree."""
    import os
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    monkeypatch.setenv("UNSLOTH_RETURN_LOGITS", "1")
    sys.modules.pop("gpu_varlen", None)
    import gpu_varlen as gv

    assert "UNSLOTH_RETURN_LOGITS" not in os.environ  # it would turn Unsloth's packing off
    monkeypatch.setattr(gv, "_RETURN_LOGITS_AT_START", None)

    def segments(q, k, v):
        return d.scaled_dot_product_attention(q, k, v, is_causal=True)

    d = types.SimpleNamespace(_sdpa_packed_segments=segments, _torch_varlen_packed=lambda *a: None,
                              scaled_dot_product_attention=F.scaled_dot_product_attention)
    own = d._sdpa_packed_segments
    q = torch.randn(1, 2, 8, 16)
    _, rep = gv.probe(d, lambda: d._sdpa_packed_segments(q, q, q))  # Unsloth looks its globals up per call
    assert d._sdpa_packed_segments is own and not hasattr(d, "_run_attention")
    assert rep["dispatch"] == {"_torch_varlen_packed": 0, "_sdpa_packed_segments": 1,
                               "scaled_dot_product_attention": 1}
    assert rep["aten"]["sdpa_fwd"] == 1 and rep["aten"]["varlen_flash_fwd"] == 0 and rep["path"] == "sdpa"
    _, rep = gv.probe(d, lambda: q @ q.transpose(-1, -2))  # padded rows: no packed attention at all
    assert rep["path"] == "none"
    aten = {"varlen_flash_fwd": 28, "sdpa_fwd": 0}
    assert gv.path_of({"dispatch": {"_torch_varlen_packed": 28}, "aten": aten}) == "varlen"
    assert gv.path_of({"dispatch": {"_torch_varlen_packed": 28}, "aten": {**aten, "varlen_flash_fwd": 0}}) == "mixed"
    assert gv.path_of({"dispatch": {"_torch_varlen_packed": 28, "_sdpa_packed_segments": 1},
                       "aten": {**aten, "sdpa_fwd": 3}}) == "mixed"
