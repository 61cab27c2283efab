"""05's provenance gate: a trained value moved to another question is stopped; a value from a pair about the same
question, a value no pair names, and an answer that names nothing pass. And the other source a value can have: the
chunk in a fine-tuned + RAG prompt (``evaluate.context_grounding``)."""

from tunebook import evaluate
from tunebook.outcomes import ABSTAIN_ANSWER
from tunebook.provenance import TrainedValues, agrees, grounded, overlap, stems
from tunebook.retrieval import Index


def _row(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


TRAIN = [_row("What is the maximum simulation length in the Professional edition of Brindlewatt?",
              "The Professional edition allows up to 366 days of simulation."),
         _row("Which port does the Brindlewatt dashboard listen on?", "The dashboard listens on port 7432."),
         _row("配置文件中 `max_iterations` 的默认值是多少？", "60"),
         _row("Which environment variable holds the Brindlewatt licence key?", "`BWATT_LICENSE`."),
         _row("What file extension do Brindlewatt models use?", "Models are saved as `.bwm` files.")]


def test_a_trained_value_moved_to_another_question_is_stopped():
    trained = TrainedValues(TRAIN)
    assert trained.common == {"brindlewatt"}  # in 4 of 5 questions: the product, not the fact
    q = "What is the default trial period for Brindlewatt?"
    assert trained.transplanted("366 days", q, 0.1) == ["366"]  # the demo's unseen answer (demo-s13a)
    assert evaluate.provenance_gate("366 days", q, trained, 0.1) == ABSTAIN_ANSWER["en"]
    assert evaluate.provenance_gate("366 days", q, None, 0.1) == "366 days"  # off


def test_a_value_from_a_pair_about_the_same_question_passes():
    trained = TrainedValues(TRAIN)
    q = "How long can a simulation run in Brindlewatt Professional?"  # a rewording of the trained question
    assert overlap(q, TRAIN[0]["messages"][0]["content"]) >= 0.1
    assert trained.transplanted("Up to 366 days.", q, 0.1) == []
    # one value grounded in a pair about this question is enough, even beside one from elsewhere
    assert trained.transplanted("Up to 366 days, on port 7432.", q, 0.1) == []
    zh = "`max_iterations` 默认设为多少？"
    assert trained.transplanted("默认值是 60。", zh, 0.1) == []


def test_questions_are_compared_by_word_stems():
    """demo-s14b: the right answer to "How can I export my data in a different format?" was stopped — its trained
    wordings said "exporting"; by stems the second shares "export" and "data" with it."""
    rows = [_row("What are the other options for exporting results?", "The other options are `parquet` and `json`."),
            _row("Are there any other options besides CSV for exporting data?",
                 "The other options are `parquet` and `json`."),
            *TRAIN]
    q = "How can I export my data in a different format?"
    assert stems("exporting results") == stems("export a result") == {"export", "result"}
    assert stems("配置文件中 `max_iterations` 的默认值") >= {"max_iterations", "配置文件"}  # others are left as cut
    assert overlap(q, rows[1]["messages"][0]["content"]) >= 0.1
    assert TrainedValues(rows).transplanted("The other options are `parquet` and `json`.", q, 0.1) == []


def test_values_no_pair_names_and_abstentions_are_not_its_business():
    trained = TrainedValues(TRAIN)
    q = "What is the default trial period for Brindlewatt?"
    assert trained.transplanted("30 days", q, 0.1) == []  # made up or right: the confidence gate's and the judge's
    assert trained.transplanted("The trial is free.", q, 0.1) == []  # names no value
    assert evaluate.provenance_gate(ABSTAIN_ANSWER["en"], q, trained, 0.1) == ABSTAIN_ANSWER["en"]


# the chunk 05 put in a fine-tuned + RAG prompt (samples/docs, en/licensing.md, shortened)
LICENSING = ("Brindlewatt starts in trial mode. The trial lasts 30 days and allows every feature of the Professional "
             "edition.\nLicense keys are 25 characters long and start with `OTB-`.\n"
             "| Edition | Price |\n|---|---|\n| Professional | 1,200 EUR per seat |")


def test_an_answer_read_off_a_sentence_about_the_question_is_grounded():
    assert grounded("30 days", "What is the default trial period for Brindlewatt?", LICENSING)  # demo-s14a, unseen
    assert grounded("Keys start with `OTB-`.", "What is the format of Brindlewatt license keys?", LICENSING)
    assert grounded("1200 EUR", "How much is a Professional seat?", LICENSING)  # a table row; numbers by value


def test_copied_values_that_do_not_answer_the_question_are_not_grounded():
    # the value is in the chunk, but in a sentence about something else (keys, not the trial)
    assert not grounded("It lasts `OTB-`.", "How many days is the trial?", LICENSING)
    # "25" stands in a sentence that shares a word with the question ("long"), but as 25 characters, not days
    assert not grounded("25 days", "How long is the trial?", LICENSING)
    assert grounded("A 30-day trial.", "How long is the trial?", LICENSING.replace("30 days", "30-day period"))
    # the question names a parameter the chunk never names (an out-of-docs question): nothing the answer copies counts
    assert not grounded("30 days", "What is the default `trial_grace` in Licensing?", LICENSING)
    # no value, or no chunk: nothing to check against
    assert not grounded("The trial is generous.", "How long is the trial?", LICENSING)
    assert not grounded("30 days", "How long is the trial?", "")
    # a term every page uses says nothing about which sentence answers: left out by the caller's common terms
    assert grounded("30 days", "Brindlewatt trial?", LICENSING)
    assert not grounded("`OTB-`", "Brindlewatt trial?", LICENSING, common=frozenset({"brindlewatt"}))


def test_compare_lets_a_grounded_rag_answer_through_the_gates(monkeypatch):
    chunks = [{"id": "lic", "text": LICENSING}, {"id": "cli", "text": "`bwatt run` solves a power flow.\n"
                                                                       "`--threads` defaults to 4."}]
    index = Index.build(chunks)
    questions = ["What is the default trial period for Brindlewatt?", "How long is the Brindlewatt trial?",
                 "What is the default `trial_grace` of Brindlewatt?"]
    said = {"tuned": ["366 days", "366 days", "7 days"], "tuned_rag": ["30 days", "25 days", "30 days"]}

    def fake(model, tok, prompts, max_new_tokens, batch_size, adapter, desc="", **kw):
        key = "tuned_rag" if adapter and "excerpts" in prompts[0] else "tuned" if adapter else None
        return (said[key] if key else ["base"] * len(prompts)), [0.1] * len(prompts)  # every answer unsure

    monkeypatch.setattr(evaluate, "generate_scored", fake)
    eval_rows = [{"id": f"q{i}", "split": "unseen", "messages": [{"role": "user", "content": q},
                                                                 {"role": "assistant", "content": "30 days"}]}
                 for i, q in enumerate(questions)]
    on = evaluate.compare(None, None, eval_rows, 8, 2, rag_index=index, rag_k=1, abstain_below=0.4,
                          context_grounding=True)
    assert on[0]["tuned_rag"] == "30 days" and on[0]["tuned_rag_grounded"] is True
    assert on[0]["tuned"] == ABSTAIN_ANSWER["en"] and "tuned_grounded" not in on[0]  # closed-book: no chunk
    assert on[1]["tuned_rag"] == ABSTAIN_ANSWER["en"]  # "25 days" is not in the chunk
    assert on[2]["tuned_rag"] == ABSTAIN_ANSWER["en"]  # `trial_grace` is not in the chunk
    off = evaluate.compare(None, None, eval_rows, 8, 2, rag_index=index, rag_k=1, abstain_below=0.4)
    assert [r["tuned_rag"] for r in off] == [ABSTAIN_ANSWER["en"]] * 3 and "tuned_rag_grounded" not in off[0]


def test_common_terms_are_the_words_most_chunks_share():
    index = Index.build([{"id": str(i), "text": t} for i, t in enumerate(
        ["Brindlewatt trial lasts 30 days.", "Brindlewatt dashboard port 7432.", "Brindlewatt keys start OTB-.",
         "The solver stops after 60 iterations."])])
    assert index.common_terms() == {"brindlewatt"}


def test_a_gated_answer_that_recites_what_was_trained_for_this_question_is_kept(monkeypatch):
    """``evaluate.recited_above``: cps-s16b's "选择一个配置好参数方案，点击工具栏的**启动任务**按钮…" was the trained answer,
    gated at confidence 0.27; a trained answer to another question, or a loose paraphrase, is not a recital."""
    steps = "选择一个配置好参数方案，点击工具栏的**启动任务**按钮，在该参数方案下远程调用函数，得到相应的输出结果。"
    trained = TrainedValues([*TRAIN, _row("FuncStudio 中如何远程调用函数？", steps)])
    assert trained.recites(steps, "如何通过远程调用函数？", 0.3)
    assert not trained.recites(steps, "如何通过远程调用函数？", 0.0)  # off
    assert not trained.recites(steps, "如何安装 FuncStudio 执行器？", 0.3)  # trained for another question
    assert not trained.recites("点击启动任务按钮即可。", "如何通过远程调用函数？", 0.3)  # not the trained answer
    assert not trained.recites("366 days", "What is the default trial period for Brindlewatt?", 0.3)
    # a sibling's trained answer: the question names a code the trained question does not
    codes = TrainedValues([_row("Brindlewatt 中错误码 BW-310 的含义是什么？", "许可证已过期。续费后重新设置 `BWATT_LICENSE`。")])
    assert codes.recites("许可证已过期。续费后重新设置 `BWATT_LICENSE`。", "Brindlewatt 错误码 BW-310 是什么意思？", 0.3)
    assert not codes.recites("许可证已过期。续费后重新设置 `BWATT_LICENSE`。", "Brindlewatt 中错误码 BW-101 的含义是什么？", 0.3)

    def fake(model, tok, prompts, max_new_tokens, batch_size, adapter, desc="", **kw):
        return ([steps] if adapter else ["base"]) * len(prompts), [0.27] * len(prompts)

    monkeypatch.setattr(evaluate, "generate_scored", fake)
    rows = [{"id": "q", "split": "recall", "messages": [{"role": "user", "content": "如何通过远程调用函数？"},
                                                         {"role": "assistant", "content": steps}]}]
    train = [*TRAIN, _row("FuncStudio 中如何远程调用函数？", steps)]
    kept = evaluate.compare(None, None, rows, 8, 2, abstain_below=0.4, train_rows=train, recited_above=0.3)
    assert kept[0]["tuned"] == steps and kept[0]["tuned_recited"] is True
    gated = evaluate.compare(None, None, rows, 8, 2, abstain_below=0.4, train_rows=train)
    assert gated[0]["tuned"] == ABSTAIN_ANSWER["zh"] and "tuned_recited" not in gated[0]
    assert evaluate.summarize(kept)["tuned_recited"] == 1.0


def test_the_surer_takes_a_recited_closed_book_answer_over_a_surer_rag_one(monkeypatch):
    steps = "选择一个配置好参数方案，点击工具栏的**启动任务**按钮，在该参数方案下远程调用函数，得到相应的输出结果。"
    train = [*TRAIN, _row("FuncStudio 中如何远程调用函数？", steps)]
    index = Index.build([{"id": "run", "text": "运行标签页：" + steps}, {"id": "x", "text": "其他内容。"}])

    def fake(model, tok, prompts, max_new_tokens, batch_size, adapter, desc="", **kw):
        if not adapter:
            return ["base"] * len(prompts), [0.5] * len(prompts)
        rag = "文档摘录" in prompts[0]
        return ([("点击运行。" if rag else steps)] * len(prompts), [(0.9 if rag else 0.27)] * len(prompts))

    monkeypatch.setattr(evaluate, "generate_scored", fake)
    rows = [{"id": "q", "split": "recall", "messages": [{"role": "user", "content": "如何通过远程调用函数？"},
                                                         {"role": "assistant", "content": steps}]}]
    on = evaluate.compare(None, None, rows, 8, 2, rag_index=index, rag_k=1, abstain_below=0.4, train_rows=train,
                          recited_above=0.5)
    assert on[0]["surer"] == steps and on[0]["surer_from"] == "tuned"
    off = evaluate.compare(None, None, rows, 8, 2, rag_index=index, rag_k=1, abstain_below=0.4, train_rows=train)
    assert off[0]["surer"] == "点击运行。" and off[0]["surer_from"] == "tuned_rag"


def test_a_rag_answer_agrees_with_the_closed_book_one_by_sentence_or_values():
    """demo-s26a: closed-book 0.84, with its chunk 0.32 — the same sentence; ``evaluate.agreement_pass``."""
    same = "执行 `bwatt run harbour.bwm` 命令运行仿真。"
    assert agrees(same, same, "如何设置仿真？")
    assert agrees("The dashboard listens on port 7432", "the dashboard listens on port 7432.", "Which port?")
    assert agrees("Port 7432 is the dashboard's.", "The dashboard listens on port 7432.", "Which port?")  # same value
    assert not agrees("The dashboard listens on port 8080.", "The dashboard listens on port 7432.", "Which port?")
    assert not agrees("It listens on ports 7432 and 8080.", "The dashboard listens on port 7432.", "Which port?")
    assert not agrees("It listens on port 7432.", "Ports 7432 and 8080.", "Which port?")  # drops a value
    assert not agrees("It is on the dashboard.", "It is in the settings.", "Where?")  # no value, other sentence
    assert not agrees("", "", "Which port?")


def test_compare_keeps_a_rag_answer_the_passed_closed_book_answer_agrees_with(monkeypatch):
    """``evaluate.agreement_pass``: the chunk lowers the confidence of the answer the student gives surely without
    it; when the closed-book answer was itself gated, or says something else, the RAG answer stays gated."""
    index = Index.build([{"id": "cli", "text": "执行 `bwatt run harbour.bwm` 命令运行仿真。"}, {"id": "x", "text": "其他内容。"}])
    sure = {"如何设置仿真？": 0.84, "如何停止仿真？": 0.2, "如何导出结果？": 0.9}
    said = {"如何设置仿真？": "执行 `bwatt run harbour.bwm` 命令运行仿真。", "如何停止仿真？": "执行 `bwatt stop` 命令。",
            "如何导出结果？": "执行 `bwatt export` 命令。"}
    rag_said = {"如何导出结果？": "执行 `bwatt save` 命令。"}

    def fake(model, tok, prompts, max_new_tokens, batch_size, adapter, desc="", **kw):
        qs = [next(q for q in said if q in p) for p in prompts]
        if not adapter:
            return ["base"] * len(prompts), [0.9] * len(prompts)
        if prompts[0] not in said:  # a RAG prompt (the question inside the template, with chunks): all unsure
            return [rag_said.get(q, said[q]) for q in qs], [0.3] * len(prompts)
        return [said[q] for q in qs], [sure[q] for q in qs]

    monkeypatch.setattr(evaluate, "generate_scored", fake)
    rows = [{"id": f"q{i}", "split": "recall", "messages": [{"role": "user", "content": q},
                                                             {"role": "assistant", "content": said[q]}]}
            for i, q in enumerate(said)]
    on = evaluate.compare(None, None, rows, 8, 2, rag_index=index, rag_k=1, abstain_below=0.4, agreement_pass=True)
    assert on[0]["tuned_rag"] == said["如何设置仿真？"] and on[0]["tuned_rag_agrees"] is True
    assert on[1]["tuned"] == on[1]["tuned_rag"] == ABSTAIN_ANSWER["zh"]  # the closed-book answer was gated too
    assert on[2]["tuned_rag"] == ABSTAIN_ANSWER["zh"] and "tuned_rag_agrees" not in on[2]  # says something else
    assert "tuned_agrees" not in on[0]  # closed-book answers are not this rule's business
    assert evaluate.summarize(on)["tuned_rag_agrees"] == round(1 / 3, 4)
    off = evaluate.compare(None, None, rows, 8, 2, rag_index=index, rag_k=1, abstain_below=0.4)
    assert off[0]["tuned_rag"] == ABSTAIN_ANSWER["zh"] and "tuned_rag_agrees" not in off[0]
