"""05's answerers (conditions) and what each answer is scored by: the names every eval table, metric key and
benchmark shares (``tuned_judge``, ``surer_outcome``)."""

from __future__ import annotations

# who answers: the base student or the fine-tuned one, closed-book or with retrieved chunks in the prompt; and
# "surer": of the fine-tuned student's two answers (closed-book, with the chunks) the one it was more confident of
# (rag None: not generated, picked from the other two); "switched": the scope switch's pick, the fine-tuned answer to
# a question about the docs, the base's to any other (:mod:`tunebook.scope`; adapter None: either)
CONDITIONS = {"base": (False, False), "rag": (False, True), "tuned": (True, False), "tuned_rag": (True, True),
              "surer": (True, None), "switched": (None, None)}
CONDITION_LABELS = {"base": "base", "rag": "base + RAG", "tuned": "fine-tuned", "tuned_rag": "fine-tuned + RAG",
                    "surer": "fine-tuned, surer of ± RAG", "switched": "switched: fine-tuned on the docs, base else"}
MEASURES = ("rouge_l", "char_f1", "judge", "exact_values")


def fact_group(row: dict) -> str:
    """The trained pair a recall question rewords (its id without the ``-p``/``-p2`` suffix 03 gives), else the
    row's own id: rewordings of one pair are one fact for the intervals."""
    import re

    return re.sub(r"-p\d*$", "", str(row.get("id", "")))


def conditions_in(rows: list[dict]) -> list[str]:
    return [c for c in CONDITIONS if rows and c in rows[0]]
