"""05's provenance gate: a trained value moved to another question is stopped; a value from a pair about the same
question, a value no pair names, and an answer that names nothing pass."""

from tunebook import evaluate
from tunebook.outcomes import ABSTAIN_ANSWER
from tunebook.provenance import TrainedValues, overlap, stems


def _row(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


TRAIN = [_row("What is the maximum simulation length in the Professional edition of Brindlewatt?",
              "The Professional edition allows up to 366 days of simulation."),
         _row("Which port does the Brindlewatt dashboard listen on?", "The dashboard listens on port 7432."),
         _row("配置文件中 `max_iterations` 的默认值是多少？", "60"),
         _row("Which environment variable holds the Brindlewatt licence key?", "`BWATT_LICENSE`."),
         _row("What file extension do Brindlewatt models use?", "Models are saved as `.bwm` files.")]


def test_a_trained_value_moved_to_another_question_is_stopped():
    trained = TrainedValues(TRAIN)
    assert trained.common == {"brindlewatt"}  # in 4 of 5 questions: the product, not the fact
    q = "What is the default trial period for Brindlewatt?"
    assert trained.transplanted("366 days", q, 0.1) == ["366"]  # the demo's unseen answer (demo-s13a)
    assert evaluate.provenance_gate("366 days", q, trained, 0.1) == ABSTAIN_ANSWER["en"]
    assert evaluate.provenance_gate("366 days", q, None, 0.1) == "366 days"  # off


def test_a_value_from_a_pair_about_the_same_question_passes():
    trained = TrainedValues(TRAIN)
    q = "How long can a simulation run in Brindlewatt Professional?"  # a rewording of the trained question
    assert overlap(q, TRAIN[0]["messages"][0]["content"]) >= 0.1
    assert trained.transplanted("Up to 366 days.", q, 0.1) == []
    # one value grounded in a pair about this question is enough, even beside one from elsewhere
    assert trained.transplanted("Up to 366 days, on port 7432.", q, 0.1) == []
    zh = "`max_iterations` 默认设为多少？"
    assert trained.transplanted("默认值是 60。", zh, 0.1) == []


def test_questions_are_compared_by_word_stems():
    """demo-s14b: the right answer to "How can I export my data in a different format?" was stopped — its trained
    wordings said "exporting"; by stems the second shares "export" and "data" with it."""
    rows = [_row("What are the other options for exporting results?", "The other options are `parquet` and `json`."),
            _row("Are there any other options besides CSV for exporting data?",
                 "The other options are `parquet` and `json`."),
            *TRAIN]
    q = "How can I export my data in a different format?"
    assert stems("exporting results") == stems("export a result") == {"export", "result"}
    assert stems("配置文件中 `max_iterations` 的默认值") >= {"max_iterations", "配置文件"}  # others are left as cut
    assert overlap(q, rows[1]["messages"][0]["content"]) >= 0.1
    assert TrainedValues(rows).transplanted("The other options are `parquet` and `json`.", q, 0.1) == []


def test_values_no_pair_names_and_abstentions_are_not_its_business():
    trained = TrainedValues(TRAIN)
    q = "What is the default trial period for Brindlewatt?"
    assert trained.transplanted("30 days", q, 0.1) == []  # made up or right: the confidence gate's and the judge's
    assert trained.transplanted("The trial is free.", q, 0.1) == []  # names no value
    assert evaluate.provenance_gate(ABSTAIN_ANSWER["en"], q, trained, 0.1) == ABSTAIN_ANSWER["en"]
