"""float32 vs bfloat16 for the student on a CPU: 04's training steps and 05's answers, same run dir, same code.

A CPU with AMX (Intel Sapphire Rapids and later, granted by the OS) or AVX-512 BF16 multiplies bfloat16 matrices
several times faster than float32 ones; ``precision=auto`` (train and evaluate) picks bf16 there. This measures
what that buys and what it changes, on a finished run dir (only read; checkpoints go to a temporary folder):

* training: 04's own path (``train.load_student`` → ``sft_config`` → ``make_trainer``), ``--steps`` optimizer
  steps from the same seed in each precision: seconds, non-padding tokens per second, the loss of every step;
* answering: 05's own path (``evaluate.load_tuned`` → ``evaluate.generate``) for the fine-tuned student, closed
  book and with the RAG prompts: seconds, and how often the two precisions give the same greedy answer.

    .venv/bin/python benchmarks/cpu_bf16.py outputs/RUN [--steps 12] [--limit 24]
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


def train_steps(cfg, run: Path, prec: str, steps: int) -> dict:
    from tunebook import train

    tcfg = cfg.train.model_copy(update={"precision": prec, "max_steps": steps, "save_steps": 10_000})
    train_ds = train.load_split(run / "data" / "train.jsonl", tcfg.system_prompt)
    student, peft_config = train.load_student(cfg.student, tcfg, cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        args = train.sft_config(tcfg, Path(tmp), cfg.seed, has_eval=False, backend=student.backend)
        trainer = train.make_trainer(student, peft_config, train_ds, None, args)
        m = train.train(trainer, Path(tmp), backend=student.backend)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"seconds": m["runtime_s"], "tokens": m["tokens"], "tokens_per_s": m["tokens_per_s"], "losses": losses,
            "peak_memory_mb": m["peak_memory_mb"]}


def answers(run: Path, prec: str, prompts: dict[str, list[str]], max_new_tokens: int, batch_size: int) -> dict:
    from tunebook import evaluate, models

    adapter = run / "train" / "adapter"
    trained = evaluate.trained_record(adapter)
    model, tok = evaluate.load_tuned(adapter, models.hf_model(trained["student"]), prec)
    out = {}
    for name, ps in prompts.items():
        t0 = time.perf_counter()
        out[name] = evaluate.generate(model, tok, ps, max_new_tokens, batch_size, adapter=True,
                                      system_prompt=trained["system_prompt"], desc=f"{name} · {prec}")
        out[f"{name}_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from tunebook import evaluate, precision, retrieval, synthesize
    from tunebook.retrieval import rag_prompt
    from tunebook.text import char_f1

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per precision")
    ap.add_argument("--limit", type=int, default=0, help="first N eval questions (0: all)")
    a = ap.parse_args(argv)
    run = a.run_dir.resolve()
    cfg = run_settings(run)
    ev = cfg.evaluate
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU fast bf16: {precision.cpu_has_fast_bf16()}"
          f" (AMX {torch.cpu._is_amx_tile_supported()}, AVX-512 BF16 {torch.cpu._is_avx512_bf16_supported()})")
    rows = evaluate.select(synthesize.read_jsonl(run / "data" / "eval.jsonl"), a.limit)
    questions = [r["messages"][0]["content"] for r in rows]
    index = retrieval.Index.build(synthesize.read_jsonl(run / "data" / "chunks.jsonl"), ev.rag_tokenizer)
    prompts = {"closed book": questions,
               "RAG": [rag_prompt(q, index.context(i)) for q, i in zip(questions, index.search(questions, ev.rag_k))]}
    res: dict = {"date": str(date.today()), "run": run.name, "threads": torch.get_num_threads(),
                 "steps": a.steps, "questions": len(questions)}
    for prec in ("fp32", "bf16"):
        res[f"train_{prec}"] = train_steps(cfg, run, prec, a.steps)
        res[f"answer_{prec}"] = answers(run, prec, prompts, ev.max_new_tokens, ev.batch_size)
    t32, t16 = res["train_fp32"], res["train_bf16"]
    print(f"\n{run.name}: {len(questions)} questions, {a.steps} training steps (batch {cfg.train.batch_size}), "
          f"{date.today()}, {torch.get_num_threads()} threads")
    print("| work | fp32 s | bf16 s | speed-up | what changed |\n|---|---|---|---|---|")
    dl = max(abs(x - y) for x, y in zip(t32["losses"], t16["losses"])) if t32["losses"] else None
    print(f"| training, {a.steps} steps ({t32['tokens']} tokens) | {t32['seconds']:.1f} | {t16['seconds']:.1f} | "
          f"{t32['seconds'] / t16['seconds']:.2f}× | tokens/s {t32['tokens_per_s']} → {t16['tokens_per_s']}; "
          f"largest per-step loss difference {dl:.3f} (last loss {t32['losses'][-1]:.3f} vs {t16['losses'][-1]:.3f}) |")
    for name in prompts:
        x, y = res["answer_fp32"][name], res["answer_bf16"][name]
        same = sum(p.strip() == q.strip() for p, q in zip(x, y)) / len(x)
        f1 = sum(char_f1(p, q) for p, q in zip(x, y)) / len(x)
        sx, sy = res["answer_fp32"][f"{name}_s"], res["answer_bf16"][f"{name}_s"]
        res[f"{name}_agreement"] = {"exact": round(same, 3), "char_f1": round(f1, 3)}
        print(f"| answers, {name} ({len(x)}) | {sx:.1f} | {sy:.1f} | {sx / sy:.2f}× | same answer {same:.0%}, "
              f"mean char F1 {f1:.2f} |")
    out = run / "cpu_bf16_benchmark.json"
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
