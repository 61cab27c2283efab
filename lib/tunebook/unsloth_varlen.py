"""Unsloth's packed (padding-free) attention as ONE varlen flash call per layer on torch 2.11 — a switch of three
private globals of ``unsloth.utils.attention_dispatch``, so it is tied to the Unsloth versions it was checked with.

Unsloth takes that path only where torch's ``varlen_attn`` has ``enable_gqa`` (torch >= 2.12) or flash-attn is
installed; otherwise it runs one SDPA call per run of equal row lengths, with padding, slicing and their backward.
Measured on an H200 with torch 2.11 (benchmarks/RESULTS.md, run 7): ~15k kernel launches per 8k-token step, the GPU
busy ~47 % of it; with this switch ~4.2k launches and 2.7x the tokens/s (31.4k vs 11.5k in one call; 3B model,
QA-length rows). It hands Unsloth's own lean varlen route (``_LeanFlashVarlen``: the aten flash-varlen kernels torch
2.12's varlen_attn calls; GQA native) to torch 2.11, after checking it against per-row SDPA on a small GQA batch.

:func:`enable` changes nothing without CUDA, where Unsloth already has the path, when the private names are missing,
when the self-test fails, with ``TUNEBOOK_UNSLOTH_VARLEN=0`` — and, with a warning, on an Unsloth version outside
:data:`CHECKED` (the names may mean something else there). :func:`disable` puts Unsloth's own values back.
``benchmarks/gpu_varlen.sh`` compares both paths on a GPU (loss, logits, gradients, tokens/s) and counts which
attention each step really ran (RESULTS.md, 2026-12-01): the switch needs no flash-attn package (the lean path calls
torch's own bundled flash kernels, ``aten::_flash_attention_forward``/``_backward``), but it only matters for packed
(padding-free) batches — with ``UNSLOTH_RETURN_LOGITS=1`` set when the trainer is built, Unsloth turns packing off
and every row goes to plain SDPA whichever way the switch stands.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

# [lowest, first unchecked) Unsloth version this switch was checked with (pyproject's gpu extra pins the same range)
CHECKED = ("2026.10.9", "2026.11")
NAMES = ("_TORCH_VARLEN_ATTN", "_LEAN_VARLEN", "_varlen_can_use_cudnn")

# what enable() replaced: attribute name → Unsloth's own value (benchmarks/train_throughput.py reads it too)
SAVED: dict[str, Any] = {}
_STATE: dict[str, Any] = {}  # "dispatch": the module patched, "patched": the values put there


def _off(var: str) -> bool:
    return os.environ.get(var, "1").lower() in ("0", "false", "no", "off")


def installed_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("unsloth")
    except metadata.PackageNotFoundError:
        return None


def version_checked(version: str | None) -> bool:
    """Whether ``version`` lies in :data:`CHECKED` (lowest included, upper bound excluded)."""
    from packaging.version import InvalidVersion, Version

    if not version:
        return False
    try:
        v = Version(version)
    except InvalidVersion:
        return False
    return Version(CHECKED[0]) <= v < Version(CHECKED[1])


def active() -> bool:
    return bool(_STATE)


def enable(dispatch: Any = None, version: str | None = None, self_test=None) -> bool:
    """Switch Unsloth's packed attention to one varlen flash call per layer; returns whether it is on.

    ``dispatch`` (Unsloth's ``attention_dispatch`` module), ``version`` and ``self_test`` (a function of the lean
    varlen class → bool) default to the real ones; tests pass stand-ins."""
    if _off("TUNEBOOK_UNSLOTH_VARLEN"):
        return False
    if dispatch is None:
        import torch

        if not torch.cuda.is_available():  # before importing Unsloth, which patches transformers
            return False
        try:
            from unsloth.utils import attention_dispatch as dispatch
        except Exception:
            return False
        if not torch.backends.cuda.is_flash_attention_available():
            return False
        self_test = self_test or matches_sdpa
    if _STATE.get("dispatch") is dispatch:
        return True  # already on
    lean = getattr(dispatch, "_LeanFlashVarlen", None)
    if (lean is None or not hasattr(dispatch, "_TORCH_VARLEN_ATTN") or not hasattr(dispatch, "_LEAN_VARLEN")
            or _off("UNSLOTH_TORCH_VARLEN")):
        return False
    if dispatch._TORCH_VARLEN_ATTN is not None:
        return False  # Unsloth has the one-call path by itself (torch >= 2.12 or flash-attn)
    version = version if version is not None else installed_version()
    if not version_checked(version):
        warnings.warn(f"tunebook: not switching Unsloth's packed attention to one varlen call per layer: it sets "
                      f"private names of unsloth.utils.attention_dispatch and was checked with unsloth "
                      f">={CHECKED[0]},<{CHECKED[1]}, this is {version}. Training runs on Unsloth's own (slower) path; "
                      f"benchmarks/gpu_varlen.sh checks a new version.", stacklevel=2)
        return False
    if self_test is not None and not self_test(lean):
        return False

    def varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        w = tuple(window_size)
        return lean.apply(q, k, v, cu_q, max_q, w == (-1, 0), scale, w[0], w[1])

    patched = {"_TORCH_VARLEN_ATTN": varlen, "_LEAN_VARLEN": True,
               # torch 2.11's varlen_attn knows no GQA on cuDNN
               "_varlen_can_use_cudnn": lambda *a, **k: False}
    missing = {k for k in NAMES if not hasattr(dispatch, k)}
    SAVED.clear()
    SAVED.update({k: getattr(dispatch, k) for k in NAMES if k not in missing})
    for k, v in patched.items():
        setattr(dispatch, k, v)
    _STATE.update(dispatch=dispatch, patched=patched, missing=missing)
    print("tunebook: packed attention through one varlen flash call per layer (Unsloth's lean path)", flush=True)
    return True


def disable() -> bool:
    """Put Unsloth's own values back (its per-row SDPA path on torch 2.11); returns whether anything was undone."""
    dispatch = _STATE.get("dispatch")
    if dispatch is None:
        return False
    for k, v in SAVED.items():
        setattr(dispatch, k, v)
    for k in _STATE["missing"]:  # names this Unsloth did not have
        if hasattr(dispatch, k):
            delattr(dispatch, k)
    SAVED.clear()
    _STATE.clear()
    return True


