"""05's answer batches in question order vs shortest prompt first (``answering.by_length``), on a finished run dir:
seconds per pass, the share of tokens read that were padding, how often the greedy answers are the same and each
one's ROUGE-L against the reference. Both orders run in the same process, one after the other per prompt set.

    .venv/bin/python benchmarks/answer_batches.py outputs/RUN [--sets rag,closed] [--limit 0]

Batch composition changes the padding, and with it the floating-point rounding of a few answers: the "same answer"
column says how many.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from bench_io import eval_prompts, run_settings, tuned_student, write_result  # noqa: E402


def padding_share(tok, prompts: list[str], order: list[int], batch: int) -> float:
    lengths = [len(x) for x in tok(prompts, add_special_tokens=False)["input_ids"]]
    read = sum(max(lengths[j] for j in order[i:i + batch]) * len(order[i:i + batch])
               for i in range(0, len(order), batch))
    return 1 - sum(lengths) / read


def main(argv: list[str] | None = None) -> int:
    import torch

    from tunebook import answering, evaluate
    from tunebook.text import rouge_l

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--sets", default="rag,closed", help="prompt sets: rag (question + its chunk), closed (question)")
    ap.add_argument("--limit", type=int, default=0, help="first N eval questions (0: all)")
    a = ap.parse_args(argv)
    run = a.run_dir.resolve()
    ev = run_settings(run).evaluate
    rows, questions, refs, sets = eval_prompts(run, ev, a.limit)
    model, tok, trained = tuned_student(run, ev)
    batch = answering.balanced_batch(len(questions), ev.batch_size)
    res: dict = {"date": str(date.today()), "run": run.name, "threads": torch.get_num_threads(),
                 "precision": str(next(model.parameters()).dtype), "questions": len(rows), "batch": batch, "sets": {}}
    lines = []
    for name in a.sets.split(","):
        for adapter_on in (False, True):
            ps = sets[name]
            templated = answering._prompts(tok, ps, trained["system_prompt"])
            got = {}
            for sort in (False, True):
                order = answering.by_length(tok, templated) if sort else list(range(len(ps)))
                t0 = time.perf_counter()
                got[sort] = evaluate.generate_scored(model, tok, ps, ev.max_new_tokens, ev.batch_size,
                                                     adapter=adapter_on, system_prompt=trained["system_prompt"],
                                                     desc=f"{name} · {'sorted' if sort else 'in order'}", sort=sort)[0]
                got[f"{sort}_s"] = time.perf_counter() - t0
                got[f"{sort}_pad"] = padding_share(tok, templated, order, batch)
            x, y = got[False], got[True]
            r = {"in_order_s": round(got["False_s"], 1), "sorted_s": round(got["True_s"], 1),
                 "padding_in_order": round(got["False_pad"], 3), "padding_sorted": round(got["True_pad"], 3),
                 "same": round(sum(p == q for p, q in zip(x, y)) / len(x), 3),
                 "rouge_l_in_order": round(sum(rouge_l(p, f) for p, f in zip(x, refs)) / len(x), 4),
                 "rouge_l_sorted": round(sum(rouge_l(p, f) for p, f in zip(y, refs)) / len(y), 4)}
            key = f"{name} · {'fine-tuned' if adapter_on else 'base'}"
            res["sets"][key] = r
            lines.append(f"| {key} ({len(x)}) | {r['in_order_s']} | {r['sorted_s']} | "
                         f"{r['in_order_s'] / r['sorted_s']:.2f}× | {r['padding_in_order']:.0%} → "
                         f"{r['padding_sorted']:.0%} | {r['same']:.0%} | {r['rouge_l_in_order']:.3f} → "
                         f"{r['rouge_l_sorted']:.3f} |")
            print(lines[-1], flush=True)
    print(f"\n{run.name}: {len(rows)} questions in batches of {batch}, {date.today()}, "
          f"{res['threads']} threads, {res['precision']}")
    print("| prompts | in order s | sorted s | speed-up | padding read | same answer | ROUGE-L in order → sorted |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    write_result(f"answer_batches-{run.name}", res, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
