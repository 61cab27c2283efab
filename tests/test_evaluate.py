import pytest

from tunebook import evaluate


def test_char_metrics_work_for_chinese_and_english():
    assert evaluate.rouge_l("默认端口是7432", "默认端口是7432。") == pytest.approx(1.0)
    assert evaluate.char_f1("The port is 7432", "the port is 7432!") == pytest.approx(1.0)
    assert evaluate.rouge_l("abc", "xyz") == 0.0
    partial = evaluate.rouge_l("端口 8080", "端口 7432")
    assert 0.2 < partial < 0.6
    assert evaluate.char_f1("", "x") == 0.0


def test_rouge_l_is_order_sensitive_f1_is_not():
    assert evaluate.char_f1("abcd", "dcba") == pytest.approx(1.0)
    assert evaluate.rouge_l("abcd", "dcba") == pytest.approx(0.25)


def test_summarize_averages():
    rows = [{"base_rouge_l": 0.0, "tuned_rouge_l": 1.0, "base_char_f1": 0.5, "tuned_char_f1": 1.0}] * 2
    s = evaluate.summarize(rows)
    assert s == {"n": 2, "base_rouge_l": 0.0, "base_char_f1": 0.5, "tuned_rouge_l": 1.0, "tuned_char_f1": 1.0}
