"""Full-sentence answers: a bare answer ("4,000" to "What is the maximum number of generators per model for the
Professional edition?") restated by the teacher as a sentence that names what was asked before the value ("The
maximum number of generators per model for the Professional edition is 4,000."). The student then writes the
asked-about name right before the value it learned for it, instead of a bare value that a sibling fact may take
(buses 25,000 and generators 4,000 are rows of one table: the demo's students answered 25,000 for both). 03 does it
for the train split when ``inspect.sentence_answers`` is on; the eval's references stay as 02 wrote them.

Measured (knowledge.py ``today+sentences``, samples/docs, session 14): recall 4.90 → 4.39 — the student restates
the *reworded* question and the value after it drifts; off by default.

A sentence is kept only if it holds the answer verbatim (backticks and case aside), names no value the question
and answer lack, says something of the question the answer did not, and is in the pair's language; otherwise the
bare answer is trained as before.
"""

from __future__ import annotations

from pathlib import Path

from .pairs import answer, question
from .paths import PARAMS_DIR
from .retrieval import term_set
from .text import plain

SENTENCE_SCHEMA = {"type": "object", "properties": {"sentence": {"type": "string", "minLength": 2, "maxLength": 240}},
                   "required": ["sentence"], "additionalProperties": False}
MAX_BARE_CHARS = 80  # a longer answer is a sentence or a list already


def bare(ans: str, q: str) -> bool:
    """A short answer that names nothing of its question ("25,000", "找不到模型文件。", "newton"): no search term
    (:func:`tunebook.retrieval.terms`: jieba words and ASCII words, stopwords out) in common."""
    return 0 < len(ans.strip()) <= MAX_BARE_CHARS and not (term_set(ans) & term_set(q))


def usable(sentence: str, ans: str, q: str, lang: str = "") -> bool:
    """Can ``sentence`` replace the bare answer ``ans`` to ``q``? It holds the answer verbatim (backticks, case and
    spacing aside; a final full stop may go), adds a term of the question, names no value (numbers, codes,
    identifiers) that neither the question nor the answer names, is one line, and is Chinese for a Chinese pair."""
    from .outcomes import new_values
    from .text import CJK

    s = sentence.strip()
    core = ans.strip().rstrip("。.！!")
    if not s or "\n" in s or len(s) > len(ans) + len(q) + 60 or plain(core) not in plain(s):
        return False
    if not (term_set(s) & term_set(q)) - term_set(ans):
        return False
    if new_values(s, q + "\n" + ans):
        return False
    return bool(CJK.search(s)) if lang == "zh" else True


def _prompt(r: dict) -> str:
    from .prompts import render_fields

    lang = "zh" if r.get("lang") == "zh" else "en"
    template = (PARAMS_DIR / "prompts" / f"restate_{lang}.md").read_text(encoding="utf-8")
    return render_fields(template, {"question": question(r), "answer": answer(r)})


def sentences(rows: list[dict], teacher, cache_path: Path) -> dict[str, str]:
    """The full-sentence answer for each row with a :func:`bare` answer that the teacher restated :func:`usable`
    (row id → sentence); asked once per row through a JSONL cache, so a rerun asks only what is new."""
    from .judge import ask_json_cached

    todo = [r for r in rows if bare(answer(r), question(r))]
    if not todo:
        return {}
    got = ask_json_cached(teacher, [_prompt(r) for r in todo], [SENTENCE_SCHEMA] * len(todo), Path(cache_path),
                          max_tokens=160, desc="full-sentence answers", version="restate-v1")
    out = {}
    for r, rec in zip(todo, got):
        s = str((rec or {}).get("sentence") or "").strip()
        if usable(s, answer(r), question(r), r.get("lang", "")):
            out[r["id"]] = s
    return out


def apply(train: list[dict], restated: dict[str, str]) -> list[dict]:
    """The train rows with each restated pair's answer — and its rewordings' (same answer) — replaced by the
    sentence; the answer 02 wrote kept as ``bare_answer``."""
    out = []
    for r in train:
        s = restated.get(r["id"]) or restated.get(r.get("reworded_from") or "")
        if s and r.get("kind", "fact") == "fact" and not r.get("reverse_of"):
            key = "output" if "output" in r or "answer" not in r else "answer"
            r = {**r, key: s, "bare_answer": answer(r)}
        out.append(r)
    return out
