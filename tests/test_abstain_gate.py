"""05's confidence gate: each answer's confidence (the lowest probability of a token greedy decoding chose), and the
fine-tuned student's answer replaced by "the docs don't cover this" below a threshold."""

import math

import pytest

from tunebook import answering, evaluate, student_server
from tunebook.outcomes import ABSTAIN_ANSWER, abstains, classify


def test_the_gate_abstains_in_the_questions_language_below_the_threshold():
    assert evaluate.gate("The port is 8080.", 0.31, 0.4, "Which port?") == ABSTAIN_ANSWER["en"]
    assert evaluate.gate("端口是 8080。", 0.31, 0.4, "默认端口是多少？") == ABSTAIN_ANSWER["zh"]
    assert evaluate.gate("The port is 8080.", 0.41, 0.4, "Which port?") == "The port is 8080."
    assert evaluate.gate("The port is 8080.", 0.01, 0.0, "Which port?") == "The port is 8080."  # 0: off
    assert evaluate.gate("The port is 8080.", None, 0.4, "Which port?") == "The port is 8080."  # no confidence
    # what the gate says is read as an abstention that names no value
    for lang in ("en", "zh"):
        assert abstains(ABSTAIN_ANSWER[lang])
        assert classify(ABSTAIN_ANSWER[lang], "The port is 8080.", "Which port?") == "abstains"


def test_compare_gates_only_the_fine_tuned_answers_and_keeps_what_they_said(monkeypatch):
    said = {False: ["base answer 1", "base answer 2"], True: ["tuned 8080", "tuned 9090"]}
    conf = {False: [0.1, 0.9], True: [0.2, 0.95]}

    def fake(model, tok, prompts, max_new_tokens, batch_size, adapter, **kw):
        return said[adapter], conf[adapter]

    monkeypatch.setattr(evaluate, "generate_scored", fake)
    eval_rows = [{"id": f"q{i}", "split": "unseen", "messages": [{"role": "user", "content": f"Which port {i}?"},
                                                                 {"role": "assistant", "content": "8080"}]}
                 for i in range(2)]
    rows = evaluate.compare(None, None, eval_rows, 8, 2, abstain_below=0.5)
    assert [r["base"] for r in rows] == said[False]  # the base is never gated (confidence 0.1 kept as it said)
    assert rows[0]["tuned"] == ABSTAIN_ANSWER["en"] and rows[0]["tuned_ungated"] == "tuned 8080"
    assert rows[1]["tuned"] == rows[1]["tuned_ungated"] == "tuned 9090"
    assert [r["tuned_confidence"] for r in rows] == [0.2, 0.95] and "base_ungated" not in rows[0]
    evaluate.add_outcomes(rows)
    s = evaluate.summarize(rows)
    assert s["tuned_gated"] == 0.5 and s["tuned_outcomes"]["abstains"] == 0.5 and "base_gated" not in s
    off = evaluate.compare(None, None, eval_rows, 8, 2)
    assert [r["tuned"] for r in off] == said[True] and "tuned_ungated" not in off[0]
    assert "surer" not in off[0]  # without retrieval there is no second fine-tuned answer to pick from


def test_surer_picks_the_fine_tuned_answer_the_student_was_more_confident_of():
    answers = {"tuned": ["closed 1", "closed 2", "closed 3"], "tuned_rag": ["rag 1", "rag 2", "rag 3"]}
    confidence = {"tuned": [0.9, 0.2, None], "tuned_rag": [0.5, 0.6, 0.3]}
    assert evaluate.surer(answers, confidence) == (["closed 1", "rag 2", "rag 3"], [0.9, 0.6, 0.3],
                                                   ["tuned", "tuned_rag", "tuned_rag"])
    # a closed-book answer that recites the trained answer to this question is taken, however unsure
    assert evaluate.surer(answers, confidence, [False, True, False])[0] == ["closed 1", "closed 2", "rag 3"]


def test_llama_servers_token_logprobs_give_the_same_confidence():
    result = {"content": "8080", "completion_probabilities": [
        {"id": 1, "token": "80", "logprob": -0.01, "top_logprobs": []},
        {"id": 2, "token": "80", "logprob": math.log(0.42), "top_logprobs": []}]}
    assert student_server.chosen_confidence(result) == 0.42
    # as llama-server 11434 lists a turn that ended: the end-of-turn token last, as "" (not part of the answer)
    ended = {"content": "The answer is 4.", "stop_type": "eos", "completion_probabilities": [
        {"token": "4", "logprob": math.log(0.9)}, {"token": ".", "logprob": math.log(0.8)},
        {"token": "", "logprob": math.log(0.3)}]}
    assert student_server.chosen_confidence(ended) == 0.8
    assert student_server.chosen_confidence({"content": "x"}) is None