def matches_sdpa(lean, device: str = "cuda") -> bool:
    """Unsloth's lean varlen function against per-row causal SDPA on a small GQA batch (forward and gradients)."""
    import torch
    import torch.nn.functional as F

    try:
        g = torch.Generator(device=device).manual_seed(0)
        lens, h, hkv, d = [5, 37, 22], 8, 2, 64
        n = sum(lens)
        q, k, v = (torch.randn(n, hh, d, device=device, dtype=torch.bfloat16, generator=g).requires_grad_()
                   for hh in (h, hkv, hkv))
        cu = torch.tensor([0, 5, 42, 64], device=device, dtype=torch.int32)
        out = lean.apply(q, k, v, cu, max(lens), True, None, -1, 0)
        grad = torch.randn(out.shape, device=device, dtype=torch.bfloat16, generator=g)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
        q2, k2, v2 = (x.detach().float().requires_grad_() for x in (q, k, v))
        outs, start = [], 0
        for ln in lens:
            sl = slice(start, start + ln)
            qs, ks, vs = (x[sl].transpose(0, 1) for x in (q2, k2.repeat_interleave(h // hkv, 1),
                                                          v2.repeat_interleave(h // hkv, 1)))
            outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True).transpose(0, 1))
            start += ln
        ref = torch.cat(outs)
        rq, rk, rv = torch.autograd.grad(ref, (q2, k2, v2), grad.float())

        def rel(a, b):
            return float((a.detach().float() - b.detach()).norm() / b.detach().norm())

        return (rel(out, ref) < 2e-2 and rel(dq, rq) < 3e-2 and rel(dk, rk) < 3e-2 and rel(dv, rv) < 3e-2)
    except Exception:
        return False
