"""Probe and repair (04, ``train.repair_rounds``): which rows are the trained facts, which teacher wordings may
probe them (never an eval question's, never a training question, never near an earlier probe), what counts as a
hit, and what a repair round trains on. The rounds themselves run in the e2e test on a real student and teacher."""

from tunebook import repair
from tunebook.pairs import trained_facts


def row(i, q, a, **kw):
    return {"id": i, "kind": "fact", "lang": "en", "chunk_id": "c",
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **kw}


TRAIN = [row("a", "What is the default value of the `--step` flag?", "900 seconds"),
         row("a-r1", "Which default does `--step` have?", "900 seconds", reworded_from="a"),
         row("b", "Which port does the Brindlewatt server listen on?", "Port 8443."),
         {**row("x", "What is the default of `--zorp`?", "The documentation does not cover this."), "kind": "abstain"}]
EVAL = [row("a-p", "How many seconds is the `--step` flag by default?", "900 seconds", split="recall")]


def test_trained_facts_are_the_pairs_not_rewordings_or_abstentions():
    assert [r["id"] for r in trained_facts(TRAIN)] == ["a", "b"]


def test_wordings_never_an_eval_question_a_training_question_or_near_an_earlier_probe():
    facts = trained_facts(TRAIN)
    proposed = [["How many seconds is the `--step` flag by default?",  # the eval question itself
                 "Which default does `--step` have?",  # a training item
                 "What is the default value?",  # drops the `--step` flag the question names: not a rewording
                 "By default, what value does the `--step` flag take?",
                 "By default, what value does the `--step` flag take ?"],  # near the one kept before
                ["On which port does the Brindlewatt server listen by default?"]]
    got = repair.usable_wordings(facts, proposed, EVAL, TRAIN)
    assert got == {"a": ["By default, what value does the `--step` flag take?"],
                   "b": ["On which port does the Brindlewatt server listen by default?"]}


def test_a_hit_states_every_key_value_or_most_of_a_plain_reference():
    q = "By default, what value does the `--step` flag take?"
    assert repair.hit("The default step is 900 seconds.", "900 seconds", q)
    assert not repair.hit("The default step is 60 seconds.", "900 seconds", q)
    assert repair.hit("It writes a summary of the run.", "It writes a summary of the run to disk.", "What does it do?")
    assert not repair.hit("No idea.", "It writes a summary of the run to disk.", "What does it do?")


def test_the_check_set_is_never_a_find_wording_and_rounds_take_the_next_ones():
    worded = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": [], "d": ["d1", "d2"]}
    check, finds = repair.plan(worded, rounds=2)
    assert check == {"a": "a1", "d": "d1"}  # facts with two or more wordings
    assert finds == [{"a": "a2", "b": "b1", "d": "d2"}, {"a": "a3"}]
    assert not set(check.values()) & {w for f in finds for w in f.values()}


def test_a_round_rehearses_every_fact_and_trains_the_misses_in_their_probe_wording():
    facts = trained_facts(TRAIN)
    missed = [{"id": "a", "question": "By default, what value does `--step` take?", "hit": False}]
    rows = repair.round_rows(facts, missed)
    assert [r["id"] for r in rows] == ["a", "b", "a-fix"]
    fix = rows[-1]
    assert fix["repair"] and fix["reworded_from"] == "a"
    assert fix["messages"] == [{"role": "user", "content": "By default, what value does `--step` take?"},
                               {"role": "assistant", "content": "900 seconds"}]
