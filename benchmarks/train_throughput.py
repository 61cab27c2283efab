"""LoRA SFT training throughput on QA-length data: HF+PEFT+TRL vs Unsloth (padded) vs tunebook's GPU recipe.

One GPU, one process per variant (Unsloth patches transformers globally, so the HF baseline must never see it).
The model is Llama-3.2-3B-shaped with random weights (no hub access is needed); the data are synthetic token ids
whose lengths follow QA pairs (lognormal, median ~230 tokens, clipped to 64..1024), with the first 20-45 % of each
row as the prompt (masked out of the loss).

Variants (letters as in benchmarks/RESULTS.md; `X@N` sets the token budget N of a packed variant):
  a   HF + PEFT + TRL SFTTrainer, padded batches of 8, TRL defaults (gradient checkpointing on)
  b   Unsloth, common notebook defaults: padded batches of 8, use_gradient_checkpointing="unsloth"
  c   tunebook's GPU recipe: Unsloth, sequences packed (BFD, padding-free) into a token budget per micro-batch,
      gradient checkpointing off
  g   like c, but with use_gradient_checkpointing="unsloth" (for budgets that do not fit without it)
  t   tunebook's GPU defaults, run through lib/tunebook/train.py itself (TrainSettings defaults, backend
      unsloth: load_student + sft_config, i.e. packed into train.token_budget, checkpointing by free memory)
  h   tunebook's HF backend on GPU through lib/tunebook/train.py (padded batches of 8, checkpointing on)
  X*N run variant X in N processes, one per GPU (DDP through `accelerate launch --multi_gpu`, as
      `-p train.num_gpus=N` does); tokens/s counts every rank's tokens

All but t use gradient_accumulation_steps=1, optim adamw_torch_fused, weight_decay 0, lr 2e-4 constant (Unsloth's
SFTConfig would otherwise default to 2 accumulation steps and adamw_8bit). Throughput counts non-pad input tokens
only, over `--steps` optimizer steps after `--warmup` steps.

  python benchmarks/train_throughput.py --out /tmp/bench          # a,b,c; table last
  python benchmarks/train_throughput.py --variants a,b,c@12288,g@32768,t

Needs a CUDA GPU (and, for b/c/t, Unsloth). `--cpu-smoke` runs variant a on a tiny model on CPU, to check the
script itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LLAMA_3B = dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                rms_norm_eps=1e-5, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
TINY = dict(vocab_size=128256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=8192, rms_norm_eps=1e-5,
            tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
DESCRIPTIONS = {
    "a": "HF+PEFT+TRL, padded, batch 8, grad ckpt on (TRL default)",
    "b": "Unsloth, padded, batch 8, grad ckpt 'unsloth'",
    "c": "Unsloth, packed (BFD) to {budget} tokens/micro-batch, grad ckpt off",
    "g": "Unsloth, packed (BFD) to {budget} tokens/micro-batch, grad ckpt 'unsloth'",
    "t": "tunebook train.py GPU defaults (Unsloth, packed to train.token_budget)",
    "h": "tunebook train.py, backend hf (padded, batch 8, grad ckpt on)",
}
ID_LOW, ID_HIGH = 50_000, 128_000


def procs(name: str) -> int:
    """'h*2' -> 2 processes."""
    return int(name.partition("*")[2] or 1)


def parse_variant(name: str, default_budget: int, default_log: int) -> tuple[str, int, int]:
    """'c@8192:log10' -> ('c', 8192, 10)."""
    name = name.partition("*")[0]
    name, _, log = name.partition(":log")
    v, _, b = name.partition("@")
    return v, int(b) if b else default_budget, int(log) if log else default_log


def describe(name: str, default_budget: int) -> str:
    v, budget, _ = parse_variant(name, default_budget, 1)
    log = name.partition("*")[0].partition(":log")[2]
    n = procs(name)
    return (DESCRIPTIONS.get(v, "?").format(budget=budget) + (f", logging every {log} steps" if log else "")
            + (f", DDP over {n} GPUs" if n > 1 else ""))  # data token ids: clear of the tokenizer's specials / pad id


# ---------------------------------------------------------------------------------------------------------------
# data
def lengths(n: int, seed: int, median: float, sigma: float, lo: int, hi: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    total = np.clip(np.round(rng.lognormal(math.log(median), sigma, n)), lo, hi).astype(int)
    prompt = np.maximum(8, (total * rng.uniform(0.20, 0.45, n)).astype(int))
    return total, prompt, rng


def make_dataset(n: int, seed: int, median: float, sigma: float, lo: int, hi: int):
    from datasets import Dataset

    total, prompt, rng = lengths(n, seed, median, sigma, lo, hi)
    rows = []
    for t, p in zip(total.tolist(), prompt.tolist()):
        rows.append({"input_ids": rng.integers(ID_LOW, ID_HIGH, t).tolist(), "completion_mask": [0] * p + [1] * (t - p)})
    return Dataset.from_list(rows), total


# ---------------------------------------------------------------------------------------------------------------
# one variant (runs in its own process)
def run_variant(a) -> dict:
    import torch

    cuda = torch.cuda.is_available() and not a.cpu_smoke
    name = a.variant
    v, budget, log_every = parse_variant(name, a.budget, a.logging_steps)
    res: dict = {"variant": name, "desc": describe(name, a.budget)}
    unsloth = v in ("b", "c", "g", "t")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if v in ("t", "h"):
        sys.path.insert(0, str(HERE.parent / "lib"))
        from tunebook import train as tb  # imports Unsloth first when CUDA is there (tb.import_backend)
        from tunebook.settings import TrainSettings

        tb.import_backend("unsloth" if v == "t" else "hf")
    if unsloth:
        import unsloth  # noqa: F401  (before transformers / trl)
        from unsloth import FastLanguageModel

        res["unsloth"] = getattr(unsloth, "__version__", "?")
    import transformers
    import trl
    from transformers import TrainerCallback

    res.update(transformers=transformers.__version__, trl=trl.__version__, torch=torch.__version__)
    ds, total = make_dataset(a.rows, a.seed, a.median, a.sigma, a.min_len, a.max_len)
    res["data"] = {"rows": a.rows, "median_len": float(sorted(total)[len(total) // 2]),
                   "mean_len": round(float(total.mean()), 1), "p95_len": float(sorted(total)[int(len(total) * .95)])}

    if v in ("t", "h"):
        tcfg = TrainSettings(backend="unsloth" if v == "t" else "hf", max_length=a.max_len, batch_size=8,
                             max_steps=a.warmup + a.steps, learning_rate=2e-4, lora_r=16, lora_alpha=32,
                             lora_targets=TARGETS, save_steps=10**6)
        student, peft_config = tb.load_student(a.model_dir, tcfg, a.seed)
        model, tok = student.model, student.tokenizer
        res["tunebook_backend"] = student.backend
    elif v == "a":
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(a.model_dir)
        model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                     attn_implementation="sdpa")
        if cuda:
            model = model.to("cuda")
        peft_config = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
                                 target_modules=TARGETS)
    else:
        max_seq = budget if v in ("c", "g") else 2048
        model, tok = FastLanguageModel.from_pretrained(model_name=a.model_dir, max_seq_length=max_seq,
                                                       load_in_4bit=False, dtype=None)
        gc = False if v == "c" else "unsloth"
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=32, lora_dropout=0, bias="none",
                                                 target_modules=TARGETS, use_gradient_checkpointing=gc,
                                                 random_state=a.seed)
        peft_config = None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    pad_id = tok.pad_token_id
    assert pad_id is None or not (ID_LOW <= pad_id < ID_HIGH)

    from trl import SFTConfig, SFTTrainer

    common = dict(output_dir=str(Path(a.work) / f"out_{v}"), max_steps=a.warmup + a.steps, learning_rate=2e-4,
                  lr_scheduler_type="constant", warmup_steps=0, logging_steps=log_every, save_strategy="no",
                  report_to="none", disable_tqdm=True, seed=a.seed, data_seed=a.seed, dataloader_num_workers=0,
                  completion_only_loss=True, bf16=cuda, fp16=False, use_cpu=not cuda)
    common.update(gradient_accumulation_steps=1, optim="adamw_torch_fused", weight_decay=0.0)
    if v in ("t", "h"):  # exactly what notebook 04 passes (its own logging / checkpointing choices)
        args = tb.sft_config(tcfg, Path(a.work) / f"out_{v}", a.seed, has_eval=False, backend=student.backend,
                             train_tokens=int(total.sum()))
    elif v == "a":
        args = SFTConfig(per_device_train_batch_size=8, max_length=a.max_len, **common)
    elif v == "b":
        args = SFTConfig(per_device_train_batch_size=8, max_length=a.max_len, packing=False, padding_free=False,
                         **common)
    elif v in ("c", "g"):
        args = SFTConfig(per_device_train_batch_size=1, max_length=budget, packing=True, packing_strategy="bfd",
                         **common)
    res["args"] = {k: str(getattr(args, k, None)) for k in
                   ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "packing",
                    "padding_free", "gradient_checkpointing", "optim", "weight_decay", "bf16")}

    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    res["args"]["logging_steps"] = str(args.logging_steps)
    res["world_size"] = world
    res["trainer_padding_free"] = getattr(trainer, "padding_free", None)
    res["attn_implementation"] = getattr(getattr(trainer.model, "config", None), "_attn_implementation", None)

    meter = {"tokens": 0, "padded": 0, "trained": 0, "calls": 0}
    orig_step = trainer.training_step

    def counted_step(model, inputs, *args_, **kw):
        ids = inputs["input_ids"]
        meter["calls"] += 1
        meter["padded"] += ids.numel()
        am = inputs.get("attention_mask")
        if am is not None and am.dim() == 2 and am.shape == ids.shape:
            meter["tokens"] += int(am.sum())
        else:
            meter["tokens"] += int((ids != pad_id).sum()) if pad_id is not None else ids.numel()
        lab = inputs.get("labels")
        if lab is not None:
            meter["trained"] += int((lab != -100).sum())
        if meter["calls"] == 1:
            res["first_batch_shape"] = list(ids.shape)
            res["first_batch_keys"] = sorted(inputs.keys())
        return orig_step(model, inputs, *args_, **kw)

    trainer.training_step = counted_step
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    marks: dict = {}

    class Meter(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == a.warmup and "t0" not in marks:
                sync()
                marks.update(t0=time.perf_counter(), tok0=meter["tokens"], pad0=meter["padded"],
                             tr0=meter["trained"], calls0=meter["calls"])

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == a.warmup + a.steps:
                sync()
                marks.update(t1=time.perf_counter(), tok1=meter["tokens"], pad1=meter["padded"],
                             tr1=meter["trained"], calls1=meter["calls"])

    trainer.add_callback(Meter())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_train = time.perf_counter()
    trainer.train()
    res["train_wall_s"] = round(time.perf_counter() - t_train, 1)
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    res["grad_ckpt_after_train"] = bool(getattr(base, "is_gradient_checkpointing", False))
    if "t1" not in marks:
        raise RuntimeError(f"timing marks missing: {sorted(marks)} (steps run: {trainer.state.global_step})")
    dt = marks["t1"] - marks["t0"]
    toks = marks["tok1"] - marks["tok0"]
    padded = marks["pad1"] - marks["pad0"]
    if world > 1:  # every rank trained on its own rows: add them up
        import torch.distributed as dist

        both = torch.tensor([toks, padded], dtype=torch.float64, device=f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
                            if cuda else "cpu")
        dist.all_reduce(both)
        toks, padded = int(both[0].item()), int(both[1].item())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    res.update(
        steps=a.steps, warmup=a.warmup, micro_batches=marks["calls1"] - marks["calls0"], seconds=round(dt, 3),
        tokens=toks, tokens_per_step=round(toks / a.steps, 1), tokens_per_s=round(toks / dt, 1),
        trained_tokens_per_s=round((marks["tr1"] - marks["tr0"]) / dt, 1),
        pad_fraction=round(1 - toks / padded, 4) if padded else None, step_s=round(dt / a.steps, 4),
        first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
        loss_finite=all(math.isfinite(x) for x in losses) if losses else False,
    )
    if cuda:
        res["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        res["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return res


# ---------------------------------------------------------------------------------------------------------------
# random-weight model directory (runs in its own process)
def build_model(a) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(a.model_dir)
    if (out / "config.json").is_file():
        print(f"model dir exists: {out}")
        return
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    if tok.pad_token is None:  # the dequantized SmolLM2 tokenizer has none; give it a real special token
        tok.pad_token = tok.unk_token or tok.eos_token
    shape = TINY if a.cpu_smoke else LLAMA_3B
    cfg = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    cuda = torch.cuda.is_available() and not a.cpu_smoke
    t = time.perf_counter()
    torch.manual_seed(a.seed)
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if cuda else torch.float32)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    print(f"built {n / 1e9:.3f} B params, saved to {out} in {time.perf_counter() - t:.1f} s")


# ---------------------------------------------------------------------------------------------------------------
# driver
def table(results: list[dict]) -> str:
    def letter(r):
        return r["variant"].partition(":")[0].partition("@")[0]

    def suffix(r):
        return r["variant"].partition(":")[2]

    bs = [r for r in results if letter(r) == "b" and r.get("tokens_per_s")]
    lines = ["| variant | what | tokens/s (non-pad) | tokens/step | pad % | s/step | peak GiB (reserved / alloc) | "
             "loss first→last | vs (b) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['variant']} | {r.get('desc', '')} | "
                         f"FAILED: {r['error'][:160]} | | | | | | |")
            continue
        base = next((x for x in bs if suffix(x) == suffix(r)), bs[0] if bs else None)
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}× ({base['variant']})" if base else "n/a"
        pad = f"{100 * r['pad_fraction']:.0f}" if r.get("pad_fraction") is not None else "?"
        lines.append(f"| {r['variant']} | {r['desc']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_step']:,.0f} | {pad} | "
                     f"{r['step_s']:.3f} | {r.get('peak_reserved_gib', '?')} / {r.get('peak_alloc_gib', '?')} | "
                     f"{r['first_loss']:.3f}→{r['last_loss']:.3f} | {ratio} |")
    for r in results:  # DDP scaling against the same variant on one GPU, same run
        one = next((x for x in results if x["variant"] == r["variant"].partition("*")[0] and x.get("tokens_per_s")),
                   None)
        if procs(r["variant"]) > 1 and one and r.get("tokens_per_s"):
            lines.append(f"\n**DDP scaling {r['variant']} vs {one['variant']}: "
                         f"{r['tokens_per_s'] / one['tokens_per_s']:.2f}×** on {procs(r['variant'])} GPUs")
    return "\n".join(lines)


def driver(a) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(a.work).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    me = [sys.executable, "-u", str(Path(__file__).resolve())]
    passthru = ["--model-dir", a.model_dir, "--tokenizer", a.tokenizer, "--work", a.work, "--steps", str(a.steps),
                "--warmup", str(a.warmup), "--budget", str(a.budget), "--rows", str(a.rows), "--seed", str(a.seed),
                "--median", str(a.median), "--sigma", str(a.sigma), "--min-len", str(a.min_len),
                "--max-len", str(a.max_len), "--logging-steps", str(a.logging_steps)] + (["--cpu-smoke"] if a.cpu_smoke else [])
    log = open(out / "bench_log.txt", "a", encoding="utf-8")

    def sub(extra: list[str], name: str, timeout: float, nproc: int = 1) -> int:
        log.write(f"\n===== {name}: {' '.join(extra)}\n")
        log.flush()
        launcher = me
        if nproc > 1:  # the launcher tunebook uses for -p train.num_gpus=N
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                        str(nproc), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        str(Path(__file__).resolve())]
        env = dict(os.environ)
        if nproc == 1 and "CUDA_VISIBLE_DEVICES" not in env:
            env["CUDA_VISIBLE_DEVICES"] = "0"  # one-GPU variants see one card, also on a multi-GPU machine
        try:
            p = subprocess.run(launcher + passthru + extra, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                               cwd=a.work, env=env)
            return p.returncode
        except subprocess.TimeoutExpired:
            log.write(f"\n!!! {name} timed out after {timeout:.0f} s\n")
            return -9

    rc = sub(["--build"], "build", 300)
    print(f"[{time.perf_counter() - t_start:6.1f}s] build rc={rc}", flush=True)
    results = []
    for v in a.variants.split(","):
        left = a.deadline - (time.perf_counter() - t_start)
        rfile = Path(a.work) / f"result_{v.replace('*', 'x')}.json"
        rfile.unlink(missing_ok=True)
        if left < 60:
            results.append({"variant": v, "desc": describe(v, a.budget), "error": f"skipped: {left:.0f} s left"})
            continue
        rc = sub(["--variant", v, "--result", str(rfile)], f"variant {v}", left - 10, procs(v))
        if rfile.is_file():
            r = json.loads(rfile.read_text())
        else:
            r = {"variant": v, "desc": describe(v, a.budget), "error": f"rc={rc}, no result (see bench_log.txt)"}
        results.append(r)
        print(f"[{time.perf_counter() - t_start:6.1f}s] variant {v}: " +
              (r.get("error") or f"{r['tokens_per_s']:,.0f} tok/s, peak {r.get('peak_reserved_gib')} GiB, "
                                 f"pad {r.get('pad_fraction')}, loss {r.get('first_loss')}→{r.get('last_loss')}"),
              flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))  # after each: survives a kill
    log.close()
    (out / "results.json").write_text(json.dumps(results, indent=2))
    md = table(results)
    (out / "table.md").write_text(md + "\n")
    print()
    print(md)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_out", help="where results.json, table.md and bench_log.txt go")
    ap.add_argument("--work", default="/tmp/tunebook_bench", help="scratch dir (trainer outputs, Unsloth's cache)")
    ap.add_argument("--model-dir", default="/tmp/tunebook_bench/llama3b-random")
    ap.add_argument("--tokenizer", default=str(HERE.parent / ".benchdata" / "smollm2-tok"),
                    help="a local tokenizer dir (only its special tokens are used)")
    ap.add_argument("--variants", default="a,b,c")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget", type=int, default=8192, help="tokens per packed micro-batch of c / g without @N")
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--median", type=float, default=230.0)
    ap.add_argument("--sigma", type=float, default=0.6)
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=3407)
    ap.add_argument("--logging-steps", type=int, default=1, help="as tunebook (1); a variant's ':logN' overrides")
    ap.add_argument("--deadline", type=float, default=540, help="seconds for the whole driver; later variants skip")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU, variant a only: checks the script")
    ap.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.build:
        build_model(a)
        return 0
    if a.variant:
        try:
            res = run_variant(a)
        except Exception as e:  # reported in the table; the traceback is in the log
            import traceback

            traceback.print_exc()
            res = {"variant": a.variant, "desc": describe(a.variant, a.budget), "error": f"{type(e).__name__}: {e}"}
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
        Path(a.result).write_text(json.dumps(res, indent=2, default=str))
        print(json.dumps(res, default=str))
        return 0
    return driver(a)


if __name__ == "__main__":
    sys.exit(main())
