"""Issue #16's "never worse than the base on unseen questions", read with hand labels instead of the judge.

On unseen questions (pages held out of training) the base and the fine-tuned student mostly score 0, and the few
points the judge hands out decide the comparison; pooled over folds (session 29) the judge's fine-tuned − base was
−0.15 [−0.45, 0.00] on samples/docs and −0.16 [−0.63, +0.28] on CloudPSS. Were those points right? Every unseen
answer of the fold runs was labeled by hand, blind (the annotator saw question, reference, key facts and answer in
shuffled order, not which student answered nor the judge's verdict), with the judge's own key facts as the unit:
per fact stated / missing / contradicted, and the answer's outcome (correct · partial · abstains · invents ·
degenerate), in ``benchmarks/data/unseen_labels.jsonl``.

This script reads finished run dirs (``eval/generations.jsonl``) and the labels, matched by a hash of question and
answer (the CloudPSS sample is CC BY-NC test data: its labels carry no text), and prints

* the judge against the labels on these real answers, per answerer: facts where "stated or not" agrees, and how
  many points the judge gave that the labels do not (and the reverse);
* the pooled unseen comparison (a question asked in several runs averaged over them first, as ``targets.py`` does):
  fine-tuned − base by the judge and by the labels, and the invented-value rate by 05's outcome and by the labels.

Answers without a label (a run not in the labeled set) are counted and left out.

    .venv/bin/python benchmarks/unseen_labels.py outputs/s28-replay+kl4 outputs/s29-f[1-4]-replay+kl4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from targets import load, question_means  # noqa: E402
from tunebook.judge import fact_score  # noqa: E402
from tunebook.stats import fmt, mean_ci, paired_delta_ci  # noqa: E402

LABELS = ROOT / "benchmarks" / "data" / "unseen_labels.jsonl"
ANSWERERS = ("base", "tuned")


def key(question: str, answer: str) -> str:
    return hashlib.sha1(f"{question}\x00{answer}".encode("utf-8")).hexdigest()[:16]


def read_labels(path: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return {r["key"]: r for r in rows}


def _list(v) -> list | None:
    if v is None or isinstance(v, list):
        return v
    import ast

    return ast.literal_eval(v)


def labeled_rows(evals: list[dict], labels: dict[str, dict]) -> tuple[list[dict], int]:
    """One row per unseen answer that has a label: run, answerer, question, the judge's score and verdicts, 05's
    outcome, and the label's; and how many answers had none."""
    out, missing = [], 0
    for e in evals:
        for r in e["unseen"]:
            for c in ANSWERERS:
                lab = labels.get(key(r["question"], r[c]))
                if lab is None:
                    missing += 1
                    continue
                out.append({"run": e["run"], "answerer": c, "question": r["question"],
                            "judge": float(r[f"{c}_judge"]), "judge_verdicts": _list(r.get(f"{c}_verdicts")) or [],
                            "outcome": r.get(f"{c}_outcome"), "label": fact_score(lab["verdicts"]),
                            "label_verdicts": lab["verdicts"], "label_outcome": lab["outcome"]})
    return out, missing


def agreement(rows: list[dict]) -> dict:
    """Per answerer: facts where the judge's "stated or not" matches the label's, the judge's points the labels do
    not give (over-credit) and those it withholds (under-credit), and outcome "invents" agreement."""
    out = {}
    for c in ANSWERERS:
        rs = [r for r in rows if r["answerer"] == c]
        pairs = [(j == "stated", lab == "stated") for r in rs
                 for j, lab in zip(r["judge_verdicts"] or ["missing"] * len(r["label_verdicts"]), r["label_verdicts"])]
        out[c] = {"answers": len(rs), "facts": len(pairs),
                  "agree": round(sum(a == b for a, b in pairs) / len(pairs), 3) if pairs else None,
                  "judge_only": sum(a and not b for a, b in pairs), "label_only": sum(b and not a for a, b in pairs),
                  "mean_judge": round(sum(r["judge"] for r in rs) / len(rs), 3) if rs else None,
                  "mean_label": round(sum(r["label"] for r in rs) / len(rs), 3) if rs else None,
                  "invents_agree": round(sum((r["outcome"] == "invents") == (r["label_outcome"] == "invents")
                                             for r in rs) / len(rs), 3) if rs else None}
    return out


def pooled(rows: list[dict]) -> dict:
    """Fine-tuned − base over the labeled unseen questions, a question averaged over its runs first: by the judge
    and by the labels, and the invented-value rates by 05's outcome and by the labels."""
    measures = {"judge": lambda r: r["judge"], "label": lambda r: r["label"],
                "inv05": lambda r: float(r["outcome"] == "invents"),
                "invlab": lambda r: float(r["label_outcome"] == "invents")}

    def of(c: str, f):
        return lambda r: f(r) if r["answerer"] == c else None

    means = question_means(rows, {f"{c}_{m}": of(c, f) for c in ANSWERERS for m, f in measures.items()})
    keep = [i for i, (b, t) in enumerate(zip(means["base_judge"], means["tuned_judge"])) if None not in (b, t)]

    def col(name: str) -> list[float]:
        return [means[name][i] for i in keep]

    out = {"questions": len(keep)}
    for m in ("judge", "label", "inv05", "invlab"):
        out[f"base_{m}"] = mean_ci(col(f"base_{m}"))
        out[f"tuned_{m}"] = mean_ci(col(f"tuned_{m}"))
        out[f"delta_{m}"] = paired_delta_ci(col(f"tuned_{m}"), col(f"base_{m}"))
    return out


def report(name: str, rows: list[dict], missing: int) -> dict:
    ag, p = agreement(rows), pooled(rows)
    print(f"\n## {name}: {len(rows)} labeled unseen answers ({missing} without a label), {p['questions']} questions")
    print("\n| answerer | facts | judge agrees (stated or not) | judge says stated, label not | label says stated, "
          "judge not | mean judge | mean label | invents agree |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in ANSWERERS:
        a = ag[c]
        print(f"| {c} | {a['facts']} | {a['agree']} | {a['judge_only']} | {a['label_only']} | {a['mean_judge']} | "
              f"{a['mean_label']} | {a['invents_agree']} |")
    print("\n| pooled per question | base | fine-tuned | fine-tuned − base |\n|---|---|---|---|")
    for m, label in (("judge", "score, judge"), ("label", "score, hand labels"), ("inv05", "invents, 05's outcome"),
                     ("invlab", "invents, hand labels")):
        print(f"| {label} | {fmt(p[f'base_{m}'])} | {fmt(p[f'tuned_{m}'])} | {fmt(p[f'delta_{m}'])} |")
    return {"answers": len(rows), "unlabeled": missing, "agreement": ag, "pooled": p}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished, judged run dirs (their unseen split is read)")
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--name", default="", help="a title for the table (default: the first run's corpus)")
    ap.add_argument("--json", default="", help="also write the numbers here")
    a = ap.parse_args(argv)
    evals = [e for e in (load(Path(p)) for p in a.runs) if e]
    if not evals:
        sys.exit("no finished, judged run among the given dirs")
    rows, missing = labeled_rows(evals, read_labels(a.labels))
    if not rows:
        sys.exit(f"none of these runs' unseen answers is in {a.labels}")
    res = report(a.name or ", ".join(e["run"] for e in evals), rows, missing)
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": [e["run"] for e in evals], **res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
