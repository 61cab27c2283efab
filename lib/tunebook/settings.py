"""Typed run settings: profiles (YAML in ``params/``), ``-p key=value`` overrides, validation.

A profile is a YAML mapping with a few top-level keys (``corpus``, ``teacher``, ``student``, ``seed``) and one
section per notebook (``serve`` → 01, ``synth`` → 02, ``inspect`` → 03, ``train`` → 04, ``evaluate`` → 05).
Each notebook declares its knobs in its ``parameters`` cell under the *field* name (``epochs`` in 04 is
``train.epochs`` in a profile); top-level keys keep their names. Everything is validated here, before any
heavy work starts, and an unknown key fails at once naming the closest valid one.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from .paths import PARAMS_DIR, project_path
from .sections import EvalSettings, InspectSettings, ServeSettings, SynthSettings, TrainSettings, _Section  # noqa: F401

# notebook stem -> its section of the settings
NOTEBOOKS: dict[str, str] = {
    "01_serve": "serve",
    "02_synthesize": "synth",
    "03_inspect": "inspect",
    "04_train": "train",
    "05_eval_export": "evaluate",
}


class SettingsError(ValueError):
    """A profile or override that cannot be used; the message says what to change."""


class Settings(_Section):
    corpus: str = "samples/docs"
    teacher: str = "qwen2.5-coder-1.5b-instruct"
    student: str = "qwen2.5-coder-0.5b-instruct"
    seed: int = 42
    serve: ServeSettings = ServeSettings()
    synth: SynthSettings = SynthSettings()
    inspect: InspectSettings = InspectSettings()
    train: TrainSettings = TrainSettings()
    evaluate: EvalSettings = EvalSettings()

    # ---- views used by the runner and the notebooks -------------------------------------------------
    @property
    def train_seed(self) -> int:  # 04's: train.seed where set, else the run's
        return self.seed if self.train.seed is None else self.train.seed

    def notebook_parameters(self, stem: str, declared: set[str]) -> dict[str, Any]:
        """The values for one notebook: only the names its ``parameters`` cell declares."""
        section = getattr(self, NOTEBOOKS[stem])
        out: dict[str, Any] = {}
        for name in declared:
            if name in type(section).model_fields:
                out[name] = getattr(section, name)
            elif name in TOP_LEVEL:
                out[name] = getattr(self, name)
        return out

    def check_consistency(self, origin: str) -> "Settings":
        """Rules across sections (a notebook alone sees only its own section, so the runner checks these)."""
        if self.inspect.max_tokens > self.train.max_length:
            raise SettingsError(f"invalid settings in {origin}: inspect.max_tokens ({self.inspect.max_tokens}) must not "
                                f"exceed train.max_length ({self.train.max_length}); longer pairs would be truncated")
        multi = [k for k, on in (("train.restyle_answers", self.train.restyle_answers),
                                 ("train.repair_rounds", self.train.repair_rounds)) if on]
        if self.train.num_gpus > 1 and multi:
            raise SettingsError(f"invalid settings in {origin}: {', '.join(multi)} run(s) in 04's own process only, not "
                                f"with train.num_gpus={self.train.num_gpus} (DDP); switch it off or train on one GPU")
        if self.train.prompt_kl and not (self.train.replay_kl and self.train.replay_fraction):
            raise SettingsError(f"invalid settings in {origin}: train.prompt_kl is computed with the replay's KL; it "
                                "needs train.replay_kl > 0 and train.replay_fraction > 0, else it would do nothing")
        need = 256 * self.evaluate.rag_k + 512  # rag_k chunks of ≤ 384 tokens, the prompt and the answer fit
        if self.train.context_fraction and self.train.max_length < need:
            raise SettingsError(f"invalid settings in {origin}: train.context_fraction trains rows with "
                                f"{self.evaluate.rag_k} retrieved chunk(s) in the prompt; they need train.max_length "
                                f">= {need} (is {self.train.max_length}), else their answers are cut off")
        return self

    def redacted(self) -> dict[str, Any]:
        return _redact(self.model_dump(mode="json"))


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, _Section)


TOP_LEVEL = [k for k, f in Settings.model_fields.items() if not _is_section(f.annotation)]
SECTIONS = {k: f.annotation for k, f in Settings.model_fields.items() if _is_section(f.annotation)}


def valid_keys() -> list[str]:
    keys = list(TOP_LEVEL)
    for sec, model in SECTIONS.items():
        keys += [f"{sec}.{name}" for name in model.model_fields]
    return keys


_SECRET_KEY = re.compile(r"(^|_)(api_key|apikey|key|token|secret|password|passwd)$", re.I)


def _redact(obj: Any, key: str = "") -> Any:
    """Values of secret-looking keys (``api_key``, ``hf_token``; not ``api_key_env`` nor ``max_tokens``)."""
    if isinstance(obj, dict):
        return {k: _redact(v, k) for k, v in obj.items()}
    if key and _SECRET_KEY.search(key) and obj:
        return "***redacted***"
    return obj


# ---- loading ------------------------------------------------------------------------------------------


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key in SECTIONS:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        if "." in key:
            sec, name = key.split(".", 1)
            out.setdefault(sec, {})[name] = v
        else:
            out[key] = v
    return out


def check_keys(flat: Mapping[str, Any], origin: str) -> None:
    valid = valid_keys()
    bad = [k for k in flat if k not in valid]
    if not bad:
        return
    lines = []
    for k in bad:
        close = difflib.get_close_matches(k, valid, n=1, cutoff=0.5)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        lines.append(f"unknown setting '{k}' in {origin}{hint}")
    raise SettingsError("\n".join(lines) + "\nvalid keys: " + ", ".join(valid))


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SettingsError(f"override '{text}' must look like key=value (e.g. train.epochs=1)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def profile_path(profile: str) -> Path:
    p = Path(profile)
    if p.suffix in (".yaml", ".yml") or os.sep in profile:
        p = project_path(profile) if not p.is_absolute() else p
        if not p.is_file():
            raise SettingsError(f"profile file {p} does not exist")
        return p
    p = PARAMS_DIR / f"{profile}.yaml"
    if not p.is_file():
        known = sorted(x.stem for x in PARAMS_DIR.glob("*.yaml"))
        close = difflib.get_close_matches(profile, known, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise SettingsError(f"unknown profile '{profile}'{hint}; profiles: {', '.join(known)} (or pass a .yaml path)")
    return p


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SettingsError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise SettingsError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def build(flat: Mapping[str, Any], origin: str = "settings") -> Settings:
    check_keys(flat, origin)
    try:
        return Settings.model_validate(_unflatten(flat))
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msgs.append(f"{loc}: {err['msg']} (got {err.get('input')!r})" if loc else err["msg"])
        raise SettingsError(f"invalid settings in {origin}:\n  " + "\n  ".join(msgs)) from None


def load(profile: str | None = None, overrides: list[str] | None = None, base: Mapping[str, Any] | None = None) -> Settings:
    """Profile (name in params/ or a YAML path) + ``key=value`` overrides → validated :class:`Settings`."""
    flat: dict[str, Any] = dict(_flatten(base or {}))
    origin = "defaults"
    if profile:
        path = profile_path(profile)
        data = _flatten(load_yaml(path))
        check_keys(data, str(path))
        flat.update(data)
        origin = str(path)
    for text in overrides or []:
        key, value = parse_override(text)
        check_keys({key: value}, f"-p {text}")
        flat[key] = value
    return build(flat, origin).check_consistency(origin)


def for_notebook(stem: str, namespace: Mapping[str, Any]) -> Settings:
    """Validate a notebook's parameters (its globals) into :class:`Settings`.

    Names that the notebook's section defines become ``section.name``; top-level names stay as they are.
    Used at the top of each notebook, so interactive edits of the parameters cell are checked too.
    """
    section = NOTEBOOKS[stem]
    fields = SECTIONS[section].model_fields
    flat: dict[str, Any] = {}
    for name in fields:
        if name in namespace:
            flat[f"{section}.{name}"] = namespace[name]
    for name in TOP_LEVEL:
        if name in namespace:
            flat[name] = namespace[name]
    return build(flat, f"notebook {stem} parameters")


def dump_yaml(settings: Settings) -> str:
    return yaml.safe_dump(settings.redacted(), sort_keys=False, allow_unicode=True)
