"""A suite stopped with SIGTERM (timeout, CI, kill) still runs its teardowns: servers and labs don't outlive it."""

import os
import signal
import subprocess
import sys
import time

from conftest import ROOT

INNER = '''
import pathlib, time, pytest

@pytest.fixture
def server():
    pathlib.Path("started").write_text("up")
    yield
    pathlib.Path("stopped").write_text("teardown ran")

def test_long(server):
    time.sleep(60)
'''


def test_sigterm_runs_the_teardowns(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                             "test_inner.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode != 0, out
    assert (tmp_path / "stopped").read_text() == "teardown ran", out
