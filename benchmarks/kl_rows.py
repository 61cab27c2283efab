"""04's replay KL (``train.replay_kl``): the LoRA-off forward pass over the whole batch vs over the rows that hold
KL positions only (``distill.base_hidden``), on a finished run dir, same code, same seed, one process.

A batch of four with one replay row ran the base over all four rows before; now over that one row, cut to its own
length. Both variants train ``--steps`` optimizer steps of 04's own path (``train.load_student`` → ``replay.mix_in``
with the run's cached ``data/replay.jsonl`` → ``sft_config`` → ``make_trainer`` with the replay rows distilled):
seconds, non-padding tokens per second, the loss of every step and the mean KL per replay token. The run dir is
only read (its data folder is copied to a temporary one, checkpoints go there too).

    .venv/bin/python benchmarks/kl_rows.py outputs/RUN [--steps 32]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from bench_io import run_settings, write_result  # noqa: E402


def train_steps(cfg, run: Path, steps: int, rows_only: bool) -> dict:
    from tunebook import distill, replay, train

    tcfg = cfg.train.model_copy(update={"max_steps": steps, "save_steps": 10_000})
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        shutil.copytree(run / "data", data)
        student, peft_config = train.load_student(cfg.student, tcfg, cfg.train_seed)
        train_ds = train.load_split(data / "train.jsonl", tcfg.system_prompt)
        train_ds, replayed, _ = replay.mix_in(student, cfg.model_copy(update={"train": tcfg}), data, train_ds)
        if not replayed or not tcfg.replay_kl:
            raise SystemExit(f"{run.name}: no replay rows trained by KL (train.replay_fraction, train.replay_kl)")
        args = train.sft_config(tcfg, Path(tmp), cfg.train_seed, has_eval=False, backend=student.backend)
        trainer = train.make_trainer(student, peft_config, train_ds, None, args, distill=replayed,
                                     kl_weight=tcfg.replay_kl, prompt_kl=tcfg.prompt_kl)
        trainer.base_rows_only = rows_only
        m = train.train(trainer, Path(tmp), backend=student.backend)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"seconds": m["runtime_s"], "tokens": m["tokens"], "tokens_per_s": m["tokens_per_s"], "losses": losses,
            "replay_rows": len(replayed), "rows": len(train_ds), "kl_per_token": distill.mean_kl(trainer)}


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--steps", type=int, default=32, help="optimizer steps per variant")
    a = ap.parse_args(argv)
    run = a.run_dir.resolve()
    cfg = run_settings(run)
    res: dict = {"date": str(date.today()), "run": run.name, "threads": torch.get_num_threads(), "steps": a.steps,
                 "batch_size": cfg.train.batch_size}
    res["whole_batch"] = train_steps(cfg, run, a.steps, rows_only=False)
    res["kl_rows_only"] = train_steps(cfg, run, a.steps, rows_only=True)
    x, y = res["whole_batch"], res["kl_rows_only"]
    dl = max(abs(p - q) for p, q in zip(x["losses"], y["losses"]))
    print(f"\n{run.name}: {a.steps} steps of {cfg.train.batch_size} rows ({y['replay_rows']} replay rows of {y['rows']}),"
          f" {date.today()}, {res['threads']} threads")
    print("| LoRA-off pass over | seconds | tokens/s | KL per replay token | last loss |\n|---|---|---|---|---|")
    for name, r in (("the whole batch (before)", x), ("the KL rows only", y)):
        print(f"| {name} | {r['seconds']:.1f} | {r['tokens_per_s']} | {r['kl_per_token']} | {r['losses'][-1]:.4f} |")
    print(f"speed-up {x['seconds'] / y['seconds']:.2f}×; largest per-step loss difference {dl:.4f}")
    res["speed_up"] = round(x["seconds"] / y["seconds"], 3)
    res["largest_loss_difference"] = round(dl, 5)
    write_result(f"kl_rows-{run.name}", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
