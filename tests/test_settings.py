import time

import pytest

from tunebook import runner, settings as st
from tunebook.paths import PARAMS_DIR

from conftest import tunebook_cli


@pytest.mark.parametrize("profile", sorted(p.stem for p in PARAMS_DIR.glob("*.yaml")))
def test_every_profile_validates(profile):
    s = st.load(profile)
    assert isinstance(s, st.Settings)


def test_profiles_exist():
    assert {"cpu", "gpu", "ci"} <= {p.stem for p in PARAMS_DIR.glob("*.yaml")}


def test_cpu_and_ci_profiles_use_bundled_models():
    from tunebook.models import BUNDLED

    cpu, ci = st.load("cpu"), st.load("ci")
    assert cpu.teacher == "qwen2.5-coder-1.5b-instruct" and cpu.student == "qwen2.5-coder-0.5b-instruct"
    assert ci.teacher == ci.student == "smollm2-135m-instruct"
    assert {cpu.teacher, cpu.student, ci.teacher} <= set(BUNDLED)


def test_gpu_profile_is_the_original_flow():
    g = st.load("gpu")
    assert g.serve.backend == "vllm" and g.serve.port == 8007 and g.serve.host == "127.0.0.1"
    assert g.serve.tensor_parallel_size == 2 and g.serve.max_model_len == 8000
    assert g.teacher == "Qwen/Qwen3-30B-A3B-Instruct-2507"


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(st.SettingsError) as e:
        st.load("ci", ["trian.epochs=1"])
    assert "trian.epochs" in str(e.value) and "did you mean 'train.epochs'" in str(e.value)


