"""Multi-GPU training for 04: one training process per GPU through ``accelerate launch`` (DDP; ``torchrun`` with gloo
on CPU), run from the notebook.

The notebook process starts ``accelerate launch --multi_gpu --num_processes N -m tunebook.launch <run_dir>`` on GPUs
(``torchrun --standalone --nproc_per_node N -m tunebook.launch <run_dir>`` on the CPU); every rank loads the
student on its own GPU and trains on its shard of each batch, rank 0 writes the adapter, ``train_metrics.json``
and a progress stream (``train/progress.jsonl``) that the notebook follows to draw the same
live loss figure as a single-GPU run. The worker runs exactly the single-process code path of ``tunebook.train``.

CPU: ``TUNEBOOK_DDP_CPU=1`` lets ``num_gpus`` processes train on the CPU (gloo) — for tests and for learning how DDP
behaves; it is not faster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import replay
from . import settings as settings_mod
from . import train as train_mod
from .paths import ROOT

SETTINGS_FILE = "launch_settings.json"
PROGRESS_FILE = "progress.jsonl"
WORKER_LOG = "workers.log"
MASKED_FILE = "masked_example.html"


def gpus_available() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        return 0


def check_processes(n: int) -> str:
    """'gpu' or 'cpu' for n processes; a clear error when the machine cannot run them."""
    if os.environ.get("TUNEBOOK_DDP_CPU") == "1":
        return "cpu"
    have = gpus_available()
    if have < n:
        raise RuntimeError(f"train.num_gpus={n} but this machine has {have} CUDA GPU(s); set train.num_gpus "
                           f"to at most {max(have, 1)} (or TUNEBOOK_DDP_CPU=1 to try DDP on the CPU)")
    return "gpu"


def command(run_dir: Path, n: int, device: str) -> list[str]:
    """GPUs: ``accelerate launch --multi_gpu`` (NCCL). CPU: torchrun (gloo; accelerate needs MPI for that)."""
    if device == "cpu":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return cmd + ["-m", "tunebook.launch", str(run_dir)]


def train_distributed(cfg: settings_mod.Settings, run_dir: Path, live=None, timeout: float | None = None) -> dict:
    """Train 04 in ``cfg.train.num_gpus`` processes; follow their progress into ``live`` (a LiveLoss); return the
    metrics rank 0 wrote. A failure raises with the tail of the workers' log."""
    n = cfg.train.num_gpus
    device = check_processes(n)
    out = run_dir / "train"
    out.mkdir(parents=True, exist_ok=True)
    (out / SETTINGS_FILE).write_text(cfg.model_dump_json(indent=2))
    progress = out / PROGRESS_FILE
    progress.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "lib"), os.environ.get("PYTHONPATH"))
                                                      if p))
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or n) // n)))
    log_path = out / WORKER_LOG
    launcher = "torchrun" if device == "cpu" else "accelerate"
    print(f"training in {n} processes ({device}) through {launcher}; worker log: {log_path}")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command(run_dir, n, device), stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(ROOT), start_new_session=True)
        try:
            follow(progress, proc, live, timeout)
        except BaseException:
            _kill(proc)
            raise
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"distributed training failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")
    return json.loads((out / train_mod.METRICS_FILE).read_text())


