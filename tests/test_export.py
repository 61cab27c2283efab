import pytest

from tunebook import export, models

CONVERSATIONS = [
    [{"role": "user", "content": "What port does Brindlewatt use?"}],
    [{"role": "system", "content": "You answer questions about Brindlewatt."},
     {"role": "user", "content": "默认端口是多少？"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "bye"}],
]


@pytest.mark.parametrize("spec", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_modelfile_template_matches_the_students_chat_template(spec):
    if spec != "smollm2-135m-instruct" and not (models.cache_dir() / "models" / models.BUNDLED[spec].filename).is_file():
        pytest.skip(f"{spec} is not in the cache (make models)")
    tok = models.load_tokenizer(spec)
    mf = export.modelfile(tok, "student-q4_k_m.gguf")
    system = export.default_system_prompt(tok)
    assert mf.startswith("FROM ./student-q4_k_m.gguf\n")
    assert f'TEMPLATE """{export.CHATML_TEMPLATE}"""' in mf
    if system:
        assert f'SYSTEM """{system}"""' in mf
    assert 'PARAMETER stop "<|im_end|>"' in mf
    for conv in CONVERSATIONS:
        expected = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert export.render_chatml(conv, system) == expected


def test_non_chatml_template_is_refused_clearly():
    class Tok:
        chat_template = "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"
        eos_token = "</s>"

    with pytest.raises(export.ExportError, match="ChatML"):
        export.modelfile(Tok(), "x.gguf")


def test_agreement():
    a = export.agreement(["The port is 7432.", "abc"], ["the port is 7432", "xyz"])
    assert a["n"] == 2 and a["exact_agreement"] == 0.5 and 0.4 < a["mean_char_f1"] < 0.6


def test_byte_level_tokenizer_is_normalized_for_the_converter(tmp_path, smollm2_gguf):
    import json
    import shutil

    src = models.dequantized_dir(smollm2_gguf)
    shutil.copy(src / "tokenizer.json", tmp_path / "tokenizer.json")
    before = json.loads((tmp_path / "tokenizer.json").read_text())
    assert export.normalize_tokenizer_for_gguf(tmp_path) == bool(before["model"].get("byte_fallback"))
    assert json.loads((tmp_path / "tokenizer.json").read_text())["model"]["byte_fallback"] is False

    from transformers import PreTrainedTokenizerFast

    a = PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))
    b = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    text = "Brindlewatt 4.2.1 默认端口 7432 — ünïcödé ✓"
    assert a(text)["input_ids"] == b(text)["input_ids"]
