"""The forgetting check's prompts and arithmetic (no model; the judge itself is checked on labeled general answers in
test_judge_labels.py)."""

import pytest

from tunebook import forgetting, judge


def test_every_general_prompt_has_a_checkable_reference():
    items = forgetting.general_prompts()
    assert len(items) >= 40
    for it in items:
        q, ref = it["question"], it["reference"]
        assert ref, q
        assert judge.one_fact(ref), f"{q}: a reference of one clause is its own key fact, no teacher request"
        # the question must not give the answer away: a hard token of its own, or words the question lacks
        assert judge.hard_tokens(ref, ref, q) or ref.lower() not in q.lower(), q
    langs = {any("\u4e00" <= c <= "\u9fff" for c in it["question"]) for it in items[:30]}
    assert langs == {True, False}  # the default 30 ask both languages


def test_the_exact_checks_grade_forgotten_facts_without_the_teacher():
    refs = {it["question"]: it["reference"] for it in forgetting.general_prompts()}
    cases = [("What is the largest planet in our solar system?", "Mars", "missing"),
             ("What is the largest planet in our solar system?", "The largest planet is Jupiter.", "stated"),
             ("一年有多少个月？", "366天", "missing"),
             ("一年有多少个月？", "一年有 12 个月。", "stated"),
             ("Write a SQL query that counts the rows in a table named orders.",
              "```sql\nSELECT COUNT(*) AS total_rows\nFROM orders;\n```", "stated"),
             ("写一个 shell 命令，列出当前目录下的所有文件。", "`bwatt new --list`", "missing")]
    for q, answer, want in cases:
        got = judge.exact_verdicts({"question": q, "reference": refs[q], "facts": [refs[q]], "answer": answer})
        assert got is not None and (got[0] == "stated") == (want == "stated"), (q, answer, got)


def test_general_metrics_pair_the_two_models():
    rows = [{"question": "a", "reference": "x", "base_judge": 5.0, "tuned_judge": 0.0,
             "base_verdicts": ["stated"], "tuned_verdicts": ["contradicted"], "base_right": True, "tuned_right": False},
            {"question": "b", "reference": "y", "base_judge": 5.0, "tuned_judge": 5.0,
             "base_verdicts": ["stated"], "tuned_verdicts": ["stated"], "base_right": True, "tuned_right": True},
            {"question": "c", "reference": "z", "base_judge": None, "tuned_judge": 5.0,
             "base_verdicts": None, "tuned_verdicts": ["stated"], "base_right": None, "tuned_right": True}]
    m = forgetting.general_metrics(rows)
    assert m["n"] == 3 and m["judged_by"] == "reference"
    assert m["base_judge"] == 5.0 and m["tuned_judge"] == pytest.approx(10 / 3, abs=1e-3)
    assert m["judge_change"]["mean"] == -2.5 and m["judge_change"]["n"] == 2  # paired: only rows both have
    assert m["base_right"] == 1.0 and m["tuned_right"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["collapsed"] is True  # 3.33 < 5 - 1.5


def test_a_prompt_without_a_reference_is_read_as_before(tmp_path):
    p = tmp_path / "general.yaml"
    p.write_text('- What is 2 + 2?\n- {question: "Capital of Peru?", reference: Lima}\n', encoding="utf-8")
    assert forgetting.general_prompts(p) == [{"question": "What is 2 + 2?", "reference": ""},
                                             {"question": "Capital of Peru?", "reference": "Lima"}]
    p.write_text("- {reference: Lima}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no question"):
        forgetting.general_prompts(p)


def test_forgetting_check_with_takes_its_prompts_length_and_batch_from_the_evaluate_section(monkeypatch, tmp_path):
    """05's forgetting-check call, also used by benchmarks/hybrid_engine.py: general_prompts, general_max_new_tokens
    (0: max_new_tokens) and batch_size come from ``ev``."""
    from tunebook import settings as st

    seen = {}
    monkeypatch.setattr(forgetting, "forgetting_check", lambda *a, **kw: seen.update(args=a, kw=kw) or {})
    ev = st.load("cpu", ["evaluate.general_prompts=7", "evaluate.general_max_new_tokens=0",
                         "evaluate.max_new_tokens=33", "evaluate.batch_size=5"]).evaluate
    forgetting.forgetting_check_with(ev, "m", "t", None, tmp_path, "sys", server="srv", switch="sw")
    assert seen["args"] == ("m", "t", None, tmp_path, 33, 5, "sys")
    assert seen["kw"] == {"limit": 7, "server": "srv", "switch": "sw"}
