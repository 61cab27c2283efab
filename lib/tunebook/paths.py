"""Where things live: the project root, profiles, notebooks, outputs and the user cache."""

from __future__ import annotations

import os
from pathlib import Path


def _find_root() -> Path:
    env = os.environ.get("TUNEBOOK_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "notebooks").is_dir():
            return parent
    return Path.cwd().resolve()


ROOT = _find_root()
PARAMS_DIR = ROOT / "params"
NOTEBOOKS_DIR = ROOT / "notebooks"
OUTPUTS_DIR = Path(os.environ.get("TUNEBOOK_OUTPUTS", ROOT / "outputs"))


def project_path(p: str | os.PathLike[str]) -> Path:
    """A path from params: absolute as given, relative ones against the project root (not the cwd),
    so the same value works from the runner, from ``notebooks/`` in JupyterLab and from tests."""
    path = Path(os.path.expanduser(str(p)))
    if path.is_absolute():
        return path
    # "outputs/…" means the outputs folder, which $TUNEBOOK_OUTPUTS can move (the notebooks' default run dir
    # "outputs/dev" then lands there too, as the runner's runs do)
    if path.parts and path.parts[0] == "outputs" and "TUNEBOOK_OUTPUTS" in os.environ:
        return OUTPUTS_DIR.joinpath(*path.parts[1:])
    return ROOT / path


def prompt_file(name: str | os.PathLike[str]) -> Path:
    """A prompt file a setting names: a bare file name is one in ``params/prompts``, anything else a project path."""
    return PARAMS_DIR / "prompts" / name if len(Path(name).parts) == 1 else project_path(name)


def cache_dir() -> Path:
    """User cache for models (``$TUNEBOOK_CACHE``, else ``$XDG_CACHE_HOME/tunebook``, else ``~/.cache/tunebook``)."""
    env = os.environ.get("TUNEBOOK_CACHE")
    if env:
        d = Path(env)
    else:
        d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunebook"
    d.mkdir(parents=True, exist_ok=True)
    return d
