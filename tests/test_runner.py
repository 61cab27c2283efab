import pytest

from tunebook import runner, settings as st


def test_step_range():
    assert runner.step_range(None, None) == runner.STEPS
    assert runner.step_range("04", None) == ["04_train", "05_eval_export"]
    assert runner.step_range("2", "3") == ["02_synthesize", "03_inspect"]
    with pytest.raises(runner.RunError, match="unknown step"):
        runner.step_range("07", None)
    with pytest.raises(runner.RunError, match="comes after"):
        runner.step_range("05", "01")


def test_each_notebook_gets_only_its_declared_parameters():
    s = st.load("ci")
    for step in runner.STEPS:
        declared = set(runner.declared_parameters(runner.notebook_path(step)))
        params = s.notebook_parameters(step, declared)
        assert set(params) <= declared
        assert set(params) == declared - {"run_dir"}
    p4 = s.notebook_parameters("04_train", set(runner.declared_parameters(runner.notebook_path("04_train"))))
    assert p4["epochs"] == 1 and p4["lora_r"] == 8 and "teacher" not in p4 and "max_steps" not in p4


def test_parameters_cells_show_a_handful_of_knobs():
    """Each parameters cell shows at most 8 knobs, run_dir first; every other setting reaches the notebook through
    the run's params.yaml (rundir.open_notebook), so `tunebook run -p` still reaches every key."""
    for step in runner.STEPS:
        declared = list(runner.declared_parameters(runner.notebook_path(step)))
        assert declared[0] == "run_dir" and len(declared) <= 8, (step, declared)


def test_first_unfinished():
    rec = {"steps": {"01_serve": {"status": "ok"}, "02_synthesize": {"status": "failed"}}}
    assert runner.first_unfinished(rec) == "02_synthesize"
    assert runner.first_unfinished({"steps": {s: {"status": "ok"} for s in runner.STEPS}}) is None


def test_notebooks_are_committed_clean_with_one_h1():
    import nbformat

    for step in runner.STEPS:
        nb = nbformat.read(str(runner.notebook_path(step)), as_version=4)
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
        first = nb.cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# ")
        assert "**Reads**" in first.source and "**Writes**" in first.source
        h1s = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
               if line.startswith("# ")]
        assert len(h1s) == 1


def test_plan_steps_of_a_complete_run(tmp_path, capsys):
    import json

    from tunebook import rundir

    rd = rundir.RunDir(tmp_path / "R")
    rd.path.mkdir()
    (rd.path / "run.json").write_text(json.dumps({"steps": {s: {"status": "ok"} for s in runner.STEPS}}))
    assert runner.plan_steps(rd, None, None, {}) == []
    assert "already complete" in capsys.readouterr().out
    with pytest.raises(rundir.RunMismatch, match="--from 04"):
        runner.plan_steps(rd, None, None, {"train.epochs": {"old": 1, "new": 2}})
    assert runner.plan_steps(rd, "04", None, {"train.epochs": {"old": 1, "new": 2}}) == ["04_train", "05_eval_export"]
    assert runner.first_consumer(["train.epochs", "student", "evaluate.rag"]) == "03_inspect"
