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


def test_a_draft_answer_adds_the_chunk_it_names_and_takes_none_away():
    """05's evaluate.draft_search: the demo's miss "如何启动仿真？" (s14demo-today) — the question alone finds the
    serve page; the fine-tuned student's closed-book answer names the run command, and that page is added."""
    chunks = [{"id": "serve", "breadcrumb": ["仪表盘"], "text": "执行 `bwatt serve --open` 启动仪表盘，仿真结果在左侧列表。"},
              {"id": "run", "breadcrumb": ["运行"], "text": "执行 `bwatt run harbour.bwm` 命令，结果写入 harbour.bwr。"},
              *CHUNKS]
    index = retrieval.Index.build(chunks, "jieba")
    q = "如何启动仿真？"
    assert [index.chunk_ids[i] for i in index.search([q], 1)[0]] == ["serve"]
    found = index.search_with_drafts([q, q], ["执行 `bwatt run harbour.bwm` 命令。", "The default port is 7432."], 1)
    assert [index.chunk_ids[i] for i in found[0]] == ["serve", "run"]  # the question's chunk first, then the draft's
    assert [index.chunk_ids[i] for i in found[1]][0] == "serve"  # a made-up draft adds a chunk, removes none
    assert len(found[1]) <= 2


def test_rag_prompt_follows_the_question_language():
    assert retrieval.rag_prompt("端口是多少？", "ctx").startswith("文档摘录")
    assert "Question: Which port?" in retrieval.rag_prompt("Which port?", "ctx")


