import pytest
import torch

from tunebook import precision


def test_explicit_choices_are_kept_and_bad_ones_refused():
    assert precision.resolve("fp32") == "fp32" and precision.dtype("fp32") is torch.float32
    assert precision.resolve("bf16") == "bf16" and precision.dtype("bf16") is torch.bfloat16
    assert precision.resolve("auto") in ("bf16", "fp32")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("fp16")


def test_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert precision.resolve("auto") == "fp32"  # emulated bf16 would be slower: keep float32
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert precision.resolve("auto") == "bf16"


def test_the_output_layer_gets_a_contiguous_input_and_the_same_numbers():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Linear(6, 11, bias=False).to(torch.bfloat16)

        def get_output_embeddings(self):
            return self.out

    m = Model()
    h = torch.randn(3, 5, 6, dtype=torch.bfloat16)[:, -1:, :]  # what generate hands the head: a strided slice
    assert not h.is_contiguous()
    before = m.out(h)
    precision.contiguous_head_input(m)
    precision.contiguous_head_input(m)  # idempotent: one hook
    seen: list[bool] = []
    m.out.register_forward_pre_hook(lambda _m, a: seen.append(a[0].is_contiguous()))  # runs after tunebook's
    after = m.out(h)
    assert len(m.out._forward_pre_hooks) == 2 and seen == [True]
    assert torch.equal(before, after)
