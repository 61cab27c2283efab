"""The judge's exact checks for the three ways a small judge over-credited CloudPSS answers (RESULTS.md, session 30):
another command for the documented one, a hedge between the documented value and an invented one, and a generic
list that names a fact's words without asserting it. No model: the labeled cases of these categories in
tests/data/judge_labels.jsonl are graded with the live teacher in test_judge_labels.py."""

import json
from pathlib import Path

import pytest

from tunebook import fact_checks as fc
from tunebook import judge

LABELS = Path(__file__).parent / "data" / "judge_labels.jsonl"


def test_commands_named_outside_code_are_hard_tokens():
    assert fc.commands("Create the environment with virtualenv -p python3.10 hdenv") == ["virtualenv"]
    assert "conda activate xsim" in fc.commands("用 conda activate xsim 激活")
    assert fc.commands("The Matlab and Python versions must be compatible") == []
    assert fc.commands("Pass --threads 4 to use four threads") == []  # prose before a flag is not a command
    assert fc.commands("front matter 支持 `title` 字段") == fc.commands("macOS 13 及以上版本") == []  # not command lines
    ref = "Create the environment with virtualenv -p python3.10 hdenv, then install the CLI with pip."
    fact = "Create the environment with virtualenv -p python3.10 hdenv"
    assert "virtualenv" in judge.hard_tokens(fact, ref, "How do I create an isolated environment?")
    assert judge.check_verdicts(["stated"], [fact], "Use `python -m venv hdenv`.", ref, "How?") == ["missing"]
    assert judge.check_verdicts(["missing"], [fact], "Run `virtualenv -p python3.10 hdenv`.", ref, "How?") == ["stated"]


@pytest.mark.parametrize("answer, token, reference, hedge", [
    ("They live in `cinder.toml` or `cinder.yaml`.", "cinder.toml", "Settings live in `cinder.toml`.", True),
    ("默认保留 30 天或者 90 天。", "30", "数据默认保留 30 天。", True),
    ("使用 `source` 或 `activate` 激活。", "Activate", "Activate the environment.", True),
    ("日志写在 `tidesync.log` 或 `sync.log` 中。", "tidesync.log", "日志写入 `tidesync.log`。", True),  # not "in" it
    ("It runs on Linux or Windows.", "Linux", "It runs on Linux or Windows.", False),  # both documented: a list
    ("Windows 10 or later.", "10", "Windows 10 or later.", False),
    ("可以选择 keep-both、prefer-local 或 prefer-newest。", "prefer-local", "`keep-both`、`prefer-local`", False),
])
def test_a_hedge_states_neither_alternative(answer, token, reference, hedge):
    assert fc.hedged(answer, token, reference, "q") is hedge


def test_names_alone_do_not_state_a_relation():
    ref = "The bridge starts only when the Matlab and Python versions are compatible."
    fact, q = "The Matlab and Python versions must be compatible", "What must match before the bridge starts?"
    listed = "Before starting:\n1. Install Python.\n2. Install Matlab.\n3. Restart."
    assert judge.check_verdicts(["stated"], [fact], listed, ref, q) == ["missing"]
    assert judge.check_verdicts(["missing"], [fact], "Matlab and Python versions must be compatible.", ref, q) == \
        ["stated"]
    sdk = "针对 Python 算法的 Python-SDK 和针对 Matlab 算法的 Matlab-SDK"  # prose that names them states it
    assert judge.check_verdicts(["stated"], [sdk], "FuncStudio-SDK 分为 Python-SDK 和 Matlab-SDK。", sdk,
                                "FuncStudio-SDK 分为哪两种？") == ["stated"]
    assert fc.rest_said("需确保 Matlab 与 Python 的版本相互兼容", "安装 Python；安装 Matlab。", "启动前需要什么？",
                        ["Matlab", "Python"]) == 0.0


def test_a_generic_english_list_does_not_state_a_fact_without_tokens():
    ref, q = "The client needs a signed-in Pebblesync account.", "What does the Pebblesync client need?"
    fact = "The client needs a signed-in Pebblesync account"
    generic = "- A stable internet connection\n- An up-to-date operating system\n- Enough RAM"
    assert judge.check_verdicts(["stated"], [fact], generic, ref, q) == ["missing"]
    # prose is left to the judge: "specify the license key" for "activate a purchased licence" is a paraphrase
    assert judge.check_verdicts(["stated"], [fact], "You must be signed in to your account.", ref, q) == ["stated"]


def test_the_new_categories_are_labeled_both_ways():
    rows = [json.loads(x) for x in LABELS.read_text(encoding="utf-8").splitlines() if x.strip()]
    for cat in ("command_identity", "hedge", "generic_list"):
        verdicts = [v for r in rows if r["category"] == cat for v in r["verdicts"]]
        assert "stated" in verdicts and len(set(verdicts)) > 1, cat  # a right answer of each kind, not only wrong ones
