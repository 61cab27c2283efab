import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLOUDPSS = SHARED / "corpora" / "cloudpss-sample"


def llama_server_available() -> bool:
    try:
        from tunebook.serve import llama_server_binary

        return llama_server_binary().is_file()
    except Exception:
        return False


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def cloudpss() -> Path:
    if not CLOUDPSS.is_dir():
        pytest.skip("../shared/corpora/cloudpss-sample is not beside this checkout")
    return CLOUDPSS


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from tunebook import models

    return models.gguf_path("smollm2-135m-instruct")


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> Path:
    """A private outputs/ folder for runner tests (TUNEBOOK_OUTPUTS is read by child processes)."""
    out = tmp_path / "outputs"
    out.mkdir()
    monkeypatch.setenv("TUNEBOOK_OUTPUTS", str(out))
    return out


def tunebook_cli(*args: str, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    exe = shutil.which("tunebook", path=str(Path(sys.executable).parent)) or "tunebook"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def server_processes(marker: str) -> list[str]:
    """Command lines of llama-server / vLLM processes whose arguments mention ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("llama-server" in cmd or "vllm" in cmd) and marker in cmd:
            found.append(f"{proc.name}: {cmd}")
    return found
