"""03's sibling contrasts (:mod:`tunebook.contrast`): which trained facts are siblings, which teacher items are kept,
and how they reach the train rows. The items below are the teacher's (qwen2.5-coder-1.5b-instruct) for the knowledge
benchmark's samples/docs pairs (outputs/s12demo-synth, 2026-12-02); the request itself runs against a real teacher
in knowledge.py (row ``today+contrast``)."""

from tunebook import contrast, inspection
from tunebook.settings import InspectSettings


def fact(i: str, q: str, a: str, lang: str = "en", **kw) -> dict:
    return {"id": i, "instruction": q, "output": a, "lang": lang, "kind": "fact", "chunk_id": "c", **kw}


BUSES = fact("b", "What is the maximum number of buses allowed in a model?",
             "The Professional edition allows up to 25,000 buses per model.")
GENERATORS = fact("g", "What is the maximum number of generators allowed in a model?",
                  "The Professional edition allows up to 4,000 generators per model.")
MAX_IT = fact("m", "配置文件中 `max_iterations` 的默认值是多少？", "60", "zh")
TOL = fact("t", "配置文件中 `tolerance` 的默认值是多少？", "1e-6", "zh")


def test_siblings_are_questions_that_differ_in_one_name_with_different_answers():
    port = fact("p", "What is the default port of the dashboard?", "7432")
    same_fact = fact("b2", "What is the maximum number of buses allowed per model?", "25,000")  # same value: no pair
    pairs = contrast.siblings([BUSES, GENERATORS, MAX_IT, TOL, port, same_fact])
    assert {frozenset((a["id"], b["id"])) for a, b in pairs} == {frozenset("bg"), frozenset("mt")}
    # each fact in one pair at most; another language or a long answer is no sibling
    long = fact("l", "What is the maximum number of lines allowed in a model?", "x " * 150)
    assert contrast.siblings([long, BUSES]) == []
    assert contrast.siblings([BUSES, {**GENERATORS, "lang": "zh"}]) == []
    # rewordings, reverse questions and contrasts themselves are not trained facts
    from tunebook.pairs import trained_facts

    assert trained_facts([BUSES, {**GENERATORS, "contrast_of": ["b", "g"]}, {**TOL, "reworded_from": "m"}]) == [BUSES]


def test_an_item_is_kept_only_if_it_states_both_answers_and_asks_for_both():
    q = "What is the maximum number of buses and generators allowed in a model?"
    ok = "The Professional edition allows up to 25,000 buses and 4,000 generators per model."
    assert contrast.usable(q, ok, BUSES, GENERATORS)
    assert contrast.usable("配置文件中 `max_iterations` 和 `tolerance` 的默认值分别是多少？",
                           "配置文件中 `max_iterations` 的默认值是 60，`tolerance` 的默认值是 1e-6。", MAX_IT, TOL)
    # answers without hard values: most of their wording is enough (the teacher's CloudPSS item, 2026-12-02)
    local = fact("l", "什么是本地接入方式？", "对于本地接入方式，目前支持 Python 和 Matlab 语言编写的算法内核接入。", "zh")
    cloud = fact("c", "什么是云端接入方式？", "对于云端接入方式，目前支持 JavaScript 语言编写的算法内核接入。", "zh")
    assert contrast.usable("本地接入方式和云端接入方式分别支持哪些编程语言？", "本地接入方式支持 Python 和 Matlab 语言编写的算法内核接入，"
                           "云端接入方式支持 JavaScript 语言编写的算法内核接入。", local, cloud)
    assert not contrast.usable("本地接入方式和云端接入方式分别支持哪些编程语言？", "本地接入方式支持 Python 和 Matlab。", local, cloud)
    # the teacher's usual failure: the first pair repeated
    assert not contrast.usable("配置文件中 `max_iterations` 的默认值是多少？", "60", MAX_IT, TOL)
    # one answer missing, a value neither pair names, a question that names only one side, English for Chinese pairs
    assert not contrast.usable(q, "The Professional edition allows up to 25,000 buses per model.", BUSES, GENERATORS)
    assert not contrast.usable(q, ok.replace("per model", "and 150 lines per model"), BUSES, GENERATORS)
    assert not contrast.usable("What is the maximum number of buses allowed in a model?", ok, BUSES, GENERATORS)
    assert not contrast.usable("What are the defaults of max_iterations and tolerance?",
                               "max_iterations defaults to 60, tolerance to 1e-6.", MAX_IT, TOL)


def test_contrast_rows_reach_the_train_file_with_their_pair_ids(tmp_path):
    row = {"id": "b-c-g", "chunk_id": "c", "source": "limits.md", "lang": "en", "kind": "fact",
           "contrast_of": ["b", "g"], "instruction": "Q?", "input": "", "output": "A."}
    msg = inspection.to_messages(row, "train")
    assert msg["contrast_of"] == ["b", "g"] and msg["messages"][-1]["content"] == "A."


def test_off_or_without_a_teacher_no_contrast_is_made(tmp_path):
    words = ["buses", "generators", "lines", "loads", "breakers", "feeders", "meters", "relays", "switches", "tanks"]
    rows = [fact(f"p{i}", f"What is the maximum number of {w} allowed in a model?", str(100 + i),
                 chunk_id=f"c{i % 5}") for i, w in enumerate(words)]
    text = " ".join(f"The maximum number of {w} allowed in a model is {100 + i}." for i, w in enumerate(words))
    chunks = [{"id": f"c{j}", "text": text, "source": "a.md", "breadcrumb": []} for j in range(5)]
    on = InspectSettings(sibling_contrasts=True)
    assert on.needs_teacher and not InspectSettings().needs_teacher
    res = inspection.run(rows, chunks, on, 0, tmp_path)  # no teacher: nothing is asked
    assert res.train and not any(r.get("contrast_of") for r in res.train)
    assert res.report["train_contrasts"] == 0
