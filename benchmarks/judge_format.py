"""The 0–5 judge's grade written as a JSON object (``{"score": 4}``) vs as a bare digit (``4``, a JSON schema that is
an integer: llama.cpp and vLLM take it). Small teachers pretty-print the object over 7–14 tokens, and on a 2-core
CPU each decoded token costs ≈ 0.1–0.2 s, so the grade's format is most of the judge's time.

On a finished run dir: a fresh teacher server (the run's teacher and serve settings), the reference-free
``general`` rubric over the base and fine-tuned answers in ``eval/generations.jsonl``, once per format, no cache;
seconds, mean grade, and how often the two formats give the same grade.

    .venv/bin/python benchmarks/judge_format.py outputs/RUN
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from bench_io import run_settings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from tunebook import judge, serve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--port", type=int, default=8097)
    a = ap.parse_args(argv)
    run = a.run_dir.resolve()
    cfg = run_settings(run)
    rows = [json.loads(x) for x in (run / "eval" / "generations.jsonl").read_text().splitlines() if x.strip()]
    items = [{"question": r["question"], "answer": r[c]} for c in ("base", "tuned") for r in rows]
    got: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = serve.start(cfg.serve.model_copy(update={"port": a.port}), cfg.teacher, Path(tmp))
        try:
            for fmt in ("json", "digit"):
                t0 = time.perf_counter()
                scores = judge.judge(t, items, Path(tmp) / f"cache-{fmt}.jsonl", kind="general", fmt=fmt)
                got[fmt] = {"seconds": round(time.perf_counter() - t0, 1), "scores": scores}
        finally:
            serve.stop(Path(tmp))
    x, y = got["json"]["scores"], got["digit"]["scores"]
    both = [(p, q) for p, q in zip(x, y) if p is not None and q is not None]
    mean = lambda v: round(sum(s for s in v if s is not None) / max(1, sum(s is not None for s in v)), 2)  # noqa: E731
    res = {"date": str(date.today()), "run": run.name, "teacher": cfg.teacher, "slots": cfg.serve.parallel,
           "spec_type": cfg.serve.spec_type, "answers": len(items),
           "json": {"seconds": got["json"]["seconds"], "mean": mean(x), "failed": x.count(None)},
           "digit": {"seconds": got["digit"]["seconds"], "mean": mean(y), "failed": y.count(None)},
           "same": round(sum(p == q for p, q in both) / max(1, len(both)), 3),
           "within_1": round(sum(abs(p - q) <= 1 for p, q in both) / max(1, len(both)), 3)}
    print(f"\n{run.name}: teacher {cfg.teacher}, {cfg.serve.parallel} slots, spec {cfg.serve.spec_type}, "
          f"{len(items)} answers (base + fine-tuned), general rubric, {date.today()}")
    print("| format | seconds | mean grade | failed |\n|---|---|---|---|")
    for fmt in ("json", "digit"):
        print(f"| {fmt} | {res[fmt]['seconds']} | {res[fmt]['mean']} | {res[fmt]['failed']} |")
    print(f"speed-up {res['json']['seconds'] / res['digit']['seconds']:.2f}×; same grade {res['same']:.0%}, "
          f"within 1 point {res['within_1']:.0%}")
    (run / "judge_format_benchmark.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
