"""A run remembers what it is: recorded settings, refused mixes, outputs moved aside, notebooks checked (no servers)."""

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import tunebook_cli
from tunebook import rundir, runner
from tunebook import settings as st


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def _ns(run_dir, **kw):
    return {"run_dir": str(run_dir), **kw}


def test_consumers_cover_every_setting():
    for key in st.valid_keys():
        assert rundir.consumer(key) in rundir.STEPS, key
    assert rundir.consumer("corpus") == "02_synthesize" and rundir.consumer("train.epochs") == "04_train"
    assert rundir.consumer("student") == "03_inspect" and rundir.consumer("teacher") == "01_serve"


def test_a_notebook_records_the_run_and_fills_undeclared_settings_from_it(tmp_path):
    run = tmp_path / "r"
    cfg, rd = rundir.open_notebook("02_synthesize", _ns(run, corpus="docs/a", max_chunks=3))
    assert cfg.corpus == "docs/a" and cfg.synth.max_chunks == 3
    assert yaml.safe_load((run / "params.yaml").read_text())["corpus"] == "docs/a"
    rec = json.loads((run / "run.json").read_text())
    assert rec["steps"]["02_synthesize"]["settings"]["corpus"] == "docs/a"
    assert rec["settings_history"][0]["changes"]["initial"]["synth.max_chunks"] == 3
    # a later notebook that does not declare synth.* or corpus still sees the run's values
    cfg3, _ = rundir.open_notebook("03_inspect", _ns(run, seed=5))
    assert cfg3.corpus == "docs/a" and cfg3.synth.max_chunks == 3 and cfg3.seed == 5


def test_a_notebook_disagreeing_with_an_earlier_step_says_so_before_any_work(tmp_path):
    run = tmp_path / "r"
    rundir.open_notebook("03_inspect", _ns(run, student="model-a"))
    before = _snapshot(run)
    with pytest.raises(rundir.RunMismatch) as e:
        rundir.open_notebook("04_train", _ns(run, student="model-b", epochs=1.0))
    msg = str(e.value)
    assert "'student' is 'model-b' here" in msg and "03_inspect of this run used 'model-a'" in msg
    assert _snapshot(run) == before  # nothing recorded, nothing moved
    cfg, _ = rundir.open_notebook("04_train", _ns(run, student="model-a", epochs=1.0))
    assert cfg.train.epochs == 1.0


def test_a_step_started_with_other_settings_sets_its_old_outputs_aside(tmp_path, capsys):
    run = tmp_path / "r"
    rundir.open_notebook("02_synthesize", _ns(run, corpus="docs/a"))
    data = run / "data"
    data.mkdir()
    (data / "chunks.jsonl").write_text('{"source": "a.md"}\n')
    (data / "qa.jsonl").write_text('{"source": "a.md"}\n')
    # the same settings again (a resume): outputs stay, synthesis continues from them
    rundir.open_notebook("02_synthesize", _ns(run, corpus="docs/a"))
    assert (data / "qa.jsonl").is_file()
    # another corpus: 02 starts afresh, the old outputs are kept under superseded/, never mixed
    rundir.open_notebook("02_synthesize", _ns(run, corpus="docs/b"))
    assert not (data / "qa.jsonl").exists() and not (data / "chunks.jsonl").exists()
    kept = list((run / "superseded").glob("*-02_synthesize"))
    assert len(kept) == 1 and (kept[0] / "data" / "qa.jsonl").read_text() == '{"source": "a.md"}\n'
    assert "corpus" in (kept[0] / "WHY.txt").read_text()
    rec = json.loads((run / "run.json").read_text())
    change = rec["settings_history"][-1]
    assert change["step"] == "02_synthesize" and change["changes"]["corpus"] == {"old": "docs/a", "new": "docs/b"}
    assert "moved to" in capsys.readouterr().out