def test_context_rows_put_the_retrieved_chunk_in_05s_rag_prompt_and_never_a_held_out_one(tmp_path):
    """04's train.context_fraction: a share of the trained facts again, as 05's RAG prompt with the chunk BM25 finds
    for the question; the held-out (unseen) chunks are not in the index, so their text never reaches training."""
    import json

    from tunebook.retrieval import context_rows, rag_prompt

    data = tmp_path / "data"
    data.mkdir()
    chunks = [{"id": "c1", "text": "The solver step defaults to 900 seconds (`--step`).", "breadcrumb": ["CLI"]},
              {"id": "c2", "text": "The dashboard listens on port 7432.", "breadcrumb": ["Dashboard"]},
              {"id": "c3", "text": "The secret step size of the held-out page is 42 seconds.", "breadcrumb": ["Hidden"]}]
    msgs = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]  # noqa: E731
    train = [{"id": "a", "kind": "fact", "chunk_id": "c1", "messages": msgs("What is the default step size?", "900 s")},
             {"id": "b", "kind": "fact", "chunk_id": "c2", "messages": msgs("Which port does the dashboard use?", "7432")},
             {"id": "a-r1", "kind": "fact", "chunk_id": "c1", "reworded_from": "a",
              "messages": msgs("Default step size?", "900 s")}]
    evals = [{"id": "u", "split": "unseen", "chunk_id": "c3", "messages": msgs("What is the secret step size?", "42")}]
    for name, rows in (("chunks", chunks), ("train", train), ("eval", evals)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = context_rows(tmp_path, 1.0, 1, "jieba", seed=0)
    assert sorted(r["context_of"] for r in rows) == ["a", "b"]  # facts, not their rewordings
    by = {r["context_of"]: r for r in rows}
    assert by["a"]["messages"] == msgs(rag_prompt("What is the default step size?", chunks[0]["text"]), "900 s")
    assert all("42 seconds" not in r["messages"][0]["content"] for r in rows)  # "step size" matches c3 best
    assert len(context_rows(tmp_path, 0.5, 1, "jieba", seed=0)) == 1


def test_window_keeps_the_lines_around_the_answer_and_the_whole_text_when_short():
    """train.context_lines: the chunk cut to the line nearest the question + answer and its neighbours."""
    from tunebook.retrieval import window

    table = "\n".join(["| key | default |", "|---|---|"] + [f"| `key{i}` | {i * 100} |" for i in range(12)])
    cut = window(table, "What is the default of key7? 700", 2)
    assert cut.splitlines() == [f"| `key{i}` | {i * 100} |" for i in range(5, 10)]
    assert window(table, "key0 0", 2).splitlines()[0] == "| key | default |"  # at the top: still 5 lines
    assert len(window(table, "key11 1100", 2).splitlines()) == 5  # at the bottom as well
    assert window(table, "key7", 0) == table  # 0: the whole chunk
    assert window("one line\n\nanother", "another", 2) == "one line\n\nanother"  # short: untouched
    zh = "安装\n\n默认端口为 7432。\n日志目录为 /var/log/bw。\n超时为 30 秒。\n重试 3 次。\n缓存 2048 MB。"
    assert "日志目录为 /var/log/bw。" in window(zh, "日志目录在哪里？/var/log/bw", 1)


def test_swap_numbers_changes_the_answers_numbers_in_chunk_and_answer_alike():
    """train.context_swaps: the answer can only be read from the chunk, never recalled."""
    import random

    from tunebook.retrieval import swap_numbers

    rng = random.Random(0)
    ctx, ans = swap_numbers("| `max_buses` | 25,000 |\n| `min_buses` | 4,000 |\nPort 7432.", "Up to 25,000 buses.", rng)
    new = ans.removeprefix("Up to ").removesuffix(" buses.")
    assert new != "25,000" and len(new) == 6 and new[2] == "," and f"| `max_buses` | {new} |" in ctx
    assert "4,000" in ctx and "7432" in ctx and "25,000" not in ctx  # only the answer's numbers change
    ctx, ans = swap_numbers("默认端口为 7432，版本 4.2.1。", "端口是7432", rng)  # CJK touching the number
    assert "7432" not in ctx + ans and ans[3:] in ctx and "4.2.1" in ctx
    assert swap_numbers("The port is 7432.", "It listens on 8080.", rng) is None  # not in the chunk: nothing to swap
    assert swap_numbers("No numbers here.", "None.", rng) is None


def test_context_rows_with_swaps_mark_the_rows_whose_numbers_changed(tmp_path):
    import json

    from tunebook.retrieval import context_rows

    data = tmp_path / "data"
    data.mkdir()
    chunks = [{"id": f"c{i}", "text": f"Setting `opt{i}` defaults to {100 + i} ms.\nOther text.", "breadcrumb": []}
              for i in range(8)]
    msgs = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]  # noqa: E731
    train = [{"id": f"t{i}", "kind": "fact", "chunk_id": f"c{i}",
              "messages": msgs(f"What is the default of `opt{i}`?", f"{100 + i} ms")} for i in range(8)]
    for name, rows in (("chunks", chunks), ("train", train), ("eval", [])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = context_rows(tmp_path, 1.0, 1, "jieba", seed=0, swaps=0.5)
    assert sum(r["swapped"] for r in rows) == 4
    for r in rows:
        prompt, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        assert reply.split()[0] in prompt  # the answer's number is always the chunk's
        assert (reply == next(t for t in train if t["id"] == r["context_of"])["messages"][1]["content"]) != r["swapped"]


def test_context_rows_with_distractors_get_only_other_chunks_and_keep_their_answer(tmp_path):
    """train.context_distractors: the chunk in the prompt is never the fact's own; the answer is what was trained."""
    import json

    from tunebook.retrieval import context_rows

    data = tmp_path / "data"
    data.mkdir()
    chunks = [{"id": f"c{i}", "text": f"The default of `opt{i}` is {100 + i} ms.", "breadcrumb": []} for i in range(8)]
    msgs = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]  # noqa: E731
    train = [{"id": f"t{i}", "kind": "fact", "chunk_id": f"c{i}",
              "messages": msgs(f"What is the default of `opt{i}`?", f"{100 + i} ms")} for i in range(8)]
    for name, rows in (("chunks", chunks), ("train", train), ("eval", [])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = context_rows(tmp_path, 1.0, 1, "jieba", seed=0, swaps=0.25, distractors=0.5)
    assert sum(r["swapped"] for r in rows) == 2 and sum(r["distractor"] for r in rows) == 4
    assert not any(r["swapped"] and r["distractor"] for r in rows)
    for r in rows:
        i = int(r["context_of"][1:])
        prompt, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        if r["distractor"]:
            assert f"{100 + i} ms" not in prompt and reply == f"{100 + i} ms"
            assert "ms" in prompt  # a chunk is there, just not the fact's own
        elif not r["swapped"]:
            assert f"{100 + i} ms" in prompt
    # no distractors: the same rows as before the knob existed
    assert [r["messages"] for r in context_rows(tmp_path, 1.0, 1, "jieba", seed=0, swaps=0.25)] == \
        [r["messages"] for r in context_rows(tmp_path, 1.0, 1, "jieba", seed=0, swaps=0.25, distractors=0.0)]


def test_table_rows_name_each_cell_by_its_column_and_leave_other_lines_alone():
    """evaluate.table_rows: fine-tuned + RAG read the neighbouring row of a table in its prompt (25,000 buses for
    "how many generators"); written as rows, each line says which row and column a value is in."""
    text = ("Limits by edition.\n\n| Limit | Community | Professional |\n|-------|-----------|:------------:|\n"
            "| Buses per model | 2,000 | 25,000 |\n| Generators per model | 150 | 4,000 |\n\nAfter the table.\n"
            "| 错误码 | 含义 | 常见处理方法 |\n|---|---|---|\n| BW-310 | 许可证已过期 | 续费后重新设置 `BWATT_LICENSE` |\n"
            "A line with a | pipe is not a table.")
    rows = retrieval.table_rows(text).splitlines()
    assert rows[0] == "Limits by edition."
    assert "Generators per model — Community: 150; Professional: 4,000" in rows
    assert "Buses per model — Community: 2,000; Professional: 25,000" in rows
    assert "BW-310 — 含义：许可证已过期；常见处理方法：续费后重新设置 `BWATT_LICENSE`" in rows
    assert not any(r.startswith("|") for r in rows)  # header and rule lines are folded into the rows
    assert rows[-1] == "A line with a | pipe is not a table." and "After the table." in rows
    assert retrieval.table_rows("no table here\n| a | b |") == "no table here\n| a | b |"  # no rule line: left as is
    index = retrieval.Index.build([{"id": "t", "text": text}], "jieba", table_rows=True)
    assert "Generators per model — Community: 150" in index.context([0])
    assert "| Generators per model |" in retrieval.Index.build([{"id": "t", "text": text}], "jieba").context([0])


FLAGS = ("[Running a simulation]\nRun a model with `bwatt run`:\n```bash\nbwatt run harbour.bwm --horizon 48h --step 300\n"
         "```\n| Flag | Default | Meaning |\n|------|---------|---------|\n| `--horizon` | `24h` | Simulated time span |\n"
         "| `--step` | `900` | Seconds between solver steps |\n| `--threads` | `4` | Worker threads for the solver |\n"
         "| `--seed` | `17` | Random seed for stochastic load profiles |\n| `--out` | `<model>.bwr` | Output file |\n"
         "| `--quiet` | off | Suppress the progress bar |\n\nIf a step does not converge, `bwatt run` stops with BW-204.\n"
         "[Checking a model]\n`bwatt check harbour.bwm` validates a model without solving it.\n"
         "It exits with status 0 when the model is clean.")


def test_passage_keeps_the_row_asked_about_under_its_header_and_heading():
    """evaluate.rag_lines: a RAG prompt holds the line about the question, its neighbours, the section heading and
    the table header (a row alone does not say which column is the default), and marks what it left out."""
    index = retrieval.Index.build([{"id": "cli", "text": FLAGS}, *CHUNKS], "jieba", passage_lines=1)
    got = index.context([0], "What is the default value of the `--seed` flag?")
    lines = got.splitlines()
    assert "| `--seed` | `17` | Random seed for stochastic load profiles |" in lines
    assert lines[:2] == ["[Running a simulation]", "…"]  # the heading above the cut, then a mark for the gap
    assert "| Flag | Default | Meaning |" in lines and "|------|---------|---------|" in lines
    assert "| `--horizon` | `24h` | Simulated time span |" not in lines  # rows far from the one asked are left out
    assert "[Checking a model]" not in got and lines[-1] == "…"
    assert len(got) < len(FLAGS) / 2
    # the student's draft counts too: fine-tuned + RAG asks with the question and its closed-book answer
    assert "`bwatt check harbour.bwm` validates" in index.context([0], "How do I validate it?\nbwatt check validates it")
    # no question, or a chunk no longer than the passage: the chunk as it is
    assert index.context([0]) == FLAGS
    assert index.context([1], "默认端口是多少？") == CHUNKS[0]["text"]


def test_passage_keeps_a_cut_code_block_fenced_and_whole_chunks_when_off():
    text = "[Install]\nintro\n```bash\npip install a\npip install b\npip install c\npip install d\n```\nafter\nmore\nend"
    got = retrieval.passage(text, "pip install d", 1, {}, "jieba")
    assert got.count("```") == 2  # the opening fence comes along, so the block still reads as code
    assert "pip install d" in got and "pip install a" not in got
    assert retrieval.passage(text, "pip install d", 0, {}, "jieba") == text
    off = retrieval.Index.build([{"id": "cli", "text": FLAGS}], "jieba")
    assert off.context([0], "What is the default value of the `--seed` flag?") == FLAGS


@pytest.mark.parametrize("draft_search", [True, False])
def test_compare_gives_passages_to_fine_tuned_rag_and_whole_chunks_to_base_rag(monkeypatch, draft_search):
    """evaluate.rag_lines in 05: the fine-tuned student's RAG prompt holds the passage about the question (and its
    closed-book draft); base + RAG, the baseline, keeps the whole chunk — whole chunks scored higher for the base on
    recall (benchmarks/rag_passage.py, session 31); ``base_passages`` cuts both, for that benchmark."""
    from tunebook import evaluate

    seen: dict[str, list[str]] = {}

    def fake(model, tok, prompts, max_new_tokens, batch_size, adapter, desc="", **kw):
        seen[desc] = prompts
        return ["The default of `--seed` is `17`."] * len(prompts), [0.9] * len(prompts)

    monkeypatch.setattr(evaluate, "generate_scored", fake)
    index = retrieval.Index.build([{"id": "cli", "text": FLAGS}, *CHUNKS], "jieba", passage_lines=1)
    q = "What is the default value of the `--seed` flag?"
    rows = [{"id": "q0", "split": "recall", "chunk_id": "cli",
             "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "17"}]}]
    evaluate.compare(None, None, rows, 8, 2, rag_index=index, rag_k=1, draft_search=draft_search)
    assert FLAGS in seen["base + RAG"][0]  # the whole chunk
    tuned = seen["fine-tuned + RAG"][0]
    assert "| `--seed` | `17` |" in tuned and "| `--horizon` |" not in tuned and "…" in tuned
    evaluate.compare(None, None, rows, 8, 2, rag_index=index, rag_k=1, draft_search=draft_search, base_passages=True)
    assert FLAGS not in seen["base + RAG"][0] and "| `--seed` | `17` |" in seen["base + RAG"][0]
    whole = retrieval.Index.build([{"id": "cli", "text": FLAGS}, *CHUNKS], "jieba")
    evaluate.compare(None, None, rows, 8, 2, rag_index=whole, rag_k=1, draft_search=draft_search)
    assert FLAGS in seen["fine-tuned + RAG"][0]  # rag_lines 0: whole chunks, as before