def test_unknown_key_in_a_profile_file(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("train:\n  epoch: 2\n")
    with pytest.raises(st.SettingsError, match="train.epoch'.*did you mean 'train.epochs'"):
        st.load(str(p))


def test_user_profile_file_and_overrides(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("student: smollm2-135m-instruct\ntrain:\n  epochs: 2\n  lora_r: 4\n")
    s = st.load(str(p), ["train.lora_r=8", "synth.include=['*.md']", "serve.allow_public_bind=true"])
    assert s.train.epochs == 2 and s.train.lora_r == 8
    assert s.synth.include == ["*.md"] and s.serve.allow_public_bind is True


def test_bad_types_are_reported_with_the_key():
    with pytest.raises(st.SettingsError, match=r"train.lora_r: .*integer.*'lots'"):
        st.load("ci", ["train.lora_r=lots"])
    with pytest.raises(st.SettingsError, match="serve.backend"):
        st.load("ci", ["serve.backend=ollama"])


def test_override_needs_key_value():
    with pytest.raises(st.SettingsError, match="key=value"):
        st.load("ci", ["train.epochs"])


def test_unknown_profile_suggests():
    with pytest.raises(st.SettingsError, match="did you mean 'cpu'"):
        st.load("cpuu")


def test_api_key_env_must_be_a_name():
    with pytest.raises(st.SettingsError, match="NAME of an environment variable"):
        st.load("ci", ["serve.api_key_env=sk-abc123-secret!"])


def test_redaction_keeps_env_names_and_hides_values():
    s = st.load("ci", ["serve.api_key_env=MY_KEY"])
    d = s.redacted()
    assert d["serve"]["api_key_env"] == "MY_KEY"
    assert st._redact({"api_key": "sk-123", "hf_token": "abc", "api_key_env": "X", "max_tokens": 5}) == {
        "api_key": "***redacted***", "hf_token": "***redacted***", "api_key_env": "X", "max_tokens": 5}
    # the saved params.yaml loads back to the same settings (05 restarts the teacher from it)
    import yaml

    again = st.build(st._flatten(yaml.safe_load(st.dump_yaml(s))), "params.yaml")
    assert again == s


def test_for_notebook_validates_interactive_edits():
    ns = {"run_dir": "outputs/dev", "epochs": 2, "student": "smollm2-135m-instruct"}
    s = st.for_notebook("04_train", ns)
    assert s.train.epochs == 2 and s.student == "smollm2-135m-instruct"
    with pytest.raises(st.SettingsError, match="train.epochs"):
        st.for_notebook("04_train", {"epochs": "many"})


def test_notebook_defaults_equal_settings_defaults():
    """Each parameters cell shows the same defaults as the typed settings (one source of truth)."""
    defaults = st.Settings()
    for step, section in st.NOTEBOOKS.items():
        declared = runner.declared_parameters(runner.notebook_path(step))
        assert list(declared)[0] == "run_dir", f"{step}: run_dir must come first"
        for name, value in declared.items():
            if name == "run_dir":
                continue
            sec = getattr(defaults, section)
            expected = getattr(sec, name) if name in type(sec).model_fields else getattr(defaults, name)
            assert value == expected, f"{step}: {name} = {value!r}, settings default {expected!r}"


def test_every_declared_parameter_is_a_setting():
    """Notebooks declare a few knobs; every other setting comes from the run's params.yaml (rundir.open_notebook)."""
    declared = runner.declared_keys()
    assert set(declared) <= set(st.valid_keys()), set(declared) - set(st.valid_keys())


def test_parameter_lines_parse_cleanly_for_papermill():
    """One knob per line with a comment; no '=' inside comments (papermill warns and drops the help)."""
    for step in st.NOTEBOOKS:
        src = runner.parameters_cell(runner.notebook_path(step)).source
        for line in src.splitlines():
            assert line.count("=") == 1 or line.strip().startswith("#"), f"{step}: {line}"
            assert "  # " in line, f"{step}: parameter without a comment: {line}"


def test_cli_typo_fails_fast_naming_the_key():
    t0 = time.perf_counter()
    r = tunebook_cli("run", "--profile", "ci", "-p", "trian.epochs=1")
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2
    assert "trian.epochs" in r.stderr and "train.epochs" in r.stderr
    assert elapsed < 10, f"validation should fail before any heavy work (took {elapsed:.1f} s)"


def test_cli_keys_lists_every_key():
    r = tunebook_cli("keys")
    assert r.returncode == 0
    assert r.stdout.split() == st.valid_keys()


def test_cross_section_rule_is_checked_before_running():
    with pytest.raises(st.SettingsError, match="inspect.max_tokens .* must not exceed train.max_length"):
        st.load("ci", ["inspect.max_tokens=999"])


def test_outputs_paths_follow_tunebook_outputs(monkeypatch, tmp_path):
    """The notebooks' default run dir "outputs/dev" lands where $TUNEBOOK_OUTPUTS points (as the runner's runs do);
    other relative paths stay relative to the project root."""
    from tunebook import paths

    monkeypatch.delenv("TUNEBOOK_OUTPUTS", raising=False)
    assert paths.project_path("outputs/dev") == paths.ROOT / "outputs" / "dev"
    monkeypatch.setenv("TUNEBOOK_OUTPUTS", str(tmp_path))
    monkeypatch.setattr(paths, "OUTPUTS_DIR", tmp_path)
    assert paths.project_path("outputs/dev") == tmp_path / "dev"
    assert paths.project_path("samples/docs") == paths.ROOT / "samples" / "docs"
    assert paths.project_path(tmp_path / "x") == tmp_path / "x"


def test_cpu_profile_is_what_the_notebooks_default_to():
    """`make lab` → open 01 → Run All (the notebooks' own defaults) runs the same thing as `make demo` (cpu)."""
    assert st.load("cpu") == st.Settings()


def test_context_rows_need_room_for_their_chunk():
    with pytest.raises(st.SettingsError, match="train.context_fraction .* need train.max_length >= 768"):
        st.load("cpu", ["train.context_fraction=0.3"])
    assert st.load("cpu", ["train.context_fraction=0.3", "train.max_length=768"]).train.context_fraction == 0.3


def test_levers_that_run_only_in_04s_process_are_refused_with_ddp():
    """restyle and probe-and-repair need the student in 04's own process; under DDP they would be silently skipped.
    Replay and context rows are mixed in by every rank (launch.worker), so they are allowed."""
    for lever in ("train.restyle_answers=true", "train.repair_rounds=1"):
        with pytest.raises(st.SettingsError, match=f"{lever.split('=')[0]} .*train.num_gpus=2"):
            st.load("ci", [lever, "train.num_gpus=2"])
    assert st.load("ci", ["train.context_fraction=0.5", "train.max_length=768", "train.num_gpus=2"]).train.num_gpus == 2
    assert st.load("cpu", ["train.num_gpus=2"]).train.replay_fraction == 0.1


def test_prompt_kl_without_the_replays_kl_is_refused():
    """train.prompt_kl rides on the replay's KL trainer: without replay rows trained by KL it would do nothing."""
    for off in ("train.replay_kl=0", "train.replay_fraction=0"):
        with pytest.raises(st.SettingsError, match="train.prompt_kl .* needs train.replay_kl > 0"):
            st.load("cpu", ["train.prompt_kl=1", off])
    assert st.load("cpu", ["train.prompt_kl=1"]).train.prompt_kl == 1
