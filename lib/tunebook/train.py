"""04 — LoRA SFT of the student with its own chat template: Unsloth on a GPU, transformers + PEFT on CPU.

Rows become conversational prompt/completion pairs, so TRL trains on the answer tokens only and formats them
with the student's chat template — the same template used when the model is served. Checkpoints go to
``train/checkpoints`` and a rerun resumes from the last one.
"""

from __future__ import annotations

import html
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import models, precision, unsloth_varlen
from .jsonio import read_jsonl, write_json, write_jsonl
from .lora import layer_kwargs, scale_adapter
from .settings import TrainSettings

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "train_metrics.json"
LOG_FILE = "trainer_log.jsonl"


def choose_backend(requested: str) -> str:
    """``auto`` → Unsloth when CUDA is available (checked before importing Unsloth, which patches transformers)."""
    import torch

    cuda = torch.cuda.is_available()
    if requested == "unsloth" and not cuda:
        raise RuntimeError("train.backend=unsloth needs a CUDA GPU; use backend=auto or hf on this machine")
    if requested == "auto":
        return "unsloth" if cuda else "hf"
    return requested


def import_backend(requested: str) -> str:
    """Choose the backend and, for Unsloth, import it before anything imports transformers (it patches it)."""
    backend = choose_backend(requested)
    if backend == "unsloth":
        import unsloth  # noqa: F401
    return backend


def to_prompt_completion(row: dict, system_prompt: str = "") -> dict:
    msgs = row["messages"]
    prompt = [m for m in msgs if m["role"] != "assistant"]
    if system_prompt and not any(m["role"] == "system" for m in prompt):
        prompt = [{"role": "system", "content": system_prompt}] + prompt
    completion = [m for m in msgs if m["role"] == "assistant"][-1:]
    if not completion:
        raise ValueError(f"row {row.get('id')} has no assistant message")
    return {"prompt": prompt, "completion": completion}


def load_split(path: Path, system_prompt: str = ""):
    rows = read_jsonl(Path(path))
    if not rows:
        raise ValueError(f"{path} has no rows: check 03_inspect's output")
    return rows_dataset(rows, system_prompt)


def rows_dataset(rows: list[dict], system_prompt: str = ""):
    """``messages`` rows as the prompt/completion dataset the trainer takes."""
    from datasets import Dataset

    return Dataset.from_list([to_prompt_completion(r, system_prompt) for r in rows])


def add_rows(ds, rows: list[dict], system_prompt: str = ""):
    """``ds`` (prompt/completion rows) with more rows in the ``messages`` format appended (04's replay rows)."""
    from datasets import concatenate_datasets

    if not rows:
        return ds
    return concatenate_datasets([ds, rows_dataset(rows, system_prompt).cast(ds.features)])


def add_context_rows(ds, run_dir: Path, cfg, save: bool = True):
    """``ds`` with ``train.context_fraction`` of the facts once more in 05's RAG prompt
    (:func:`tunebook.retrieval.context_rows`, the same rows on every DDP rank), and those rows; ``save`` keeps them in
    ``train/context_rows.jsonl``. ``cfg``: the run's Settings."""
    from .retrieval import CONTEXT_FILE, context_rows

    rows = context_rows(run_dir, cfg.train.context_fraction, cfg.evaluate.rag_k, cfg.evaluate.rag_tokenizer, cfg.train_seed,
                        lines=cfg.train.context_lines, swaps=cfg.train.context_swaps,
                        distractors=cfg.train.context_distractors)
    if save:
        write_jsonl(rows, Path(run_dir) / "train" / CONTEXT_FILE)
    return add_rows(ds, rows, cfg.train.system_prompt), rows


@dataclass
class Student:
    model: Any
    tokenizer: Any
    backend: str
    source: str  # what from_pretrained loaded


