"""Replay against forgetting: general instructions answered by the base student itself, mixed into training.

Fine-tuning a small model on a few hundred documentation pairs pulls every answer towards the docs' style; mixing
in the model's *own* answers to general instructions (self-distillation: nothing is downloaded, and the targets
are what the model already says) keeps those abilities in place. The instructions live in
``params/prompts/replay.yaml`` and never overlap the forgetting check's ``general.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .jsonio import read_jsonl, write_jsonl
from .paths import PARAMS_DIR
from .precision import contiguous_head_input

REPLAY_FILE = "replay.jsonl"


def prompts(path: Path = PARAMS_DIR / "prompts" / "replay.yaml") -> list[str]:
    import yaml

    return [str(q) for q in yaml.safe_load(path.read_text(encoding="utf-8")) or []]


def count_for(train_rows: int, fraction: float, available: int) -> int:
    """Replay rows so that they make up ``fraction`` of the mixed train set (0: none)."""
    if fraction <= 0:
        return 0
    return min(available, max(1, round(train_rows * fraction / (1 - fraction))))


def _key(student: str, system_prompt: str, max_new_tokens: int, qs: list[str]) -> str:
    return hashlib.sha256(json.dumps([student, system_prompt, max_new_tokens, qs]).encode()).hexdigest()[:16]


def make_rows(model, tok, student: str, n: int, data_dir: Path, system_prompt: str = "", max_new_tokens: int = 128,
              batch_size: int = 8, backend: str = "hf") -> list[dict[str, Any]]:
    """``n`` replay rows (``messages`` like train.jsonl, ``split`` = ``replay``), the base student's greedy answers,
    cached in ``data/replay.jsonl`` under a key of student, prompts and length. Answers cut at the length limit
    are left out (a truncated target would teach truncation)."""
    qs = prompts()[:n]
    if not qs:
        return []
    key = _key(student, system_prompt, max_new_tokens, qs)
    path = Path(data_dir) / REPLAY_FILE
    if path.is_file():
        rows = read_jsonl(path)
        if rows and all(r.get("key") == key for r in rows):
            return rows
    import torch

    from .chat import chat_messages
    from .progress import bar

    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    texts = [tok.apply_chat_template(chat_messages(q, system_prompt), tokenize=False, add_generation_prompt=True)
             for q in qs]
    rows = []
    was_training = model.training
    if backend == "unsloth":  # Unsloth's models switch modes through FastLanguageModel (LoRA B is still zero)
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    contiguous_head_input(model)  # bf16 on a CPU: see tunebook.precision
    with torch.inference_mode(), bar(total=len(qs), desc="replay: base answers") as pbar:
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            for q, seq in zip(qs[i:i + batch_size], out[:, enc["input_ids"].shape[1]:]):
                ended = bool((seq == tok.eos_token_id).any()) or (pad is not None and bool((seq == pad).any()))
                answer = tok.decode(seq, skip_special_tokens=True).strip()
                if answer and ended:
                    rows.append({"id": "replay-" + hashlib.sha256(q.encode()).hexdigest()[:12], "key": key,
                                 "split": "replay", "chunk_id": "", "source": "replay", "lang": "",
                                 "messages": [{"role": "user", "content": q},
                                              {"role": "assistant", "content": answer}]})
            pbar.update(len(qs[i:i + batch_size]))
    tok.padding_side = "right"
    if backend == "unsloth":
        FastLanguageModel.for_training(model)
    if was_training:
        model.train()
    write_jsonl(rows, path)
    return rows
