"""A synthesized pair's question and answer, whatever the row's format, and the MinHash index 03 finds near
duplicates with (character 3-shingles: Chinese and English alike)."""

from __future__ import annotations

from typing import Any

from .text import shingles


def question(r: dict) -> str:
    """A pair's question: 02/03's ``instruction`` (or ``question``), or the user turn of a ``messages`` row."""
    if "instruction" in r or "question" in r or "messages" not in r:
        return r.get("instruction", r.get("question", "")).strip()
    return next((m["content"] for m in r["messages"] if m["role"] == "user"), "").strip()


def answer(r: dict) -> str:
    """A pair's answer: ``output`` (or ``answer``), or the last assistant turn of a ``messages`` row."""
    if "output" in r or "answer" in r or "messages" not in r:
        return r.get("output", r.get("answer", "")).strip()
    return next((m["content"] for m in reversed(r["messages"]) if m["role"] == "assistant"), "").strip()


def trained_facts(train_rows: list[dict]) -> list[dict]:
    """The facts 04 trains (``data/train.jsonl`` rows): 03's pairs, not their rewordings, "docs don't say" items
    or replay rows."""
    return [r for r in train_rows if r.get("kind") == "fact" and not r.get("reworded_from")]


# ---- similarity -----------------------------------------------------------------------------------------


def _minhash(text: str, num_perm: int = 128):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1)
    for s in shingles(text):
        m.update(s.encode("utf-8"))
    return m


class NearDup:
    """MinHash LSH index over character 3-shingles (works for Chinese and English alike)."""

    def __init__(self, threshold: float, num_perm: int = 128):
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.sigs: dict[str, Any] = {}
        self.texts: dict[str, str] = {}

    def query(self, text: str) -> str | None:
        """Key of an indexed text whose estimated Jaccard similarity is ≥ threshold (verified exactly)."""
        m = _minhash(text)
        sh = shingles(text)
        for key in self.lsh.query(m):
            other = shingles(self.texts[key])
            if sh and other and len(sh & other) / len(sh | other) >= self.threshold:
                return key
        return None

    def add(self, key: str, text: str) -> None:
        if key in self.sigs:
            return
        m = _minhash(text)
        self.sigs[key] = m
        self.texts[key] = text
        self.lsh.insert(key, m)
