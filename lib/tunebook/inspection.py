"""03 — look at the synthesized pairs, drop bad and duplicate ones, and split train/eval without leaks.

The split groups rows by chunk, so no chunk contributes to both train and eval. Files are written in the chat
``messages`` form that 04 trains on.
"""

from __future__ import annotations

import html
import json
import os
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import InspectSettings

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
REPORT_FILE = "inspect_report.json"

_META = re.compile(r"(根据(文本|文档|上文|本文|片段)|文中|本文|上文|according to the (text|passage|document|excerpt)|"
                   r"the (text|passage|excerpt) (says|states|mentions)|in this (text|passage|excerpt))", re.I)
_REFUSAL = re.compile(r"(I('m| am) sorry|I cannot|as an AI|无法回答|抱歉)", re.I)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\W_]+", "", text)


@dataclass
class InspectResult:
    kept: list[dict]
    dropped: list[dict]
    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def filter_rows(rows: list[dict], cfg: InspectSettings) -> tuple[list[dict], list[dict]]:
    """Drop exact duplicates (normalised question) and rows failing the quality checks; each drop gets a reason."""
    kept: list[dict] = []
    dropped: list[dict] = []
    seen: dict[str, str] = {}
    for r in rows:
        q, a = r.get("question", "").strip(), r.get("answer", "").strip()
        reason = None
        if not q or not a:
            reason = "empty field"
        elif len(a) < cfg.min_answer_chars:
            reason = "answer too short"
        elif _META.search(q):
            reason = "meta-phrasing in question"
        elif _REFUSAL.search(a):
            reason = "refusal"
        else:
            key = normalize(q)
            if key in seen:
                reason = f"duplicate of {seen[key]}"
            else:
                seen[key] = r["id"]
        if reason:
            dropped.append({**r, "drop_reason": reason})
        else:
            kept.append(r)
    return kept, dropped


def split_by_chunk(rows: list[dict], cfg: InspectSettings, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole chunks for eval, so train and eval share no chunk (and no pair)."""
    chunks = sorted({r["chunk_id"] for r in rows})
    rng = random.Random(seed)
    rng.shuffle(chunks)
    if len(chunks) < 2:
        raise ValueError(f"need pairs from at least 2 chunks to split train/eval, got {len(chunks)}: add docs or "
                         "lower synth.chunk_tokens")
    n_eval = max(1, round(len(chunks) * cfg.eval_fraction))
    n_eval = min(n_eval, len(chunks) - 1)
    eval_chunks = set(chunks[:n_eval])
    # top up to min_eval rows when held-out chunks are tiny
    i = n_eval
    while sum(r["chunk_id"] in eval_chunks for r in rows) < cfg.min_eval and i < len(chunks) - 1:
        eval_chunks.add(chunks[i])
        i += 1
    train = [r for r in rows if r["chunk_id"] not in eval_chunks]
    evals = [r for r in rows if r["chunk_id"] in eval_chunks]
    return train, evals


def to_messages(r: dict, split: str) -> dict:
    user = r["question"] if not r.get("input") else f"{r['input']}\n\n{r['question']}"
    return {
        "id": r["id"],
        "split": split,
        "chunk_id": r["chunk_id"],
        "source": r["source"],
        "lang": r.get("lang", ""),
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": r["answer"]}],
    }


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def run(rows: list[dict], chunks: list[dict], cfg: InspectSettings, seed: int, data_dir: Path) -> InspectResult:
    kept, dropped = filter_rows(rows, cfg)
    train, evals = split_by_chunk(kept, cfg, seed)
    write_jsonl([to_messages(r, "train") for r in train], Path(data_dir) / TRAIN_FILE)
    write_jsonl([to_messages(r, "eval") for r in evals], Path(data_dir) / EVAL_FILE)
    covered = {r["chunk_id"] for r in rows}
    report = {
        "rows_in": len(rows),
        "kept": len(kept),
        "dropped": len(dropped),
        "drop_reasons": dict(Counter(d["drop_reason"].split(" of ")[0] for d in dropped)),
        "train": len(train),
        "eval": len(evals),
        "train_chunks": len({r["chunk_id"] for r in train}),
        "eval_chunks": len({r["chunk_id"] for r in evals}),
        "chunks_total": len(chunks),
        "chunks_without_pairs": len([c for c in chunks if c["id"] not in covered]),
        "languages": dict(Counter(r.get("lang", "?") for r in kept)),
        "per_source": dict(Counter(r["source"] for r in kept)),
        "seed": seed,
    }
    (Path(data_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return InspectResult(kept=kept, dropped=dropped, train=train, eval=evals, report=report)


def sample_table(rows: list[dict], n: int, seed: int = 0) -> str:
    """A static HTML table of sample rows (shows in papermill reports, where widgets don't)."""
    rng = random.Random(seed)
    pick = rows if len(rows) <= n else rng.sample(rows, n)
    head = "<tr><th>source</th><th>question</th><th>answer</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r['source'])}</td><td>{html.escape(r['question'])}</td>"
        f"<td>{html.escape(r['answer'])}</td></tr>"
        for r in pick
    )
    return f"<table class='tunebook-samples'>{head}{body}</table>"
