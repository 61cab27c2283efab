"""05's answer batches: formed shortest prompt first (less padding), answers handed back in question order."""

from tunebook import answering


def test_prompts_are_ordered_shortest_first(tiny_lm):
    _, tok = tiny_lm
    prompts = ["w1 w2 w3 w4", "w1", "w1 w2 w3 w4 w5 w6", "w1 w2"]
    assert answering.by_length(tok, prompts) == [1, 3, 0, 2]


def test_sorted_batches_hand_the_answers_back_in_question_order(tiny_lm):
    """One prompt a batch: no padding, so sorted or not the answers are the same, each in its question's place."""
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_lm
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    questions = ["w5 w6 w7 w8 w9 w10 w11", "w12", "w13 w14 w15 w16", "w17 w18"]
    kept = answering.generate_scored(model, tok, questions, 6, 1, adapter=False, sort=False)
    sorted_ = answering.generate_scored(model, tok, questions, 6, 1, adapter=False, sort=True)
    assert sorted_ == kept
    assert len(set(kept[0])) > 1  # the answers differ, so a mix-up would show
