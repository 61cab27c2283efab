"""train.adapter_scale: the saved LoRA adapter's update scaled down (weight-space interpolation toward the base)."""

import json

import pytest

from tunebook import lora
from tunebook import settings as st


def test_scaled_adapter_moves_the_weights_that_share_of_the_way(tmp_path):
    """A tiny random Qwen2 with a LoRA whose B is not zero: after scale_adapter(0.5) the merged weights, loaded the
    way 05 loads an adapter, sit halfway between the base and the fine-tuned ones; the config says so too."""
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    conf = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1)
    base = AutoModelForCausalLM.from_config(conf)
    base.save_pretrained(tmp_path / "base")
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], init_lora_weights=False)
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), lcfg)
    tuned.save_pretrained(tmp_path / "adapter")
    full = {k: v.clone() for k, v in tuned.merge_and_unload().state_dict().items()}

    lora.scale_adapter(tmp_path / "adapter", 0.5)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["lora_alpha"] == 4
    half = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"),
                                     str(tmp_path / "adapter")).merge_and_unload().state_dict()
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "base").state_dict()
    moved = [k for k in ref if not torch.equal(full[k], ref[k])]
    assert {k.split(".")[-2] for k in moved} == {"q_proj", "down_proj"}
    for k in moved:
        torch.testing.assert_close(half[k] - ref[k], 0.5 * (full[k] - ref[k]), rtol=1e-4, atol=1e-6)


def test_adapter_scale_setting_is_validated():
    assert st.load("cpu", []).train.adapter_scale == 1.0
    assert st.load("cpu", ["train.adapter_scale=0.6"]).train.adapter_scale == 0.6
    for bad in ("0", "1.5", "-0.2"):
        with pytest.raises(Exception, match="adapter_scale"):
            st.load("cpu", [f"train.adapter_scale={bad}"])


def test_lora_first_layer_trains_only_the_layers_above_it():
    """lora_first_layer=2 on a 4-layer model: LoRA weights on layers 2 and 3 only; beyond the last layer, an error."""
    pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config

    conf = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                       num_attention_heads=2, num_key_value_heads=1)
    cfg = st.load("cpu", ["train.lora_first_layer=2"]).train
    model = get_peft_model(AutoModelForCausalLM.from_config(conf),
                           LoraConfig(r=4, target_modules=cfg.lora_targets, **lora.layer_kwargs(cfg, conf)))
    layers = {int(n.split(".layers.")[1].split(".")[0]) for n, _ in model.named_parameters() if "lora_" in n}
    assert layers == {2, 3}
    assert lora.layer_kwargs(st.load("cpu", []).train, conf) == {}
    with pytest.raises(ValueError, match="4 layers"):
        lora.layer_kwargs(st.load("cpu", ["train.lora_first_layer=4"]).train, conf)
