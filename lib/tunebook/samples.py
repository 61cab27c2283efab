"""04, last — a few sample generations of the freshly trained student, inline (what the Unsloth flow did right after
training): three training questions and one held-out question, answered greedily by the saved adapter on its base.

It loads and generates exactly as 05 does (:func:`evaluate.load_tuned`, :func:`evaluate.generate`): the adapter as
it was saved, on CPU or GPU as trained, with the same chat template and system prompt.
"""

from __future__ import annotations

import html
import random
from pathlib import Path
from typing import Any

from .jsonio import read_jsonl
from .train import ADAPTER_DIR

MAX_NEW_TOKENS = 48  # short: a glance at what it learned, cheap on a CPU


def pick(train_rows: list[dict], eval_rows: list[dict], n_train: int = 3, n_eval: int = 1,
         seed: int = 0) -> list[dict[str, str]]:
    """``n_train`` training questions (not "docs don't say" items, not rewordings) and ``n_eval`` held-out ones
    (a recall paraphrase first), as ``{"id", "split", "question", "reference"}``; the same picks for a seed."""
    rng = random.Random(seed)
    plain = [r for r in train_rows if r.get("kind") != "abstain" and not r.get("reworded_from")] or train_rows
    trained = rng.sample(plain, min(n_train, len(plain)))
    ranked = sorted(eval_rows, key=lambda r: {"recall": 0, "unseen": 1}.get(r.get("split", ""), 2))
    held = ranked[:n_eval]

    def row(r: dict, split: str) -> dict[str, str]:
        return {"id": r.get("id", ""), "split": split, "question": r["messages"][0]["content"],
                "reference": r["messages"][-1]["content"]}

    return [row(r, "train") for r in trained] + [row(r, r.get("split", "eval")) for r in held]


def adapter_base(adapter_dir: Path, rec: dict[str, Any] | None = None) -> tuple[str, str]:
    """The base model the adapter was trained on (what 04 loaded) and the system prompt it was trained with."""
    from .evaluate import trained_record

    rec = rec or trained_record(Path(adapter_dir))
    if not rec["loaded_from"]:
        from .models import hf_model

        return hf_model(rec["student"]), rec["system_prompt"]
    return rec["loaded_from"], rec["system_prompt"]


def generate(adapter_dir: Path, rows: list[dict[str, str]], max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict[str, str]]:
    """``rows`` (from :func:`pick`) with the fine-tuned student's greedy ``answer``, in the precision 04 trained in."""
    from .evaluate import generate as answer, load_tuned, trained_record

    if not rows:
        return []
    rec = trained_record(Path(adapter_dir))
    source, system_prompt = adapter_base(adapter_dir, rec)
    model, tok = load_tuned(Path(adapter_dir), source, rec["precision"])
    answers = answer(model, tok, [r["question"] for r in rows], max_new_tokens, batch_size=len(rows), adapter=True,
                     system_prompt=system_prompt, desc="sample answers")
    del model
    return [{**r, "answer": a} for r, a in zip(rows, answers)]


def table_html(rows: list[dict[str, Any]], max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """Question / reference / answer, one row each, with the split the question comes from."""
    head = "<tr><th>from</th><th>question</th><th>reference</th><th>fine-tuned answer</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r['split'])}</td><td>{html.escape(r['question'])}</td>"
        f"<td>{html.escape(r['reference'])}</td><td>{html.escape(r.get('answer', ''))}</td></tr>"
        for r in rows)
    return (f"<p>Greedy, at most {max_new_tokens} new tokens (an answer may stop mid-sentence); 05 asks every "
            f"held-out question and scores the answers.</p><table class='tunebook-samples'>{head}{body}</table>")


def show(run_dir: Path, seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """04's last cell: pick, load the saved adapter, answer, and return the HTML table."""
    data = Path(run_dir) / "data"
    rows = pick(read_jsonl(data / "train.jsonl"), read_jsonl(data / "eval.jsonl"), seed=seed)
    return table_html(generate(Path(run_dir) / "train" / ADAPTER_DIR, rows, max_new_tokens), max_new_tokens)
