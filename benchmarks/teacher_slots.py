"""The teacher's whole share of a demo on a CPU — 02's synthesis and 05's judge — under llama-server settings:
slots (``serve.parallel``) and speculative decoding (``serve.spec_type``).

    .venv/bin/python benchmarks/teacher_slots.py outputs/RUN [--configs 2:ngram-simple,2:none,1:none,1:ngram-simple]

For each configuration ``slots:spec_type``: a fresh llama-server (the run's teacher and serve settings, those two
changed), then, timed, (a) 02's synthesis of the run's chunks with the run's synth settings into a fresh data
folder (client requests in flight = slots, as 02 does), (b) 05's judge of the run's answers (the key facts of every eval
reference, then every condition's answers graded against them; no cache). Prints seconds, pairs and
completion tokens/s per configuration and the speed-up against the first one (measured in the same run).
Synthesis samples (temperature > 0), so its pairs differ between configurations; the judge is greedy.
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
    from tunebook import evaluate, judge, serve, synthesize
    from tunebook.corpus import Chunk

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--configs", default="2:ngram-simple,2:none,1:none,1:ngram-simple")
    ap.add_argument("--port", type=int, default=8097)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    a = ap.parse_args(argv)
    run = a.run_dir.resolve()
    cfg = run_settings(run)
    chunks = [Chunk(**c) for c in synthesize.read_jsonl(run / "data" / "chunks.jsonl")]
    rows = synthesize.read_jsonl(run / "eval" / "generations.jsonl")
    results = []
    for conf in a.configs.split(","):
        slots, spec = conf.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            t = serve.start(cfg.serve.model_copy(update={"parallel": int(slots), "spec_type": spec, "port": a.port}),
                            cfg.teacher, Path(tmp))
            try:
                t0 = time.perf_counter()
                stats = synthesize.generate(chunks, t, cfg.synth, Path(tmp) / "data").as_dict()
                synth_s = time.perf_counter() - t0
                t0 = time.perf_counter()  # 05's judge: key facts, then every condition's answers against them
                judge.add_judge_scores([dict(r) for r in rows], t, Path(tmp), tuple(evaluate.conditions_in(rows)))
                judge_s = time.perf_counter() - t0
            finally:
                serve.stop(Path(tmp))
        results.append({"slots": int(slots), "spec_type": spec, "synth_s": round(synth_s, 1),
                        "pairs": stats["pairs"], "chunks_ok": stats["chunks_ok"],
                        "completion_tokens_per_s": stats["completion_tokens_per_s"], "judge_s": round(judge_s, 1),
                        "total_s": round(synth_s + judge_s, 1)})
        print(json.dumps(results[-1]), flush=True)
    first = results[0]
    print(f"\nrun {run.name}: teacher {cfg.teacher}, {len(chunks)} chunks (synth.paraphrases {cfg.synth.paraphrases}), "
          f"05's judge of {len(rows)} questions × {len(evaluate.conditions_in(rows))} conditions, {date.today()}")
    print("| slots | spec_type | synthesis s | pairs | completion tok/s | judge s | total s | vs first |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['slots']} | {r['spec_type']} | {r['synth_s']} | {r['pairs']} | {r['completion_tokens_per_s']} | "
              f"{r['judge_s']} | {r['total_s']} | {first['total_s'] / r['total_s']:.2f}× |")
    if a.out:
        a.out.write_text(json.dumps({"run": run.name, "date": str(date.today()), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