def _fake_run(outputs: Path, run_id: str, corpus: str, done: list[str], overrides: list[str] = ()) -> Path:
    """A run dir as `tunebook run --profile ci --corpus CORPUS -p …` leaves it after finishing ``done``."""
    settings = st.load("ci", [f"corpus={corpus}", *overrides])
    rd = rundir.RunDir(outputs / run_id)
    rd.write_settings(settings)
    with rd.update() as rec:
        rec["profile"] = "ci"
        rd.record_change(rec, "tunebook run", "01_serve", {"initial": rundir.flat(settings)})
        for s in done:
            rec["steps"][s] = {"status": "ok", "settings": {k: rundir.flat(settings)[k] for k in rundir.step_keys(s)}}
    (rd.path / "data").mkdir()
    (rd.path / "data" / "chunks.jsonl").write_text('{"source": "mine.md"}\n')
    return rd.path


def test_resume_takes_the_recorded_settings_not_the_defaults(outputs):
    run = _fake_run(outputs, "R", "my/docs", ["01_serve"], ["train.epochs=2"])
    rd = rundir.RunDir(run)
    settings, changes = runner.resolve_settings(rd, None, [])
    assert settings.corpus == "my/docs" and settings.train.epochs == 2 and settings.teacher == "smollm2-135m-instruct"
    assert changes == {}
    # repeating the run's own profile changes nothing either (the record already holds it and the -p of then)
    settings, changes = runner.resolve_settings(rd, "ci", [])
    assert settings.corpus == "my/docs" and changes == {}
    settings, changes = runner.resolve_settings(rd, None, ["train.epochs=3"])
    assert changes == {"train.epochs": {"old": 2.0, "new": 3}}


def test_a_run_recorded_before_a_setting_existed_resumes_as_it_ran(outputs):
    """train.replay_kl came at 0 (session 23) and defaults to 4 since: a run whose record lacks it trained with 0, so a
    resumed 04 keeps 0 and sets nothing aside; only an explicit -p changes it (and counts as a change)."""
    run = _fake_run(outputs, "R", "my/docs", ["01_serve", "02_synthesize", "03_inspect"])
    data = yaml.safe_load((run / "params.yaml").read_text())
    del data["train"]["replay_kl"]  # the record as older code wrote it
    (run / "params.yaml").write_text(yaml.safe_dump(data))
    rd = rundir.RunDir(run)
    old_04 = {k: v for k, v in rundir.flat(st.load("ci")).items() if k in rundir.step_keys("04_train")}
    del old_04["train.replay_kl"]
    with rd.update() as rec:
        rec["steps"]["04_train"] = {"status": "failed", "settings": old_04}
    assert st.Settings().train.replay_kl == 4 and st.load("ci").train.replay_kl == 4  # new runs
    settings, changes = runner.resolve_settings(rd, None, [])
    assert settings.train.replay_kl == 0 and changes == {}
    assert rd.begin_step("04_train", settings, "test") is None  # the same settings as it ran: nothing moved aside
    assert rd.step("04_train")["settings"]["train.replay_kl"] == 0
    settings, changes = runner.resolve_settings(rd, None, ["train.replay_kl=4"])
    assert settings.train.replay_kl == 4 and changes == {"train.replay_kl": {"old": 0.0, "new": 4}}


def test_every_legacy_value_is_a_setting_it_can_take():
    """rundir.LEGACY fills settings an old record lacks: each must be a real key and a value the settings accept."""
    defaults = rundir.flat(st.Settings())
    assert set(rundir.LEGACY) <= set(defaults)
    built = rundir.flat(st.build(rundir.LEGACY, "LEGACY"))
    assert {k: built[k] for k in rundir.LEGACY} == rundir.LEGACY


