"""05's llama.cpp answerer: when it is picked, and the request it sends (no server here; e2e runs it for real)."""

import pytest

from tunebook import student_server


def test_engine_choice():
    gguf, hub = "qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct"
    for engine in ("transformers", "llama.cpp", "hybrid"):  # a bundled GGUF takes every engine
        student_server.check_engine(engine, gguf)
    student_server.check_engine("transformers", hub)
    for engine in ("llama.cpp", "hybrid"):
        with pytest.raises(ValueError, match="needs a GGUF student"):
            student_server.check_engine(engine, hub)


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


@pytest.mark.parametrize("engine", ["llama.cpp", "hybrid"])
def test_hybrid_sends_rag_prompts_to_transformers_and_the_rest_to_llama_server(monkeypatch, tmp_path, engine):
    """evaluate.engine=hybrid: llama-server answers the closed-book and general prompts (decode-bound: it is faster
    there), transformers the RAG prompts (prompt-bound: transformers is faster); llama.cpp sends it every prompt."""
    from tunebook import evaluate, forgetting, retrieval

    server = student_server.StudentServer("smollm2-135m-instruct", "a", "b", "w", rag=engine == "llama.cpp")
    by: dict[str, object] = {}

    def fake(model, tok, prompts, max_new_tokens, batch_size, adapter, desc="", server=None, **kw):
        by[desc] = server
        return ["The port is 8080."] * len(prompts), [0.9] * len(prompts)

    monkeypatch.setattr(evaluate, "generate_scored", fake)
    monkeypatch.setattr(forgetting, "generate", lambda *a, desc="", server=None, **kw: by.update({desc: server})
                        or ["Jupiter"] * len(a[2]))
    index = retrieval.Index.build([{"id": "c", "text": "The default port is 8080."}], "jieba")
    rows = [{"id": "q0", "split": "recall", "chunk_id": "c",
             "messages": [{"role": "user", "content": "What is the default port?"},
                          {"role": "assistant", "content": "8080"}]}]
    out = evaluate.compare(None, None, rows, 8, 2, rag_index=index, rag_k=1, server=server)
    forgetting.forgetting_check(None, None, None, tmp_path, 8, 2, limit=1, server=server)
    assert by["base"] is server and by["fine-tuned"] is server
    assert by["general: base"] is server and by["general: fine-tuned"] is server
    rag_server = server if engine == "llama.cpp" else None
    assert by["base + RAG"] is rag_server and by["fine-tuned + RAG"] is rag_server
    assert out[0]["engine"] == engine
