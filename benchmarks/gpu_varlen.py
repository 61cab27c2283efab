"""tunebook.unsloth_varlen on a GPU: the same packed batches through Unsloth with the switch on (one varlen flash call
per layer) and off (``disable()``: Unsloth's own per-row SDPA on torch 2.11) — are loss, logits and LoRA gradients
close, and how many tokens/s does each path train?

The model is a random-weight Llama-3.2-3B (or ``--shape qwen3-4b``) built by ``train_throughput.py --build`` (no
hub access); the data are its synthetic QA-length token rows; the student is loaded, configured and wrapped exactly
as 04 does (``train.load_student`` → ``sft_config`` → ``make_trainer``). Each timed step is a forward and backward
of one packed micro-batch (no optimizer step, so both paths see the same weights); the paths alternate for
``--rounds`` rounds. Writes ``varlen.json`` and ``varlen.md`` to ``--out``.

    python benchmarks/gpu_varlen.py --out /tmp/o          # usually through benchmarks/gpu_varlen.sh
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "lib"))
os.environ.setdefault("UNSLOTH_RETURN_LOGITS", "1")  # Unsloth's fused loss returns no logits otherwise

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


def compare(trainer, model, batch, params, uv) -> dict:
    """One batch through each path twice: the difference between paths, next to each path's own repeat spread."""
    import torch

    runs = {}
    for name, on in (("varlen", True), ("sdpa", False), ("varlen_again", True), ("sdpa_again", False)):
        uv.enable() if on else uv.disable()
        loss, logits, grads = forward_backward(trainer, model, batch, params, True)
        runs[name] = (loss, logits, torch.cat(grads) if grads else None)
    v, s, v2, s2 = (runs[k] for k in ("varlen", "sdpa", "varlen_again", "sdpa_again"))
    out = {"tokens": int(batch["input_ids"].numel()), "loss_varlen": v[0], "loss_sdpa": s[0],
           "loss_rel": abs(v[0] - s[0]) / abs(s[0]),
           "grads_rel": rel(v[2], s[2]), "grads_rel_sdpa_repeat": rel(s2[2], s[2]),
           "grads_rel_varlen_repeat": rel(v2[2], v[2])}
    if v[1] is not None and s[1] is not None:
        out.update(logits_rel=rel(v[1], s[1]), logits_max_abs=float((v[1] - s[1]).abs().max()),
                   logits_rel_sdpa_repeat=rel(s2[1], s[1]))
    else:
        out["logits_rel"] = None  # this Unsloth returned no logits (UNSLOTH_RETURN_LOGITS not honoured)
    model.zero_grad(set_to_none=True)
    return out


def time_path(trainer, model, batches, params, warmup: int) -> dict:
    import torch

    for b in batches[:warmup]:
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
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


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
    ap.add_argument("--warmup", type=int, default=3)
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

    res: dict = {"unsloth": getattr(unsloth, "__version__", uv.installed_version()), "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0), "checked_range": list(uv.CHECKED), "shape": a.shape,
                 "budget": a.budget}
    cfg = TrainSettings(backend="unsloth", max_length=1024, token_budget=a.budget, lora_targets=tt.TARGETS,
                        max_steps=10, save_steps=10**6)
    student, peft_config = tb.load_student(a.model_dir, cfg, a.seed)  # calls uv.enable()
    res["switch_on_at_load"] = uv.active()
    if not uv.active():
        res["error"] = ("the switch did not turn on (Unsloth has the varlen path itself, another version, no flash, "
                        "or the self-test failed): nothing to compare")
        (out / "varlen.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return 1
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
    res["check"] = compare(trainer, model, batches[0], params, uv)
    timings: dict = {"varlen": [], "sdpa": []}
    for _ in range(a.rounds):
        for name, on in (("sdpa", False), ("varlen", True)):
            uv.enable() if on else uv.disable()
            timings[name].append(time_path(trainer, model, batches, params, a.warmup))
            print(name, timings[name][-1], flush=True)
    uv.enable()
    res["timings"] = timings
    best = {k: max(t["tokens_per_s"] for t in v) for k, v in timings.items()}
    res["tokens_per_s"] = best
    res["speedup"] = round(best["varlen"] / best["sdpa"], 2)
    c = res["check"]
    res["close"] = bool(c["loss_rel"] < LIMITS["loss"] and c["grads_rel"] < LIMITS["grads"]
                        and (c["logits_rel"] is None or c["logits_rel"] < LIMITS["logits"]))
    (out / "varlen.json").write_text(json.dumps(res, indent=2))
    md = ["| path | tokens/s (best of rounds) | peak GiB |", "|---|---:|---:|"]
    for k in ("sdpa", "varlen"):
        md.append(f"| {k} | {best[k]:,.0f} | {max(t['peak_gib'] for t in timings[k])} |")
    md += ["", f"speedup {res['speedup']}x; loss rel {c['loss_rel']:.2e}, logits rel {c['logits_rel']}, grads rel "
               f"{c['grads_rel']:.2e} (SDPA repeat {c['grads_rel_sdpa_repeat']:.2e}); close: {res['close']} "
               f"(limits {LIMITS}); unsloth {res['unsloth']}, torch {res['torch']}, {res['gpu']}"]
    (out / "varlen.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if res["close"] else 2


if __name__ == "__main__":
    sys.exit(main())
