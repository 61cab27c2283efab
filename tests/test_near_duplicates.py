"""03 shows the near-duplicate pairs the MinHash step caught, each next to the kept row it repeats."""

from tunebook import inspection, near_duplicates
from tunebook.settings import InspectSettings


def _row(i, q, a="The Brindlewatt port is 8080 by default."):
    return {"id": i, "chunk_id": "c0", "source": "s.md", "lang": "en", "instruction": q, "output": a}


ROWS = [
    _row("k1", "What is the default port of the Brindlewatt server?"),
    _row("k2", "Which log level does Brindlewatt use when nothing is set?", "It logs at level warn."),
    _row("d1", "What is the default port of the Brindlewatt server exactly?"),
    _row("d2", "what is the default port of the brindlewatt server?"),
]


def test_a_dropped_duplicate_names_the_row_it_repeats():
    kept, dropped = inspection.filter_rows(ROWS, InspectSettings(near_dup_threshold=0.8))
    assert [r["id"] for r in kept] == ["k1", "k2"]
    by = {d["id"]: d for d in dropped}
    assert by["d1"]["duplicate_of"] == "k1" and by["d1"]["drop_reason"] == "near duplicate of k1"
    assert by["d2"]["duplicate_of"] == "k1" and by["d2"]["drop_reason"] == "exact duplicate of k1"


def test_near_duplicate_pairs_show_both_rows_and_their_similarity():
    kept, dropped = inspection.filter_rows(ROWS, InspectSettings(near_dup_threshold=0.8))
    pairs = near_duplicates.pairs(kept, dropped)
    assert len(pairs) == 1  # the exact duplicate is not a MinHash catch
    p = pairs[0]
    assert (p["dropped_id"], p["kept_id"], p["compared"]) == ("d1", "k1", "question")
    assert 0.8 <= p["similarity"] < 1.0
    assert p["kept_question"] == ROWS[0]["instruction"]
    html = near_duplicates.table_html(kept, dropped, 0.8)
    assert "exactly?" in html and "<table" in html and f"{p['similarity']:.2f}" in html


def test_older_dropped_rows_without_duplicate_of_still_pair_by_their_reason():
    kept = ROWS[:2]
    dropped = [{**ROWS[2], "drop_reason": "near duplicate (q+a) of k1"}]
    [p] = near_duplicates.pairs(kept, dropped)
    assert p["kept_id"] == "k1" and p["compared"] == "question + answer"


def test_no_catch_shows_the_closest_kept_pair():
    html = near_duplicates.table_html(ROWS[:2], [], 0.8)
    assert "No pair reached the threshold 0.8" in html and "Brindlewatt" in html
