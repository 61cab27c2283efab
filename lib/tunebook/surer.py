"""The surer of ± RAG: of the fine-tuned student's two answers to a question — closed-book and with the retrieved
chunks — the one a product that has both would give (05's fifth answerer, ``surer``)."""

from __future__ import annotations


def surer_pick(tuned: float | None, tuned_rag: float | None, recited: bool = False) -> str:
    """Which fine-tuned answer, ``tuned`` (closed-book) or ``tuned_rag``, the student was more confident of: with the
    wrong chunk it is usually less sure than without it, and with the right one surer (a tie keeps closed-book). A
    closed-book answer that ``recited`` what the student was trained to answer to this question
    (:meth:`tunebook.provenance.TrainedValues.recites`) is taken however unsure one of its tokens was."""
    return "tuned_rag" if not recited and (tuned_rag or 0.0) > (tuned or 0.0) else "tuned"


def surer(answers: dict[str, list[str]], confidence: dict[str, list], recited: list[bool] | None = None
          ) -> tuple[list[str], list, list[str]]:
    """Per question, the fine-tuned answer (:func:`surer_pick`), its confidence, and which one it is."""
    recited = recited or [False] * len(answers["tuned"])
    picked = [surer_pick(t, tr, rc) for t, tr, rc in zip(confidence["tuned"], confidence["tuned_rag"], recited)]
    return ([answers[c][i] for i, c in enumerate(picked)], [confidence[c][i] for i, c in enumerate(picked)], picked)
