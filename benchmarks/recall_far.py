"""How reworded is "reworded"? Recall split by each question's similarity to the closest training question.

03 asks recall questions that no training item uses; the near-duplicate guard keeps them under
``inspect.near_dup_threshold`` (0.8) of character 3-shingles, but a small teacher rewords mostly by a word or two.
This reads finished runs (``data/train.jsonl``, ``data/eval.jsonl``, ``eval/generations.jsonl``), gives each recall
question its ``train_similarity`` as 03 now writes it (:func:`tunebook.splitting.add_train_similarity`, also for runs
from before 03 wrote it), and prints each answerer's recall judge on the questions worded far from training
(under ``splitting.FAR_BELOW``) and near it, per run and pooled, with the far − near difference's 95 % interval
(bootstrap over questions, unpaired: different questions).

    .venv/bin/python benchmarks/recall_far.py outputs/demo-s33a outputs/cps-s33a
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_io import write_result  # noqa: E402
from tunebook.conditions import CONDITION_LABELS, conditions_in  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.splitting import FAR_BELOW, add_train_similarity, far_recall  # noqa: E402
from tunebook.stats import fmt, mean_ci  # noqa: E402

CONDS = ("base", "rag", "tuned", "tuned_rag", "surer")


def recall_rows(run: Path) -> list[dict]:
    """The run's judged recall rows, each with ``train_similarity`` (computed from ``data/`` when 03 lacked it)."""
    rows = [r for r in read_jsonl(run / "eval" / "generations.jsonl") if r.get("split") == "recall"]
    add_train_similarity([r for r in rows if "train_similarity" not in r], read_jsonl(run / "data" / "train.jsonl"))
    return [r for r in rows if r.get("tuned_judge") is not None]


def far_near(rows: list[dict], conds: tuple[str, ...]) -> dict:
    far = far_recall(rows)
    near = [r for r in rows if not any(r is f for f in far)]
    out = {"n_far": len(far), "n_near": len(near)}
    for c in conds:
        out[c] = {"far": mean_ci([r.get(f"{c}_judge") for r in far]),
                  "near": mean_ci([r.get(f"{c}_judge") for r in near]),
                  "far_minus_near": diff_ci([r.get(f"{c}_judge") for r in far], [r.get(f"{c}_judge") for r in near])}
    return out


def diff_ci(a: list, b: list, n_boot: int = 4000, seed: int = 0) -> dict:
    """Mean of ``a`` minus mean of ``b`` with a 95 % bootstrap interval (each side resampled on its own)."""
    import random

    a, b = [x for x in a if x is not None], [x for x in b if x is not None]
    if not a or not b:
        return {"mean": None, "lo": None, "hi": None}
    rng = random.Random(seed)
    d = sorted(sum(rng.choices(a, k=len(a))) / len(a) - sum(rng.choices(b, k=len(b))) / len(b) for _ in range(n_boot))
    return {"mean": round(sum(a) / len(a) - sum(b) / len(b), 3), "lo": round(d[int(0.025 * n_boot)], 3),
            "hi": round(d[int(0.975 * n_boot) - 1], 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--label", default="", help="a name for the result file (e.g. the corpus)")
    a = ap.parse_args(argv)
    every: list[dict] = []
    result = {"far_below": FAR_BELOW, "runs": {}}
    print(f"recall judge 0–5, worded far (train_similarity < {FAR_BELOW}) vs near a training question")
    print("| run | n far / near | " + " | ".join(CONDITION_LABELS[c] + ": far · near · far − near [95% CI]"
                                          for c in CONDS) + " |")
    print("|---" * (2 + len(CONDS)) + "|")
    for run in a.runs + [None]:
        rows = every if run is None else recall_rows(run)
        if run is not None:
            every += rows
        conds = tuple(c for c in CONDS if c in conditions_in(rows))
        m = far_near(rows, conds)
        result["runs"]["pooled" if run is None else run.name] = m
        cells = [f"{fmt(m[c]['far'])} · {fmt(m[c]['near'])} · {fmt(m[c]['far_minus_near'])}" for c in conds]
        print(f"| {'pooled' if run is None else run.name} | {m['n_far']} / {m['n_near']} | " + " | ".join(cells) + " |")
    write_result("recall_far" + ("-" + a.label if a.label else ""), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
