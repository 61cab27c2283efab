"""tunebook.train.unsloth_varlen_attention (the GPU-only switch of Unsloth's packed attention): on a machine without
CUDA or Unsloth it must change nothing, and its self-test must accept a correct causal GQA varlen function and
refuse wrong ones. The GPU side is measured in benchmarks/RESULTS.md (run 7)."""

import torch
import torch.nn.functional as F

from tunebook import train


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


def test_self_test_accepts_a_correct_varlen_and_refuses_wrong_ones():
    assert train._varlen_matches_sdpa(_fake_lean(), device="cpu")
    assert not train._varlen_matches_sdpa(_fake_lean(causal=False), device="cpu")  # rows see later tokens
    assert not train._varlen_matches_sdpa(_fake_lean(interleave=False), device="cpu")  # wrong KV head per group


def test_switch_changes_nothing_without_cuda_or_when_turned_off(monkeypatch):
    monkeypatch.setenv("TUNEBOOK_UNSLOTH_VARLEN", "0")
    assert train.unsloth_varlen_attention() is False
    monkeypatch.delenv("TUNEBOOK_UNSLOTH_VARLEN")
    if not torch.cuda.is_available():  # CI: no GPU (and usually no Unsloth): nothing to switch
        assert train.unsloth_varlen_attention() is False
        assert train._UNSLOTH_ATTENTION_ORIGINAL == {}
