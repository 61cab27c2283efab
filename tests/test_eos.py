"""04 trains the student with tokenizer, model config and generation config agreeing on the chat's end token (no
"The tokenizer has new PAD/BOS/EOS tokens …" alignment by the trainer, exports stop where a chat turn ends)."""

import logging
from types import SimpleNamespace

import pytest

from tunebook import models, train


def _fake_model(eos, pad, bos):
    conf = SimpleNamespace(eos_token_id=eos, pad_token_id=pad, bos_token_id=bos)
    return SimpleNamespace(config=conf, generation_config=SimpleNamespace(**vars(conf)))


@pytest.mark.parametrize("spec", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_the_chat_end_token_becomes_eos_everywhere(spec, caplog):
    if spec != "smollm2-135m-instruct" and not (models.cache_dir() / "models" / models.BUNDLED[spec].filename).is_file():
        pytest.skip(f"{spec} is not in the cache (make models)")
    from transformers.trainer_utils import align_special_tokens

    tok = models.load_tokenizer(spec)
    assert train.chat_end_token(tok) == "<|im_end|>"
    end = tok.convert_tokens_to_ids("<|im_end|>")
    model = _fake_model(eos=end, pad=None, bos=None)  # the dequantized configs say <|im_end|>
    ids = train.align_end_of_turn(model, tok)
    assert tok.eos_token == "<|im_end|>" and ids["eos_token_id"] == end
    assert model.config.eos_token_id == model.generation_config.eos_token_id == end
    assert model.config.pad_token_id == tok.pad_token_id is not None
    with caplog.at_level(logging.WARNING):
        align_special_tokens(model, tok)  # what the Trainer does when it is built
    assert "new PAD/BOS/EOS" not in caplog.text
    assert model.config.eos_token_id == end


def test_a_template_without_special_end_leaves_eos_alone():
    class Tok:
        eos_token, pad_token, bos_token = "</s>", None, None
        eos_token_id, bos_token_id = 2, None
        pad_token_id = None

        def apply_chat_template(self, *a, **k):
            raise ValueError("no chat template")

    tok = Tok()
    assert train.chat_end_token(tok) is None
