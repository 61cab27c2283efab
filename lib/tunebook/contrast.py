"""Sibling contrasts: facts whose questions differ only in what they ask about ("the maximum number of *buses* per
model for the Professional edition" → 25,000, "… of *generators* …" → 4,000) are the student's most common recall
error — asked in new words, it answers with the sibling's value (the demo's students said 25,000 for generators in
7 of 9 runs; CloudPSS: 函数设计 answered with 工作台's purpose). With ``inspect.sibling_contrasts`` on, 03 finds such
pairs among the trained facts and asks the teacher for one question that asks for both and one answer that states
both, each value next to the name it belongs to; that item is trained besides the two pairs.

Siblings (:func:`siblings`): trained fact pairs in one language whose questions share at least
:data:`MIN_OVERLAP` of their search terms, each naming at least one term the other lacks, with different answers
(no hard value in common; for answers without values, little text in common) of at most :data:`MAX_ANSWER_CHARS`.
Each pair takes part in at most one contrast (its closest sibling). An item is kept (:func:`usable`) only if its
answer holds both answers (their values verbatim; an answer without values, most of its wording), names no value the two
pairs lack, its question names what tells them apart, and it is in the pairs' language.
"""

from __future__ import annotations

from pathlib import Path

from .pairs import answer, question
from .paths import PARAMS_DIR
from .retrieval import term_set
from .text import plain

CONTRAST_SCHEMA = {"type": "object",
                   "properties": {"question": {"type": "string", "minLength": 4, "maxLength": 300},
                                  "answer": {"type": "string", "minLength": 2, "maxLength": 500}},
                   "required": ["question", "answer"], "additionalProperties": False}
MIN_OVERLAP = 0.5  # Jaccard of the two questions' search terms
MAX_ANSWER_CHARS = 200  # longer answers are steps or explanations, not values to mix up
MAX_CONTRASTS = 40  # teacher requests per run, at most
MIN_WORDING = 0.8  # an answer without values: share of its character bigrams the item's answer must hold


def _plain(text: str) -> str:
    return plain(text.replace("*", ""))  # bold aside too: the teacher writes **names** in its combined answers


def _holds(text: str, ans: str) -> bool:
    """Does ``text`` give the answer ``ans``: every hard value of it verbatim (backticks, bold, case and spacing
    aside), or, for an answer without values, :data:`MIN_WORDING` of its character bigrams?"""
    from .outcomes import values
    from .text import grounding

    vals = [_plain(v) for v in values(ans)]
    return all(v in _plain(text) for v in vals) if vals else grounding(ans, text) >= MIN_WORDING


def _different(a: str, b: str) -> bool:
    """Two answers that say different things: no hard value (number, code, name) in common when either has one,
    else little text in common."""
    from .outcomes import values
    from .text import char_f1

    va, vb = {_plain(v) for v in values(a)}, {_plain(v) for v in values(b)}
    if va or vb:
        return not (va & vb)
    return char_f1(a, b) < 0.5


def siblings(facts: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of trained facts (``pairs.trained_facts`` rows) that the student may mix up, closest first; each fact in
    one pair at most, at most :data:`MAX_CONTRASTS` pairs."""
    cands = [r for r in facts if 0 < len(answer(r)) <= MAX_ANSWER_CHARS]
    qterms = [term_set(question(r)) for r in cands]
    scored = []
    for i in range(len(cands)):
        for j in range(i + 1, len(cands)):
            a, b, ta, tb = cands[i], cands[j], qterms[i], qterms[j]
            if a.get("lang", "") != b.get("lang", "") or not ta or not tb or not (ta - tb) or not (tb - ta):
                continue
            overlap = len(ta & tb) / len(ta | tb)
            if overlap >= MIN_OVERLAP and _different(answer(a), answer(b)):
                scored.append((overlap, i, j))
    used: set[int] = set()
    out = []
    for _, i, j in sorted(scored, key=lambda s: (-s[0], s[1], s[2])):
        if i not in used and j not in used and len(out) < MAX_CONTRASTS:
            used |= {i, j}
            out.append((cands[i], cands[j]))
    return out


def usable(q: str, ans: str, a: dict, b: dict) -> bool:
    """Can (``q``, ``ans``) train the contrast of facts ``a`` and ``b``? Its answer holds both answers (:func:`_holds`:
    their hard values verbatim, or most of the wording when they have none) and names no value that the two pairs do not;
    its question names, of each pair's question, a term the other lacks; a Chinese pair gets Chinese text."""
    from .outcomes import new_values
    from .text import CJK

    q, ans = q.strip(), ans.strip()
    if not q or not ans or "\n" in q:
        return False
    if not (_holds(ans, answer(a)) and _holds(ans, answer(b))):
        return False
    if new_values(ans + "\n" + q, "\n".join([question(a), answer(a), question(b), answer(b)])):
        return False
    ta, tb, tq = term_set(question(a)), term_set(question(b)), term_set(q)
    if not ((ta - tb) & tq) or not ((tb - ta) & tq):
        return False
    if a.get("lang") == "zh":
        return bool(CJK.search(q)) and bool(CJK.search(ans))
    return True


def _prompt(a: dict, b: dict) -> str:
    from .prompts import render_fields

    lang = "zh" if a.get("lang") == "zh" else "en"
    template = (PARAMS_DIR / "prompts" / f"contrast_{lang}.md").read_text(encoding="utf-8")
    return render_fields(template, {"question1": question(a), "answer1": answer(a),
                                    "question2": question(b), "answer2": answer(b)})


def items(facts: list[dict], teacher, cache_path: Path) -> list[dict]:
    """The contrast items for the :func:`siblings` among ``facts``, as train rows (``kind`` fact, ``contrast_of``
    the two pair ids, the first pair's chunk and source); asked once per pair through a JSONL cache."""
    from .judge import ask_json_cached

    pairs = siblings(facts)
    if not pairs:
        return []
    got = ask_json_cached(teacher, [_prompt(a, b) for a, b in pairs], [CONTRAST_SCHEMA] * len(pairs),
                          Path(cache_path), max_tokens=240, desc="sibling contrasts", version="contrast-v2")
    out = []
    for (a, b), rec in zip(pairs, got):
        q, ans = str((rec or {}).get("question") or ""), str((rec or {}).get("answer") or "")
        if usable(q, ans, a, b):
            out.append({"id": f"{a['id']}-c-{b['id']}", "chunk_id": a.get("chunk_id", ""), "source": a.get("source", ""),
                        "lang": a.get("lang", ""), "kind": "fact", "contrast_of": [a["id"], b["id"]],
                        "instruction": q.strip(), "input": "", "output": ans.strip()})
    return out