def test_a_resume_changing_the_corpus_under_finished_02_fails_fast_and_changes_nothing(outputs):
    run = _fake_run(outputs, "R", "my/docs", ["01_serve", "02_synthesize"])
    before = _snapshot(run)
    r = tunebook_cli("run", "--run-id", "R", "--corpus", "samples/docs", env={"TUNEBOOK_OUTPUTS": str(outputs)},
                     timeout=120)
    assert r.returncode == 2, r.stderr
    assert "'corpus': the run has 'my/docs' (consumed by 02_synthesize), this command gives 'samples/docs'" in r.stderr
    assert "--from 02" in r.stderr and "nothing was changed" in r.stderr
    assert _snapshot(run) == before
    # the same for a student change when resuming after 03
    run2 = _fake_run(outputs, "S", "my/docs", ["01_serve", "02_synthesize", "03_inspect"])
    before = _snapshot(run2)
    r = tunebook_cli("run", "--run-id", "S", "--from", "04", "-p", "student=qwen2.5-coder-0.5b-instruct",
                     env={"TUNEBOOK_OUTPUTS": str(outputs)}, timeout=120)
    assert r.returncode == 2 and "'student'" in r.stderr and "--from 03" in r.stderr
    assert _snapshot(run2) == before


def test_changes_for_the_restart_step_or_later_are_allowed():
    runner.check_resumable("R", "02_synthesize", {"corpus": {"old": "a", "new": "b"},
                                                  "train.epochs": {"old": 1, "new": 2}})
    with pytest.raises(rundir.RunMismatch, match="synth.max_chunks"):
        runner.check_resumable("R", "04_train", {"synth.max_chunks": {"old": 1, "new": 2}})


def test_the_printed_resume_command_carries_nothing_that_could_drift():
    assert runner.resume_command("R", "02_synthesize") == "tunebook run --run-id R --from 02"


def test_run_json_writers_do_not_drop_each_other(tmp_path):
    rd = rundir.RunDir(tmp_path / "r")
    with rd.update() as rec:
        rec["steps"]["02_synthesize"] = {"status": "running"}
    # the kernel records its settings while the runner holds an older copy: the runner re-reads under the lock
    with rd.update() as rec:
        rec["steps"]["02_synthesize"]["settings"] = {"corpus": "x"}
    with rd.update() as rec:
        rec["steps"]["02_synthesize"]["status"] = "ok"
    assert rd.step("02_synthesize") == {"status": "ok", "settings": {"corpus": "x"}}
    assert not any(p.name.endswith(".tmp") for p in rd.path.iterdir())
    assert os.access(rd.record_path, os.R_OK)


def test_a_class_profile_fills_a_new_run_and_a_changed_cell_value_still_wins(tmp_path, monkeypatch, capsys):
    """`TUNEBOOK_PROFILE=ci make lab`: the committed cells (cpu defaults) run the ci profile; a knob the learner
    edits overrides it; headless (papermill injects the run's values) nothing is inherited."""
    defaults = st.Settings()
    ci = st.load("ci")
    monkeypatch.setenv("TUNEBOOK_PROFILE", "ci")
    monkeypatch.delenv("TUNEBOOK_HEADLESS", raising=False)
    run = tmp_path / "r"
    cfg, _ = rundir.open_notebook("01_serve", _ns(run, teacher=defaults.teacher, port=8080))
    assert cfg.teacher == ci.teacher != defaults.teacher and cfg.synth.max_chunks == ci.synth.max_chunks
    assert f"teacher={ci.teacher!r}" in capsys.readouterr().out
    # 02 opened later: the cell's untouched corpus yields to the run's, an edited knob wins and is recorded
    cfg2, _ = rundir.open_notebook("02_synthesize", _ns(run, corpus=defaults.corpus, chunk_tokens=100))
    assert cfg2.corpus == ci.corpus and cfg2.synth.chunk_tokens == 100
    assert yaml.safe_load((run / "params.yaml").read_text())["synth"]["chunk_tokens"] == 100
    monkeypatch.setenv("TUNEBOOK_HEADLESS", "1")
    cfg3, _ = rundir.open_notebook("03_inspect", _ns(run, eval_fraction=defaults.inspect.eval_fraction))
    assert cfg3.inspect.eval_fraction == defaults.inspect.eval_fraction != ci.inspect.eval_fraction
