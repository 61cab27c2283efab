"""05's answer batches in question order vs shortest prompt first (``answering.by_length``), on a finished run dir:
seconds per pass, the share of tokens read that were padding, how often the greedy answers are the same and each
one's ROUGE-L against the reference. Both orders run in the same process, one after the other per prompt set.
With ``--caps A,B`` the two passes are instead batches of at most A against at most B prompts (both sorted).

    .venv/bin/python benchmarks/answer_batches.py outputs/RUN [--sets rag,closed,general] [--limit 0] [--caps 16,40]

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

    from tunebook import answering, evaluate, forgetting
    from tunebook.text import rouge_l

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--sets", default="rag,closed", help="prompt sets: rag (question + its chunk), closed (question)")
    ap.add_argument("--limit", type=int, default=0, help="first N eval questions (0: all)")
    ap.add_argument("--caps", default="", help="A,B: batches of at most A vs at most B prompts, both sorted")
    a = ap.parse_args(argv)
    caps = [int(x) for x in a.caps.split(",")] if a.caps else []
    run = a.run_dir.resolve()
    ev = run_settings(run).evaluate
    rows, questions, refs, sets = eval_prompts(run, ev, a.limit)
    general = forgetting.general_prompts()
    sets["general"] = [p["question"] for p in general[:ev.general_prompts or len(general)]]
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
            new = ev.general_max_new_tokens or ev.max_new_tokens if name == "general" else ev.max_new_tokens
            for second in (False, True):
                sort = second or bool(caps)
                cap = caps[second] if caps else ev.batch_size
                size = answering.balanced_batch(len(ps), cap)
                order = answering.by_length(tok, templated) if sort else list(range(len(ps)))
                t0 = time.perf_counter()
                got[second] = evaluate.generate_scored(model, tok, ps, new, cap,
                                                       adapter=adapter_on, system_prompt=trained["system_prompt"],
                                                       desc=f"{name} · {cap if caps else ('sorted' if sort else 'in order')}",
                                                       sort=sort)[0]
                got[f"{second}_s"] = time.perf_counter() - t0
                got[f"{second}_pad"] = padding_share(tok, templated, order, size)
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
    first, then = (f"≤ {caps[0]}", f"≤ {caps[1]}") if caps else ("in order", "sorted")
    res["compared"] = [first, then]
    print(f"| prompts | {first} s | {then} s | speed-up | padding read | same answer | ROUGE-L {first} → {then} |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    write_result(f"answer_batches-{run.name}" + (f"-caps{caps[0]}v{caps[1]}" if caps else ""), res, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
