"""tunebook.unsloth_varlen on a GPU: the same packed batches through Unsloth with the switch on (one varlen flash call
per layer) and off (``disable()``: Unsloth's own per-row SDPA on torch 2.11) — are loss, logits and LoRA gradients
close, and how many tokens/s does each path train?

The model is a random-weight Llama-3.2-3B (or ``--shape qwen3-4b``) built by ``train_throughput.py --build`` (no
hub access); the data are its synthetic QA-length token rows; the student is loaded, configured and wrapped exactly
as 04 does (``train.load_student`` → ``sft_config`` → ``make_trainer``). Each timed step is a forward and backward
of one packed micro-batch (no optimizer step, so both paths see the same weights); the paths alternate for
``--rounds`` rounds. Writes ``varlen.json`` and ``varlen.md`` to ``--out``.

Every path a step is said to take is checked, not assumed: each compared step and one warm-up step of every timed
round run under :func:`probe` — counters wrapped around Unsloth's attention dispatch functions
(``_run_attention``, ``_torch_varlen_packed`` = one varlen call per layer, ``_sdpa_packed_segments`` = one SDPA
call per run of equal row lengths, ``scaled_dot_product_attention``, ``flash_attn_varlen_func``) and torch.profiler's
aten ops (``aten::_flash_attention_forward`` on 3-D (tokens, heads, dim) tensors = a varlen flash call; the
``aten::_scaled_dot_product_*`` ops = SDPA). Exit 1 when the batches are not packed, when a "varlen" step did not
go through the varlen kernel, when an "sdpa" step did, or when both paths ran the same kernels.

``UNSLOTH_RETURN_LOGITS=1`` must NOT be set when the trainer is built: Unsloth 2026.10.9's SFTTrainer then turns
packing and padding-free off ("packing=True ignored (UNSLOTH_RETURN_LOGITS=1)"), every micro-batch is one padded
row, Unsloth never reaches its packed-attention code and both paths are the same SDPA call (the first run of this
script, 2026-12-01, compared exactly that: zero difference, same speed). It is set only around the compared steps
(Unsloth's forward reads it per call), so their logits come back.

    python benchmarks/gpu_varlen.py --out /tmp/o          # usually through benchmarks/gpu_varlen.sh
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "lib"))
# set while the trainer is built, it turns packing off (see above); compare() sets it for its own steps
_RETURN_LOGITS_AT_START = os.environ.pop("UNSLOTH_RETURN_LOGITS", None)

import train_throughput as tt  # noqa: E402  (the random model, its data and the LoRA targets)

# the check's limits: relative differences of bf16 kernels that compute the same attention in another order
LIMITS = {"loss": 1e-2, "logits": 3e-2, "grads": 5e-2}


def rel(x, y) -> float:
    return float((x.float() - y.float()).norm() / y.float().norm())


def forward_backward(trainer, model, batch, params, want_logits: bool):
    import torch

    model.zero_grad(set_to_none=True)
    loss, out = trainer.compute_loss(model, dict(batch), return_outputs=True)
    loss.backward()
    logits = getattr(out, "logits", None) if want_logits else None
    grads = None
    if want_logits:  # only the compared step keeps copies
        grads = [p.grad.detach().float().flatten() for p in params if p.grad is not None]
        logits = None if logits is None else logits.detach().to("cpu", dtype=torch.float32)
    return float(loss.detach()), logits, grads


# Unsloth's attention dispatch functions counted by probe() (absent ones are skipped)
DISPATCH = ("_run_attention", "_torch_varlen_packed", "_sdpa_packed_segments", "_varlen_attn_call",
            "scaled_dot_product_attention", "flash_attn_varlen_func")
SDPA_OPS = ("aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_cudnn_attention",
            "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_attention_math",
            "aten::_scaled_dot_product_fused_attention_overrideable",
            "aten::_scaled_dot_product_flash_attention_for_cpu")


@contextlib.contextmanager
def count_dispatch(ad):
    """Count calls of Unsloth's attention dispatch functions (module globals, looked up per call; the packed
    Llama layer runs eagerly: Unsloth's block compile leaves layers with packed_seq_lengths stock)."""
    counts = {k: 0 for k in DISPATCH if callable(getattr(ad, k, None))}
    saved = {k: getattr(ad, k) for k in counts}

    def wrapped(name, fn):
        def call(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return call

    for k, fn in saved.items():
        setattr(ad, k, wrapped(k, fn))
    try:
        yield counts
    finally:
        for k, fn in saved.items():
            setattr(ad, k, fn)


def aten_counts(prof) -> dict:
    """Attention ops and CUDA kernels of one profiled step."""
    from torch.autograd import DeviceType

    out = {"varlen_flash_fwd": 0, "varlen_flash_bwd": 0, "sdpa_fwd": 0, "flash_fwd_all": 0, "cuda_kernels": 0}
    names: dict = {}
    for e in prof.events():
        if getattr(e, "device_type", None) == DeviceType.CUDA:
            out["cuda_kernels"] += 1
            continue
        name = e.name
        if "attention" in name:
            names[name] = names.get(name, 0) + 1
        shapes = getattr(e, "input_shapes", None) or [[]]
        three_d = bool(shapes) and len(shapes[0]) == 3  # (tokens, heads, dim): the varlen layout
        if name == "aten::_flash_attention_forward":
            out["flash_fwd_all"] += 1
            out["varlen_flash_fwd"] += three_d
        elif name == "aten::_flash_attention_backward":
            out["varlen_flash_bwd"] += three_d  # grad_out (tokens, heads, dim)
        elif name in SDPA_OPS:
            out["sdpa_fwd"] += 1
    out["attention_ops"] = dict(sorted(names.items()))
    return out


def path_of(p: dict) -> str:
    """Which attention path a probed step took: varlen, sdpa, mixed or none."""
    d, a = p["dispatch"], p["aten"]
    varlen = d.get("_torch_varlen_packed", 0) + d.get("flash_attn_varlen_func", 0)
    segments = d.get("_sdpa_packed_segments", 0)
    if varlen and a["varlen_flash_fwd"] and not segments and not a["sdpa_fwd"]:
        return "varlen"
    if segments and a["sdpa_fwd"] and not varlen and not a["varlen_flash_fwd"]:
        return "sdpa"
    if not varlen and not segments:
        return "none"  # no packed attention at all (e.g. padded batches)
    return "mixed"


def probe(ad, fn):
    """Run fn() (one forward and backward) under the dispatch counters and torch.profiler; (its result, report)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with count_dispatch(ad) as counts, profile(activities=acts, record_shapes=True) as prof:
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    rep = {"dispatch": dict(counts), "aten": aten_counts(prof)}
    rep["path"] = path_of(rep)
    return result, rep


def compare(trainer, model, batch, params, uv, ad) -> dict:
    """One batch through each path twice: the difference between paths, next to each path's own repeat spread; then
    the switch off under torch's flash SDPA kernel alone and under its math kernel alone (fp32 softmax), as
    references: on a random-weight model bf16 rounding differences grow through the layers, so the distance
    between two correct kernels (cuDNN and flash) is the yardstick for the varlen path's distance."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    runs, probes, errors = {}, {}, {}
    plan = [("varlen", True, None), ("sdpa", False, None), ("varlen_again", True, None), ("sdpa_again", False, None),
            ("sdpa_flash", False, SDPBackend.FLASH_ATTENTION), ("sdpa_math", False, SDPBackend.MATH)]
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1"  # read per forward: logits back for these steps only
    try:
        for name, on, only in plan:
            uv.enable() if on else uv.disable()
            try:
                with sdpa_kernel([only]) if only is not None else contextlib.nullcontext():
                    (loss, logits, grads), probes[name] = probe(
                        ad, lambda: forward_backward(trainer, model, batch, params, True))
            except Exception as e:  # a reference only: its failure is reported, not fatal
                if only is None:
                    raise
                errors[name] = repr(e)[:400]
                print("check", name, "failed:", errors[name], flush=True)
                continue
            runs[name] = (loss, logits, torch.cat(grads) if grads else None)
            print("check", name, "switch on" if uv.active() else "switch off", probes[name]["path"],
                  probes[name]["dispatch"], {k: v for k, v in probes[name]["aten"].items() if k != "attention_ops"},
                  flush=True)
    finally:
        os.environ.pop("UNSLOTH_RETURN_LOGITS", None)
    v, s, v2, s2 = (runs[k] for k in ("varlen", "sdpa", "varlen_again", "sdpa_again"))
    out = {"tokens": int(batch["input_ids"].numel()), "probes": probes, "loss_varlen": v[0], "loss_sdpa": s[0],
           "loss_rel": abs(v[0] - s[0]) / abs(s[0]),
           "grads_rel": rel(v[2], s[2]), "grads_rel_sdpa_repeat": rel(s2[2], s[2]),
           "grads_rel_varlen_repeat": rel(v2[2], v[2])}
    if v[1] is not None and s[1] is not None:
        out.update(logits_rel=rel(v[1], s[1]), logits_max_abs=float((v[1] - s[1]).abs().max()),
                   logits_rel_sdpa_repeat=rel(s2[1], s[1]), logits_rel_varlen_repeat=rel(v2[1], v[1]))
    else:
        out["logits_rel"] = None  # this Unsloth returned no logits (UNSLOTH_RETURN_LOGITS not honoured)
    # distances to the references: {reference: {run: {loss, logits, grads}}}
    out["vs_reference"] = {
        ref: {k: {"loss": abs(runs[k][0] - runs[ref][0]) / abs(runs[ref][0]),
                  "logits": None if runs[k][1] is None or runs[ref][1] is None else rel(runs[k][1], runs[ref][1]),
                  "grads": rel(runs[k][2], runs[ref][2])}
              for k in runs if k != ref}
        for ref in ("sdpa_flash", "sdpa_math") if ref in runs}
    out["reference_errors"] = errors
    model.zero_grad(set_to_none=True)
    return out


def close_to_reference(c: dict, factor: float = 1.5) -> bool | None:
    """The varlen path no farther from the math-kernel reference than ``factor`` x Unsloth's own cuDNN SDPA path
    (or than LIMITS, whichever is larger), in logits and gradients; None without that reference."""
    m = c.get("vs_reference", {}).get("sdpa_math")
    if not m:
        return None
    ok = True
    for what in ("logits", "grads"):
        if m["varlen"][what] is None:
            continue
        ok &= m["varlen"][what] <= max(LIMITS[what], factor * m["sdpa"][what])
    return bool(ok)


def time_path(trainer, model, batches, params, warmup: int, ad) -> dict:
    """Timed steps after ``warmup`` untimed ones; the last warm-up step runs under probe() (which kernels)."""
    import torch

    rep = None
    for i, b in enumerate(batches[:warmup]):
        if i == warmup - 1:
            _, rep = probe(ad, lambda: forward_backward(trainer, model, b, params, False))
        else:
            forward_backward(trainer, model, b, params, False)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tokens = 0
    for b in batches[warmup:]:
        forward_backward(trainer, model, b, params, False)
        tokens += int(b["attention_mask"].sum()) if "attention_mask" in b else int(b["input_ids"].numel())
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return {"tokens": tokens, "seconds": round(secs, 3), "tokens_per_s": round(tokens / secs, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "probe": rep,
            "path": rep["path"] if rep else "unprobed"}


def build(a) -> None:
    """The random-weight model, in its own process (it imports transformers; Unsloth must come first here)."""
    cmd = [sys.executable, "-u", str(HERE / "train_throughput.py"), "--build", "--shape", a.shape, "--model-dir",
           a.model_dir, "--tokenizer", a.tokenizer, "--seed", str(a.seed)]
    subprocess.run(cmd, check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/gpu_varlen")
    ap.add_argument("--work", default="/tmp/tunebook_bench")
    ap.add_argument("--shape", choices=sorted(tt.SHAPES), default="llama3b")
    ap.add_argument("--model-dir", default="")
    ap.add_argument("--tokenizer", default=str(HERE.parent / ".benchdata" / "smollm2-tok"))
    ap.add_argument("--budget", type=int, default=8192, help="tokens per packed micro-batch (train.token_budget)")
    ap.add_argument("--steps", type=int, default=10, help="timed micro-batches per path and round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per round (the last one is probed)")
    ap.add_argument("--rounds", type=int, default=2, help="the paths alternate this many times")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=3407)
    a = ap.parse_args(argv)
    a.model_dir = a.model_dir or f"{a.work}/{a.shape}-random"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    build(a)

    import torch

    from tunebook import train as tb
    from tunebook import unsloth_varlen as uv
    from tunebook.settings import TrainSettings

    tb.import_backend("unsloth")  # Unsloth before transformers
    import unsloth
    from unsloth.utils import attention_dispatch as ad

    res: dict = {"unsloth": getattr(unsloth, "__version__", uv.installed_version()), "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0), "checked_range": list(uv.CHECKED), "shape": a.shape,
                 "budget": a.budget, "return_logits_env_at_start": _RETURN_LOGITS_AT_START,
                 "unsloth_own": {k: repr(getattr(ad, k, "<missing>")) for k in
                                 ("HAS_FLASH_ATTENTION", "_TORCH_VARLEN_ATTN", "_LEAN_VARLEN")}}
    cfg = TrainSettings(backend="unsloth", max_length=1024, token_budget=a.budget, lora_targets=tt.TARGETS,
                        max_steps=10, save_steps=10**6)
    student, peft_config = tb.load_student(a.model_dir, cfg, a.seed)  # calls uv.enable()
    res["switch_on_at_load"] = uv.active()
    if not uv.active():
        return fail(res, out, "switch did not engage: enable() left Unsloth as it was (Unsloth has the varlen path "
                              "itself, another version, no torch flash kernel, or the self-test failed): nothing to "
                              "compare")
    ds, total = tt.make_dataset(a.rows, a.seed, 230.0, 0.6, 64, 1024)
    args = tb.sft_config(cfg, Path(a.work) / "out_varlen", a.seed, has_eval=False, backend=student.backend,
                         train_tokens=int(total.sum()))
    args.max_length = a.budget  # exactly the budget asked for, not the small-dataset cap
    trainer = tb.make_trainer(student, peft_config, ds, None, args)
    model = trainer.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    it = iter(trainer.get_train_dataloader())
    batches = [next(it) for _ in range(a.warmup + a.steps)]
    b0 = batches[0]
    pos = b0.get("position_ids")
    res["packing"] = {"args_packing": bool(getattr(trainer.args, "packing", False)),
                      "args_padding_free": bool(getattr(trainer.args, "padding_free", False)),
                      "batch_keys": sorted(b0), "batch0_shape": list(b0["input_ids"].shape),
                      "batch0_rows": int((pos == 0).sum()) if pos is not None else None}
    print("packing", res["packing"], flush=True)
    pk = res["packing"]
    if (not (pk["args_packing"] or pk["args_padding_free"]) or b0["input_ids"].shape[0] != 1
            or (pk["batch0_rows"] is not None and pk["batch0_rows"] < 2)):
        return fail(res, out, "batches are not packed (one padded row each): Unsloth never reaches its packed "
                              "attention, the switch has nothing to switch")
    res["check"] = compare(trainer, model, b0, params, uv, ad)
    timings: dict = {"varlen": [], "sdpa": []}
    for _ in range(a.rounds):
        for name, on in (("sdpa", False), ("varlen", True)):
            uv.enable() if on else uv.disable()
            timings[name].append(time_path(trainer, model, batches, params, a.warmup, ad))
            t = timings[name][-1]
            print(name, {k: v for k, v in t.items() if k != "probe"}, t["probe"]["dispatch"] if t["probe"] else "",
                  flush=True)
    uv.enable()
    res["timings"] = timings
    # which kernels each step really ran: every "varlen" step the varlen kernel, every "sdpa" step SDPA
    seen = {"varlen": [res["check"]["probes"][k]["path"] for k in ("varlen", "varlen_again")]
            + [t["path"] for t in timings["varlen"]],
            "sdpa": [res["check"]["probes"][k]["path"] for k in ("sdpa", "sdpa_again")]
            + [t["path"] for t in timings["sdpa"]]}
    res["paths_seen"] = seen
    if set(seen["varlen"]) == set(seen["sdpa"]):
        return fail(res, out, f"both paths ran the same attention ({sorted(set(seen['varlen']))}): the switch did "
                              f"not engage, nothing was compared")
    if set(seen["varlen"]) != {"varlen"}:
        return fail(res, out, f"switch did not engage: the varlen steps ran {seen['varlen']}")
    if set(seen["sdpa"]) != {"sdpa"}:
        return fail(res, out, f"disable() did not take Unsloth back to per-row SDPA: the sdpa steps ran "
                              f"{seen['sdpa']}")
    res["engaged"] = True
    best = {k: max(t["tokens_per_s"] for t in v) for k, v in timings.items()}
    res["tokens_per_s"] = best
    res["speedup"] = round(best["varlen"] / best["sdpa"], 2)
    c = res["check"]
    # close: within LIMITS of Unsloth's own path, or (bf16 drift of a random-weight model) no farther from the
    # math-kernel reference than 1.5 x Unsloth's own path is
    res["close_abs"] = bool(c["loss_rel"] < LIMITS["loss"] and c["grads_rel"] < LIMITS["grads"]
                            and (c["logits_rel"] is None or c["logits_rel"] < LIMITS["logits"]))
    res["close_vs_reference"] = close_to_reference(c)
    res["close"] = bool(res["close_abs"] or (c["loss_rel"] < LIMITS["loss"] and res["close_vs_reference"]))
    (out / "varlen.json").write_text(json.dumps(res, indent=2, default=str))
    md = ["| path | tokens/s (best of rounds) | peak GiB | per step (probed): Unsloth dispatch | aten attention "
          "ops | CUDA kernels |", "|---|---:|---:|---|---|---:|"]
    for k in ("sdpa", "varlen"):
        pr = timings[k][-1]["probe"]
        disp = ", ".join(f"{n} {m}" for n, m in pr["dispatch"].items() if m)
        ops = ", ".join(f"{n.replace('aten::', '')} {m}" for n, m in pr["aten"]["attention_ops"].items())
        md.append(f"| {k} | {best[k]:,.0f} | {max(t['peak_gib'] for t in timings[k])} | {disp} | {ops} | "
                  f"{pr['aten']['cuda_kernels']} |")
    md += ["", f"speedup {res['speedup']}x; loss rel {c['loss_rel']:.2e}, logits rel {c['logits_rel']}, grads rel "
               f"{c['grads_rel']:.2e} (SDPA repeat {c['grads_rel_sdpa_repeat']:.2e}); close: {res['close']} "
               f"(limits {LIMITS}: {res['close_abs']}; against the math reference: {res['close_vs_reference']}); "
               f"unsloth {res['unsloth']}, torch {res['torch']}, {res['gpu']}"]

    def fmt(x):
        return "-" if x is None else f"{x:.2e}"

    for ref, d in c["vs_reference"].items():
        md.append(f"- distance to {ref}: " + "; ".join(
            f"{k} loss {fmt(x['loss'])} logits {fmt(x['logits'])} grads {fmt(x['grads'])}" for k, x in d.items()))
    if c["reference_errors"]:
        md.append(f"- reference runs that failed: {c['reference_errors']}")
    (out / "varlen.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if res["close"] else 2


def fail(res: dict, out: Path, why: str) -> int:
    res["error"] = why
    res["engaged"] = False
    (out / "varlen.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "varlen.md").write_text(f"FAILED: {why}\n")
    print(f"FAILED: {why}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
