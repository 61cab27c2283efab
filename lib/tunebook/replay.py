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


def prompts_path(name: str | Path = "replay.yaml") -> Path:
    """``train.replay_prompts``: a file name in ``params/prompts`` or a path (relative to the project)."""
    from .paths import prompt_file

    here = prompt_file(name)
    if not here.is_file():
        known = sorted(x.name for x in (PARAMS_DIR / "prompts").glob("replay*.yaml"))
        raise FileNotFoundError(f"train.replay_prompts={str(name)!r}: no such file ({here}); the ones in "
                                f"params/prompts: {', '.join(known)}")
    return here


def prompts(name: str | Path = "replay.yaml") -> list[str]:
    """The replay's prompts in the order 04 asks them (``train.replay_prompts``)."""
    import yaml

    return [str(q) for q in yaml.safe_load(prompts_path(name).read_text(encoding="utf-8")) or []]


def count_for(train_rows: int, fraction: float, available: int) -> int:
    """Replay rows so that they make up ``fraction`` of the mixed train set (0: none)."""
    if fraction <= 0:
        return 0
    return min(available, max(1, round(train_rows * fraction / (1 - fraction))))


def _key(student: str, system_prompt: str, max_new_tokens: int, qs: list[str]) -> str:
    return hashlib.sha256(json.dumps([student, system_prompt, max_new_tokens, qs]).encode()).hexdigest()[:16]


def make_rows(model, tok, student: str, n: int, data_dir: Path, system_prompt: str = "", max_new_tokens: int = 128,
              batch_size: int = 8, backend: str = "hf", prompts_file: str = "replay.yaml") -> list[dict[str, Any]]:
    """``n`` replay rows (``messages`` like train.jsonl, ``split`` = ``replay``), the base student's greedy answers,
    cached in ``data/replay.jsonl`` under a key of student, prompts, length and ``n``. Answers cut at the length limit
    are left out (a truncated target would teach truncation) and the next prompts asked instead, until there are
    ``n`` or no prompts left: taking only the first ``n`` prompts, 7 asked at fraction 0.1 gave 2 rows (session
    20)."""
    qs = prompts(prompts_file)
    if not qs or n <= 0:
        return []
    key = _key(student, system_prompt, max_new_tokens, [*qs, f"n={n}"])
    path = Path(data_dir) / REPLAY_FILE
    if path.is_file():
        rows = read_jsonl(path)
        if rows and all(r.get("key") == key for r in rows):
            return rows
    from .answering import generating, greedy_ended
    from .chat import chat_messages
    from .progress import bar

    rows = []  # the model is about to be trained: its LoRA B is still zero, so these are the base's answers
    with generating(model, tok, backend), bar(total=n, desc="replay: base answers") as pbar:
        contiguous_head_input(model)  # bf16 on a CPU: see tunebook.precision
        i = 0
        while len(rows) < n and i < len(qs):
            batch = qs[i:i + min(batch_size, max(1, n - len(rows)))]
            i += len(batch)
            texts = [tok.apply_chat_template(chat_messages(q, system_prompt), tokenize=False,
                                             add_generation_prompt=True) for q in batch]
            for q, (answer, ended) in zip(batch, greedy_ended(model, tok, texts, max_new_tokens)):
                if answer and ended:  # a batch asks at most the rows still missing
                    rows.append({"id": "replay-" + hashlib.sha256(q.encode()).hexdigest()[:12], "key": key,
                                 "split": "replay", "chunk_id": "", "source": "replay", "lang": "",
                                 "messages": [{"role": "user", "content": q},
                                              {"role": "assistant", "content": answer}]})
                    pbar.update(1)
        pbar.total = len(rows)  # fewer when the prompts ran out: the bar still ends at 100 %
        pbar.refresh()
    tok.padding_side = "right"  # as 04's trainer had it before the replay asked
    write_jsonl(rows, path)
    return rows


