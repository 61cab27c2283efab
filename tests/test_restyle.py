"""train.restyle_answers: the base student's own restatement replaces a training answer only when it keeps it."""

import pytest

from tunebook import restyle
from tunebook import settings as st


def _row(q, a, lang=""):
    return {"id": "x", "lang": lang, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_a_restatement_holds_the_answer_and_adds_nothing():
    q = "What is the default port for serving the dashboard?"
    assert restyle.keeps("The default port for serving the dashboard is `7432`.", "7432", q)
    assert not restyle.keeps("The dashboard is served on port 8080 by default.", "7432", q)  # another value
    assert not restyle.keeps("The dashboard listens on 0.0.0.0, port 7432.", "7432", q)  # a value of its own
    assert not restyle.keeps("", "7432", q)
    assert not restyle.keeps("Brindlewatt is a reference answer.", "Brindlewatt", "What is the product's name?")
    q = "配置文件中 `method` 的默认值是多少？"
    assert restyle.keeps("配置文件中 `method` 的默认值是 newton。", "newton", q, "zh")
    assert not restyle.keeps("配置文件中 method 默认值设置为 newton 是因为 Newton 是一种数学方法，用于计算物体的运动轨迹。",
                             "newton", q, "zh")  # an explanation of its own
    assert not restyle.keeps("参考答案：newton。", "newton", q, "zh")  # the request quoted
    assert not restyle.keeps("The default method is newton.", "newton", q, "zh")  # a Chinese pair stays Chinese


def test_a_value_free_answer_must_appear_whole():
    q = "在左侧列表中选择 `harbour.bwr`，可以查看哪些信息？"
    old = "各母线电压曲线和线路负载率"
    assert restyle.keeps("选择 `harbour.bwr` 后，可以查看各母线电压曲线和线路负载率。", old, q, "zh")
    assert not restyle.keeps("选择 `harbour.bwr` 后，可以查看电压曲线。", old, q, "zh")


def test_the_request_is_in_the_language_of_the_pair():
    assert "参考答案：7432" in restyle.request(_row("默认的仪表盘端口是多少？", "7432", "zh"))
    assert "参考答案" in restyle.request(_row("默认的仪表盘端口是多少？", "7432"))  # no lang: read off the question
    en = restyle.request(_row("What is the default port?", "7432", "en"))
    assert "Reference answer: 7432" in en and en.startswith("What is the default port?")


def test_restyle_is_off_by_default_and_refused_under_ddp():
    assert st.load("cpu", []).train.restyle_answers is False
    with pytest.raises(Exception, match="restyle_answers"):
        st.load("cpu", ["train.restyle_answers=true", "train.num_gpus=2"])


def test_unkept_restatements_leave_the_teachers_answers_and_are_cached(tiny_lm, tmp_path):
    """A tiny random model restates nothing usable: every answer stays as the teacher wrote it, each restatement
    is on file with why, and a second call reads the file instead of asking again."""
    model, tok = tiny_lm
    rows = [_row("w1 w2", "w3", "en"), _row("w4", "w5 w6 w7", "en"), _row("w8 w9 w10", "w11", "en")]
    out, report = restyle.rewrite(model, tok, rows, "tiny", tmp_path, max_new_tokens=4)
    assert out == rows
    assert report["rows"] == 3 and report["restated"] == 0
    assert report["kept_unfit"] + report["kept_too_long"] == 3
    said = (tmp_path / restyle.RESTYLE_FILE).read_text(encoding="utf-8").splitlines()
    assert len(said) == 3
    before = (tmp_path / restyle.RESTYLE_FILE).stat().st_mtime_ns
    assert restyle.rewrite(None, tok, rows, "tiny", tmp_path, max_new_tokens=4) == (out, report)  # no model needed
    assert (tmp_path / restyle.RESTYLE_FILE).stat().st_mtime_ns == before
