"""Should a fine-tuned + RAG answer that reads its values from the chunk in its prompt pass 05's gates?
(And, with ``--rule recited``: should a gated fine-tuned answer that repeats a trained answer to this question? With
``--rule agrees``: should a gated fine-tuned + RAG answer that says what the closed-book fine-tuned answer, which
passed the gates, says — :func:`tunebook.provenance.agrees`, 05's ``evaluate.agreement_pass``? With ``--rule base``:
should a gated fine-tuned answer that says what the base student says to the same prompt — the value is the base's
own, not the fine-tune's?)

05's gates (the confidence gate, ``evaluate.abstain_below``; the provenance gate, ``evaluate.provenance_below``) turn
the fine-tuned student's unsure or transplanted answers into "the docs don't cover this". They were built for what
the student *recalls*; with the retrieved chunk in its prompt they stop answers copied from it too ("30 days" for
the trial period of a page it never trained on, read off that very page). ``evaluate.context_grounding`` lets an
answer through when :func:`tunebook.outcomes.grounded` holds: every value it names (and every value the question
names) is in the prompt's chunks, each in a sentence that shares a term with the question. The looser rule — the
values anywhere in the chunks — is measured beside it (``--rule anywhere``).

Needs no new answer: a finished run keeps each gated answer as ``<condition>_ungated`` and the ids of the chunks
its prompt held. Each run is re-gated offline; the answers that change are judged by the run's teacher (start it
first, as 01 would: the judge cache is copied, the run dir is not touched). Baseline (the run as judged) and the
lever in the same table, per run and pooled per corpus with paired, fact-level 95 % intervals.

    .venv/bin/python benchmarks/grounded_gate.py --label samples/docs outputs/demo-s1[1-4]*
    .venv/bin/python benchmarks/grounded_gate.py --label CloudPSS outputs/s1[2-5]cps*-today

Prints per run and pooled: recall / unseen / out-of-docs judge and invented-value rate of fine-tuned + RAG and of
the surer of ± RAG, before → after, and how many answers the lever let through; writes the table as JSON to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate  # noqa: E402
from tunebook.evaluate import fact_group  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.outcomes import abstains, names, new_values, values  # noqa: E402
from tunebook.provenance import TrainedValues, agrees, grounded  # noqa: E402
from tunebook.retrieval import Index  # noqa: E402
from bench_io import judged, write_result  # noqa: E402
from tunebook.stats import fmt, mean_ci, paired_delta_ci  # noqa: E402

LEVER = ("tuned_rag", "surer")  # the answers given with chunks (surer: when it picked the RAG answer)
RECITED = ("tuned", "tuned_rag", "surer")  # rules "recited", "base": every fine-tuned answer
BASE_TWIN = {"tuned": "base", "tuned_rag": "rag"}  # rule "base": the base's answer to the same prompt
SCORED = ("_judge", "_verdicts", "_outcome", "_exact_values")
SPLITS = ("recall", "unseen", "outofdocs")


def context(row: dict, cond: str, index: Index) -> str:
    """The chunks the ``cond`` answer's prompt held, joined as 05 joins them (:meth:`Index.context`; "" for a
    closed-book surer pick or no chunk)."""
    took = row.get("surer_from") or evaluate.surer_pick(row.get("tuned_confidence"), row.get("tuned_rag_confidence"))
    if cond == "surer" and took != "tuned_rag":
        return ""
    ids = row.get("tuned_rag_chunks") or row.get("rag_chunks") or []
    idx = [index.chunk_ids.index(i) for i in ids if i in index.chunk_ids]
    return index.context(idx) if idx else ""


def anywhere(text: str, asked: str, ctx: str) -> bool:
    """The looser rule: every value the answer names (and the question's) is somewhere in the chunks."""
    said = new_values(text, asked)
    return bool(ctx and said) and all(names(ctx, v) for v in said + values(asked))


def regated(rows: list[dict], index: Index, rule: str = "sentence", trained: TrainedValues | None = None,
            about: float = 0.3, surer_recital: bool = False) -> tuple[list[dict], int]:
    """The rows as 05 would have written them with ``context_grounding`` (rules ``sentence``, ``anywhere``: a gated
    answer grounded in its prompt's chunks is put back) or with ``recited_above`` (rule ``recited``: a gated
    fine-tuned answer, closed-book or not, that repeats a trained answer to a question sharing ≥ ``about`` of the
    asked one's terms is put back); the put-back answers' scores are dropped, to be judged. Returns how many."""
    out, passed = copy.deepcopy(rows), 0
    for r in out:
        repicked = False
        if surer_recital and trained is not None and "surer" in r and r.get("surer_from") is None:
            took = evaluate.surer_pick(r.get("tuned_confidence"), r.get("tuned_rag_confidence"))
            said = r.get("tuned_ungated", r["tuned"])
            if took == "tuned_rag" and trained.recites(said, r["question"], about):  # 05's surer now takes it
                r["surer_ungated"], r["surer_from"], r["surer_confidence"] = said, "tuned", r.get("tuned_confidence")
                put_back(r, "surer", said)
                passed += 1
                repicked = True
        for c in (RECITED if rule in ("recited", "base") else LEVER):
            if c == "surer" and repicked:
                continue
            said = r.get(f"{c}_ungated")
            if said is None or said == r.get(c) or r.get(f"{c}_grounded"):
                continue
            if rule == "recited":
                ok = trained is not None and trained.recites(said, r["question"], about)
            elif rule == "base":  # the base, asked the same prompt, says the same
                twin = BASE_TWIN[c] if c != "surer" else ("base" if r.get("surer_from") == "tuned" else "rag")
                ok = bool(r.get(twin)) and not abstains(r[twin]) and agrees(said, r[twin], r["question"])
            elif rule == "agrees":  # 05's evaluate.agreement_pass
                ok = evaluate.closed_book_agrees(r, said, r["question"])
            else:
                ctx = context(r, c, index)
                ok = bool(ctx) and (anywhere(said, r["question"], ctx) if rule == "anywhere" else
                                    grounded(said, r["question"], ctx, index.common_terms(), index.tokenizer))
            if not ok:
                continue
            r[f"{c}_{rule if rule in ('recited', 'agrees', 'base') else 'grounded'}"] = True
            put_back(r, c, said)
            passed += 1
    return out, passed


def put_back(row: dict, cond: str, said: str) -> None:
    """``cond``'s answer is ``said`` again; its scores are dropped, to be judged."""
    row[cond] = said
    for k in SCORED:
        row.pop(cond + k, None)


def split_numbers(rows: list[dict]) -> dict:
    m = {}
    for s in SPLITS:
        part = [r for r in rows if r.get("split") == s]
        if not part:
            continue
        summary = evaluate.summarize(part)
        m[s] = {"n": len(part), **{f"{c}_{k}": summary.get(f"{c}_{k}") for c in ("tuned", "rag", *LEVER)
                                    for k in ("judge", "invents")}}
    return m


def pooled(pairs: list[tuple[str, list[dict], list[dict]]], split: str, conds: tuple[str, ...] = LEVER) -> dict:
    """Before vs after over every run's ``split`` questions: means and paired differences by fact."""
    b_rows = [(run, r) for run, before, _ in pairs for r in before if r.get("split") == split]
    a_rows = [r for _, _, after in pairs for r in after if r.get("split") == split]
    groups = [f"{run}:{fact_group(r)}" for run, r in b_rows]
    out = {"n": len(b_rows)}
    for c in conds:
        b = [r.get(f"{c}_judge") for _, r in b_rows]
        a = [r.get(f"{c}_judge") for r in a_rows]
        out[c] = {"before": mean_ci(b, groups=groups), "after": mean_ci(a, groups=groups),
                  "delta": paired_delta_ci(a, b, groups=groups),
                  "invents_before": _share([r.get(f"{c}_outcome") for _, r in b_rows], "invents"),
                  "invents_after": _share([r.get(f"{c}_outcome") for r in a_rows], "invents")}
    for c in ("tuned", "rag"):
        if c in conds:
            continue
        out[c] = mean_ci([r.get(f"{c}_judge") for _, r in b_rows], groups=groups)
    return out


def at_or_above_both(table: list[dict], conds: tuple[str, ...] = LEVER) -> dict[str, tuple[int, int, int]]:
    """Issue #16's per-run target "fine-tuned + RAG ≥ both" (and the surer's), before and after: how many runs meet it."""
    out = {}
    for c in conds:
        def meets(m: dict) -> bool:
            r = m.get("recall") or {}
            return None not in (r.get(f"{c}_judge"), r.get("tuned_judge")) and \
                r[f"{c}_judge"] >= max(r["tuned_judge"], r.get("rag_judge") or 0)
        runs = [t for t in table if (t["before"].get("recall") or {}).get("n")]
        out[c] = (sum(meets(t["before"]) for t in runs), sum(meets(t["after"]) for t in runs), len(runs))
    return out


def _share(outcomes: list, which: str) -> float | None:
    seen = [o for o in outcomes if o is not None]
    return round(sum(o == which for o in seen) / len(seen), 3) if seen else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished, judged run dirs (05 with a gate on)")
    ap.add_argument("--label", default="", help="the corpus, for the printed table and the JSON file's name")
    ap.add_argument("--rule", choices=("sentence", "anywhere", "recited", "agrees", "base"), default="sentence",
                    help="sentence: 05's rule (provenance.grounded); anywhere: the values anywhere in the chunks; "
                         "recited: a gated answer that repeats a trained answer to this question (--about); "
                         "agrees: a gated fine-tuned + RAG answer saying what the passed closed-book answer says; "
                         "base: a gated fine-tuned answer saying what the base says to the same prompt")
    ap.add_argument("--surer-recital", action="store_true",
                    help="rule recited: the surer of ± RAG also takes a recited closed-book answer over a surer RAG one")
    ap.add_argument("--about", type=float, default=0.3,
                    help="rule recited: the least share of terms the trained question shares with the asked one")
    a = ap.parse_args(argv)
    conds = RECITED if a.rule in ("recited", "base") else LEVER
    table, pairs = [], []
    for run in a.runs:
        gen = run / "eval" / evaluate.GENERATIONS_FILE
        if not gen.is_file():
            print(f"{run.name}: no eval/{evaluate.GENERATIONS_FILE}, skipped")
            continue
        before = list(read_jsonl(gen))
        if not any("tuned_rag_ungated" in r for r in before):
            print(f"{run.name}: no gated fine-tuned + RAG answers kept (gates off or no RAG), skipped")
            continue
        trained = TrainedValues(read_jsonl(run / "data" / "train.jsonl")) if a.rule == "recited" else None
        after, passed = regated(before, Index.build(list(read_jsonl(run / "data" / "chunks.jsonl"))), a.rule,
                                trained, a.about, a.surer_recital)
        if passed:
            after = judged(after, run)
        pairs.append((run.name, before, after))
        row = {"run": run.name, "passed": passed, "before": split_numbers(before), "after": split_numbers(after)}
        table.append(row)
        f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        cells = [f"{s} {c} {f(row['before'][s][c + '_judge'])}→{f(row['after'][s][c + '_judge'])}"
                 f" (invents {f(row['before'][s][c + '_invents'])}→{f(row['after'][s][c + '_invents'])})"
                 for s in SPLITS if s in row["before"] for c in conds]
        print(f"{run.name}: {passed} let through · " + " · ".join(cells), flush=True)
    if not pairs:
        sys.exit("no run with gated fine-tuned + RAG answers among the given dirs")
    summary = {s: pooled(pairs, s, conds) for s in SPLITS}
    summary["runs_at_or_above_both"] = at_or_above_both(table, conds)
    print(f"\npooled over {len(pairs)} runs ({a.label or 'runs given'}, rule: {a.rule}), judge 0–5 with 95 % CI, paired by fact:")
    for s in SPLITS:
        p = summary[s]
        if not p["n"]:
            continue
        print(f"  {s} (n={p['n']}): base + RAG {fmt(p['rag'])}"
              + ("" if "tuned" in conds else f" · fine-tuned {fmt(p['tuned'])}"))
        for c in conds:
            q = p[c]
            print(f"    {c:10s} {fmt(q['before'])} → {fmt(q['after'])}   Δ {fmt(q['delta'])}   "
                  f"invents {q['invents_before']} → {q['invents_after']}")
    rule = f"recited{a.about:g}{'-surer' if a.surer_recital else ''}" if a.rule == "recited" else a.rule
    for c, (b, n, k) in summary["runs_at_or_above_both"].items():
        print(f"  runs where {c} ≥ both fine-tuned and base + RAG on recall: {b} → {n} of {k}")
    write_result(f"grounded_gate-{(a.label or 'runs').replace('/', '_')}-{rule}", {"runs": table, "pooled": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
