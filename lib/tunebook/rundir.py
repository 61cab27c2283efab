"""The run dir, the one contract between the notebooks: what each step wrote, and the settings it wrote it with.

A run remembers what it is. ``params.yaml`` holds the run's full resolved settings (secrets only as the names of
environment variables), written by the first ``tunebook run`` or by the first notebook opened on the run dir.
``run.json`` holds, per step, its status and the settings that step consumed when it last started, and a history
of every change of settings. From these:

* a resume (``tunebook run --run-id R``) continues with the recorded settings, not with today's defaults;
* a changed setting that an *earlier* step already consumed (a new corpus under finished 02 output) is refused,
  naming the setting and both values, before anything is written;
* a step started with settings that differ from those its outputs were made with moves those outputs aside into
  ``superseded/`` (nothing is deleted, nothing is mixed) and starts afresh;
* a notebook opened in JupyterLab whose parameters disagree with what an earlier step consumed says so before it
  does any work.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from . import settings as st
from .jsonio import write_json

RUN_FILE = "run.json"
PARAMS_FILE = "params.yaml"
# the profile a run dir started from JupyterLab takes its settings from (default: the cpu profile, which the
# parameters cells show); e.g. `TUNEBOOK_PROFILE=ci make lab` for a class on slow machines
PROFILE_ENV = "TUNEBOOK_PROFILE"
SUPERSEDED_DIR = "superseded"
STEPS = list(st.NOTEBOOKS)  # "01_serve", …

# top-level settings → the first step that consumes them (sections belong to their notebook's step)
TOP_LEVEL_CONSUMER = {"teacher": "01_serve", "corpus": "02_synthesize", "student": "03_inspect", "seed": "03_inspect"}

# what each step writes, relative to the run dir (moved aside together when the step starts afresh)
STEP_OUTPUTS: dict[str, list[str]] = {
    "01_serve": [],  # teacher.json and logs/ belong to the server's lifetime, handled by serve.start/stop
    "02_synthesize": ["data/chunks.jsonl", "data/qa.jsonl", "data/chunks_done.jsonl", "data/failures.jsonl",
                      "data/dataset.jsonl", "data/synth_report.json"],
    "03_inspect": ["data/train.jsonl", "data/eval.jsonl", "data/dropped.jsonl", "data/inspect_report.json",
                   "data/train_alpaca.json", "data/train_sharegpt.json", "data/dataset_info.json",
                   "data/judge_cache.jsonl"],
    "04_train": ["train"],
    "05_eval_export": ["eval", "export", "summary.md", "summary.html"],
}


class RunMismatch(st.SettingsError):
    """Settings that would mix two different runs in one run dir."""


# Settings added after runs were recorded without them, whose default is not what those runs did: a record that
# lacks one ran with this value, so resuming it keeps that value (the default is for new runs). train.replay_kl came
# in session 23 at 0 and became 4 in session 24. train.replay_prompts (session 25) defaults to what older runs read,
# replay.yaml; it is listed so that a later change of that default leaves them as they ran. evaluate.agreement_pass
# came in session 26, on; older runs were gated without it. evaluate.rag_lines came in session 31 at 3; older runs
# gave fine-tuned + RAG whole chunks. synth.paraphrase_retries came in session 35 at 0, what older runs did; listed
# like replay_prompts, so that a later default leaves them as they ran.
LEGACY: dict[str, Any] = {"train.replay_kl": 0.0, "train.replay_prompts": "replay.yaml",
                          "evaluate.agreement_pass": False, "evaluate.rag_lines": 0, "synth.paraphrase_retries": 0}


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def consumer(key: str) -> str:
    """The first step that reads a setting (``train.epochs`` → 04_train, ``corpus`` → 02_synthesize)."""
    if "." in key:
        section = key.split(".", 1)[0]
        return next(s for s, sec in st.NOTEBOOKS.items() if sec == section)
    return TOP_LEVEL_CONSUMER[key]


def step_keys(step: str) -> list[str]:
    return [k for k in st.valid_keys() if consumer(k) == step]


def step_index(step: str) -> int:
    return STEPS.index(step)


def flat(settings: st.Settings) -> dict[str, Any]:
    """``{"corpus": …, "train.epochs": …}``, JSON-safe, secrets redacted."""
    return st._flatten(settings.redacted())


def diff(old: Mapping[str, Any], new: Mapping[str, Any], keys: list[str] | None = None) -> dict[str, dict[str, Any]]:
    keys = keys if keys is not None else sorted(set(old) | set(new))
    return {k: {"old": old.get(k), "new": new.get(k)} for k in keys if k in old and old.get(k) != new.get(k)}


class RunDir:
    """One run directory: its record (``run.json``), its settings (``params.yaml``) and its step outputs."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def record_path(self) -> Path:
        return self.path / RUN_FILE

    @property
    def params_path(self) -> Path:
        return self.path / PARAMS_FILE

    # ---- the record -------------------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        if self.record_path.is_file():
            return json.loads(self.record_path.read_text(encoding="utf-8"))
        return {"run_id": self.run_id, "steps": {}}

    @contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of ``run.json`` under a lock: the runner and the notebook kernel it started both
        write it, and neither may drop what the other wrote."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".run.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rec = self.load()
            rec.setdefault("run_id", self.run_id)
            rec.setdefault("steps", {})
            yield rec
            write_json(rec, self.record_path)

    def step(self, step: str) -> dict[str, Any]:
        return self.load().get("steps", {}).get(step, {})

    # ---- settings -------------------------------------------------------------------------------------
    def recorded_settings(self) -> st.Settings | None:
        """The run's settings as recorded in ``params.yaml`` (None for a run dir that has none yet); a setting the
        record predates takes the value the run ran with (:data:`LEGACY`), not today's default."""
        if not self.params_path.is_file():
            return None
        data = st._flatten(st.load_yaml(self.params_path))
        return st.build({**LEGACY, **data}, str(self.params_path))

    def write_settings(self, settings: st.Settings) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.params_path.with_suffix(".yaml.tmp")
        tmp.write_text(st.dump_yaml(settings), encoding="utf-8")
        tmp.replace(self.params_path)

    def record_change(self, rec: dict[str, Any], by: str, step: str | None, changes: dict[str, Any]) -> None:
        rec.setdefault("settings_history", []).append({"at": now(), "by": by, "step": step, "changes": changes})

    # ---- step outputs -----------------------------------------------------------------------------------
    def outputs(self, step: str) -> list[Path]:
        return [self.path / p for p in STEP_OUTPUTS[step] if (self.path / p).exists()]

    def set_aside(self, step: str, why: str) -> Path | None:
        """Move a step's outputs into ``superseded/<time>-<step>/`` (kept, never mixed with the new ones)."""
        found = self.outputs(step)
        if not found:
            return None
        dest = self.path / SUPERSEDED_DIR / f"{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}-{step}"
        for p in found:
            target = dest / p.relative_to(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), str(target))
        (dest / "WHY.txt").write_text(why + "\n", encoding="utf-8")
        return dest

    # ---- a step begins ----------------------------------------------------------------------------------
    def check_earlier_steps(self, step: str, values: Mapping[str, Any]) -> None:
        """Refuse values that an earlier step of this run already consumed with other values."""
        steps = self.load().get("steps", {})
        problems = []
        for key, value in values.items():
            first = consumer(key)
            if step_index(first) >= step_index(step):
                continue
            used = steps.get(first, {}).get("settings", {})
            if key in used and used[key] != value:
                problems.append(f"'{key}' is {value!r} here, but step {first} of this run used {used[key]!r}")
        if problems:
            raise RunMismatch(
                f"run dir {self.path} was made with other settings:\n  " + "\n  ".join(problems)
                + "\nSet them back to the recorded values, or run the earlier step again (it starts afresh), "
                  "or use another run_dir.")

    def begin_step(self, step: str, settings: st.Settings, by: str) -> Path | None:
        """Record that ``step`` starts with ``settings``; outputs it made with other settings are moved aside
        first. Returns where they went (None when nothing moved)."""
        values = flat(settings)
        mine = {k: values[k] for k in step_keys(step)}
        with self.update() as rec:
            before = rec["steps"].get(step, {}).get("settings")
            if before is not None:  # recorded before a setting existed: it ran with the legacy value
                before = {**{k: v for k, v in LEGACY.items() if k in mine}, **before}
            changes = diff(before, mine) if before is not None else {}
            moved = None
            if changes:
                why = (f"{by}: step {step} started with other settings, so its earlier outputs were moved here\n"
                       + json.dumps(changes, indent=2, ensure_ascii=False))
                moved = self.set_aside(step, why)
                self.record_change(rec, by, step, changes)
            entry = rec["steps"].setdefault(step, {})
            entry["settings"] = mine
            if moved:
                entry["superseded"] = str(moved.relative_to(self.path))
        return moved


