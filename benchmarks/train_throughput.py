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
  bnb the literal Unsloth notebook defaults, as an extra reference only: per_device_train_batch_size 2 x
      gradient_accumulation_steps 4 (8 rows a step, like b), adamw_8bit, weight decay 0.001, linear schedule,
      grad ckpt 'unsloth', padding_free left unset (this Unsloth then turns padding-free on by itself)
  X*N run variant X in N processes, one per GPU (DDP through `accelerate launch --multi_gpu`, as
      `-p train.num_gpus=N` does); tokens/s counts every rank's tokens

Options after the letter, joined by ':' (e.g. `t:ga4:nosync`, `c@8192:log10`):
  logK    log every K optimizer steps (for t: instead of sft_config's choice)
  gaK     K gradient-accumulation micro-batches per optimizer step (t: TrainSettings(grad_accum=K)); such a
          variant times steps/K optimizer steps after warmup/K (so about the same micro-batches as without)
  nosync  t only: no per-micro-batch host sync in the Trainer loop (include_num_input_tokens_seen="no",
          logging_nan_inf_filter=False)
  sync    t only: the opposite (include_num_input_tokens_seen="non_padding", logging_nan_inf_filter=True),
          whatever sft_config now sets
  novarlen t only: undo tunebook's unsloth_varlen_attention() for this variant (Unsloth's own choice: on torch
          2.11 one SDPA call per run of equal row lengths)
  check   t only: before training, loss and LoRA gradients of one packed batch through both attention paths
          (each twice, for the run-to-run spread), into the result's "varlen_check"
  prof    after the timed steps, 3 more steps under torch.profiler: prof.txt (GPU busy/idle per step, host syncs,
          largest GPU idle gaps, top kernels/ops) and trace_<variant>.json.gz go to --out
Variants joined by '+' (e.g. `t+t:nosync+t:ga4`) run one after another in ONE process on one loaded model
(same letter and budget only): saves the ~60-80 s import and load per variant, for exploring; the first one also
pays any one-time cost in its warm-up steps.

All but t use gradient_accumulation_steps=1, optim adamw_torch_fused, weight_decay 0, lr 2e-4 constant (Unsloth's
SFTConfig would otherwise default to 2 accumulation steps and adamw_8bit). Throughput counts non-pad input tokens
only, over `--steps` optimizer steps after `--warmup` steps.

  python benchmarks/train_throughput.py --out /tmp/bench          # a,b,c; table last
  python benchmarks/train_throughput.py --variants a,b,c@12288,g@32768,t
  python benchmarks/train_throughput.py --variants b,t:prof+t:nosync:prof+t:ga4+t,bnb

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
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LLAMA_3B = dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                rms_norm_eps=1e-5, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
# Qwen3-4B (the gpu profile's student, unsloth/Qwen3-4B-Instruct-2507): its config.json values, random weights
QWEN3_4B = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0})
SHAPES = {"llama3b": LLAMA_3B, "qwen3-4b": QWEN3_4B}
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
    "bnb": "Unsloth notebook literal: batch 2 x grad accum 4, adamw_8bit, grad ckpt 'unsloth', padding_free unset",
}
PROF_STEPS = 3
ID_LOW, ID_HIGH = 50_000, 128_000


def procs(name: str) -> int:
    """'h*2' -> 2 processes."""
    return int(name.partition("*")[2] or 1)


def options(name: str) -> dict:
    """'t:ga4:nosync:prof' -> {'ga': 4, 'nosync': True, 'prof': True}; 'c@8192:log10' -> {'log': 10}."""
    opts: dict = {}
    for o in name.partition("*")[0].split(":")[1:]:
        for key in ("log", "ga"):
            if o.startswith(key) and o[len(key):].isdigit():
                opts[key] = int(o[len(key):])
                break
        else:
            if o not in ("nosync", "sync", "prof", "novarlen", "check"):
                raise ValueError(f"unknown variant option {o!r} in {name!r}")
            opts[o] = True
    return opts