def _kill(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def follow(progress: Path, proc: subprocess.Popen, live=None, timeout: float | None = None) -> None:
    """Replay rank 0's progress events into ``live`` (LiveLoss callbacks) until the workers exit."""
    pos = 0
    state = SimpleNamespace(global_step=0, max_steps=0)
    t0 = time.monotonic()
    while True:
        done = proc.poll() is not None
        if progress.is_file():
            with open(progress, encoding="utf-8") as fh:
                fh.seek(pos)
                while True:
                    line = fh.readline()
                    if not line.endswith("\n"):  # a partly written line: read it next time
                        break
                    pos += len(line.encode("utf-8"))
                    _dispatch(json.loads(line), state, live)
        if done:
            return
        if timeout and time.monotonic() - t0 > timeout:
            raise TimeoutError(f"distributed training still running after {timeout:.0f} s")
        time.sleep(0.5)


def _dispatch(ev: dict, state: SimpleNamespace, live) -> None:
    state.global_step = ev.get("step", state.global_step)
    state.max_steps = ev.get("max_steps", state.max_steps)
    if live is None:
        return
    kind = ev.get("event")
    if kind == "begin":
        live.on_train_begin(None, state, None)
    elif kind == "step":
        live.on_step_end(None, state, None)
    elif kind == "log":
        live.on_log(None, state, None, logs=ev.get("logs", {}))
    elif kind == "end":
        live.on_train_end(None, state, None)


def progress_callback(path: Path):
    """Rank 0's TrainerCallback that appends begin/step/log/end events to ``path`` (flushed per line)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def _write(self, ev: dict) -> None:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(ev) + "\n")

        def on_train_begin(self, args, state, control, **kw):
            self._write({"event": "begin", "step": state.global_step, "max_steps": state.max_steps})

        def on_step_end(self, args, state, control, **kw):
            self._write({"event": "step", "step": state.global_step})

        def on_log(self, args, state, control, logs=None, **kw):
            self._write({"event": "log", "step": state.global_step,
                         "logs": {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float, str))}})

        def on_train_end(self, args, state, control, **kw):
            self._write({"event": "end", "step": state.global_step})

    return Progress()


def worker(run_dir: Path) -> dict[str, Any]:
    """One rank: the same steps as notebook 04's cells, on this rank's GPU."""
    out = run_dir / "train"
    cfg = settings_mod.Settings.model_validate_json((out / SETTINGS_FILE).read_text())
    backend = train_mod.import_backend(cfg.train.backend)  # Unsloth before transformers
    data = run_dir / "data"
    train_ds = train_mod.load_split(data / "train.jsonl", cfg.train.system_prompt)
    eval_ds = train_mod.load_split(data / "eval.jsonl", cfg.train.system_prompt)
    student, peft_config = train_mod.load_student(cfg.student, cfg.train, cfg.train_seed)
    import torch
    from accelerate import PartialState

    # the replay as 04 mixes it in one process: rank 0 asks the base student, the other ranks wait, then read its
    # answers. The state as TrainingArguments will ask for it (cpu=True without CUDA: else accelerate sees no
    # distributed run on a CPU and main_process_first waits for nobody — both ranks wrote data/replay.jsonl)
    state = PartialState(cpu=not torch.cuda.is_available())
    train_ds, replayed, slices = replay.mix_in(student, cfg, data, train_ds, first=state.main_process_first)
    if replayed:
        print(f"replay: {len(replayed)} general prompts answered by the base student, mixed into {len(train_ds)} rows")
    if cfg.train.context_fraction:  # the same rows on every rank (seeded), as 04 adds them in one process
        train_ds, _ = train_mod.add_context_rows(train_ds, run_dir, cfg, save=train_mod.is_main_process())
    train_tokens = train_mod.count_tokens(train_ds, student.tokenizer) if backend == "unsloth" else None
    args = train_mod.sft_config(cfg.train, out, cfg.train_seed, has_eval=len(eval_ds) > 0, backend=backend,
                                train_tokens=train_tokens)
    main = train_mod.is_main_process()
    callbacks = [progress_callback(out / PROGRESS_FILE)] if main else []
    trainer = train_mod.make_trainer(student, peft_config, train_ds, eval_ds, args, callbacks=callbacks,
                                     distill=replayed if cfg.train.replay_kl else [], kl_weight=cfg.train.replay_kl,
                                     prompt_kl=cfg.train.prompt_kl)
    if replayed and cfg.train.replay_rotate:
        replay.rotate(trainer, replayed, slices)
    train_mod.check_batch_masking(trainer)
    if main:
        (out / MASKED_FILE).write_text(train_mod.masked_example_html(trainer), encoding="utf-8")
    metrics = train_mod.train(trainer, out, backend=backend)
    train_mod.save_adapter(trainer, student, cfg.train, cfg.student, out)
    return metrics


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
