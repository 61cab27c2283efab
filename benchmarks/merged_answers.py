"""05's fine-tuned answers from the adapter on top of the base vs from the merged weights (the 16-bit model 05
exports), on a finished run dir: seconds for closed-book and RAG prompts, how often the greedy answers are the
same, and each one's ROUGE-L against the reference.

With a bf16 base on a CPU the LoRA side path runs in float32 next to bf16 matrices, which made fine-tuned + RAG
1.8× slower than base + RAG in the demo; the merged copy answers at the base's speed. Merging rounds the LoRA
update into bf16, so the answers can differ a little: this measures how much.

    .venv/bin/python benchmarks/merged_answers.py outputs/RUN [--limit 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from bench_io import eval_prompts, run_settings, tuned_student  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import torch

    from tunebook import evaluate
    from tunebook.text import char_f1, rouge_l

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="first N eval questions (0: all)")
    a = ap.parse_args(argv)
    run = a.run_dir.resolve()
    ev = run_settings(run).evaluate
    rows, questions, refs, sets = eval_prompts(run, ev, a.limit)
    prompts = {"closed book": sets["closed"], "RAG": sets["rag"]}
    model, tok, trained = tuned_student(run, ev)
    t0 = time.perf_counter()
    evaluate.merged_weights(model)
    merge_s = time.perf_counter() - t0
    res: dict = {"date": str(date.today()), "run": run.name, "threads": torch.get_num_threads(),
                 "precision": str(next(model.parameters()).dtype), "questions": len(rows), "merge_s": round(merge_s, 1)}
    print(f"\n{run.name}: {len(rows)} questions, {date.today()}, {torch.get_num_threads()} threads, "
          f"{res['precision']}; merging took {merge_s:.1f} s")
    print("| prompts | adapter s | merged s | speed-up | same answer | char F1 between | ROUGE-L adapter → merged |")
    print("|---|---|---|---|---|---|---|")
    for name, ps in prompts.items():
        got = {}
        for merged in (False, True):
            t0 = time.perf_counter()
            got[merged] = evaluate.generate(model, tok, ps, ev.max_new_tokens, ev.batch_size, adapter=True,
                                            system_prompt=trained["system_prompt"], merged=merged,
                                            desc=f"{name} · {'merged' if merged else 'adapter'}")
            got[f"{merged}_s"] = time.perf_counter() - t0
        x, y = got[False], got[True]
        same = sum(p.strip() == q.strip() for p, q in zip(x, y)) / len(x)
        f1 = sum(char_f1(p, q) for p, q in zip(x, y)) / len(x)
        rx = sum(rouge_l(p, r) for p, r in zip(x, refs)) / len(x)
        ry = sum(rouge_l(p, r) for p, r in zip(y, refs)) / len(y)
        res[name] = {"adapter_s": round(got[f"{False}_s"], 1),
                     "merged_s": round(got[f"{True}_s"], 1), "same": round(same, 3), "char_f1": round(f1, 3),
                     "rouge_l_adapter": round(rx, 4), "rouge_l_merged": round(ry, 4)}
        r = res[name]
        print(f"| {name} ({len(x)}) | {r['adapter_s']:.1f} | {r['merged_s']:.1f} | "
              f"{r['adapter_s'] / r['merged_s']:.2f}× | {same:.0%} | {f1:.2f} | {rx:.3f} → {ry:.3f} |")
    out = run / "merged_answers_benchmark.json"
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
