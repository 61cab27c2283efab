"""05's forgetting check: general prompts (``params/prompts/general.yaml``, zh + en, each with a short reference
answer) answered by the base and the fine-tuned student, graded by the key fact of the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .answering import generate
from .jsonio import write_jsonl
from .judge import add_judge_scores, judge
from .paths import PARAMS_DIR

GENERAL_FILE = "general.jsonl"  # the forgetting check's prompts, both answers and their grades


def general_prompts(path: Path = PARAMS_DIR / "prompts" / "general.yaml") -> list[dict[str, str]]:
    """The forgetting check's prompts: ``{"question", "reference"}`` each (a bare string is a question without a
    reference, graded by the holistic ``general`` rubric)."""
    import yaml

    out = []
    for i, item in enumerate(yaml.safe_load(path.read_text(encoding="utf-8")) or []):
        if isinstance(item, dict):
            if not str(item.get("question") or "").strip():
                raise ValueError(f"{path}: item {i + 1} has no question: {item!r}")
            out.append({"question": str(item["question"]), "reference": str(item.get("reference") or "")})
        else:
            out.append({"question": str(item), "reference": ""})
    return out


def forgetting_check(model, tok, teacher, eval_dir: Path, max_new_tokens: int, batch_size: int,
                     system_prompt: str = "", limit: int = 0, server=None, switch=None) -> dict[str, Any]:
    """Both models answer general prompts (``params/prompts/general.yaml``, zh + en); the judge scores each answer
    0–5 by the key fact of its short reference answer (:func:`tunebook.judge.add_judge_scores`, the judge of the
    docs' questions: "Mars" for the largest planet states nothing), with intervals and the paired change; ``*_right``
    is the share of answers that state every key fact. A prompt without a reference is graded by the holistic rubric
    (lenient: the 1.5B judge gave "Mars" 4 of 5). With a scope ``switch`` (:class:`tunebook.scope.Switch`) each
    prompt also has the ``switched`` answer, the fine-tuned one where the switch takes it for a docs question, else
    the base's, graded the same way (``switched_change``)."""
    from .scope import switch_rows

    items = general_prompts()
    items = items[:limit] if limit else items
    qs = [it["question"] for it in items]
    base = generate(model, tok, qs, max_new_tokens, batch_size, adapter=False, system_prompt=system_prompt,
                    desc="general: base", server=server)
    tuned = generate(model, tok, qs, max_new_tokens, batch_size, adapter=True, system_prompt=system_prompt,
                     desc="general: fine-tuned", server=server)
    rows = [{**it, "base": b, "tuned": t} for it, b, t in zip(items, base, tuned)]
    if switch is not None:
        switch_rows(rows, switch.to_adapter(model, tok, qs))
    out: dict[str, Any] = {"n": len(rows), "rows": rows}
    if teacher is not None:
        score_general(rows, teacher, Path(eval_dir))
        out.update(general_metrics(rows))
    write_jsonl(rows, Path(eval_dir) / GENERAL_FILE)
    return out


def forgetting_check_with(ev, model, tok, teacher, eval_dir: Path, system_prompt: str = "", server=None,
                          switch=None) -> dict[str, Any]:
    """:func:`forgetting_check` as 05 runs it: how many prompts, answer length and batch size from ``ev`` (the run's
    ``evaluate`` settings), so that 05 and the benchmarks that rerun it cannot drift apart."""
    return forgetting_check(model, tok, teacher, eval_dir, ev.general_max_new_tokens or ev.max_new_tokens,
                            ev.batch_size, system_prompt, limit=ev.general_prompts, server=server, switch=switch)


def score_general(rows: list[dict], teacher, eval_dir: Path) -> None:
    """``base_judge`` / ``tuned_judge`` (0–5) on each forgetting-check row: by key facts where the row has a
    reference, by the holistic ``general`` rubric where it has none."""
    cache = eval_dir / "judge_cache.jsonl"
    ref = [r for r in rows if r.get("reference")]
    if ref:
        add_judge_scores(ref, teacher, eval_dir, answerers(rows))
    bare = [r for r in rows if not r.get("reference")]
    for m in answerers(rows):
        if bare:
            for r, sc in zip(bare, judge(teacher, [{"question": r["question"], "answer": r[m]} for r in bare], cache,
                                         kind="general")):
                r[f"{m}_judge"] = sc
        for r in ref:
            v = r.get(f"{m}_verdicts")
            r[f"{m}_right"] = None if not v else all(x == "stated" for x in v)


def general_metrics(rows: list[dict]) -> dict[str, Any]:
    """Mean judge per model with its interval, the share of fully right answers, and the paired change."""
    from .scope import routed_share
    from .stats import mean_ci, paired_delta_ci

    out: dict[str, Any] = {"n": len(rows), "judged_by": "reference" if all(r.get("reference") for r in rows)
                           else "rubric" if not any(r.get("reference") for r in rows) else "reference + rubric"}
    for m in answerers(rows):
        ci = mean_ci([r.get(f"{m}_judge") for r in rows])
        out[f"{m}_judge"], out[f"{m}_judge_ci"] = ci["mean"], [ci["lo"], ci["hi"]]
        right = [r[f"{m}_right"] for r in rows if r.get(f"{m}_right") is not None]
        out[f"{m}_right"] = round(sum(right) / len(right), 4) if right else None
    if out.get("base_judge") is not None and out.get("tuned_judge") is not None:
        # the paired change (fine-tuned minus base) with its interval; a drop is a negative change
        out["judge_change"] = paired_delta_ci([r.get("tuned_judge") for r in rows], [r.get("base_judge") for r in rows])
        out["collapsed"] = out["tuned_judge"] < out["base_judge"] - 1.5
    if out.get("switched_judge") is not None and out.get("base_judge") is not None:
        out["switched_change"] = paired_delta_ci([r.get("switched_judge") for r in rows],
                                                 [r.get("base_judge") for r in rows])
        out["switched_to_adapter"] = routed_share(rows)
    return out


def answerers(rows: list[dict]) -> tuple[str, ...]:
    """Who answered the forgetting check's prompts: the base, the fine-tuned student, and the scope switch's pick."""
    return ("base", "tuned") + (("switched",) if rows and "switched_from" in rows[0] else ())
