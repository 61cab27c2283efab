"""Re-judge finished runs with the judge code of this checkout, from each run's own judge cache.

The judge's exact checks (numbers, units, `code`, identifiers: :func:`tunebook.judge.check_verdicts`) run after the
teacher's cached answers, so when they change, every finished run can be scored again without a model: the key
facts and the teacher's verdicts come from ``eval/judge_cache.jsonl``. An item the cache lacks is asked of the
run's teacher (``teacher.json``) — start it first, or it stays unjudged and is counted. The run's files as they
were are kept once as ``eval/generations.asran.jsonl`` and ``eval/metrics.asran.json``; the forgetting check
(``general``) is kept as it was.

    .venv/bin/python benchmarks/rejudge.py outputs/demo-s14a outputs/s14demo-today

Prints, per run, the recall judge per condition before → after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate  # noqa: E402
from tunebook.jsonio import read_jsonl, write_json  # noqa: E402
from tunebook.serve import Teacher  # noqa: E402

SCORED = ("_judge", "_verdicts", "_outcome", "_exact_values")


def rejudge(run: Path) -> tuple[dict, dict, int]:
    ev = run / "eval"
    for name in ("generations.jsonl", "metrics.json"):
        kept = ev / name.replace(".", ".asran.", 1)
        if not kept.exists():
            shutil.copy(ev / name, kept)
    before = json.loads((ev / "metrics.asran.json").read_text())
    rows = [{k: v for k, v in r.items() if not k.endswith(SCORED)} for r in read_jsonl(ev / "generations.asran.jsonl")]
    after = evaluate.score(rows, Teacher.load(run), ev)
    unjudged = sum(r.get(f"{c}_judge") is None for r in rows for c in evaluate.conditions_in(rows))
    write_json({**before, **after}, ev / evaluate.METRICS_FILE)  # the general check as the run wrote it
    return before, after, unjudged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    a = ap.parse_args(argv)
    for run in a.runs:
        before, after, unjudged = rejudge(run)
        b, n = before.get("recall") or before.get("all", {}), after.get("recall") or after.get("all", {})
        fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        cells = [f"{c} {fmt(b.get(c + '_judge'))} → {fmt(n.get(c + '_judge'))}" for c in after["conditions"]]
        print(f"{run.name}: recall n={n.get('n')} · " + " · ".join(cells) + (f" · {unjudged} unjudged" if unjudged else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
