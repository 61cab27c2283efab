"""05's scope switch (tunebook.scope): the adapter for questions about the docs, the base for the rest."""

import json

import pytest

from tunebook import evaluate, forgetting, scope

DOCS = ["w10 w11 w12 w13", "w14 w15 w16", "w17 w18 w19 w20 w21"]
GENERAL = ["w40 w41 w42", "w43 w44 w45 w46", "w47 w48"]


@pytest.fixture
def lora_lm(tiny_lm):
    """The tiny model with a LoRA whose B is not zero, so the adapter changes the hidden states."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_lm
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    return peft.eval(), tok


def test_the_embedding_is_the_base_models_and_does_not_depend_on_the_batch(lora_lm):
    import torch

    model, tok = lora_lm
    texts = ["w10 w11", "w30 w31 w32 w33 w34 w35 w36"]
    got = scope.embed(model, tok, texts)
    assert got.shape == (2, 32) and torch.allclose(got.norm(dim=-1), torch.ones(2), atol=1e-5)
    alone = scope.embed(model, tok, texts[:1])  # no padding: the same vector as in a padded batch
    assert torch.allclose(got[0], alone[0], atol=1e-5)
    with model.disable_adapter():
        base = scope.embed(model.get_base_model(), tok, texts)
    assert torch.allclose(got, base, atol=1e-5)  # the adapter is off while embedding
    assert tok.padding_side == "left"  # the generation side is given back


def test_the_switch_sends_docs_questions_to_the_adapter_and_the_rest_to_the_base(lora_lm, tmp_path):
    model, tok = lora_lm
    switch = scope.Switch.build(model, tok, DOCS, GENERAL, replay_prompts="replay.yaml")
    asked = [DOCS[1], GENERAL[2], DOCS[0], GENERAL[0]]
    assert switch.to_adapter(model, tok, asked) == [True, False, True, False]
    margins = switch.margins(model, tok, asked)
    assert margins[0] > 0 > margins[1]
    loaded = scope.Switch.load(switch.save(tmp_path / "export" / scope.SCOPE_FILE))
    assert loaded.to_adapter(model, tok, asked) == [True, False, True, False]
    assert loaded.meta == {"replay_prompts": "replay.yaml", "docs": "3", "general": "3"}
    with pytest.raises(ValueError, match="both"):
        scope.Switch.build(model, tok, [], GENERAL)


def test_compare_and_the_forgetting_check_add_the_switched_answer(monkeypatch, tmp_path):
    said = {False: ["base says 1", "base says 2"], True: ["tuned 8080", "tuned 9090"]}

    def fake(model, tok, prompts, max_new_tokens, batch_size, adapter, **kw):
        return said[adapter], [0.2, 0.9]

    class Fixed:  # a switch that sends the first question to the adapter, the second to the base
        def to_adapter(self, model, tok, questions):
            return [True, False][:len(questions)]

    monkeypatch.setattr(evaluate, "generate_scored", fake)
    eval_rows = [{"id": f"q{i}", "split": "recall", "messages": [{"role": "user", "content": f"Which port {i}?"},
                                                                 {"role": "assistant", "content": "8080"}]}
                 for i in range(2)]
    rows = evaluate.compare(None, None, eval_rows, 8, 2, abstain_below=0.5, switch=Fixed())
    assert [r["switched_from"] for r in rows] == ["tuned", "base"]
    assert rows[0]["switched"] == rows[0]["tuned"] != rows[0]["tuned_ungated"]  # the gated answer, as served
    assert rows[0]["switched_ungated"] == "tuned 8080" and rows[1]["switched"] == "base says 2"
    assert rows[1]["switched_rouge_l"] == rows[1]["base_rouge_l"] and "switched_ungated" not in rows[1]
    evaluate.add_outcomes(rows)
    s = evaluate.summarize(rows)
    assert s["switched_to_adapter"] == 0.5 and "switched" in evaluate.conditions_in(rows)
    assert "from fine-tuned" in evaluate.side_by_side_html(rows)
    assert "switched" not in evaluate.compare(None, None, eval_rows, 8, 2)[0]  # no switch: no sixth answerer

    monkeypatch.setattr(forgetting, "generate", lambda m, t, qs, n, b, adapter, **kw: [f"{adapter} {q}" for q in qs])
    monkeypatch.setattr(forgetting, "general_prompts", lambda: [{"question": "a?", "reference": "x"},
                                                                {"question": "b?", "reference": "y"}])
    out = forgetting.forgetting_check(None, None, None, tmp_path, 8, 2, switch=Fixed())
    assert [r["switched"] for r in out["rows"]] == ["True a?", "False b?"]


def test_the_general_metrics_pair_the_switched_answers_with_the_base():
    rows = [{"question": q, "reference": "x", "base_judge": b, "tuned_judge": t, "switched_judge": s,
             "switched_from": f} for q, b, t, s, f in (("a", 5.0, 0.0, 5.0, "base"), ("b", 5.0, 5.0, 5.0, "tuned"),
                                                       ("c", 0.0, 0.0, 0.0, "base"), ("d", 5.0, 0.0, 5.0, "base"))]
    m = forgetting.general_metrics(rows)
    assert m["judge_change"]["mean"] == -2.5 and m["switched_change"]["mean"] == 0.0
    assert m["switched_to_adapter"] == 0.25 and m["switched_judge"] == m["base_judge"]
    assert forgetting.answerers(rows) == ("base", "tuned", "switched")


def test_a_hub_student_exports_the_switch_without_a_gguf_lora(lora_lm, tmp_path, monkeypatch):
    from tunebook import student_server

    model, tok = lora_lm
    switch = scope.Switch.build(model, tok, DOCS, GENERAL)
    monkeypatch.setattr(student_server, "lora_to_gguf", lambda *a: pytest.fail("no GGUF student: nothing to convert"))
    (tmp_path / "exports.json").write_text('{"adapter": "a"}')
    done = scope.export(switch, tmp_path / "adapter", {"student": "Qwen/Qwen2.5-0.5B-Instruct"}, tmp_path)
    assert set(done) == {"scope"} and scope.Switch.load(done["scope"]).meta["docs"] == "3"
    assert json.loads((tmp_path / "exports.json").read_text()) == {"adapter": "a", "scope": done["scope"]}
