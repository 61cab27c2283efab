"""04's sample answers: which questions are asked and how the table shows them (no model needed)."""

import json

from tunebook import samples


def _msg(i, q, a, **kw):
    return {"id": i, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **kw}


TRAIN = [_msg(f"t{i}", f"What is setting {i}?", f"It is {i}.") for i in range(6)] + [
    _msg("abs", "What does --frobnicate do?", "The docs don't say.", kind="abstain"),
    _msg("t0-r1", "Tell me setting 0.", "It is 0.", reworded_from="t0")]
EVAL = [_msg("u1", "What is the unseen port?", "It is 9.", split="unseen"),
        _msg("t3-p", "Which value has setting 3?", "It is 3.", split="recall")]


def test_three_training_questions_and_one_held_out_recall_first():
    rows = samples.pick(TRAIN, EVAL, seed=1)
    assert [r["split"] for r in rows] == ["train", "train", "train", "recall"]
    assert all(r["id"] not in ("abs", "t0-r1") for r in rows)
    assert rows[-1] == {"id": "t3-p", "split": "recall", "question": "Which value has setting 3?", "reference": "It is 3."}
    assert samples.pick(TRAIN, EVAL, seed=1) == rows  # the same picks for a seed
    assert len(samples.pick(TRAIN[:2], [], seed=0)) == 2


def test_table_escapes_and_shows_all_three_columns():
    rows = [{"split": "train", "question": "a <b>?", "reference": "ref & co", "answer": "It is 0."}]
    html = samples.table_html(rows, 48)
    assert "a &lt;b&gt;?" in html and "ref &amp; co" in html and "It is 0." in html and "48 new tokens" in html


def test_the_base_comes_from_what_04_recorded(tmp_path):
    (tmp_path / "tunebook_train.json").write_text(json.dumps(
        {"student": "x", "loaded_from": "/cache/hf/base", "settings": {"system_prompt": "Be brief."}}))
    assert samples.adapter_base(tmp_path) == ("/cache/hf/base", "Be brief.")
    assert samples.generate(tmp_path, []) == []
