"""Where a fine-tuned answer's values come from: the run's own training pairs, or the chunks in its prompt.

A small student that has learned "the simulation limit is 366 days" answers "366 days" when asked about the trial
period, and is sure of it — the confidence gate (:func:`tunebook.answering.gate`) cannot see such a *transplanted*
value. The training set can: every trained pair that names 366 asks about something else. 05's provenance gate
(``evaluate.provenance_below``, 0.1; ``benchmarks/provenance_gate.py`` measures it on finished runs)
turns an answer whose trained values all come from pairs about other things into "the docs don't cover this".
"""

from __future__ import annotations

import functools
import re
from typing import Iterable

from .outcomes import mentions, names, new_values, quantities, values
from .pairs import answer, question
from .retrieval import Tokenizer, term_set, terms


def stems(text: str, tokenizer: Tokenizer = "jieba") -> set[str]:
    """The text's terms (:func:`tunebook.retrieval.terms`: words, jieba for Chinese, no stop words), English words
    cut to their Snowball stem: "exporting results" and "export a result" share both (a reworded question changes
    the word's form more often than the word)."""
    english = _english()
    return {english.stemWord(t) if _WORD.fullmatch(t) else t for t in terms(text, tokenizer)}


_WORD = re.compile(r"[a-z]+")


@functools.cache
def _english():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


def overlap(a: str, b: str, tokenizer: Tokenizer = "jieba", common: frozenset[str] = frozenset()) -> float:
    """Jaccard share of the two texts' :func:`stems`, leaving out ``common`` ones (the product's name, asked in
    every other question)."""
    return _jaccard(stems(a, tokenizer), stems(b, tokenizer), common)


def _jaccard(x: set[str], y: set[str], common: frozenset[str]) -> float:
    x, y = x - common, y - common
    return len(x & y) / max(1, len(x | y))


class TrainedValues:
    """The trained pairs (rows of ``data/train.jsonl``, rewordings included) as (lower-cased answer, the question's
    :func:`stems`), cut once."""

    def __init__(self, rows: Iterable[dict], tokenizer: Tokenizer = "jieba"):
        from collections import Counter

        rows = [r for r in rows if question(r) and answer(r)]
        self.pairs = [(answer(r).lower(), stems(question(r), tokenizer)) for r in rows]
        self.questions = [question(r).lower() for r in rows]
        self.tokenizer = tokenizer
        df = Counter(t for _, ts in self.pairs for t in ts)
        # terms in a quarter of the trained questions (at least 3) say what the docs are about, not which fact
        self.common = frozenset(t for t, n in df.items() if n >= max(3, len(self.pairs) / 4))

    def transplanted(self, text: str, asked: str, below: float) -> list[str]:
        """The values ``text`` names (that ``asked`` does not) which it can only have from trained pairs about
        something else — each such pair's question shares < ``below`` of its terms with ``asked`` — when *every*
        trained value of ``text`` is such; else []. A value no pair names (made up, or from the base model) is
        not this check's business: the confidence gate and the invented-value rate see those."""
        found, want = [], stems(asked, self.tokenizer)
        for v in new_values(text, asked):
            src = [ts for a, ts in self.pairs if mentions(a, v)]  # the trained questions whose answer names v
            if not src:
                continue
            if max(_jaccard(want, ts, self.common) for ts in src) >= below:
                return []  # one value comes from a pair about this very question: the answer is grounded
            found.append(v)
        return found

    def recites(self, text: str, asked: str, about: float, same: float = 0.8) -> bool:
        """``text`` repeats a trained answer (character ROUGE-L ≥ ``same``: the same characters in the same order) of
        a pair whose question shares ≥ ``about`` of its terms with ``asked``: the student reciting what it learned
        for this question, however unsure one of its tokens was. Every value the asked question names (`BW-101`,
        `--seed`) must be in the trained question too: "BW-310 的含义是什么？" shares most of its words with "BW-101 的含义
        是什么？" and is not about it. Measured (RESULTS.md, session 17): the confidence gate stopped such recitals of
        right answers on CloudPSS — long Chinese answers have more chances for one token under 0.4."""
        from .text import rouge_l

        if not text.strip() or about <= 0:
            return False
        want, low = stems(asked, self.tokenizer), text.lower()
        named = [v for v in values(asked) if v.lower() not in self.common]  # the product's name is no fact's
        return any(_jaccard(want, ts, self.common) >= about and all(mentions(q, v) for v in named)
                   and rouge_l(low, a) >= same for (a, ts), q in zip(self.pairs, self.questions))


def agrees(text: str, closed_book: str, asked: str) -> bool:
    """``text`` (an answer given with chunks in the prompt) says what ``closed_book`` (the same student's answer
    without them) says: the same sentence (case, spaces and the closing full stop aside), or the same values —
    each names every value the other names beyond the question's, and there is at least one. The chunks in a RAG
    prompt lower the student's confidence in the very answer it gives surely without them (the demo's "执行 `bwatt run
    harbour.bwm` 命令运行仿真。": 0.84 closed-book, 0.32 with its chunk; RESULTS.md, session 26); when the closed-book
    answer passed the gates, the agreeing one adds no value the gates did not let through."""
    def norm(s: str) -> str:
        return re.sub(r"[\s。．.!！]+$", "", re.sub(r"\s+", " ", s.strip())).casefold()

    if not text.strip() or not closed_book.strip():
        return False
    if norm(text) == norm(closed_book):
        return True
    said, known = new_values(text, asked), new_values(closed_book, asked)
    return bool(said) and all(names(closed_book, v) for v in said) and all(names(text, v) for v in known)


_SENTENCE = re.compile(r"\n|(?<=[。！？；])|(?<=[.!?;])\s")
_HYPHEN = re.compile(r"(\d)-(?=[^\W\d])")  # "30-day" → "30 day": a quantity as quantities() reads it


def grounded(text: str, asked: str, context: str, common: frozenset[str] = frozenset(),
             tokenizer: Tokenizer = "jieba") -> bool:
    """``text`` (an answer given with ``context``, a RAG prompt's chunks, in it) reads its values from the context:
    it names at least one value ``asked`` does not, each of them stands in a sentence (or table row) of the context
    that shares a term with the question — ``common`` terms (:meth:`tunebook.retrieval.Index.common_terms`) and
    one-character words aside — and every value the question names (`max_memory`, a flag) is in the context. A
    question about a parameter the chunk never names is not grounded, nor is a value copied from a sentence that
    shares no term with the question — one generic shared word ("how *long* is the trial" and "keys are 25
    characters *long*") is enough, so a copied number must also keep its unit."""
    said = new_values(text, asked)
    if not context or not said or not all(names(context, v) for v in values(asked)):
        return False
    want = {t for t in term_set(asked, tokenizer) if len(t) > 1} - common
    about = [s for s in _SENTENCE.split(context) if s.strip() and want & term_set(s, tokenizer)]
    # a number with a unit needs that unit there too ("25 days" is not read off "25 characters"; "30-day" counts)
    there = {q for s in about for q in quantities(_HYPHEN.sub(r"\1 ", s))}
    return all(any(names(s, v) for s in about) for v in said) and set(quantities(text)) <= there