def load_student(spec: str, cfg: TrainSettings, seed: int) -> tuple[Student, Any]:
    """Load the student for training; returns it and the PEFT config (None when Unsloth already wrapped it)."""
    backend = choose_backend(cfg.backend)
    source = models.hf_model(spec)
    lora_kwargs = dict(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                       target_modules=cfg.lora_targets, use_rslora=cfg.lora_rslora)
    if backend == "unsloth":
        from unsloth import FastLanguageModel  # imported only once CUDA is known to exist

        unsloth_varlen.enable()  # packed rows: one varlen flash call per layer (see there)
        extra = {"device_map": {"": local_rank()}} if world_size() > 1 else {}  # DDP: one whole copy per GPU
        model, tok = FastLanguageModel.from_pretrained(model_name=source, max_seq_length=unsloth_seq_length(source, cfg),
                                                       load_in_4bit=cfg.load_in_4bit, dtype=None, **extra)
        lora_kwargs.update(layer_kwargs(cfg, model.config))
        model = FastLanguageModel.get_peft_model(model, bias="none", use_gradient_checkpointing=checkpointing_policy(),
                                                 random_state=seed, **lora_kwargs)
        align_end_of_turn(model, tok)
        return Student(model, tok, backend, source), None

    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not torch.cuda.is_available():
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world_size()))
    dtype = precision.dtype(cfg.precision)  # the frozen base in bf16 where that is fast (GPU, or a CPU with AMX)
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    if torch.cuda.is_available():
        model = model.to(f"cuda:{local_rank()}")
    align_end_of_turn(model, tok)
    peft_config = LoraConfig(task_type="CAUSAL_LM", bias="none", **lora_kwargs, **layer_kwargs(cfg, model.config))
    return Student(model, tok, backend, source), peft_config


def chat_end_token(tok) -> str | None:
    """The special token the chat template closes an assistant turn with (``<|im_end|>`` for Qwen and SmolLM2,
    ``<|eot_id|>`` for Llama 3); None when the template has none."""
    mark = "TUNEBOOK-END-MARK"
    try:
        text = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": mark}],
                                       tokenize=False)
    except Exception:
        return None
    if mark not in text:
        return None
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    after = tok(text[text.rindex(mark) + len(mark):], add_special_tokens=False)["input_ids"]
    return next((tok.convert_ids_to_tokens(i) for i in after if i in special), None)


def align_end_of_turn(model, tok) -> dict[str, Any]:
    """Tokenizer, model config and generation config agree on EOS (the chat template's end-of-turn token), PAD and
    BOS before the trainer is built.

    A GGUF-dequantized student often disagrees with itself: Qwen2.5's tokenizer says EOS = ``<|endoftext|>`` while
    its config says ``<|im_end|>``, which ends every chat turn; SmolLM2's GGUF tokenizer even says ``<|im_start|>``.
    The trainer would then "align" the model to the tokenizer (the warning "The tokenizer has new PAD/BOS/EOS
    tokens …") and the saved adapter and the exports made from it would stop at a token the chat never produces.
    Returns the ids now in force."""
    end = chat_end_token(tok)
    if end is not None and tok.eos_token != end:
        tok.eos_token = end
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ids = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id}
    configs = [model.config, getattr(model, "generation_config", None)]
    text_config = getattr(model.config, "get_text_config", None)
    if text_config is not None:
        configs.append(text_config())
    for conf in configs:
        if conf is not None:
            for k, v in ids.items():
                setattr(conf, k, v)
    return ids


def unsloth_seq_length(source: str, cfg: TrainSettings) -> int:
    """Unsloth caps SFTConfig.max_length at the model's ``max_seq_length``, so a packed micro-batch needs it as large
    as the token budget (measured: with the per-row limit there, packing silently shrank to one row a step) — but
    never above the model's positions, where Unsloth would switch on RoPE scaling and change the model."""
    from transformers import AutoConfig

    seq = max(cfg.max_length, cfg.token_budget)
    conf = AutoConfig.from_pretrained(source)
    conf = getattr(conf, "text_config", None) or conf
    limit = getattr(conf, "max_position_embeddings", None)
    return min(seq, limit) if limit else seq


# what unsloth_varlen.enable() replaced (the same dict; benchmarks/train_throughput.py switches it back from here)
_UNSLOTH_ATTENTION_ORIGINAL = unsloth_varlen.SAVED


def world_size() -> int:
    """Processes in this training run (>1 under ``accelerate launch`` / torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def checkpointing_policy(free_gib_needed: float = 40.0):
    """Unsloth's offloaded gradient checkpointing only when the card is short of memory; off otherwise (measured:
    off is 1.1–1.2× faster at a 8–12k token budget on an H200, 26–38 GiB peak for a 3B model)."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    return False if free / 2**30 >= free_gib_needed else "unsloth"