def parse_variant(name: str, default_budget: int, default_log: int) -> tuple[str, int, int]:
    """'c@8192:log10' -> ('c', 8192, 10)."""
    v, _, b = name.partition("*")[0].split(":")[0].partition("@")
    return v, int(b) if b else default_budget, options(name).get("log", default_log)


def describe(name: str, default_budget: int) -> str:
    v, budget, _ = parse_variant(name, default_budget, 1)
    o = options(name)
    n = procs(name)
    return (DESCRIPTIONS.get(v, "?").format(budget=budget)
            + (f", logging every {o['log']} steps" if "log" in o else "")
            + (f", grad accum {o['ga']}" if "ga" in o else "")
            + (", no per-micro-batch host sync (no token count, no nan filter)" if o.get("nosync") else "")
            + (", token count + nan filter on (per-micro-batch host sync)" if o.get("sync") else "")
            + (", Unsloth's per-segment SDPA (tunebook's varlen switch undone)" if o.get("novarlen") else "")
            + (", + varlen-vs-SDPA loss/grad check" if o.get("check") else "")
            + (f", +{PROF_STEPS} profiled steps" if o.get("prof") else "")
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
def run_variant(a, save=None) -> list[dict]:
    """Runs a.variant in this process; 'X+Y+...' runs each of them on one loaded model, one after another.
    Returns one result per variant; ``save(results)`` is called after each, so a kill keeps the finished ones."""
    import gc as gcmod
    import traceback

    import torch

    cuda = torch.cuda.is_available() and not a.cpu_smoke
    names = a.variant.split("+")
    shapes = {parse_variant(n, a.budget, 1)[:2] for n in names}
    if len(shapes) != 1:
        raise ValueError(f"'+' joins variants of one letter and one budget only: {a.variant}")
    v, budget = shapes.pop()
    unsloth = v in ("b", "c", "g", "t", "bnb")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if v in ("t", "h"):
        sys.path.insert(0, str(HERE.parent / "lib"))
        from tunebook import train as tb  # imports Unsloth first when CUDA is there (tb.import_backend)
        from tunebook.settings import TrainSettings

        tb.import_backend("unsloth" if v == "t" else "hf")
    base: dict = {}
    if unsloth:
        import unsloth  # noqa: F401  (before transformers / trl)
        from unsloth import FastLanguageModel

        base["unsloth"] = getattr(unsloth, "__version__", "?")
    import transformers
    import trl

    base.update(transformers=transformers.__version__, trl=trl.__version__, torch=torch.__version__)
    ds, total = make_dataset(a.rows, a.seed, a.median, a.sigma, a.min_len, a.max_len)
    base["data"] = {"rows": a.rows, "median_len": float(sorted(total)[len(total) // 2]),
                    "mean_len": round(float(total.mean()), 1), "p95_len": float(sorted(total)[int(len(total) * .95)])}

    def tb_settings(max_steps: int, grad_accum: int = 1):
        return TrainSettings(backend="unsloth" if v == "t" else "hf", max_length=a.max_len, batch_size=8,
                             max_steps=max_steps, learning_rate=2e-4, lora_r=16, lora_alpha=32,
                             lora_targets=TARGETS, save_steps=10**6, grad_accum=grad_accum)

    student = None
    if v in ("t", "h"):  # grad_accum and max_steps do not enter load_student
        student, peft_config = tb.load_student(a.model_dir, tb_settings(a.warmup + a.steps), a.seed)
        model, tok = student.model, student.tokenizer
        base["tunebook_backend"] = student.backend
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

    results: list[dict] = []
    for name in names:
        res: dict = {"variant": name, "desc": describe(name, a.budget), **base}
        try:
            res.update(train_one(a, name, v, budget, cuda, world, model, tok, pad_id, peft_config, ds, total,
                                 student, tb_settings if v in ("t", "h") else None))
        except Exception as e:  # reported in the table; the traceback is in the log
            traceback.print_exc()
            res["error"] = f"{type(e).__name__}: {e}"
        results.append(res)
        print(json.dumps(res, default=str), flush=True)
        if save:
            save(results)
        gcmod.collect()
        if cuda:
            torch.cuda.empty_cache()
    return results


def train_one(a, name, v, budget, cuda, world, model, tok, pad_id, peft_config, ds, total, student, tb_settings):
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    opts = options(name)
    _, _, log_every = parse_variant(name, a.budget, a.logging_steps)
    ga = opts.get("ga", 1)
    steps = max(6, round(a.steps / ga)) if ga > 1 else a.steps  # about the same micro-batches as ga 1
    warmup = max(2, round(a.warmup / ga)) if ga > 1 else a.warmup
    prof_steps = PROF_STEPS if opts.get("prof") and cuda else 0
    max_steps = warmup + steps + prof_steps
    res: dict = {}
    common = dict(output_dir=str(Path(a.work) / f"out_{v}"), max_steps=max_steps, learning_rate=2e-4,
                  lr_scheduler_type="constant", warmup_steps=0, logging_steps=log_every, save_strategy="no",
                  report_to="none", disable_tqdm=True, seed=a.seed, data_seed=a.seed, dataloader_num_workers=0,
                  completion_only_loss=True, bf16=cuda, fp16=False, use_cpu=not cuda)
    common.update(gradient_accumulation_steps=ga, optim="adamw_torch_fused", weight_decay=0.0)
    if v in ("t", "h"):  # exactly what notebook 04 passes (its own logging / checkpointing choices)
        tcfg = tb_settings(max_steps, ga)
        from tunebook import train as tbm

        args = tbm.sft_config(tcfg, Path(a.work) / f"out_{v}", a.seed, has_eval=False, backend=student.backend,
                              train_tokens=int(total.sum()))
        if "log" in opts:
            args.logging_steps = opts["log"]
        if opts.get("nosync"):
            args.include_num_input_tokens_seen, args.logging_nan_inf_filter = "no", False
        if opts.get("sync"):
            args.include_num_input_tokens_seen, args.logging_nan_inf_filter = "non_padding", True
    elif v == "a":
        args = SFTConfig(per_device_train_batch_size=8, max_length=a.max_len, **common)
    elif v == "b":
        args = SFTConfig(per_device_train_batch_size=8, max_length=a.max_len, packing=False, padding_free=False,
                         **common)
    elif v == "bnb":  # the notebook's SFTConfig; 8 rows an optimizer step, like b
        nb = {**common, "gradient_accumulation_steps": 4, "optim": "adamw_8bit", "weight_decay": 0.001,
              "lr_scheduler_type": "linear", "warmup_steps": 5, "max_steps": a.warmup + a.steps}
        args = SFTConfig(per_device_train_batch_size=2, max_length=a.max_len, packing=False, **nb)
    elif v in ("c", "g"):
        args = SFTConfig(per_device_train_batch_size=1, max_length=budget, packing=True, packing_strategy="bfd",
                         **common)
    else:
        raise ValueError(f"unknown variant {name!r}")
    res["args"] = {k: str(getattr(args, k, None)) for k in
                   ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "packing",
                    "padding_free", "gradient_checkpointing", "optim", "weight_decay", "bf16",
                    "include_num_input_tokens_seen", "logging_nan_inf_filter", "lr_scheduler_type")}

    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    res["args"]["logging_steps"] = str(args.logging_steps)
    set_varlen = attention_switch() if v == "t" else None
    if set_varlen:
        if opts.get("check"):
            try:
                res["varlen_check"] = check_varlen(trainer, set_varlen)
            except Exception as e:  # the timing still runs
                import traceback

                traceback.print_exc()
                res["varlen_check"] = {"error": f"{type(e).__name__}: {e}"}
        set_varlen(not opts.get("novarlen"))
    res["varlen_attention"] = bool(set_varlen) and not opts.get("novarlen")
    res["world_size"] = world
    res["trainer_padding_free"] = getattr(trainer, "padding_free", None)
    res["attn_implementation"] = getattr(getattr(trainer.model, "config", None), "_attn_implementation", None)

    # Token counts stay on the device (no .item() per micro-batch: that would add a host sync the trained code
    # does not have); they are read at the two timing marks, which synchronise anyway.
    dev = torch.device("cuda") if cuda else torch.device("cpu")
    meter = {"tokens": torch.zeros((), dtype=torch.int64, device=dev), "padded": 0,
             "trained": torch.zeros((), dtype=torch.int64, device=dev), "calls": 0}
    orig_step = trainer.training_step
    prof_state: dict = {}

    def counted_step(model_, inputs, *args_, **kw):
        ids = inputs["input_ids"]
        meter["calls"] += 1
        meter["padded"] += ids.numel()
        am = inputs.get("attention_mask")
        if am is not None and am.dim() == 2 and am.shape == ids.shape:
            n = am.sum()
        else:
            n = (ids != pad_id).sum() if pad_id is not None else torch.tensor(ids.numel())
        meter["tokens"] = meter["tokens"] + n.to(dev, torch.int64)
        lab = inputs.get("labels")
        if lab is not None:
            meter["trained"] = meter["trained"] + (lab != -100).sum().to(dev, torch.int64)
        if meter["calls"] == 1:
            res["first_batch_shape"] = list(ids.shape)
            res["first_batch_keys"] = sorted(inputs.keys())
        if "prof" in prof_state:
            with torch.profiler.record_function("tb/training_step"):
                return orig_step(model_, inputs, *args_, **kw)
        return orig_step(model_, inputs, *args_, **kw)

    trainer.training_step = counted_step
    if prof_steps and hasattr(trainer, "_track_num_input_tokens"):
        orig_track = trainer._track_num_input_tokens

        def track(inputs):
            if "prof" in prof_state:
                with torch.profiler.record_function("tb/track_tokens"):
                    return orig_track(inputs)
            return orig_track(inputs)

        trainer._track_num_input_tokens = track
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    marks: dict = {}

    def snapshot():
        return dict(tok=int(meter["tokens"]), pad=meter["padded"], tr=int(meter["trained"]), calls=meter["calls"])

    class Meter(TrainerCallback):
        def on_step_begin(self, args_, state, control, **kw):
            if state.global_step == warmup and "t0" not in marks:
                sync()
                marks["s0"] = snapshot()
                marks["t0"] = time.perf_counter()
            if prof_steps and state.global_step == warmup + steps and "prof" not in prof_state:
                sync()
                p = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                       torch.profiler.ProfilerActivity.CUDA])
                p.__enter__()
                prof_state.update(prof=p, t0=time.perf_counter())
            if "prof" in prof_state:
                _range_close("tb/between")
                _range_open("tb/step")

        def on_step_end(self, args_, state, control, **kw):
            if state.global_step == warmup + steps and "t1" not in marks:
                sync()
                marks["t1"] = time.perf_counter()
                marks["s1"] = snapshot()
            if "prof" in prof_state and "t1" not in prof_state:
                _range_close("tb/step")
                if state.global_step == warmup + steps + prof_steps:
                    sync()
                    prof_state["t1"] = time.perf_counter()
                    prof_state["prof"].__exit__(None, None, None)
                else:
                    _range_open("tb/between")

    ranges: dict = {}

    def _range_open(nm):
        r = torch.profiler.record_function(nm)
        r.__enter__()
        ranges[nm] = r

    def _range_close(nm):
        r = ranges.pop(nm, None)
        if r is not None:
            r.__exit__(None, None, None)

    trainer.add_callback(Meter())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_train = time.perf_counter()
    trainer.train()
    res["train_wall_s"] = round(time.perf_counter() - t_train, 1)
    base_model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    res["grad_ckpt_after_train"] = bool(getattr(base_model, "is_gradient_checkpointing", False))
    if "t1" not in marks:
        raise RuntimeError(f"timing marks missing: {sorted(marks)} (steps run: {trainer.state.global_step})")
    dt = marks["t1"] - marks["t0"]
    s0, s1 = marks["s0"], marks["s1"]
    toks, padded = s1["tok"] - s0["tok"], s1["pad"] - s0["pad"]
    if world > 1:  # every rank trained on its own rows: add them up
        import torch.distributed as dist

        both = torch.tensor([toks, padded], dtype=torch.float64, device=f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
                            if cuda else "cpu")
        dist.all_reduce(both)
        toks, padded = int(both[0].item()), int(both[1].item())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    res.update(
        steps=steps, warmup=warmup, grad_accum=ga, micro_batches=s1["calls"] - s0["calls"], seconds=round(dt, 3),
        tokens=toks, tokens_per_step=round(toks / steps, 1), tokens_per_s=round(toks / dt, 1),
        trained_tokens_per_s=round((s1["tr"] - s0["tr"]) / dt, 1),
        pad_fraction=round(1 - toks / padded, 4) if padded else None, step_s=round(dt / steps, 4),
        micro_batch_s=round(dt / max(1, s1["calls"] - s0["calls"]), 4),
        first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
        loss_finite=all(math.isfinite(x) for x in losses) if losses else False,
        num_input_tokens_seen=trainer.state.num_input_tokens_seen,
    )
    if cuda:
        res["peak_alloc_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        res["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    if "t1" in prof_state:
        res["profile"] = write_profile(a, name, prof_state["prof"], prof_state["t1"] - prof_state["t0"], prof_steps)
    if set_varlen:
        set_varlen(True)  # tunebook's default again for the next variant of the process
    del trainer
    return res


def attention_switch():
    """set(varlen: bool) between tunebook's unsloth_varlen_attention() and what Unsloth had; None if it did not
    switch anything (Unsloth has the varlen path by itself, or the self-test failed)."""
    from tunebook import train as tbm

    orig = dict(getattr(tbm, "_UNSLOTH_ATTENTION_ORIGINAL", {}))
    if not orig:
        return None
    from unsloth.utils import attention_dispatch as ad

    patched = {k: getattr(ad, k) for k in orig}

    def set_path(varlen: bool):
        for k in orig:
            setattr(ad, k, patched[k] if varlen else orig[k])

    return set_path


def check_varlen(trainer, set_path) -> dict:
    """Loss and LoRA gradients of one packed batch through Unsloth's per-segment SDPA and through the varlen
    path, each twice (the repeat shows the kernels' own run-to-run spread)."""
    import torch

    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # activations: layer 0's attention output (same inputs on both paths, so only the attention differs; rows
    # leaking into each other would show here as an O(1) difference) and the last layer's output
    layers = [m for n_, m in model.named_modules() if n_.endswith("layers.0") or n_.endswith("layers.0.self_attn")]
    last = [m for n_, m in model.named_modules() if n_.endswith(f"layers.{model.config.num_hidden_layers - 1}")]
    watch = {"layer0_attn_out": next((m for m in layers if hasattr(m, "q_proj")), None),
             "layer0_out": next((m for m in layers if not hasattr(m, "q_proj")), None),
             "last_layer_out": last[0] if last else None}
    seen: dict = {}

    def hook(name):
        def f(_m, _inp, out):
            t = out[0] if isinstance(out, tuple) else out
            seen[name] = t.detach().float().clone()
        return f

    handles = [m.register_forward_hook(hook(k)) for k, m in watch.items() if m is not None]

    def run(varlen):
        set_path(varlen)
        seen.clear()
        model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        g = torch.cat([p.grad.detach().float().flatten() for p in params if p.grad is not None])
        return float(loss.detach()), g, dict(seen)

    def rel(x, y):
        return float((x - y).norm() / y.norm())

    try:
        (l0, g0, a0), (l1, g1, a1), (l2, g2, a2), (l3, g3, a3) = run(False), run(False), run(True), run(True)
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        set_path(True)
    acts = {k: {"varlen_vs_sdpa": rel(a2[k], a0[k]), "sdpa_repeat": rel(a1[k], a0[k]),
                "varlen_repeat": rel(a3[k], a2[k])}
            for k in a0 if k in a2 and a0[k].shape == a2[k].shape}
    return {"tokens": int(batch["input_ids"].numel()), "loss_sdpa": [l0, l1], "loss_varlen": [l2, l3],
            "loss_rel_varlen_vs_sdpa": abs(l2 - l0) / abs(l0), "grad_rel_sdpa_repeat": rel(g1, g0),
            "grad_rel_varlen_repeat": rel(g3, g2), "grad_rel_varlen_vs_sdpa": rel(g2, g0), "activations_rel": acts}


# ---------------------------------------------------------------------------------------------------------------
# profile of a few steps: where the step's time goes (GPU busy vs idle, host syncs)
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
              "cudaMemcpyAsync", "cuStreamSynchronize", "cudaStreamWaitEvent")
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def _merge(iv):
    out = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def _busy(merged, starts, a, b):
    """GPU-busy microseconds inside [a, b] (merged intervals, their start times for bisect)."""
    import bisect

    i = max(0, bisect.bisect_right(starts, a) - 1)
    t = 0.0
    while i < len(merged) and merged[i][0] < b:
        t += max(0.0, min(b, merged[i][1]) - max(a, merged[i][0]))
        i += 1
    return t


