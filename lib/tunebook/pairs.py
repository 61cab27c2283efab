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
    """The facts 04 trains (``data/train.jsonl`` rows): 03's pairs, not their rewordings, reverse questions,
    sibling contrasts, "docs don't say" items or replay rows."""
    return [r for r in train_rows if r.get("kind") == "fact" and not r.get("reworded_from") and not r.get("reverse_of")
            and not r.get("contrast_of")]


_BLANK = "___"
_MAX_STATEMENT = 160  # characters


def reverse_item(r: dict) -> tuple[str, str] | None:
    """The pair asked the other way round, as a cloze: the answer's statement with the one name the question asks
    about (a `setting`, flag, error code, file) blanked out — value → name, where the pair taught name → value
    (the reversal curse: a fact trained only as "A is B" is not recalled as "B is A"). ``'Fill in the blank about
    Brindlewatt CLI: "The default value for the ___ flag is `900` seconds."'`` → the whole statement. None when
    the question names no such thing (the page's own product name is none) or several, the answer adds nothing to
    the question, or the statement is long or names the thing more than once (steps, explanations: not a
    relation). Built from the pair alone, no teacher: the bundled 1.5B teacher, asked to reverse a pair, restated
    it (0 of 12, 2026-12-02)."""
    import re

    from .outcomes import new_values, values
    from .text import grounding, is_chinese

    q, a = question(r), answer(r)
    names = list(dict.fromkeys(v.strip("`'\" ") for v in values(q)))
    topic = (r.get("headings") or [""])[0] or r.get("source", "")
    names = [n for n in names if n and not re.fullmatch(r"[\d.,:/-]+", n) and n.lower() not in topic.lower()]
    if len(names) != 1 or (not new_values(a, q) and grounding(a, q) >= 0.7):
        return None  # several names (which one?), none, or an answer that only restates its question
    name = names[0]
    zh = is_chinese(q)
    mark = re.compile(rf"`{re.escape(name)}`|(?<![\w-]){re.escape(name)}(?![\w-])", re.I)
    statement = a if mark.search(a) else (f"{name}：{a}" if zh else f"{name}: {a}")
    masked = mark.sub(_BLANK, statement)
    if (len(statement) > _MAX_STATEMENT or masked.count(_BLANK) != 1 or name.lower() in masked.lower()
            or not re.search(r"\w", masked.replace(_BLANK, ""))):
        return None  # a relation is one short statement naming the thing once, not a paragraph of steps
    rq = f"关于{topic}，填空：“{masked}”" if zh else f'Fill in the blank about {topic}: "{masked}"'
    return rq, statement


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
