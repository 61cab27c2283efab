"""02 under faults, against a real llama-server (SmolLM2-135M): kill -9 at random points and resume; a fault-injecting
proxy in front of the server; two servers with one killed mid-run."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunebook import corpus as corpus_lib, qa_store, serve, settings as st, synthesize

from conftest import llama_server_available
from faultproxy import FaultProxy

pytestmark = [pytest.mark.e2e,  # real llama-server, kill -9 trials, a fault proxy
              pytest.mark.skipif(not llama_server_available(), reason="llama-server not installed (make install)")]

# small chunks, so there are enough of them to be interrupted ten times; reproducible answers (seeded, no reuse of
# a cached prompt prefix) on a one-slot server, so an interrupted run can be compared with an uninterrupted one
OVERRIDES = ["synth.chunk_tokens=64", "synth.min_chunk_tokens=8", "synth.max_chunks=14", "synth.reproducible=true"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, smollm2_gguf):
    d = tmp_path_factory.mktemp("faults-teacher")
    t = serve.start(st.load("ci", ["serve.port=18200", "serve.parallel=1", "serve.threads=1"]).serve, "smollm2-135m-instruct", d)
    yield t
    serve.stop(d)


def synth_cmd(run_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "tunebook.synthesize", str(run_dir), "--profile", "ci", "--quiet"]
    for o in OVERRIDES:
        cmd += ["-p", o]
    return cmd


def dataset(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "data" / synthesize.DATASET_FILE).read_text().splitlines()]


def test_killed_at_ten_random_points_resumes_to_the_uninterrupted_dataset(teacher, tmp_path):
    ref = tmp_path / "uninterrupted"
    ref.mkdir()
    teacher.save(ref)
    t0 = time.monotonic()
    subprocess.run(synth_cmd(ref), check=True, timeout=900, capture_output=True)
    full_s = time.monotonic() - t0
    expected = dataset(ref)
    assert len(expected) >= 8

    run = tmp_path / "killed"
    run.mkdir()
    teacher.save(run)
    rng = random.Random(20261128)
    kills, finished = [], False
    for _ in range(60):
        p = subprocess.Popen(synth_cmd(run), start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        # anywhere: start-up, chunking, mid-request, mid-write; short enough that ten kills land before the work
        # runs out (a clean-clone CI run once ran out after nine with delays up to full_s / 5)
        delay = rng.uniform(0.5, max(3.0, min(10.0, full_s / 10)))
        try:
            p.wait(timeout=delay)
            finished = True  # nothing left to interrupt
            break
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            kills.append(round(delay, 2))
        if len(kills) >= 10:
            break
    assert len(kills) >= 10, f"only {len(kills)} kills landed before the work ran out: {kills}"
    if not finished:
        subprocess.run(synth_cmd(run), check=True, timeout=900, capture_output=True)
    got = dataset(run)
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)), "duplicated pairs"
    assert {r["id"] for r in expected} - set(ids) == set(), "lost pairs"
    strip = lambda rows: [{k: r[k] for k in ("id", "chunk_id", "instruction", "output", "paraphrases")} for r in rows]
    assert strip(got) == strip(expected), "the resumed dataset differs from the uninterrupted one"
    report = json.loads((run / "data" / "synth_report.json").read_text())["synth"]
    assert report["chunks_failed"] == 0


def test_fault_injecting_proxy_every_kind_counted_nothing_lost(teacher, tmp_path, root):
    docs, _ = corpus_lib.read_corpus(root / "samples" / "docs" / "en", ["**/*.md"], [])
    chunks = corpus_lib.chunk_corpus(docs, 128, 24)[:5]
    schedule = ["429", "500", "timeout", "truncated", "malformed", "schema", "think", "reasoning"]
    # one request at a time on the one-slot server: a request never waits in its queue long enough to time out
    # for real; the proxy's "timeout" holds a request past request_timeout
    cfg = st.load("ci", ["synth.request_timeout=20", "synth.max_retries=4", "synth.paraphrases=0"]).synth
    with FaultProxy(teacher.base_url.removesuffix("/v1"), schedule, hold_s=25) as proxy:
        faulty = serve.Teacher(backend="llama.cpp", base_url=proxy.base_url, model=teacher.model, capacity=1)
        stats = synthesize.generate(chunks, faulty, cfg, tmp_path)
        synthesize.write_report(stats, {"files_used": len(docs)}, tmp_path)
    assert not proxy.schedule, "every fault was injected"
    assert stats.chunks_ok == len(chunks) and stats.chunks_failed == 0, stats.errors
    report = json.loads((tmp_path / "synth_report.json").read_text())["synth"]
    for kind in ("http_429", "http_5xx", "timeout", "truncated_stream", "malformed_json", "schema_invalid"):
        assert report["failures"][kind] >= 1, (kind, report["failures"])
    assert report["handled"]["think_block"] >= 1 and report["handled"]["reasoning_content"] >= 1
    logged = [json.loads(x) for x in (tmp_path / qa_store.FAILURES_FILE).read_text().splitlines()]
    assert {"http_429", "http_5xx", "timeout", "schema_invalid"} <= {r["kind"] for r in logged}
    rows = synthesize.load_qa(tmp_path)
    assert {r["chunk_id"] for r in rows} == {c.id for c in chunks}, "a chunk lost its pairs"
    assert all("<think>" not in r["instruction"] + r["output"] for r in rows)


def test_two_servers_one_killed_mid_run_loses_no_chunk(teacher, tmp_path, root):
    """Synthesis over two llama-servers; the second is SIGKILLed while requests are in flight on it."""
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = serve.start(st.load("ci", ["serve.port=18210", "serve.parallel=1", "serve.threads=1"]).serve, "smollm2-135m-instruct",
                         second_dir)
    try:
        both = serve.Teacher(backend="llama.cpp", base_url=teacher.base_url, model=teacher.model, capacity=1,
                             extra_base_urls=[second.base_url])
        docs, _ = corpus_lib.read_corpus(root / "samples" / "docs" / "en", ["**/*.md"], [])
        chunks = corpus_lib.chunk_corpus(docs, 64, 8)[:12]
        cfg = st.load("ci", ["synth.request_timeout=60", "synth.paraphrases=0"]).synth
        data = tmp_path / "data"

        def kill_second() -> None:  # once the second server has answered something, kill it mid-run
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = data / qa_store.DONE_FILE
                if done.is_file() and len(done.read_text().splitlines()) >= 4:
                    break
                time.sleep(0.2)
            os.killpg(second.pgid or second.pid, signal.SIGKILL)

        import threading

        killer = threading.Thread(target=kill_second)
        killer.start()
        stats = synthesize.generate(chunks, both, cfg, data)
        killer.join()
    finally:
        serve.stop(second_dir)
    assert stats.chunks_ok == len(chunks) and stats.chunks_failed == 0, stats.errors
    per = stats.as_dict()["endpoints"]
    assert per[second.base_url]["ok"] >= 1, "the second server did some of the work before it died"
    assert per[second.base_url]["errors"] >= 1, "requests in flight on the dead server failed over"
    assert per[teacher.base_url]["ok"] > per[second.base_url]["ok"]
    assert {r["chunk_id"] for r in synthesize.load_qa(data)} == {c.id for c in chunks}
