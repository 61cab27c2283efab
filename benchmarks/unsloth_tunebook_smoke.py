"""A real Unsloth training run through tunebook's own 04_train code path, on a GPU with no hub access.

Builds a random-weight model from a local config + tokenizer (default: the dequantized SmolLM2-135M tokenizer and
config copied to .benchdata/smollm2-tok), writes a tiny prompt/completion split in tunebook's format, then calls
tunebook.train.load_student / sft_config / make_trainer / check_batch_masking / masked_example_html / train /
save_adapter exactly as notebooks/04_train.ipynb does. Checks: backend "unsloth" chosen (``hf`` with ``--backend
hf``), losses finite and falling, an adapter saved.

  PYTHONPATH=lib python benchmarks/unsloth_tunebook_smoke.py --out /tmp/smoke
  PYTHONPATH=lib python benchmarks/unsloth_tunebook_smoke.py --out /tmp/smoke --replay-kl 4 [--backend hf]

With ``--replay-kl W`` 8 replay rows (general prompts, as 04 mixes them in) go to ``make_trainer`` as the cpu profile
sends them (``train.replay_kl`` W): on Unsloth the trainer must not be the KL trainer (Unsloth's own trainer, replay
by cross-entropy, with 04's note) and must train; with ``--backend hf`` the KL trainer must train and report a finite KL.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

FACTS = [
    ("What voltage does the Brindlewatt B2 charger use?", "The Brindlewatt B2 charger uses 12 volts."),
    ("How long does a Brindlewatt battery last?", "A Brindlewatt battery lasts about eight hours."),
    ("How do I reset the Brindlewatt hub?", "Hold the reset button on the Brindlewatt hub for ten seconds."),
    ("What colour is the Brindlewatt status light when charging?", "The status light is amber while charging."),
    ("Where is the Brindlewatt serial number?", "The serial number is under the Brindlewatt base plate."),
    ("布林德瓦特充电器的电压是多少？", "布林德瓦特 B2 充电器使用 12 伏电压。"),
    ("如何重置布林德瓦特集线器？", "按住布林德瓦特集线器的重置按钮十秒钟。"),
    ("电池能用多久？", "布林德瓦特电池大约可以使用八个小时。"),
]


def build_model(src: Path, dst: Path, seed: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(str(src))
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(str(dst))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(dst))
    for name in ("chat_template.jinja", "generation_config.json"):
        if (src / name).is_file() and not (dst / name).is_file():
            shutil.copy(src / name, dst / name)
    print(f"random-weight {cfg.model_type} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M params) at {dst}")


REPLAY = [("What is the capital of France?", "The capital of France is Paris."),
          ("2 + 2 等于多少？", "2 + 2 等于 4。"),
          ("Name a primary colour.", "Red is a primary colour."),
          ("中国的首都是哪座城市？", "中国的首都是北京。"),
          ("How many days are in a week?", "A week has seven days."),
          ("What is H2O?", "H2O is water."),
          ("把“谢谢”翻译成英文。", "Thank you."),
          ("What is the largest planet?", "Jupiter is the largest planet.")]


def write_split(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            q, ans = FACTS[i % len(FACTS)]
            row = {"id": f"r{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}]}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/tunebook_smoke")
    ap.add_argument("--config-dir", default=str(HERE.parent / ".benchdata" / "smollm2-tok"),
                    help="config.json + tokenizer files of the student (no weights needed)")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--replay-kl", type=float, default=0.0, help="mix in 8 replay rows with this train.replay_kl")
    ap.add_argument("--backend", default="auto", choices=["auto", "hf"])
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    out = Path(a.out)
    model_dir, run = out / "student", out / "run"
    if a.build_only:
        build_model(Path(a.config_dir), model_dir, a.seed)
        return 0
    shutil.rmtree(run, ignore_errors=True)
    if not (model_dir / "config.json").is_file():  # in a child: this process must not import transformers yet
        subprocess.run([sys.executable, __file__, "--build-only", "--out", str(out), "--config-dir", a.config_dir,
                        "--seed", str(a.seed)], check=True)
    write_split(run / "data" / "train.jsonl", a.rows)
    write_split(run / "data" / "eval.jsonl", 8)

    # The imports of notebooks/04_train.ipynb's first code cell, in its order (tunebook.callbacks imports
    # transformers, so Unsloth comes second, as it does in the notebook). LiveLoss itself needs IPython: not passed.
    from tunebook import paths, settings, train  # noqa: F401
    from tunebook.callbacks import LiveLoss  # noqa: F401
    from tunebook.settings import TrainSettings

    cfg = TrainSettings(backend=a.backend, replay_kl=a.replay_kl, max_steps=a.steps, learning_rate=a.lr, batch_size=8,
                        max_length=512, save_steps=a.steps // 2, eval_steps=a.steps // 2)
    tdir = run / "train"
    tdir.mkdir(parents=True, exist_ok=True)
    train_ds = train.load_split(run / "data" / "train.jsonl", cfg.system_prompt)
    eval_ds = train.load_split(run / "data" / "eval.jsonl", cfg.system_prompt)

    t = time.perf_counter()
    student, peft_config = train.load_student(str(model_dir), cfg, a.seed)
    print(f"backend {student.backend}, model from {student.source}, load {time.perf_counter() - t:.1f} s")
    replay = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}], "split": "replay"}
              for q, ans in REPLAY] if a.replay_kl else []
    train_ds = train.add_rows(train_ds, replay, cfg.system_prompt)
    args = train.sft_config(cfg, tdir, a.seed, has_eval=len(eval_ds) > 0, backend=student.backend)
    trainer = train.make_trainer(student, peft_config, train_ds, eval_ds, args, distill=replay, kl_weight=cfg.replay_kl)
    print("trainer:", type(trainer).__name__, "padding_free:", getattr(trainer, "padding_free", None),
          "collator:", type(trainer.data_collator).__name__)
    train.check_batch_masking(trainer)
    html = train.masked_example_html(trainer)
    print("masked example:", html.split("</p>")[0].removeprefix("<p>"))
    metrics = train.train(trainer, tdir, backend=student.backend)
    adapter = train.save_adapter(trainer, student, cfg, str(model_dir), tdir)

    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    k = max(1, min(5, len(losses) // 3))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    files = sorted(p.name for p in adapter.iterdir())
    checks = {
        "backend": student.backend == ("unsloth" if a.backend == "auto" else "hf"),
        "loss_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "loss_falls": bool(losses) and last < first - 0.05,
        "adapter_saved": any(f.startswith("adapter_model") for f in files) and "adapter_config.json" in files,
    }
    if a.replay_kl:  # Unsloth: its own trainer, CE on the replay rows (no KL); transformers + PEFT: the KL trainer
        from tunebook.distill import FlagCollator

        kl = metrics.get("replay_kl_per_token")
        kl_trainer = type(trainer).__name__ == "ReplayKLTrainer" and isinstance(trainer.data_collator, FlagCollator)
        checks["replay_loss"] = (not kl_trainer and kl is None if student.backend == "unsloth"
                                 else kl_trainer and kl is not None and math.isfinite(kl))
    report = {"metrics": metrics, "losses": [round(x, 4) for x in losses], "first_mean": round(first, 4),
              "last_mean": round(last, 4), "adapter_files": files, "checks": checks}
    (out / "smoke_result.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, default=str))
    print("SMOKE", "PASS" if all(checks.values()) else "FAIL", checks)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
