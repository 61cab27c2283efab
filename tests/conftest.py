import os
import signal
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLOUDPSS = SHARED / "corpora" / "cloudpss-sample"


def pytest_configure(config):
    """SIGTERM stops the suite the way Ctrl-C does. ``timeout``, CI runners and ``kill`` send SIGTERM, which ends
    Python without running ``finally`` blocks or fixture teardowns: a browser test stopped that way left JupyterLab,
    its kernels and a teacher running, and they slowed the next measurement 3× (session 23). As a KeyboardInterrupt,
    pytest stops the test, runs the teardowns (servers stopped, labs shut down) and exits."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


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


# The end-to-end reference run, shared by test_e2e and the whole-run kill trials (test_kill_trials): the ci profile
# on a corpus other than the profile's (tests/data/corpus_alt, one file UTF-16) with -p overrides.
E2E_RUN = "e2e-ci"
ALT_CORPUS = ROOT / "tests" / "data" / "corpus_alt"
E2E_PORT = 18810
CI_RUN_ARGS = ["--profile", "ci", "--corpus", str(ALT_CORPUS), "-p", "synth.reproducible=true",
               "-p", "train.max_steps=6", "-p", f"serve.port={E2E_PORT}",
               "-p", "evaluate.engine=llama.cpp",  # the newcomer path runs the default engine (transformers)
               "-p", 'evaluate.ask=["What is this project about?"]']  # 05's "Ask your own"


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """``(run_dir, env, completed process)`` of one uninterrupted ``tunebook run`` with :data:`CI_RUN_ARGS`."""
    out = tmp_path_factory.mktemp("outputs")
    env = {"TUNEBOOK_OUTPUTS": str(out)}
    r = tunebook_cli("run", *CI_RUN_ARGS, "--run-id", E2E_RUN, env=env)
    print(r.stdout[-4000:], r.stderr[-4000:])
    assert r.returncode == 0, r.stderr[-3000:]
    return out / E2E_RUN, env, r


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


def kill_run(pid: int) -> None:
    """kill -9 of the runner's process group and of the kernel's: papermill starts the kernel in a session of its
    own, so one killpg would leave it running for a moment. Servers (own sessions) survive, as after a crash of
    the tool alone; the resume must cope with them."""
    groups = {os.getpgid(pid)}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and b"llama-server" not in cmd:  # a child of the runner: the kernel
                groups.add(int(fields[2]))
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass


def copy_run(src: Path, dest: Path, steps: tuple[str, ...]) -> Path:
    """A copy of run dir ``src`` as run ``dest.name`` that has done only ``steps``: its data, params and teacher
    record, and run.json with the other steps dropped (continue it with ``tunebook run --run-id dest.name``)."""
    import json
    import shutil

    shutil.copytree(src / "data", dest / "data")
    for f in ("params.yaml", "teacher.json"):
        shutil.copy(src / f, dest / f)
    rec = json.loads((src / "run.json").read_text())
    rec["run_id"], rec["steps"] = dest.name, {k: v for k, v in rec["steps"].items() if k in steps}
    (dest / "run.json").write_text(json.dumps(rec))
    return dest


@pytest.fixture
def tiny_lm():
    """A tiny random Qwen2 and a word-level tokenizer with a minimal chat template (nothing downloaded)."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    words = ["<pad>", "<eos>", "<unk>", "user", "assistant", ":"] + [f"w{i}" for i in range(58)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant : {% endif %}")
    tok.padding_side = "left"
    torch.manual_seed(0)
    conf = Qwen2Config(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, eos_token_id=1, pad_token_id=0)
    return AutoModelForCausalLM.from_config(conf).eval(), tok
