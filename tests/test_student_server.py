"""05's llama.cpp answerer: when it is picked, and the request it sends (no server here; e2e runs it for real)."""

import pytest

from tunebook import student_server


def test_engine_choice():
    assert not student_server.wanted("transformers", "qwen2.5-coder-0.5b-instruct")
    assert student_server.wanted("llama.cpp", "qwen2.5-coder-0.5b-instruct")  # a bundled GGUF
    with pytest.raises(ValueError, match="needs a GGUF student"):
        student_server.wanted("llama.cpp", "Qwen/Qwen2.5-0.5B-Instruct")


def test_the_lora_scale_rides_on_each_request_and_no_prompt_cache_crosses_scales(monkeypatch):
    sent = []

    class FakeClient:
        def __init__(self, *a, **k):
            pass

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return None

        async def request(self, method, url, body):
            sent.append((url, body))
            return {"content": f" answer to {body['prompt']} "}

    monkeypatch.setattr("tunebook.client.Client", FakeClient)
    s = student_server.StudentServer("smollm2-135m-instruct", "a", "b", "w", parallel=2)
    s.teacher = type("T", (), {"base_url": "http://127.0.0.1:9/v1"})()
    assert s.answer(["p1", "p2"], tuned=True, max_new_tokens=7) == ["answer to p1", "answer to p2"]
    assert s.answer(["p3"], tuned=False, max_new_tokens=7) == ["answer to p3"]
    assert all(url == "http://127.0.0.1:9/completion" for url, _ in sent)
    assert [b["lora"] for _, b in sent] == [[{"id": 0, "scale": 1.0}]] * 2 + [[{"id": 0, "scale": 0.0}]]
    assert all(b["n_predict"] == 7 and b["temperature"] == 0.0 and b["cache_prompt"] is False for _, b in sent)
