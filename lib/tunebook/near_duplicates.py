"""03 — the near-duplicate pairs the MinHash step caught, shown: each dropped row next to the kept row it repeats.

:func:`inspection.filter_rows` drops a row whose question (or question + answer) shares at least
``inspect.near_dup_threshold`` of its character 3-shingles with a kept one (Jaccard similarity, estimated by MinHash
and checked exactly); the dropped row's ``drop_reason`` and ``duplicate_of`` name the kept row.
"""

from __future__ import annotations

import html
import re
from typing import Any

from .pairs import answer, question
from .text import jaccard

_NEAR_REASON = re.compile(r"^(near duplicate( \(q\+a\))? of |abstain question close to a documented one: )(?P<id>.+)$")


def pairs(kept: list[dict], dropped: list[dict], n: int = 3) -> list[dict]:
    """Pairs the MinHash step caught: each dropped near duplicate next to the kept row it repeats, with their
    exact similarity over what was compared (the question, or question + answer). Lowest similarity first: those
    are the catches nearest the threshold, the ones worth reading."""
    by_id = {r["id"]: r for r in kept}
    out = []
    for d in dropped:
        m = _NEAR_REASON.match(d.get("drop_reason", ""))
        other = by_id.get(d.get("duplicate_of") or (m.group("id") if m else ""))
        if m is None or other is None:
            continue
        both = "(q+a)" in m.group(1)

        def text(r: dict) -> str:
            return question(r) + "\n" + answer(r) if both else question(r)

        out.append({"dropped_id": d["id"], "kept_id": other["id"], "compared": "question + answer" if both else "question",
                    "similarity": round(jaccard(text(d), text(other)), 3),
                    "dropped_question": question(d), "kept_question": question(other),
                    "dropped_answer": answer(d), "kept_answer": answer(other)})
    return sorted(out, key=lambda p: p["similarity"])[:n]


def closest_questions(kept: list[dict], limit: int = 400) -> dict[str, Any] | None:
    """The two most similar kept questions (of the first ``limit``): what "just below the threshold" looks like."""
    rows = kept[:limit]
    best = None
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            sim = jaccard(question(a), question(b))
            if best is None or sim > best["similarity"]:
                best = {"similarity": round(sim, 3), "a": question(a), "b": question(b)}
    return best


def table_html(kept: list[dict], dropped: list[dict], threshold: float, n: int = 3) -> str:
    """HTML: the near-duplicate pairs of :func:`pairs`, or, when none reached ``threshold``, the two
    closest kept questions and their similarity."""
    found = pairs(kept, dropped, n)
    if not found:
        best = closest_questions(kept)
        if best is None:
            return "<p>No near duplicates: fewer than two kept rows.</p>"
        return (f"<p>No pair reached the threshold {threshold}. The two most similar kept questions have similarity "
                f"{best['similarity']}:</p><ul><li>{html.escape(best['a'])}</li><li>{html.escape(best['b'])}</li></ul>")
    head = ("<tr><th>similarity</th><th>compared</th><th>dropped question</th><th>kept question</th>"
            "<th>dropped answer</th><th>kept answer</th></tr>")
    body = "".join(
        f"<tr><td>{p['similarity']:.2f}</td><td>{p['compared']}</td>"
        + "".join(f"<td>{html.escape(p[k])}</td>" for k in ("dropped_question", "kept_question", "dropped_answer",
                                                             "kept_answer"))
        + "</tr>" for p in found)
    return f"<p>Threshold {threshold}; the catches nearest it first.</p><table class='tunebook-neardup'>{head}{body}</table>"
