"""The run summary speaks human units: tokens/s with one decimal, minutes and seconds, GiB."""

import json

from tunebook import summary


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def test_units():
    assert summary.duration(230.5) == "3 min 50 s"
    assert summary.duration(42.4) == "42 s"
    assert summary.duration(3.24) == "3.2 s"
    assert summary.duration(3725) == "1 h 02 min"
    assert summary.duration(None) == "–"
    assert summary.rate(7.59) == "7.6" and summary.rate(None) == "–"
    assert summary.gib(5053.9) == "4.9 GiB" and summary.gib(None) == "–"


def test_summary_from_fake_metrics_files(tmp_path):
    run = tmp_path / "R"
    _write(run / "data" / "synth_report.json",
           {"synth": {"pairs": 43, "chunks_total": 13, "chunks_failed": 0, "completion_tokens_per_s": 7.5903}})
    _write(run / "data" / "inspect_report.json",
           {"kept": 42, "dropped": 1, "drop_reasons": {"near duplicate": 1}, "train": 31, "eval_recall": 13,
            "eval_unseen": 11})
    _write(run / "train" / "train_metrics.json",
           {"backend": "transformers", "steps": 40, "runtime_s": 230.5, "tokens_per_s": 301.456,
            "peak_memory_mb": 5053.9, "first_loss": 5.8012, "final_loss": 0.4031})
    _write(run / "export" / "exports.json", {"adapter": "/x/adapter"})
    _write(run / "eval" / "metrics.json", {"engine": "hybrid",
                                           "gguf_agreement": {"q8_0": {"n": 16, "exact_agreement": 0.9375,
                                                                      "mean_char_f1": 0.981}}})
    text = summary.build(run)
    assert "7.6 teacher tokens/s" in text
    assert "dropped 1 (near duplicate 1)" in text
    assert "40 steps, 3 min 50 s, 301.5 tokens/s, peak memory 4.9 GiB" in text
    assert "loss 5.80 → 0.40" in text
    assert "15 of 16 answers agree exactly, mean character F1 0.98" in text
    assert "Answered by: llama-server" in text and "transformers for the RAG prompts" in text
    for raw in ("7.590", "230.5", "5053", "MB", "{'"):
        assert raw not in text, raw


def test_summary_of_an_empty_run_dir_has_no_fake_zeros(tmp_path):
    text = summary.build(tmp_path)
    assert "0.0 GiB" not in text and "0.0 tokens/s" not in text
