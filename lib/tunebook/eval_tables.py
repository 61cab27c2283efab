"""05's tables, plot and side-by-side HTML, read from its eval rows and ``metrics.json`` (:mod:`tunebook.evaluate`
writes them): what the notebook and the run summary show."""

from __future__ import annotations

import html
from typing import Any

from .conditions import CONDITION_LABELS, conditions_in

SPLITS_SHOWN = ("recall", "recall_far", "unseen", "outofdocs", "all")  # recall_far: a part of recall (evaluate)


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per split and condition: n, judge, exact key values and ROUGE-L as ``mean [lo, hi]`` text, and the
    shares of answers that are correct, invent a value, abstain or degenerate — what 05's table and the summary show."""
    from .stats import fmt

    splits = [s for s in SPLITS_SHOWN if s in metrics] + [
        s for s in metrics if s not in SPLITS_SHOWN and s != "general" and isinstance(metrics[s], dict) and "n" in metrics[s]]
    rows = []
    for split in splits:
        m = metrics[split]
        for c in metrics.get("conditions") or ["base", "tuned"]:
            def ci(k: str) -> str:
                lo, hi = m.get(f"{c}_{k}_ci") or [None, None]
                return fmt({"mean": m.get(f"{c}_{k}"), "lo": lo, "hi": hi})

            o = m.get(f"{c}_outcomes") or {}
            rows.append({"split": split, "condition": CONDITION_LABELS[c], "n": m["n"], "judge 0–5 [95% CI]": ci("judge"),
                         "exact key values": ci("exact_values"), "ROUGE-L": ci("rouge_l"),
                         "correct": o.get("correct"), "invents a value": o.get("invents"),
                         "abstains": o.get("abstains"), "degenerate": o.get("degenerate"),
                         "retrieval hit": (m.get("tuned_retrieval_hit_rate", m.get("retrieval_hit_rate"))
                                           if c in ("tuned_rag", "surer") else
                                           m.get("retrieval_hit_rate") if c == "rag" else None)})
    return rows


def metrics_table(metrics: dict[str, Any]):
    """:func:`metric_rows` as a pandas DataFrame indexed by split and condition."""
    import pandas as pd

    return pd.DataFrame(metric_rows(metrics)).set_index(["split", "condition"])


def score_plot(metrics: dict[str, Any], measure: str = "judge"):
    """Bars per split, one per condition, with 95 % intervals (judge scaled to 0–1)."""
    from . import plots

    splits = [s for s in SPLITS_SHOWN if s != "all" and s in metrics] or [s for s in metrics if s == "all"]
    conds = metrics.get("conditions") or ["base", "tuned"]
    scale = 5.0 if measure == "judge" else 1.0
    series, errors = {}, {}
    for c in conds:
        vals = [(metrics[s].get(f"{c}_{measure}") or 0) / scale for s in splits]
        if not any(metrics[s].get(f"{c}_{measure}") is not None for s in splits):
            continue
        series[CONDITION_LABELS[c]] = vals
        errors[CONDITION_LABELS[c]] = [tuple(None if x is None else x / scale for x in
                                             (metrics[s].get(f"{c}_{measure}_ci") or [None, None])) for s in splits]
    label = {"judge": "key facts stated (judge / 5)", "exact_values": "exact key values",
             "rouge_l": "ROUGE-L"}.get(measure, measure)
    return plots.grouped_bars([f"{s} (n={metrics[s]['n']})" for s in splits], series,
                              f"{label} per split, with 95% intervals", label, errors=errors)


def verdict(metrics: dict[str, Any]) -> str:
    """One sentence: which condition won on this corpus (by the judge where there is one, else ROUGE-L)."""
    m = metrics.get("recall") or metrics.get("all") or {}
    key = "judge" if m.get("tuned_judge") is not None else "rouge_l"
    scores = {c: m.get(f"{c}_{key}") for c in metrics.get("conditions") or [] if m.get(f"{c}_{key}") is not None}
    if not scores:
        return ""
    top = [c for c, v in scores.items() if round(v, 2) == round(max(scores.values()), 2)]  # ties as printed
    parts = ", ".join(f"{CONDITION_LABELS[c]} {v:.2f}" for c, v in scores.items())
    split = "recall" if "recall" in metrics else "all"
    lead = ("every answerer tied" if len(top) == len(scores) > 1 else
            f"{' and '.join(CONDITION_LABELS[c] for c in top)} tied for first" if len(top) > 1 else
            f"{CONDITION_LABELS[top[0]]} won")
    return f"On this corpus's {split} questions ({key.replace('_', '-')}), {lead}: {parts}."


def side_by_side_html(rows: list[dict], limit: int = 50) -> str:
    """Question, reference and every condition's answer with its scores and outcome; with the judge on, the key
    facts it checked and each answer's verdict per fact (✓ stated, · missing, ✗ contradicted)."""
    mark = {"stated": "✓", "missing": "·", "contradicted": "✗"}
    conds = conditions_in(rows)

    def cell(text: str) -> str:
        return f"<td style='text-align:left;vertical-align:top'>{html.escape(text)}</td>"

    def answer(r: dict, c: str) -> str:
        notes = [f"ROUGE-L {r[c + '_rouge_l']:.2f}"] if r.get(f"{c}_rouge_l") is not None and r["reference"] else []
        if r.get(f"{c}_judge") is not None:
            notes.append(f"judge {r[c + '_judge']:.1f}")
        if r.get(f"{c}_outcome"):
            notes.append(r[f"{c}_outcome"])
        if r.get(f"{c}_confidence") is not None:
            notes.append(f"confidence {r[c + '_confidence']:.2f}")
        if r.get(f"{c}_from"):
            notes.append(f"from {CONDITION_LABELS[r[c + '_from']]}")
        gated = r.get(f"{c}_ungated") not in (None, r[c])
        if gated:
            notes.append(f"gated; said: {r[c + '_ungated']}")
        elif r.get(f"{c}_grounded"):
            notes.append("a gate would have stopped it; read off the chunk: kept")
        elif r.get(f"{c}_recited"):
            notes.append("a gate would have stopped it; what it learned for this question: kept")
        elif r.get(f"{c}_agrees"):
            notes.append("a gate would have stopped it; the passed closed-book answer says the same: kept")
        return (f"<td style='text-align:left;vertical-align:top'>{html.escape(r[c])}"
                f"<br><small><i>{html.escape(' · '.join(notes))}</i></small></td>")

    def facts(r: dict) -> str:
        if not r.get("key_facts"):
            return "<td></td>"
        items = []
        for i, f in enumerate(r["key_facts"]):
            marks = " ".join(mark.get((r.get(f"{c}_verdicts") or [])[i], "?") if i < len(r.get(f"{c}_verdicts") or [])
                             else "?" for c in conds)
            items.append(f"<li>{marks} {html.escape(f)}</li>")
        return f"<td style='text-align:left;vertical-align:top'><ul style='margin:0'>{''.join(items)}</ul></td>"

    judged = any(r.get("key_facts") for r in rows)
    head = ("<tr><th>question</th><th>reference</th>" + "".join(f"<th>{CONDITION_LABELS[c]}</th>" for c in conds)
            + (f"<th>key facts ({', '.join(CONDITION_LABELS[c] for c in conds)})</th>" if judged else "") + "</tr>")
    body = "".join(f"<tr>{cell(r['question'])}{cell(r['reference'])}" + "".join(answer(r, c) for c in conds)
                   + (facts(r) if judged else "") + "</tr>" for r in rows[:limit])
    return f"<table class='tunebook-compare'>{head}{body}</table>"
