"""Speculative decoding for the teacher on a CPU: the judge's work of one finished run, with the teacher served
plain, with n-gram lookup in the prompt (``--spec-type ngram-simple``: the judge and the QA writer copy much of
their output from the prompt), and with the 0.5B student's GGUF as a draft model (same tokenizer family).

    .venv/bin/python benchmarks/teacher_speculative.py outputs/RUN [--configs plain,ngram,draft]

For each configuration: a fresh llama-server (the run's teacher, the run's serve settings), the key facts of every
eval reference and the reference-free judge of every fine-tuned answer (no cache), timed; and the share of outputs
identical to the plain server's (greedy decoding: speculation should not change them).
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

CONFIGS = {  # serve.spec_type, extra llama-server arguments
    "plain": ("none", []),
    "ngram": ("ngram-simple", []),
    "draft": ("draft-simple", ["--model-draft", "{draft}"]),
}


def main(argv: list[str] | None = None) -> int:
    from tunebook import judge, models, serve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--draft", default="qwen2.5-coder-0.5b-instruct")
    a = ap.parse_args(argv)
    run = a.run_dir.resolve()
    cfg = run_settings(run)
    rows = [json.loads(x) for x in (run / "eval" / "generations.jsonl").read_text().splitlines()]
    draft = str(models.gguf_path(a.draft))
    results, ref_out = [], None
    for name in a.configs.split(","):
        spec, extra = CONFIGS[name][0], [x.format(draft=draft) for x in CONFIGS[name][1]]
        with tempfile.TemporaryDirectory() as tmp:
            t = serve.start(cfg.serve.model_copy(update={"extra_args": list(cfg.serve.extra_args) + extra,
                                                         "spec_type": spec, "port": 8097}), cfg.teacher, Path(tmp))
            try:
                cache = Path(tmp) / "cache.jsonl"
                t0 = time.perf_counter()
                facts = judge.key_facts(t, [{"question": r["question"], "reference": r["reference"]} for r in rows],
                                        cache)
                t_facts = time.perf_counter() - t0
                t0 = time.perf_counter()
                scores = judge.judge(t, [{"question": r["question"], "answer": r["tuned"]} for r in rows], cache)
                t_judge = time.perf_counter() - t0
            finally:
                serve.stop(Path(tmp))
        out = [json.dumps(f, ensure_ascii=False) for f in facts] + [str(s) for s in scores]
        ref_out = ref_out or out
        same = sum(x == y for x, y in zip(out, ref_out)) / len(out)
        results.append({"config": name, "spec_type": spec, "args": extra, "key_facts_s": round(t_facts, 1), "judge_s": round(t_judge, 1),
                        "total_s": round(t_facts + t_judge, 1), "same_as_plain": round(same, 3)})
        print(json.dumps(results[-1]), flush=True)
    base = results[0]["total_s"]
    print(f"\nrun {run.name}: teacher {cfg.teacher}, {len(rows)} key-fact + {len(rows)} judge requests, "
          f"{cfg.serve.parallel} slots, {date.today()}")
    print("| config | key facts s | judge s | total s | vs first | outputs same as first |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['key_facts_s']} | {r['judge_s']} | {r['total_s']} | "
              f"{base / r['total_s']:.2f}× | {r['same_as_plain']:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
