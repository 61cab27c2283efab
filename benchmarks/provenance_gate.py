"""Does the provenance gate stop transplanted trained values, and what does it cost on recall?

The gate (``evaluate.provenance_below``, :mod:`tunebook.provenance`) needs no new answer: it only reads the fine-tuned
answers a finished run already judged (``eval/generations.jsonl``) against the run's own ``data/train.jsonl``. So each
run is re-scored offline at several thresholds: an answer the gate stops becomes "the docs don't cover this" — it
states no key fact (judge 0, exact key values 0) and abstains. Threshold 0 is the run as judged: the baseline, in
the same table.

    .venv/bin/python benchmarks/provenance_gate.py outputs/demo-s13a outputs/s13cps-today

Prints, per run and threshold: recall judge and exact key values (fine-tuned, closed-book), recall answers stopped
(right ones among them), unseen and out-of-docs invented-value rates; writes the table as JSON to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.provenance import TrainedValues  # noqa: E402
from bench_io import write_result  # noqa: E402

GATED = ("tuned", "tuned_rag", "surer")


def regated(rows: list[dict], trained: TrainedValues, below: float) -> tuple[list[dict], dict[str, int]]:
    out, stopped = copy.deepcopy(rows), {"recall": 0, "recall_right": 0}
    for r in out:
        for c in GATED:
            said = r[c] if c in r else None
            gated = evaluate.provenance_gate(said, r["question"], trained if below else None, below) if said else said
            if gated == said:
                continue
            if c == "tuned" and r["split"] == "recall":
                stopped["recall"] += 1
                stopped["recall_right"] += r.get("tuned_outcome") == "correct"
            r[f"{c}_ungated"] = r.get(f"{c}_ungated", said)
            r[c] = gated
            r[f"{c}_judge"] = 0.0 if r.get(f"{c}_judge") is not None else None
            r[f"{c}_exact_values"] = 0.0 if r.get(f"{c}_exact_values") is not None else None
            r[f"{c}_outcome"] = "abstains"
    return out, stopped


def row(run: Path, rows: list[dict], below: float, stopped: dict[str, int]) -> dict:
    split = lambda s: [r for r in rows if r.get("split") == s]  # noqa: E731
    m = {s: evaluate.summarize(split(s)) for s in ("recall", "unseen", "outofdocs") if split(s)}
    get = lambda s, k: (m.get(s) or {}).get(k)  # noqa: E731
    return {"run": run.name, "below": below, "recall_n": get("recall", "n"),
            "recall_judge": get("recall", "tuned_judge"), "recall_exact": get("recall", "tuned_exact_values"),
            "recall_stopped": stopped["recall"], "recall_stopped_right": stopped["recall_right"],
            "surer_judge": get("recall", "surer_judge"),
            "unseen_n": get("unseen", "n"), "unseen_invents": get("unseen", "tuned_invents"),
            "outofdocs_n": get("outofdocs", "n"), "outofdocs_invents": get("outofdocs", "tuned_invents")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished, judged run dirs")
    ap.add_argument("--below", default="0,0.1,0.15,0.2", help="thresholds (0: the run as judged)")
    a = ap.parse_args(argv)
    table = []
    for run in map(Path, a.runs):
        rows = list(read_jsonl(run / "eval" / evaluate.GENERATIONS_FILE))
        trained = TrainedValues(read_jsonl(run / "data" / "train.jsonl"))
        for below in (float(x) for x in a.below.split(",")):
            new, stopped = regated(rows, trained, below)
            table.append(row(run, new, below, stopped))
            print(json.dumps(table[-1]), flush=True)
    keys = list(table[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for t in table:
        print("| " + " | ".join("–" if t[k] is None else (f"{t[k]:.2f}" if isinstance(t[k], float) else str(t[k]))
                                for k in keys) + " |")
    write_result("provenance_gate", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
