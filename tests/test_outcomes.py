"""Answer outcomes by exact checks (no model), checked against the hand-labeled cases in tests/data/judge_labels.jsonl."""

import json
from collections import Counter
from pathlib import Path

import pytest

from tunebook import judge, outcomes, text

LABELS = Path(__file__).parent / "data" / "judge_labels.jsonl"


def _labels():
    return [json.loads(x) for x in LABELS.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_the_labeled_cases_are_many_and_varied():
    rows = _labels()
    assert len(rows) >= 60
    assert Counter(r["lang"] for r in rows)["zh"] >= 30 and Counter(r["lang"] for r in rows)["en"] >= 30
    cats = Counter(r["category"] for r in rows)
    for c in ("near_miss_number", "unit", "renamed_parameter", "partial_list", "refusal", "paraphrase_correct",
              "wrong_value", "degenerate"):
        assert cats[c] >= 5, c
    assert {o for r in rows for o in [r["outcome"]]} == set(outcomes.OUTCOMES)


def test_outcomes_agree_with_the_labels_given_the_labeled_verdicts():
    rows = _labels()
    got = [outcomes.classify(r["answer"], r["reference"], r["question"], r["verdicts"]) for r in rows]
    agree = sum(g == r["outcome"] for g, r in zip(got, rows)) / len(rows)
    confusion = Counter((r["outcome"], g) for g, r in zip(got, rows) if g != r["outcome"])
    print(f"outcome agreement {agree:.3f} on {len(rows)} labeled answers; misses: {dict(confusion)}")
    assert agree >= 0.9


def test_exact_checks_keep_the_labeled_stated_verdicts():
    """check_verdicts only takes "stated" back where a number, code or name is really missing: on the labels it
    must rarely overrule a human "stated" (known misses: spelled-out English numbers, a generic capitalized word)."""
    rows = _labels()
    stated = [(r, i) for r in rows for i, v in enumerate(r["verdicts"]) if v == "stated"]
    kept = sum(judge.check_verdicts(r["verdicts"], r["facts"], r["answer"], r["reference"], r["question"])[i] == "stated"
               for r, i in stated)
    assert kept / len(stated) >= 0.95


def test_invented_values_units_and_loops():
    ref = "The server listens on port 7432 by default and keeps 512 MB of cache."
    assert outcomes.invented("It listens on port 8080.", ref, "Which port?") == ["8080"]
    assert outcomes.invented("Port 7432, cache 512 GB.", ref, "Which port?") == ["512 GB"]
    assert outcomes.invented("Port 7,432.", ref, "Which port?") == []
    assert outcomes.classify("It listens on port 8080.", ref, "Which port?") == "invents"
    assert outcomes.classify("The docs don't say which port it uses.", ref, "Which port?") == "abstains"
    assert outcomes.classify("端口是 7432，缓存 512 MB。", ref, "Which port?") == "correct"
    loop = "参数设置错误会导致模型初始化不当或" * 8
    assert outcomes.degenerate(loop, "参数设置错误会导致什么？") == "repetition"
    assert outcomes.degenerate("", "q") == "empty"
    assert outcomes.degenerate("The port is 7432.", "端口是多少？") == ""  # short: not judged by language
    assert outcomes.degenerate("The default port of the server is 7432 unless you change it.", "默认端口是多少？") == \
        "wrong language"
    assert judge.check_verdicts(["stated"], ["port 7432"], loop, ref, "q") == ["missing"]


def test_exact_values_and_chinese_numerals():
    ref = "单次查询默认最多返回 2000 行，可通过 `limit` 调整。"
    assert outcomes.exact_values("默认最多返回两千行，用 limit 调整。", ref, "最多返回多少行？") == 1.0
    assert outcomes.exact_values("最多 1000 行。", ref, "最多返回多少行？") == 0.0
    assert outcomes.exact_values("whatever", "No values here at all.", "q") is None
    assert text.arabic_numerals("两千行，三十五秒，一百零五") == "2000行，35秒，105"


@pytest.mark.parametrize("answer,expected", [
    ("I don't know.", "abstains"),
    ("Sorry, I don't have information about that.", "abstains")])
def test_abstentions(answer, expected):
    assert outcomes.classify(answer, "The default is 17.", "What is the default seed?") == expected
    assert outcomes.classify("文档中没有提到这个参数。", "默认种子为 17。", "默认种子是多少？") == "abstains"
    assert outcomes.classify("文档中没有提到这个参数。", "The default is 17.", "What is the default seed?") == "degenerate"


def test_a_bare_path_or_command_answers_a_chinese_question_in_no_language():
    q = "MacOS 的配置文件默认路径是什么？"
    ref = "MacOS: `~/Library/Application Support/Brindlewatt/brindle.toml`"
    assert outcomes.degenerate("~/Library/Application Support/Brindlewatt/brindle.toml", q) == ""
    assert outcomes.degenerate("`bwatt --config ./team.toml run harbour`", "如何指定其他配置文件？") == ""
    assert outcomes.classify("~/Library/Application Support/Brindlewatt/brindle.toml", ref, q) == "correct"
    # English prose around the path is still the wrong language for a Chinese question
    assert outcomes.degenerate("The default configuration file on macOS lives in your Library folder.", q) == "wrong language"
    # so is a code block alone (a general prompt "写一条 SQL 语句…" answered with the query: session 20), closed or cut off
    sql = "```sql\nSELECT * FROM users WHERE age > 18;\n```"
    assert outcomes.degenerate(sql, "写一条 SQL 语句，从 users 表中查询所有年龄大于 18 的用户。") == ""
    assert outcomes.degenerate(sql[:-4] + " ORDER BY name", "写一条 SQL 语句，查询 users 表。") == ""
    assert outcomes.degenerate("Here is the query you asked for, it selects every adult user:\n" + sql,
                               "写一条 SQL 语句，从 users 表中查询所有年龄大于 18 的用户。") == "wrong language"
    # and so is code given without a fence (cps-s22: "SELECT * FROM users WHERE age > 18" graded 0 as English)
    zh = "写一条 SQL 语句，从 users 表中查询所有年龄大于 18 的用户。"
    assert outcomes.degenerate("SELECT * FROM users WHERE age > 18", zh) == ""
    assert outcomes.degenerate("select name, age from users where age > 18 order by age desc", zh) == ""
    assert outcomes.degenerate("def count_a(s):\n    return s.count('a')", "用 Python 写一个函数，统计字符串中 a 的个数。") == ""
    assert outcomes.degenerate("git log -n 5 --oneline --graph --decorate", "写一条 Git 命令，查看最近 5 次提交记录。") == ""
    assert outcomes.degenerate("Select the rows you need from the table and then count them by hand.", zh) == (
        "wrong language")  # a sentence that starts like SQL is still English
    assert outcomes.degenerate("If you want adults only, filter the users table by the age column first.", zh) == (
        "wrong language")
