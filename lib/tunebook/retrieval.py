"""Retrieval, the baseline a fine-tune has to beat: BM25 over the run's chunks (bm25s), the top k put in the prompt.

Chinese has no spaces, so text is cut into terms first, either into words by jieba (``tokenizer="jieba"``) or into
overlapping character pairs (``"char2"``); ASCII words (names, parameters, numbers) are kept whole and lowercased
in both. ``benchmarks/retrieval.py`` measures which finds a question's source chunk more often.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from .text import CJK_CHARS

Tokenizer = Literal["jieba", "char2"]

_ASCII = re.compile(r"[A-Za-z0-9_]+(?:[.\-][A-Za-z0-9_]+)*")
_CJK_RUN = re.compile(f"[{CJK_CHARS}]+")
_STOP = {"the", "a", "an", "of", "to", "is", "are", "in", "on", "for", "and", "or", "what", "which", "how", "does",
         "do", "it", "be", "by", "with", "that", "this", "can", "i", "you", "的", "是", "了", "在", "和", "与", "吗",
         "什么", "如何", "怎么", "哪些", "多少", "为", "中", "时"}


def terms(text: str, tokenizer: Tokenizer = "jieba") -> list[str]:
    out = [w.lower() for w in _ASCII.findall(text)]
    for run in _CJK_RUN.findall(text):
        if tokenizer == "jieba":
            import jieba

            jieba.setLogLevel(logging.WARNING)
            out += [w for w in jieba.lcut(run) if w.strip()]
        else:
            out += [run[i:i + 2] for i in range(max(1, len(run) - 1))]
    return [t for t in out if t not in _STOP] or out


def term_set(text: str, tokenizer: Tokenizer = "jieba") -> set[str]:
    """:func:`terms` as a set: what two questions have in common."""
    return set(terms(text, tokenizer))


@dataclass
class Index:
    chunk_ids: list[str]
    texts: list[str]
    tokenizer: Tokenizer
    _bm25: object = None
    _common: frozenset[str] | None = None
    table_rows: bool = False  # :meth:`context` writes Markdown tables one self-contained line per row
    passage_lines: int = 0  # :meth:`context` keeps the line best matching the question and this many either side
    _idf: dict[str, float] | None = None
    _df: dict[str, int] | None = None

    @classmethod
    def build(cls, chunks: list[dict], tokenizer: Tokenizer = "jieba", table_rows: bool = False,
              passage_lines: int = 0) -> "Index":
        """One BM25 index over the chunks (``data/chunks.jsonl`` rows); the headings count as text. ``table_rows``:
        :meth:`context` writes tables as :func:`table_rows` (the index searches the chunks as written).
        ``passage_lines`` > 0: :meth:`context` gives of each chunk only the passage :func:`passage` cuts."""
        import os

        # bm25s runs a JAX call at import; with CUDA JAX installed that preallocates 75 % of the GPU in this process
        # (108 GiB of an H200, benchmarks/RESULTS.md run 8). BM25's top-k needs no JAX.
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import bm25s

        texts = [c["text"] for c in chunks]
        docs = [terms(" ".join(c.get("breadcrumb") or []) + "\n" + c["text"], tokenizer) for c in chunks]
        bm25 = bm25s.BM25()
        bm25.index(docs, show_progress=False)
        return cls([c["id"] for c in chunks], texts, tokenizer, bm25, table_rows=table_rows,
                   passage_lines=passage_lines)

    def search(self, questions: list[str], k: int) -> list[list[int]]:
        """Indices of the top-``k`` chunks for each question (best first)."""
        if not questions:
            return []
        k = min(k, len(self.chunk_ids))
        vocab = self._bm25.vocab_dict  # bm25s keys its vocabulary by term
        queries = [[t for t in terms(q, self.tokenizer) if t in vocab and t] for q in questions]
        known = [i for i, q in enumerate(queries) if q]  # a question sharing no term with the corpus finds nothing
        out: list[list[int]] = [[] for _ in questions]
        if known:
            docs, scores = self._bm25.retrieve([queries[i] for i in known], k=k, show_progress=False,
                                               backend_selection="numpy")
            for i, row, sc in zip(known, docs, scores):
                out[i] = [int(d) for d, s in zip(row, sc) if s > 0]
        return out

    def search_with_drafts(self, questions: list[str], drafts: list[str], k: int) -> list[list[int]]:
        """The question's top-``k`` chunks, then those the question *with a draft answer* finds that it did not
        (best first, at most ``2k``): the fine-tuned student's closed-book answer names the terms of the chunk it
        learned the fact from ("`bwatt run harbour.bwm`" for "如何启动仿真？") — HyDE's hypothetical document
        (Gao et al. 2022), written by a model that studied the docs. The question's own chunks stay first, so a
        made-up draft adds a chunk and takes none away."""
        plain = self.search(questions, k)
        guided = self.search([f"{q}\n{d}" for q, d in zip(questions, drafts)], k)
        return [list(dict.fromkeys(a + b)) for a, b in zip(plain, guided)]

    def doc_freq(self) -> dict[str, int]:
        """In how many chunks each term occurs (jieba/char2 terms, as searched). Counted once per index."""
        if self._df is None:
            from collections import Counter

            self._df = dict(Counter(t for text in self.texts for t in term_set(text, self.tokenizer)))
        return self._df

    def common_terms(self) -> frozenset[str]:
        """Terms in at least half of the chunks (and in two): the product's and the docs' own words, which say what
        every page is about rather than which fact a question asks for. Counted once per index."""
        if self._common is None:
            self._common = frozenset(t for t, n in self.doc_freq().items() if n >= max(2, len(self.texts) / 2))
        return self._common

    def idf(self) -> dict[str, float]:
        """Each term's inverse document frequency over the chunks (BM25's): a code such as ``BW-310`` that one chunk
        holds weighs far more than a word every page uses. Counted once per index."""
        if self._idf is None:
            import math

            n = len(self.texts)
            self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in self.doc_freq().items()}
        return self._idf

    def context(self, idx: list[int], about: str = "") -> str:
        """The chunks ``idx`` as a RAG prompt holds them (with :attr:`table_rows`, tables as :func:`table_rows`;
        with :attr:`passage_lines` and ``about`` — the question, with a draft answer where there is one — each
        chunk's :func:`passage` about it)."""
        texts = [self.texts[i] for i in idx]
        if self.passage_lines > 0 and about:
            texts = [passage(t, about, self.passage_lines, self.idf(), self.tokenizer) for t in texts]
        texts = [table_rows(t) if self.table_rows else t for t in texts]
        return "\n\n---\n\n".join(texts) or "(no excerpt matches this question)"


_TABLE_LINE = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table_rows(text: str) -> str:
    """``text`` with each Markdown table written one line per row, every cell after the first named by its column:
    "Generators per model — Community: 150; Professional: 4,000" for ``| Generators per model | 150 | 4,000 |``
    under ``| Limit | Community | Professional |``. A small model reading a table in its prompt loses which column
    and row a cell is in and answers with the neighbouring row's value (25,000 buses for "how many generators",
    BW-204's fix for BW-310); a row that names its columns is a sentence of its own. Other lines are unchanged."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if i + 1 < len(lines) and _TABLE_LINE.match(lines[i]) and _TABLE_RULE.match(lines[i + 1]):
            head, j = _cells(lines[i]), i + 2
            while j < len(lines) and _TABLE_LINE.match(lines[j]):
                cells = _cells(lines[j])
                zh = bool(_CJK_RUN.search(lines[j] + lines[i]))
                named = [f"{h}{'：' if zh else ': '}{c}" if h else c for h, c in zip(head[1:], cells[1:]) if c]
                sep = "；" if zh else "; "
                out.append(f"{cells[0]} — {sep.join(named)}" if named else cells[0])
                j += 1
            i = j
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


RAG_TEMPLATE = {
    "en": "Documentation excerpts:\n\n{context}\n\nAnswer the question using the excerpts above.\nQuestion: {question}",
    "zh": "文档摘录：\n\n{context}\n\n请根据以上文档摘录回答问题。\n问题：{question}",
}


def rag_prompt(question: str, context: str) -> str:
    lang = "zh" if _CJK_RUN.search(question) else "en"
    return RAG_TEMPLATE[lang].format(context=context, question=question)


def hit_rate(found: list[list[int]], index: Index, source_chunks: list[str]) -> float | None:
    """Share of questions whose own source chunk is among the retrieved ones."""
    pairs = [(row, cid) for row, cid in zip(found, source_chunks) if cid]
    if not pairs:
        return None
    return round(sum(cid in {index.chunk_ids[i] for i in row} for row, cid in pairs) / len(pairs), 4)


def window(text: str, about: str, lines: int, tokenizer: Tokenizer = "jieba") -> str:
    """The line of ``text`` sharing the most terms with ``about`` (a question and its answer), with ``lines`` lines
    either side — blank lines skipped, Markdown tables and lists keep their neighbouring rows. ``lines`` 0: all of it."""
    rows = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or len(rows) <= 2 * lines + 1:
        return text
    want = set(terms(about, tokenizer))
    best = max(range(len(rows)), key=lambda i: (len(want & set(terms(rows[i], tokenizer))), -i))
    lo = max(0, min(best - lines, len(rows) - 2 * lines - 1))
    return "\n".join(rows[lo:lo + 2 * lines + 1])


_HEADING = re.compile(r"^\s*(#{1,6}\s|\[[^\]]+\]\s*$)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _table_headers(rows: list[str]) -> dict[int, int]:
    """Each body row of a Markdown table among ``rows`` → the index of its table's header row (its rule follows)."""
    out, i = {}, 0
    while i + 1 < len(rows):
        if _TABLE_LINE.match(rows[i]) and _TABLE_RULE.match(rows[i + 1]):
            j = i + 2
            while j < len(rows) and _TABLE_LINE.match(rows[j]):
                out[j] = i
                j += 1
            i = j
        else:
            i += 1
    return out


def passage(text: str, about: str, lines: int, idf: dict[str, float], tokenizer: Tokenizer = "jieba") -> str:
    """The passage of a chunk that a RAG prompt needs: the non-blank line sharing the most weight of terms with
    ``about`` (each term weighed by ``idf``; a term the corpus never saw weighs as the rarest), ``lines`` lines either
    side, and what makes them readable on their own — the section heading above them, a cut table's header row and
    rule, a cut code block's fences. Lines left out are marked "…". A whole 384-token chunk costs the 0.5B student
    ~1.2 s of prompt reading per answer on a 2-core CPU (05's RAG passes are most of the demo's eval, RESULTS.md
    session 26), and the rows beside the one asked about are where it reads its wrong values (RESULTS.md session
    17). ``lines`` ≤ 0 or a chunk of at most ``2 * lines + 1`` lines: the chunk as it is."""
    rows = [ln for ln in text.splitlines() if ln.strip()]
    if lines <= 0 or len(rows) <= 2 * lines + 1:
        return text
    want = set(terms(about, tokenizer))
    rare = max(idf.values(), default=1.0)
    head = _table_headers(rows)
    said = [set(terms(r, tokenizer)) for r in rows]
    said = [s | said[head[i]] if i in head else s for i, s in enumerate(said)]  # "| `--seed` | `17` |" says "Default"
    weight = [sum(idf.get(t, rare) for t in want & s) for s in said]
    best = max(range(len(rows)), key=lambda i: (weight[i], -i))
    lo = max(0, min(best - lines, len(rows) - 2 * lines - 1))
    keep = set(range(lo, lo + 2 * lines + 1))
    heading = next((i for i in range(lo, -1, -1) if _HEADING.match(rows[i])), None)
    if heading is not None:
        keep.add(heading)
    tops = set(head.values())  # a cut table keeps its header and rule
    keep |= {j for i in keep if i in head for j in (head[i], head[i] + 1)} | {i + 1 for i in keep if i in tops}
    fences = [i for i, r in enumerate(rows) if _FENCE.match(r)]
    for a, b in zip(fences[::2], fences[1::2]):  # a code block cut at one end keeps both fences
        inside = keep & set(range(a, b + 1))
        if inside and not {a, b} <= keep:
            keep |= {a, b}
    out, last = [], -1
    for i in sorted(keep):
        if i > last + 1:
            out.append("…")
        out.append(rows[i])
        last = i
    if last < len(rows) - 1:
        out.append("…")
    return "\n".join(out)


CONTEXT_FILE = "context_rows.jsonl"  # 04 keeps the context rows it trained in train/


def swap_numbers(context: str, answer: str, rng) -> tuple[str, str] | None:
    """``context`` and ``answer`` with every number the answer states that the context holds too changed, in both, to
    another of the same shape ("25,000" → "83,417", "4.2.1" → "7.9.3"): an answer that can only be read from the
    context. None when the answer states no number the context has."""
    from .outcomes import numbers

    def same(n: str) -> re.Pattern:
        return re.compile(rf"(?<![A-Za-z0-9_.]){re.escape(n)}(?![A-Za-z0-9_]|[.,]\d)")  # CJK may touch it

    found = [n for n in dict.fromkeys(numbers(answer)) if n.strip("+-") and same(n).search(context)]
    if not found:
        return None
    for n in sorted(found, key=len, reverse=True):
        new = n
        while new == n:
            new = "".join(rng.choice("123456789" if i == 0 or not prev.isdigit() else "0123456789")
                          if ch.isdigit() else ch for i, (prev, ch) in enumerate(zip(" " + n, n)))
        pattern = same(n)
        context, answer = pattern.sub(new, context), pattern.sub(new, answer)
    return context, answer


def context_rows(run_dir, fraction: float, k: int, tokenizer: Tokenizer, seed: int, lines: int = 0,
                 swaps: float = 0.0, distractors: float = 0.0) -> list[dict]:
    """04's ``train.context_fraction``: that share of the trained facts once more, their question in 05's RAG prompt
    with the top-``k`` chunks BM25 finds for it — as 05 asks the fine-tuned + RAG condition, the wrong chunk
    included when retrieval misses — so the student learns to use a chunk in its prompt, not only to recall. The
    index leaves out the held-out (unseen) chunks: no eval page's text reaches training. ``lines`` > 0
    (``train.context_lines``) keeps only that many lines of each chunk either side of the line nearest the question
    and answer: shorter rows, cheaper training. ``swaps`` (``train.context_swaps``): that share of the rows gets the
    numbers of its answer changed in chunk and answer alike (:func:`swap_numbers`), so the answer is only in the
    chunk — a student trained closed-book learns to answer from memory and ignore the chunk; these rows teach it
    that the chunk wins (entity-substitution training, Longpre et al. 2021). ``distractors``
    (``train.context_distractors``): that share of the other rows gets the best-ranked chunks that are *not* the
    fact's own, the answer unchanged — when retrieval misses, the chunk does not say it and the student answers from
    what it learned (RAFT's distractor-only documents, Zhang et al. 2024)."""
    import random
    from pathlib import Path

    from .jsonio import read_jsonl
    from .pairs import answer, question, trained_facts

    data = Path(run_dir) / "data"
    held = {r["chunk_id"] for r in read_jsonl(data / "eval.jsonl") if r.get("split") == "unseen"}
    index = Index.build([c for c in read_jsonl(data / "chunks.jsonl") if c["id"] not in held], tokenizer)
    facts = trained_facts(read_jsonl(data / "train.jsonl"))
    picked = random.Random(seed).sample(facts, round(len(facts) * fraction))
    found = index.search([question(r) for r in picked], k)
    rng = random.Random(seed + 1)
    swapped = set(rng.sample(range(len(picked)), round(len(picked) * swaps)))
    rest = [i for i in range(len(picked)) if i not in swapped]
    wrong = set(random.Random(seed + 2).sample(rest, min(len(rest), round(len(picked) * distractors))))
    if wrong:
        wider = index.search([question(picked[i]) for i in sorted(wrong)], k + 1)
        for i, idx in zip(sorted(wrong), wider):
            found[i] = [j for j in idx if index.chunk_ids[j] != picked[i].get("chunk_id")][:k]
    out = []
    for i, (r, idx) in enumerate(zip(picked, found)):
        about, reply = question(r) + "\n" + answer(r), answer(r)
        context = "\n\n---\n\n".join(window(index.texts[j], about, lines, tokenizer) for j in idx) or index.context([])
        changed = swap_numbers(context, reply, rng) if i in swapped else None
        if changed:
            context, reply = changed
        out.append({**r, "id": f"{r['id']}-ctx", "context_of": r["id"], "swapped": bool(changed), "distractor": i in wrong,
                    "messages": [{"role": "user", "content": rag_prompt(question(r), context)},
                                 {"role": "assistant", "content": reply}]})
    return out
