"""01's settings checks that need no server."""

import pytest

from tunebook import serve, settings as st


def test_public_bind_needs_explicit_param(tmp_path):
    cfg = st.load("ci", ["serve.host=0.0.0.0"]).serve
    with pytest.raises(serve.ServeError, match="allow_public_bind"):
        serve.start(cfg, "smollm2-135m-instruct", tmp_path)


def test_vllm_interpreter_paths_resolve_against_the_project_root():
    """gpu.yaml's `.venv-vllm/bin/python` must work from notebooks/ (JupyterLab's cwd) as from the runner."""
    from tunebook.paths import ROOT

    cfg = st.load("gpu").serve
    assert serve.vllm_command(cfg, "m", 8007)[0] == str(ROOT / ".venv-vllm" / "bin" / "python")
    assert serve.vllm_command(cfg.model_copy(update={"vllm_python": "python3"}), "m", 8007)[0] == "python3"
    assert serve.vllm_command(cfg.model_copy(update={"vllm_python": "/opt/v/bin/python"}), "m", 8007)[0] == "/opt/v/bin/python"
