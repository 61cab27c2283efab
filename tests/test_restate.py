"""03's full-sentence answers (:mod:`tunebook.restate`): which answers are bare, which restatements are kept, and
how they reach the train rows. The sentences below are the teacher's (qwen2.5-coder-1.5b-instruct) for the demo's
pairs (outputs/demo-s13b, 2026-12-02); the request itself runs against a real teacher in knowledge.py."""

from tunebook import inspection, restate
from tunebook.settings import InspectSettings


def test_a_bare_answer_names_nothing_of_its_question():
    assert restate.bare("4,000", "What is the maximum number of generators per model for the Professional edition?")
    assert restate.bare("找不到模型文件。", "BW-101 错误码表示什么？")
    assert restate.bare("newton", "配置文件中 `method` 的默认值是什么？")
    assert not restate.bare("The default port is `7432`.", "What is the default port for the dashboard?")
    assert not restate.bare("Brindlewatt 的版本是 4.2.1（2025-03-14 发布）", "Brindlewatt 的版本是什么？")
    assert not restate.bare("", "What is it?")
    assert not restate.bare("x" * 81, "What is it?")  # long: a sentence or a list already


def test_a_sentence_is_kept_only_if_it_holds_the_answer_and_adds_the_question():
    q = "What is the maximum number of generators per model for the Professional edition?"
    assert restate.usable("The Professional edition allows up to 4,000 generators per model.", "4,000", q, "en")
    assert restate.usable("配置文件中 `method` 的默认值是 `newton`。", "newton", "配置文件中 `method` 的默认值是什么？", "zh")
    assert restate.usable("BW-101 错误码表示找不到模型文件。", "找不到模型文件。", "BW-101 错误码表示什么？", "zh")
    # the teacher's own failures on the demo: a date rewritten, a dash dropped
    assert not restate.usable("Brindlewatt 4.2.1 was released on March 14, 2025.", "2025-03-14",
                              "When was Brindlewatt 4.2.1 released?", "en")
    assert not restate.usable("密钥以 OTB 开头。", "OTB-", "密钥以什么开头？", "zh")
    # a value neither the question nor the answer names; nothing of the question; English for a Chinese pair
    assert not restate.usable("The Professional edition allows up to 4,000 generators and 25,000 buses.", "4,000", q)
    assert not restate.usable("It is 4,000.", "4,000", q)
    assert not restate.usable("The default of `method` is newton.", "newton", "配置文件中 `method` 的默认值是什么？", "zh")
    assert not restate.usable("The answer is 4,000.\nDone.", "4,000", q)


def test_a_restated_pair_and_its_rewordings_train_the_sentence():
    train = [{"id": "a", "instruction": "BW-101 错误码表示什么？", "output": "找不到模型文件。", "kind": "fact"},
             {"id": "a-r1", "instruction": "错误码 BW-101 是什么意思？", "output": "找不到模型文件。", "kind": "fact",
              "reworded_from": "a"},
             {"id": "b", "instruction": "BW-101 错误码表示什么？", "output": "文档中没有涉及这一点。", "kind": "abstain"}]
    out = restate.apply(train, {"a": "BW-101 错误码表示找不到模型文件。", "b": "x"})
    assert [inspection.answer(r) for r in out] == ["BW-101 错误码表示找不到模型文件。"] * 2 + ["文档中没有涉及这一点。"]
    assert out[1]["bare_answer"] == "找不到模型文件。" and "bare_answer" not in out[2]
    assert train[0]["output"] == "找不到模型文件。"  # the input rows are not changed
    msg = inspection.to_messages({**out[0], "chunk_id": "c"}, "train")
    assert msg["messages"][-1]["content"] == "BW-101 错误码表示找不到模型文件。" and msg["bare_answer"] == "找不到模型文件。"


def test_off_or_without_a_teacher_nothing_is_restated(tmp_path):
    words = ["harbour", "solver", "license", "dashboard", "cache", "export", "seed", "horizon", "threads", "port"]
    rows = [{"id": f"p{i}", "chunk_id": f"c{i % 5}", "instruction": f"How large is the {w} limit of Brindlewatt?",
             "output": str(100 + i), "lang": "en", "kind": "fact"} for i, w in enumerate(words)]
    text = " ".join(f"The {w} limit of Brindlewatt is {100 + i}." for i, w in enumerate(words))
    chunks = [{"id": f"c{j}", "text": text, "source": "a.md", "breadcrumb": []} for j in range(5)]
    on = InspectSettings(sentence_answers=True)
    res = inspection.run(rows, chunks, on, 0, tmp_path)  # no teacher: the answers stay bare
    assert res.train and all("bare_answer" not in r for r in res.train)
    assert res.report["train_sentence_answers"] == 0