def open_notebook(stem: str, namespace: Mapping[str, Any]) -> tuple[st.Settings, RunDir]:
    """The first call of every notebook: validate its parameters, check them against what earlier steps of the
    run consumed (before any work), record them, and return ``(settings, run dir)``.

    Settings a notebook does not declare come from the run's ``params.yaml`` (for a new run: the profile named by
    ``$TUNEBOOK_PROFILE``, else the cpu defaults). In JupyterLab a cell value still at its committed default does
    too; a value the learner changed overrides them."""
    from .paths import project_path

    run = RunDir(project_path(namespace["run_dir"]))
    nb = st.for_notebook(stem, namespace)  # validates the cell's values (a typo fails here)
    declared = {k: v for k, v in flat(nb).items() if _declared(k, stem, namespace)}
    recorded = run.recorded_settings()
    profile = os.environ.get(PROFILE_ENV) or None
    base = flat(recorded) if recorded is not None else flat(st.load(profile))
    if os.environ.get("TUNEBOOK_HEADLESS") != "1":  # headless, the runner injects the run's values: they win
        declared, inherited = _inherit_untouched(declared, base)
        if inherited:
            origin = run.params_path if recorded is not None else f"profile {profile}"
            print(f"{stem}: from {origin} (the cell shows the cpu defaults; a value you change wins): "
                  + ", ".join(f"{k}={v!r}" for k, v in inherited.items()))
    merged = st.build({**base, **declared}, f"notebook {stem} parameters + {run.params_path}")
    run.check_earlier_steps(stem, {k: v for k, v in declared.items() if "." not in k})
    changes = diff(base, {**base, **declared}) if recorded is not None else {}
    run.path.mkdir(parents=True, exist_ok=True)
    if recorded is None or changes:
        run.write_settings(merged)
        with run.update() as rec:
            rec.setdefault("started_at", now())
            if changes:
                run.record_change(rec, f"notebook {stem}", stem, changes)
            else:
                run.record_change(rec, f"notebook {stem}", stem, {"initial": flat(merged)})
    moved = run.begin_step(stem, merged, f"notebook {stem}")
    if moved:
        print(f"{stem}: settings changed since this step last ran; its earlier outputs were moved to {moved}")
    return merged, run


def _inherit_untouched(declared: dict[str, Any], base: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a parameters cell's values into those the learner set and those still at the committed default
    (the cpu profile) where the run (or ``$TUNEBOOK_PROFILE``) says otherwise: those come from the run."""
    defaults = flat(st.Settings())
    kept, inherited = {}, {}
    for k, v in declared.items():
        if v == defaults.get(k) and k in base and base[k] != v:
            inherited[k] = base[k]
        else:
            kept[k] = v
    return kept, inherited


def _declared(key: str, stem: str, namespace: Mapping[str, Any]) -> bool:
    if "." in key:
        section, name = key.split(".", 1)
        return section == st.NOTEBOOKS[stem] and name in namespace
    return key in namespace


def dump(values: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(values), sort_keys=False, allow_unicode=True)
