import json

from tunebook import inspection
from tunebook.settings import InspectSettings


def _rows():
    rows = []
    for c in range(6):
        for q in range(3):
            rows.append({"id": f"{c}-{q}", "chunk_id": f"c{c}", "source": f"s{c % 2}.md", "lang": "en",
                         "question": f"What is fact {q} of chunk {c}?", "answer": f"Fact {q}/{c} is 4{c}{q}."})
    return rows


def test_filters_record_a_reason_for_each_drop():
    rows = _rows()
    rows.append({**rows[0], "id": "dup", "question": "  what is FACT 0 of chunk 0 ?"})
    rows.append({**rows[1], "id": "meta", "question": "According to the text, what is the port?"})
    rows.append({**rows[1], "id": "meta-zh", "question": "根据文本，默认端口是多少？"})
    rows.append({**rows[2], "id": "empty", "answer": "  "})
    rows.append({**rows[2], "id": "refuse", "question": "What is the limit?", "answer": "I'm sorry, I cannot say."})
    kept, dropped = inspection.filter_rows(rows, InspectSettings())
    reasons = {d["id"]: d["drop_reason"] for d in dropped}
    assert reasons == {"dup": "duplicate of 0-0", "meta": "meta-phrasing in question",
                       "meta-zh": "meta-phrasing in question", "empty": "empty field", "refuse": "refusal"}
    assert len(kept) == 18


def test_split_is_grouped_by_chunk_and_reproducible(tmp_path):
    rows = _rows()
    chunks = [{"id": f"c{i}"} for i in range(7)]
    res = inspection.run(rows, chunks, InspectSettings(eval_fraction=0.34), seed=3, data_dir=tmp_path)
    train_chunks = {r["chunk_id"] for r in res.train}
    eval_chunks = {r["chunk_id"] for r in res.eval}
    assert train_chunks and eval_chunks and not (train_chunks & eval_chunks)
    assert not ({inspection.normalize(r["question"]) for r in res.train}
                & {inspection.normalize(r["question"]) for r in res.eval})
    again = inspection.split_by_chunk(rows, InspectSettings(eval_fraction=0.34), seed=3)
    assert [r["id"] for r in again[1]] == [r["id"] for r in res.eval]
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    report = json.loads((tmp_path / "inspect_report.json").read_text())
    assert report["train"] + report["eval"] == 18 and report["chunks_without_pairs"] == 1


def test_split_needs_two_chunks():
    import pytest

    with pytest.raises(ValueError, match="at least 2 chunks"):
        inspection.split_by_chunk([r for r in _rows() if r["chunk_id"] == "c0"], InspectSettings(), 0)


def test_sample_table_escapes_html():
    html = inspection.sample_table([{"source": "a.md", "question": "<b>x</b>?", "answer": "y & z"}], 5)
    assert "&lt;b&gt;" in html and "y &amp; z" in html
