"""05's answerers on a CPU: transformers (``generate`` in 05's ``evaluate.precision``) vs llama.cpp (the student's GGUF + the LoRA as GGUF,
switched per request), on one finished run dir, same questions, same prompts, greedy both.

    .venv/bin/python benchmarks/eval_engine.py outputs/RUN [--conditions base,tuned_rag,general_base] [--limit N]

Conditions: 05's (base, rag, tuned, tuned_rag; RAG prompts with whole chunks) and ``general_base`` /
``general_tuned``: the forgetting check's general prompts (``evaluate.general_prompts``, answered with
``evaluate.general_max_new_tokens``).

Prints, per condition: seconds of each engine, the speed-up, and how often the two agree (exact answer, mean
character F1). The run dir is only read; the llama.cpp server's files go to a temporary folder.
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

from bench_io import eval_prompts, run_settings, tuned_student  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from tunebook import evaluate
    from tunebook.forgetting import general_prompts
    from tunebook.text import char_f1

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--conditions", default="base,rag,tuned,tuned_rag")
    ap.add_argument("--limit", type=int, default=0, help="first N eval questions (0: all)")
    a = ap.parse_args(argv)
    run = a.run_dir.resolve()
    cfg = run_settings(run)
    ev = cfg.evaluate
    adapter = run / "train" / "adapter"
    rows, questions, _, sets = eval_prompts(run, ev, a.limit)
    general = [it["question"] for it in general_prompts()]
    general = general[:ev.general_prompts] if ev.general_prompts else general
    general_tokens = ev.general_max_new_tokens or ev.max_new_tokens
    asks = {cond: (sets["rag"] if rag else sets["closed"], ev.max_new_tokens, questions, bool(tuned))
            for cond, (tuned, rag) in evaluate.CONDITIONS.items()}
    asks |= {f"general_{c}": (general, general_tokens, general, c == "tuned") for c in ("base", "tuned")}
    model, tok, trained = tuned_student(run, ev)
    wanted = a.conditions.split(",")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        server = evaluate.start_student(ev.model_copy(update={"engine": "llama.cpp"}), trained, adapter, Path(tmp))
        start_s = time.perf_counter() - t0
        try:
            for cond in wanted:
                prompts, tokens, asked, tuned = asks[cond]
                out = {}
                for name, srv in (("transformers", None), ("llama.cpp", server)):
                    t0 = time.perf_counter()
                    out[name] = evaluate.generate(model, tok, prompts, tokens, ev.batch_size,
                                                  adapter=tuned, system_prompt=trained["system_prompt"],
                                                  desc=f"{cond} · {name}", server=srv)
                    out[f"{name}_s"] = time.perf_counter() - t0
                pairs = list(zip(out["transformers"], out["llama.cpp"]))
                results.append({
                    "condition": cond, "n": len(pairs), "transformers_s": round(out["transformers_s"], 1),
                    "llama_cpp_s": round(out["llama.cpp_s"], 1),
                    "speedup": round(out["transformers_s"] / max(out["llama.cpp_s"], 1e-9), 2),
                    "exact_agreement": round(sum(x == y for x, y in pairs) / len(pairs), 3),
                    "mean_char_f1": round(sum(char_f1(y, x) for x, y in pairs) / len(pairs), 3),
                    "examples": [{"q": q, "transformers": x, "llama.cpp": y}
                                 for q, (x, y) in list(zip(asked, pairs))[:2]],
                })
                print(json.dumps({k: v for k, v in results[-1].items() if k != "examples"}), flush=True)
        finally:
            server.stop()
    print(f"\nrun {run.name}: student {trained['student']}, {len(rows)} questions, max_new_tokens "
          f"{ev.max_new_tokens} (general {general_tokens}), batch/slots {ev.batch_size}, transformers "
          f"{model.dtype}, {date.today()}; llama.cpp start-up incl. LoRA "
          f"conversion {start_s:.0f} s")
    print("| condition | n | transformers s | llama.cpp s | speed-up | exact agreement | mean char F1 |\n|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['condition']} | {r['n']} | {r['transformers_s']} | {r['llama_cpp_s']} | {r['speedup']}× | "
              f"{r['exact_agreement']:.0%} | {r['mean_char_f1']:.2f} |")
    (run / "eval_engine_benchmark.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