def test_confidence_is_the_lowest_probability_of_a_chosen_token(smollm2_gguf):
    """On the real (dequantized) SmolLM2 with a LoRA: the confidence of each greedy answer equals the lowest
    probability the model gives the answer's own tokens when it reads them back (teacher forcing), batch or not."""
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebook import models

    d = models.hf_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(d)
    tok.padding_side = "left"
    tok.pad_token = tok.pad_token or tok.eos_token  # as evaluate.load_tuned does
    base = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    base.generation_config.repetition_penalty = 1.0  # the scores are then the model's own probabilities
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    questions = ["What is the capital of France?", "Name three colours of the rainbow, please."]
    answers, confidence = evaluate.generate_scored(model, tok, questions, 12, 2, adapter=False)
    assert answers == evaluate.generate(model, tok, questions, 12, 1, adapter=False)
    prompts = answering._prompts(tok, questions)
    for p, a, c in zip(prompts, answers, confidence):
        assert 0.0 < c <= 1.0
        ids_p = tok(p, add_special_tokens=False)["input_ids"]
        with torch.inference_mode(), model.disable_adapter():
            enc = tok(p, add_special_tokens=False, return_tensors="pt")
            gen = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)[0]
            own = [t for t in gen[len(ids_p):].tolist()]
            stops = answering._stop_ids(model, tok)
            own = own[:next((k for k, t in enumerate(own) if t in stops), len(own))]
            logits = model(torch.tensor([ids_p + own])).logits[0, len(ids_p) - 1:-1]
            lp = torch.log_softmax(logits.float(), -1)[torch.arange(len(own)), torch.tensor(own)]
        assert abs(math.exp(float(lp.min())) - c) < 2e-3, (a, c)


def test_your_own_questions_are_answered_like_the_eval_without_a_score(monkeypatch):
    monkeypatch.setattr(evaluate, "generate_scored",
                        lambda model, tok, prompts, n, b, adapter, **kw: ([f"{'tuned' if adapter else 'base'} says 8080"]
                                                                          * len(prompts), [0.9] * len(prompts)))
    rows = evaluate.question_rows(["Which port?", "  ", "默认端口是多少？"])
    assert [r["split"] for r in rows] == ["ask", "ask"] and rows[1]["messages"][0]["content"] == "默认端口是多少？"
    answered = evaluate.compare(None, None, rows, 8, 2, abstain_below=0.4)
    assert [r["tuned"] for r in answered] == ["tuned says 8080"] * 2 and answered[0]["reference"] == ""
    html = evaluate.side_by_side_html(answered)
    assert "tuned says 8080" in html and "ROUGE-L" not in html  # no reference: no score shown


def test_compare_with_passes_every_setting_compare_shares_with_the_evaluate_section(monkeypatch):
    """evaluate.compare_with is 05's answering call, also used by the benchmarks that rerun it: each parameter of
    compare that names an ``evaluate`` setting gets that setting (a new gate added to both cannot be left out)."""
    import inspect

    from tunebook import evaluate
    from tunebook import settings as st

    ev = st.load("cpu", ["evaluate.abstain_below=0.31", "evaluate.recited_above=0.77", "evaluate.rag_k=3",
                         "evaluate.agreement_pass=false"]).evaluate
    seen = {}

    def fake(*args, **kwargs):
        names = list(inspect.signature(real).parameters)
        seen.update(dict(zip(names, args)) | kwargs)
        return []

    real = evaluate.compare
    monkeypatch.setattr(evaluate, "compare", fake)
    evaluate.compare_with(ev, None, None, [], "sys", train_rows=[])
    shared = [n for n in inspect.signature(real).parameters if n in type(ev).model_fields]
    assert {"max_new_tokens", "batch_size", "abstain_below", "recited_above", "agreement_pass", "rag_k"} <= set(shared)
    assert all(seen[n] == getattr(ev, n) for n in shared), {n: (seen[n], getattr(ev, n)) for n in shared}
    assert seen["system_prompt"] == "sys"
