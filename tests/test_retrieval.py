"""BM25 retrieval for 05's RAG baseline (bm25s), Chinese by jieba words or character bigrams."""

import pytest

from tunebook import retrieval

CHUNKS = [
    {"id": "a", "breadcrumb": ["安装"], "text": "Brindlewatt 的默认端口是 7432，可以在 brindle.toml 中修改。"},
    {"id": "b", "breadcrumb": ["Limits"], "text": "The Community edition allows 2,000 buses per model."},
    {"id": "c", "breadcrumb": ["求解器"], "text": "求解器最多迭代 60 次，收敛容差为 1e-6。"},
]


@pytest.mark.parametrize("tok", ["jieba", "char2"])
def test_the_source_chunk_is_found_in_both_languages(tok):
    index = retrieval.Index.build(CHUNKS, tok)
    found = index.search(["Brindlewatt 默认端口是多少？", "How many buses does the Community edition allow?",
                          "求解器的收敛容差是多少？"], k=1)
    assert [index.chunk_ids[f[0]] for f in found] == ["a", "b", "c"]
    assert retrieval.hit_rate(found, index, ["a", "b", "c"]) == 1.0


def test_a_question_sharing_no_term_finds_nothing_instead_of_failing():
    index = retrieval.Index.build(CHUNKS, "jieba")
    assert index.search(["The document", "zzz qqq"], k=2) == [[], []]
    assert "no excerpt" in index.context([])


def test_rag_prompt_follows_the_question_language():
    assert retrieval.rag_prompt("端口是多少？", "ctx").startswith("文档摘录")
    assert "Question: Which port?" in retrieval.rag_prompt("Which port?", "ctx")