def passes(epochs: float, rotate: bool) -> int:
    """How many slices of replay rows 04 asks for: one per pass over the train split with ``train.replay_rotate``
    (``ceil(epochs)``), else one slice trained in every pass."""
    import math

    return max(1, math.ceil(epochs)) if rotate else 1


class RotatingSampler:
    """The trainer's own sampler over the documentation rows plus *one* slice of replay rows, its indices mapped so
    that pass ``e`` over the train split trains slice ``e`` (``epoch()``: the passes done, read when a pass begins,
    so a resumed run picks up the slice of the pass it resumes). Steps per pass, order and batching are those of the
    plain replay; only which general prompts a pass meets changes."""

    def __init__(self, inner, keep: list[int], slices: list[list[int]], epoch):
        self.inner, self.keep, self.slices, self.epoch = inner, keep, slices, epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        rows, k = self.slices[int(self.epoch() + 1e-6) % len(self.slices)], len(self.keep)
        for j in self.inner:
            yield self.keep[j] if j < k else rows[(j - k) % len(rows)]


def rotate(trainer, rows: list[dict], n_slices: int) -> list[list[int]]:
    """``train.replay_rotate``: ``trainer`` (its train set holding every replay row ``rows``) meets another
    ``1/n_slices`` of them in each pass over the train split — as many replay rows per pass as without rotating, so
    no slower, but five times the general prompts over five passes (diversity over repetition, as for the docs'
    facts). Wraps the trainer's ``_get_train_sampler`` (transformers 5.x: called with the train set by
    ``get_train_dataloader``). Returns the train-set indices of each slice."""
    from .distill import _key

    ds = trainer.train_dataset
    where = {_key(r["messages"][:-1], r["messages"][-1:]): i for i, r in enumerate(rows)}
    of = [where.get(_key(p, c)) for p, c in zip(ds["prompt"], ds["completion"])]
    found = sum(x is not None for x in of)
    if found != len(rows):
        raise RuntimeError(f"train.replay_rotate: {len(rows)} replay rows, {found} in the train set")
    per = max(1, -(-len(rows) // n_slices))  # ceil: the last slice may be shorter (its rows then repeat)
    slices = [[i for i, x in enumerate(of) if x is not None and x // per == s] for s in range(n_slices)]
    slices = [s for s in slices if s]
    keep = [i for i, x in enumerate(of) if x is None]
    inner_fn = trainer._get_train_sampler

    def sampler(train_dataset=None):
        view = (train_dataset if train_dataset is not None else trainer.train_dataset).select(keep + slices[0])
        return RotatingSampler(inner_fn(view), keep, slices, lambda: trainer.state.epoch or 0)

    trainer._get_train_sampler = sampler
    return slices


def mix_in(student, cfg, data_dir: Path, train_ds, first=None) -> tuple[Any, list[dict], int]:
    """04's replay, the one way into training for the notebook and for every DDP rank: ``train.replay_fraction`` of
    the mixed train set asked of the base ``student`` (a :class:`tunebook.train.Student`, its LoRA not trained yet)
    and appended to ``train_ds``. Returns the mixed set, the replay rows and the number of slices to rotate
    (``train.replay_rotate``; 1: every pass trains all rows). ``first``: a context manager under which one process
    asks while the others wait (DDP: ``PartialState().main_process_first``), so they read its ``data/replay.jsonl``."""
    import contextlib

    from .train import add_rows

    n = count_for(len(train_ds), cfg.train.replay_fraction, len(prompts(cfg.train.replay_prompts)))
    if not n:
        return train_ds, [], 1
    slices = passes(cfg.train.epochs, cfg.train.replay_rotate)
    with (first or contextlib.nullcontext)():
        rows = make_rows(student.model, student.tokenizer, cfg.student, n * slices, data_dir, cfg.train.system_prompt,
                         backend=student.backend, prompts_file=cfg.train.replay_prompts)
    return add_rows(train_ds, rows, cfg.train.system_prompt), rows, slices
