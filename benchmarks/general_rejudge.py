"""Re-judge finished runs' forgetting checks (05's general prompts) with the judge of this checkout.

Until session 20 the general prompts were graded by one holistic 0–5 rubric without a reference, and the 1.5B judge
was lenient: the fine-tuned "Mars" for the largest planet got 4 of 5, "366天" for the months in a year 5 of 5, so a
student that had forgotten basic facts showed a change of −0.1. ``params/prompts/general.yaml`` now gives each prompt
a short reference answer and 05 grades by its key fact (the docs' judge). This script grades the answers a run
already wrote (``eval/general.jsonl``) that way — no student is loaded, only the judge is asked — keeps the file as
it ran once as ``eval/general.asran.jsonl``, and writes the new grades and ``metrics.json``'s ``general`` back.
Prompts no longer in ``general.yaml`` are left out (and counted).

    .venv/bin/python benchmarks/general_rejudge.py outputs/demo-s19a outputs/cps-s19a

Starts the cpu profile's judge (Qwen2.5-Coder-1.5B, llama-server) once for all runs. Prints, per run, the old and
the new base / fine-tuned means and change, and the share of answers that state the reference's fact.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate, serve  # noqa: E402
from tunebook import settings as st  # noqa: E402
from tunebook.jsonio import read_jsonl, write_json, write_jsonl  # noqa: E402
from tunebook.stats import fmt  # noqa: E402

TEACHER = "qwen2.5-coder-1.5b-instruct"  # the cpu profile's judge


def rejudge(run: Path, teacher) -> tuple[dict, dict, int]:
    ev = run / "eval"
    kept = ev / "general.asran.jsonl"
    if not kept.exists():
        shutil.copy(ev / evaluate.GENERAL_FILE, kept)
    refs = {g["question"]: g["reference"] for g in evaluate.general_prompts()}
    old = read_jsonl(kept)
    rows = [{"question": r["question"], "reference": refs[r["question"]], "base": r["base"], "tuned": r["tuned"]}
            for r in old if refs.get(r["question"])]
    evaluate.score_general(rows, teacher, ev)
    new = evaluate.general_metrics(rows)
    write_jsonl(rows, ev / evaluate.GENERAL_FILE)
    metrics = json.loads((ev / evaluate.METRICS_FILE).read_text())
    before = evaluate.general_metrics(old)  # the old rubric's grades, as written
    metrics["general"] = {**new, "rubric_before": {k: before.get(k) for k in ("base_judge", "tuned_judge")}}
    write_json(metrics, ev / evaluate.METRICS_FILE)
    return before, new, len(old) - len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--port", type=int, default=18950)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        cfg = st.load("cpu", [f"serve.port={a.port}"]).serve
        teacher = serve.start(cfg, TEACHER, Path(d))
        try:
            print("| run | prompts | base (rubric → reference) | fine-tuned (rubric → reference) | change (rubric → reference) "
                  "| right base → fine-tuned |\n|---|---|---|---|---|---|")
            for run in a.runs:
                b, n, left = rejudge(run, teacher)
                f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
                print(f"| {run.name} | {n['n']}{f' ({left} left out)' if left else ''} | {f(b.get('base_judge'))} → "
                      f"{f(n.get('base_judge'))} | {f(b.get('tuned_judge'))} → {f(n.get('tuned_judge'))} | "
                      f"{fmt(b.get('judge_change') or {})} → {fmt(n.get('judge_change') or {})} | "
                      f"{f(n.get('base_right'))} → {f(n.get('tuned_right'))} |", flush=True)
        finally:
            serve.stop(Path(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