def summarize_trace(path) -> dict:
    """GPU busy/idle per profiled step, per tb/ range, the host syncs and the largest GPU idle gaps, from a
    torch.profiler chrome trace (times in microseconds)."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        ev = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    gpu = _merge([(e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("cat") in GPU_CATS])
    starts = [s for s, _ in gpu]
    ann = sorted((e for e in ev if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith("tb/")),
                 key=lambda e: e["ts"])
    steps = [e for e in ann if e["name"] == "tb/step"]
    main_tid = steps[0]["tid"] if steps else None
    out: dict = {"steps": []}
    for i, st in enumerate(steps):  # one iteration = this step + the gap to the next step (logging, next batch)
        a_, b_ = st["ts"], (steps[i + 1]["ts"] if i + 1 < len(steps) else st["ts"] + st["dur"])
        busy = _busy(gpu, starts, a_, b_)
        n_k = sum(1 for e in ev if e.get("cat") == "kernel" and a_ <= e["ts"] < b_)
        out["steps"].append({"wall_ms": round((b_ - a_) / 1e3, 1), "gpu_busy_ms": round(busy / 1e3, 1),
                             "gpu_idle_ms": round((b_ - a_ - busy) / 1e3, 1), "kernels": n_k,
                             "step_range_ms": round(st["dur"] / 1e3, 1)})
    per_range: dict = defaultdict(lambda: {"n": 0, "wall_ms": 0.0, "gpu_busy_ms": 0.0})
    for e in ann:
        r = per_range[e["name"]]
        r["n"] += 1
        r["wall_ms"] += e["dur"] / 1e3
        r["gpu_busy_ms"] += _busy(gpu, starts, e["ts"], e["ts"] + e["dur"]) / 1e3
    out["ranges"] = {k: {kk: round(vv, 1) if isinstance(vv, float) else vv for kk, vv in r.items()}
                     for k, r in per_range.items()}
    # host syncs: where the CPU waited for the GPU (duration = waiting + the call), with the ops around them
    cpu_ops = sorted((e for e in ev if e.get("cat") in ("cpu_op", "user_annotation") and e.get("tid") == main_tid),
                     key=lambda e: e["ts"])
    syncs = [e for e in ev if e.get("cat") in ("cuda_runtime", "cuda_driver") and e.get("name") in SYNC_CALLS
             and e["dur"] >= 200]

    import numpy as np

    op_ts = np.array([e["ts"] for e in cpu_ops], dtype=float)
    op_end = op_ts + np.array([e["dur"] for e in cpu_ops], dtype=float)

    def context(t):  # the ops (and tb/ ranges) open on the main thread at time t, outermost first
        idx = np.nonzero((op_ts <= t) & (op_end >= t))[0]
        return " > ".join(str(cpu_ops[i]["name"])[:48] for i in idx[-5:])

    by_ctx: dict = defaultdict(lambda: [0, 0.0])
    for e in syncs:
        c = by_ctx[f'{e["name"]} @ {context(e["ts"])}']
        c[0] += 1
        c[1] += e["dur"] / 1e3
    out["host_syncs_ge_0.2ms"] = sorted(([k, n, round(ms, 1)] for k, (n, ms) in by_ctx.items()),
                                        key=lambda x: -x[2])[:20]
    if steps:  # GPU idle gaps inside the profiled iterations, largest first, with what the CPU was doing
        a_, b_ = steps[0]["ts"], steps[-1]["ts"] + steps[-1]["dur"]
        gaps = [(e0, s1) for (_, e0), (s1, _) in zip(gpu, gpu[1:]) if a_ <= e0 and s1 <= b_ and s1 - e0 >= 500]
        out["gpu_idle_gaps_ge_0.5ms"] = {"n": len(gaps), "total_ms": round(sum(s - e for e, s in gaps) / 1e3, 1)}
        gctx: dict = defaultdict(lambda: [0, 0.0])
        for e0, s1 in sorted(gaps, key=lambda g: g[0] - g[1])[:400]:  # the largest 400
            c = gctx[context(e0 + 1)]
            c[0] += 1
            c[1] += (s1 - e0) / 1e3
        out["idle_gaps_by_cpu_context"] = sorted(([k, n, round(ms, 1)] for k, (n, ms) in gctx.items()),
                                                 key=lambda x: -x[2])[:20]
    kern: dict = defaultdict(lambda: [0, 0.0])
    for e in ev:
        if e.get("cat") == "kernel":
            k = kern[str(e["name"])[:90]]
            k[0] += 1
            k[1] += e["dur"] / 1e3
    out["top_kernels"] = sorted(([k, n, round(ms, 1)] for k, (n, ms) in kern.items()), key=lambda x: -x[2])[:25]
    return out


def write_profile(a, name, prof, wall_s, n_steps) -> dict:
    """Writes the trace (gzipped) and appends the summary + key_averages tables to <out>/prof.txt."""
    import gzip
    import shutil

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
    raw = Path(a.work) / f"trace_{safe}.json"
    prof.export_chrome_trace(str(raw))
    gz = out / f"trace_{safe}.json.gz"
    with open(raw, "rb") as fi, gzip.open(gz, "wb", compresslevel=6) as fo:
        shutil.copyfileobj(fi, fo)
    summary = summarize_trace(raw)
    summary["profiled_steps"], summary["profiled_wall_s"] = n_steps, round(wall_s, 3)
    ka = prof.key_averages()
    try:
        gpu_table = ka.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=70)
    except Exception:  # older torch names it cuda
        gpu_table = ka.table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70)
    cpu_table = ka.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70)
    with open(out / "prof.txt", "a", encoding="utf-8") as f:
        f.write(f"\n===== {name}: {n_steps} profiled steps, {wall_s:.3f} s wall (profiler on)\n")
        f.write(json.dumps(summary, indent=1) + "\n")
        f.write("\n--- by self device time\n" + gpu_table + "\n--- by self CPU time\n" + cpu_table + "\n")
    raw.unlink(missing_ok=True)
    return {k: summary[k] for k in ("steps", "ranges", "gpu_idle_gaps_ge_0.5ms") if k in summary}


# ---------------------------------------------------------------------------------------------------------------
# random-weight model directory (runs in its own process)
def build_model(a) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    out = Path(a.model_dir)
    if (out / "config.json").is_file():
        print(f"model dir exists: {out}")
        return
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    if tok.pad_token is None:  # the dequantized SmolLM2 tokenizer has none; give it a real special token
        tok.pad_token = tok.unk_token or tok.eos_token
    shape = TINY if a.cpu_smoke else SHAPES[a.shape]
    qwen = a.shape == "qwen3-4b" and not a.cpu_smoke
    cfg = (Qwen3Config if qwen else LlamaConfig)(**shape, bos_token_id=tok.bos_token_id,
                                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cuda = torch.cuda.is_available() and not a.cpu_smoke
    t = time.perf_counter()
    torch.manual_seed(a.seed)
    with torch.device("cuda" if cuda else "cpu"):
        model = (Qwen3ForCausalLM if qwen else LlamaForCausalLM)(cfg).to(torch.bfloat16 if cuda else torch.float32)
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
    lines = ["| variant | what | tokens/s (non-pad) | tokens/step | micro-batches/step | pad % | s/step | "
             "peak GiB (reserved / alloc) | loss first→last | vs (b) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def loss(x):
        return f"{x:.3f}" if isinstance(x, (int, float)) else "?"

    for r in results:
        if r.get("error"):
            lines.append(f"| {r['variant']} | {r.get('desc', '')} | "
                         f"FAILED: {r['error'][:160]} | | | | | | | |")
            continue
        base = next((x for x in bs if suffix(x) == suffix(r)), bs[0] if bs else None)
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}× ({base['variant']})" if base else "n/a"
        pad = f"{100 * r['pad_fraction']:.0f}" if r.get("pad_fraction") is not None else "?"
        mb = r.get("micro_batches", 0) / max(1, r.get("steps", 1))
        lines.append(f"| {r['variant']} | {r['desc']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_step']:,.0f} | "
                     f"{mb:g} | {pad} | {r['step_s']:.3f} | "
                     f"{r.get('peak_reserved_gib', '?')} / {r.get('peak_alloc_gib', '?')} | "
                     f"{loss(r.get('first_loss'))}→{loss(r.get('last_loss'))} | {ratio} |")
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
    passthru = ["--shape", a.shape, "--model-dir", a.model_dir, "--tokenizer", a.tokenizer, "--work", a.work, "--steps", str(a.steps),
                "--warmup", str(a.warmup), "--budget", str(a.budget), "--rows", str(a.rows), "--seed", str(a.seed),
                "--median", str(a.median), "--sigma", str(a.sigma), "--min-len", str(a.min_len),
                "--max-len", str(a.max_len), "--logging-steps", str(a.logging_steps),
                "--out", str(out.resolve())] + (["--cpu-smoke"] if a.cpu_smoke else [])
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
        safe = "".join(ch if ch.isalnum() or ch in "._-@" else "_" for ch in v)
        rfile = Path(a.work) / f"result_{safe}.json"
        rfile.unlink(missing_ok=True)
        if left < 60:
            results += [{"variant": n, "desc": describe(n, a.budget), "error": f"skipped: {left:.0f} s left"}
                        for n in v.split("+")]
            continue
        rc = sub(["--variant", v, "--result", str(rfile)], f"variant {v}", left - 10, procs(v))
        got = json.loads(rfile.read_text()) if rfile.is_file() else []
        got = [got] if isinstance(got, dict) else got
        done = {r["variant"] for r in got}
        got += [{"variant": n, "desc": describe(n, a.budget), "error": f"rc={rc}, no result (see bench_log.txt)"}
                for n in v.split("+") if n not in done]
        for r in got:
            results.append(r)
            print(f"[{time.perf_counter() - t_start:6.1f}s] variant {r['variant']}: " +
                  (r.get("error") or f"{r['tokens_per_s']:,.0f} tok/s, {r['step_s']:.3f} s/step, "
                                     f"peak {r.get('peak_reserved_gib')} GiB, pad {r.get('pad_fraction')}, "
                                     f"loss {r.get('first_loss')}→{r.get('last_loss')}"),
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
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama3b",
                    help="random-weight model shape: Llama-3.2-3B (default) or Qwen3-4B (vocab 151936, 36 layers)")
    ap.add_argument("--model-dir", default="", help="default: /tmp/tunebook_bench/<shape>-random")
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
    a.model_dir = a.model_dir or f"/tmp/tunebook_bench/{a.shape}-random"
    if a.build:
        build_model(a)
        return 0
    if a.variant:
        rank0 = int(os.environ.get("RANK", "0")) == 0

        def save(results):
            if rank0 and a.result:
                Path(a.result).write_text(json.dumps(results, indent=2, default=str))

        try:
            res = run_variant(a, save)
        except Exception as e:  # reported in the table; the traceback is in the log
            import traceback

            traceback.print_exc()
            res = [{"variant": n, "desc": describe(n, a.budget), "error": f"{type(e).__name__}: {e}"}
                   for n in a.variant.split("+")]
        save(res)
        return 0
    return driver(a)


if __name__ == "__main__":
    sys.exit(main())
