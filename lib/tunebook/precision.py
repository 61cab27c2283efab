"""Which float type the student computes in: ``bf16`` where the hardware has fast bfloat16, else ``fp32``.

On a GPU that is bf16 when the card supports it. On a CPU it is bf16 when the CPU has AMX tiles (Intel Sapphire
Rapids and later; the OS must grant them) or AVX-512 BF16: PyTorch's oneDNN kernels then multiply bfloat16
matrices several times faster than float32 ones (measured on the 2-core reference machine: 5.5× per GEMM; whole
training steps and answers in ``benchmarks/cpu_bf16.py``). Elsewhere bf16 would be emulated and slower, so
``auto`` keeps float32 there.

``train.precision`` and ``evaluate.precision`` take ``auto`` (this choice), ``bf16`` or ``fp32``.
"""

from __future__ import annotations

from functools import lru_cache

CHOICES = ("auto", "bf16", "fp32")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """AMX (granted by the OS) or AVX-512 BF16, as PyTorch sees it."""
    import torch

    cpu = getattr(torch, "cpu", None)
    try:
        amx = bool(cpu._is_amx_tile_supported()) and bool(cpu._init_amx())
    except Exception:  # older torch: no probe
        amx = False
    try:
        avx512_bf16 = bool(cpu._is_avx512_bf16_supported())
    except Exception:
        avx512_bf16 = False
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        mkldnn_bf16 = False
    return mkldnn_bf16 and (amx or avx512_bf16)


def resolve(requested: str = "auto") -> str:
    """``bf16`` or ``fp32`` for this machine (``auto``: bf16 where it is fast, see the module docstring)."""
    import torch

    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {CHOICES}, not {requested!r}")
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def dtype(requested: str = "auto"):
    import torch

    return torch.bfloat16 if resolve(requested) == "bf16" else torch.float32


def contiguous_head_input(model) -> None:
    """Hand the output layer a contiguous input. ``generate`` slices the last position out of the prompt's hidden
    states ([batch, 1, hidden], not contiguous); in bf16 on a CPU, torch's linear then broadcasts the vocab-sized
    weight into a batched matmul, copying it once per batch row: 8 s per ``generate`` call of 8 prompts for the
    0.5B student (measured with torch 2.13; same tokens with the copy made contiguous, 2.3× faster overall)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_tunebook_contiguous", False):
        return
    head.register_forward_pre_hook(lambda _mod, args: (args[0].contiguous(), *args[1:]))
    head._tunebook_contiguous = True