def token_budget(cfg: TrainSettings, train_tokens: int | None) -> int:
    """Tokens per packed micro-batch on GPU: ``train.token_budget``, smaller for small datasets so an epoch still
    has ~20 optimizer steps, never below one row's ``max_length``."""
    budget = cfg.token_budget
    if train_tokens:
        budget = min(budget, train_tokens // 20)
    return max(cfg.max_length, budget)


def count_tokens(dataset, tokenizer) -> int:
    """Tokens of the prompt/completion rows as the chat template renders them (for the GPU token budget)."""
    total = 0
    for row in dataset:
        total += len(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True))
    return total


def sft_config(cfg: TrainSettings, out_dir: Path, seed: int, has_eval: bool, backend: str,
               train_tokens: int | None = None):
    """Training arguments. CPU: padded batches of ``batch_size`` grouped by length, bf16 where the CPU has it fast, no checkpointing. Unsloth on GPU: rows
    packed best-fit-decreasing into a token budget per micro-batch (padding-free), the same optimizer as on CPU
    (Unsloth would otherwise switch to 8-bit AdamW with weight decay)."""
    import torch
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    evaluating = bool(has_eval and cfg.eval_steps)
    packed = backend == "unsloth"
    if packed:
        print(f"note: train.batch_size ({cfg.batch_size}) sets only the eval batch on the Unsloth path; training rows "
              f"are packed into micro-batches of up to {token_budget(cfg, train_tokens)} tokens (train.token_budget)")
    # packed: few, large steps; log every 10, but at least 4 points for a short run's loss plot
    log_every = min(10, max(1, cfg.max_steps // 4)) if cfg.max_steps > 0 else 10
    shape: dict = (dict(per_device_train_batch_size=1, max_length=token_budget(cfg, train_tokens), packing=True,
                        packing_strategy="bfd", logging_steps=log_every)
                   if packed else
                   dict(per_device_train_batch_size=cfg.batch_size, max_length=cfg.max_length, packing=False,
                        logging_steps=1 if not cuda else 5,
                        # rows of similar length together, from a new random mega-batch of a few batches each
                        # time: less padding, and DDP ranks get batches of similar length
                        train_sampling_strategy="group_by_length"))
    return SFTConfig(
        output_dir=str(out_dir / CHECKPOINT_DIR),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        weight_decay=0.0, lr_scheduler_type="cosine", warmup_steps=0,
        include_num_input_tokens_seen="non_padding",
        **shape,
        save_strategy="steps",
        # with eval on, checkpoints follow the evals and the best one (lowest eval loss) is loaded at the end
        save_steps=cfg.eval_steps if evaluating else cfg.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=cfg.eval_steps if evaluating else None,
        load_best_model_at_end=evaluating,
        metric_for_best_model="eval_loss" if evaluating else None,
        greater_is_better=False if evaluating else None,
        completion_only_loss=True,
        neftune_noise_alpha=cfg.neftune_alpha or None,
        bf16=precision.resolve(cfg.precision) == "bf16",  # autocast; the LoRA weights stay float32
        fp16=False,
        gradient_checkpointing=False if not cuda else backend == "hf",  # Unsloth sets its own in load_student
        # non-reentrant checkpointing and no unused-parameter search: what DDP over a LoRA model needs
        gradient_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=False if world_size() > 1 else None,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        use_cpu=not cuda,
    )


def _complete(ckpt: Path) -> bool:
    """The Trainer writes trainer_state.json last; a checkpoint killed mid-save lacks it (or has it cut short)."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(out_dir: Path) -> str | None:
    """The newest *complete* checkpoint; one a crash left half-written is skipped (the Trainer rewrites it)."""
    d = out_dir / CHECKPOINT_DIR
    if not d.is_dir():
        return None
    found = sorted((p for p in d.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for ckpt in found:
        if _complete(ckpt):
            return str(ckpt)
        print(f"skipping {ckpt.name}: written only in part (the run was stopped while saving it)")
    return None


def masked_example_html(trainer, index: int = 0) -> str:
    """One training example, decoded token by token; trained (answer) tokens highlighted."""
    ex = trainer.train_dataset[index]
    batch = trainer.data_collator([ex])
    ids = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    if all(lab == -100 for lab in labels):
        raise RuntimeError("every label of the first training example is masked: the model would learn nothing. "
                           "Check the chat template and train.max_length.")
    tok = trainer.processing_class
    spans = []
    for tid, lab in zip(ids, labels):
        piece = html.escape(tok.decode([tid]))
        style = "background:#c7f0c2" if lab != -100 else "color:#888"
        spans.append(f"<span style='{style}'>{piece}</span>")
    trained = sum(lab != -100 for lab in labels)
    return (f"<p>{trained} of {len(ids)} tokens are trained (green); grey tokens are the prompt and template.</p>"
            f"<pre style='white-space:pre-wrap'>{''.join(spans)}</pre>")


def check_batch_masking(trainer, n: int = 8) -> None:
    """Fail loudly if any of the first examples has every label masked (e.g. the answer was truncated away)."""
    bad = []
    for i in range(min(n, len(trainer.train_dataset))):
        batch = trainer.data_collator([trainer.train_dataset[i]])
        if bool((batch["labels"][0] == -100).all()):
            bad.append(i)
    if bad:
        raise RuntimeError(f"training examples {bad} have every label masked: raise train.max_length or shorten answers")


def make_trainer(student: Student, peft_config, train_ds, eval_ds, args, callbacks=(), distill: list[dict] = (),
                 kl_weight: float = 1.0, prompt_kl: float = 0.0):
    """The SFT trainer; ``distill`` (``train.replay_kl`` > 0): the replay rows mixed into ``train_ds``, trained to
    the base's whole distribution instead of its greedy answer, the KL times ``kl_weight`` (:mod:`tunebook.distill`)."""
    from transformers import PrinterCallback
    from trl import SFTTrainer

    from . import distill as distillation

    if distill and not distillation.applies(student.backend):
        print(distillation.fallback_note(student.backend))
        distill = ()
    trainer = (distillation.trainer_class() if distill else SFTTrainer)(
        model=student.model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=student.tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # with tqdm off it prints every log dict; LiveLoss shows them instead
    if distill:
        distillation.enable(trainer, list(distill), kl_weight, prompt_kl)
    return trainer


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def train(trainer, out_dir: Path, backend: str = "") -> dict[str, Any]:
    resume = last_checkpoint(out_dir)
    if resume:
        print(f"resuming from {resume}")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    history = trainer.state.log_history
    main = is_main_process()  # under DDP only rank 0 writes
    if main:
        write_jsonl(history, out_dir / LOG_FILE)
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    tokens = trainer.state.num_input_tokens_seen or _tokens_seen(history)
    metrics = {
        "backend": backend,
        "processes": world_size(),
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 3),
        "runtime_s": round(seconds, 2),
        "train_runtime_s": round(result.metrics.get("train_runtime", seconds), 2),
        "resumed_from": resume,
        "tokens": int(tokens),
        "tokens_per_s": round(tokens / seconds, 2) if seconds and tokens else None,
        "peak_memory_mb": peak_memory_mb(),
        "first_loss": train_losses[0] if train_losses else None,
        "final_loss": train_losses[-1] if train_losses else None,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "train_loss": result.metrics.get("train_loss"),
    }
    from .distill import mean_kl

    kl = mean_kl(trainer)
    if kl is not None:  # train.replay_kl: the replay tokens' KL from the base, per token, and its weight
        metrics["replay_kl_per_token"], metrics["replay_kl_weight"] = kl, trainer.kl_weight
    if main:
        write_json(metrics, out_dir / METRICS_FILE)
    return metrics


def _tokens_seen(history: list[dict]) -> int:
    vals = [h.get("num_tokens") for h in history if h.get("num_tokens")]
    return int(max(vals)) if vals else 0


def save_adapter(trainer, student: Student, cfg: TrainSettings, spec: str, out_dir: Path) -> Path:
    d = out_dir / ADAPTER_DIR
    if not is_main_process():
        return d
    trainer.model.save_pretrained(str(d))
    student.tokenizer.save_pretrained(str(d))
    if cfg.adapter_scale != 1.0:
        scale_adapter(d, cfg.adapter_scale)
    (d / "tunebook_train.json").write_text(json.dumps(
        {"student": spec, "loaded_from": student.source, "backend": student.backend, "settings": cfg.model_dump()},
        indent=2, ensure_ascii=False))
    return d
