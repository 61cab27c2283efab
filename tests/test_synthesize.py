import json

from tunebook import answers, prompts, qa_store
from tunebook.corpus import Chunk
from tunebook.settings import SynthSettings


def test_parse_pairs_handles_think_fences_and_broken_json():
    ok = '{"pairs": [{"question": "What is the default port?", "answer": "7432"}]}'
    assert answers.parse_pairs(ok)[0].answer == "7432"
    think = "<think>let me see {</think>\n```json\n" + ok + "\n```"
    assert answers.parse_pairs(think)[0].question == "What is the default port?"
    broken = '{"pairs": [{"question": "What is the default port?", "answer": "7432",}'  # trailing comma, unclosed
    assert answers.parse_pairs(broken)[0].answer == "7432"
    bare_list = '[{"question": "Which file holds settings?", "answer": "brindle.toml"}]'
    assert answers.parse_pairs(bare_list)[0].answer == "brindle.toml"
    invalid = '{"pairs": [{"question": "", "answer": "x"}, {"question": "Valid question?", "answer": " y "}]}'
    pairs = answers.parse_pairs(invalid)
    assert [(p.question, p.answer) for p in pairs] == [("Valid question?", "y")]
    assert answers.parse_pairs("no json at all") == []


def test_questions_scale_with_chunk_length():
    cfg = SynthSettings(questions_per_100_tokens=1.0, min_questions=1, max_questions=4)
    mk = lambda n: Chunk("id", "s.md", "T", ["T"], "x", n, "en")  # noqa: E731
    assert prompts.questions_for(mk(20), cfg) == 1
    assert prompts.questions_for(mk(250), cfg) == 2
    assert prompts.questions_for(mk(5000), cfg) == 4


def test_schema_bounds_the_array_and_strings():
    cfg = SynthSettings(max_question_chars=100, max_answer_chars=300)
    s = prompts.qa_schema(3, cfg)
    arr = s["properties"]["pairs"]
    assert arr["minItems"] == arr["maxItems"] == 3
    assert arr["items"]["properties"]["answer"]["maxLength"] == 300


def test_prompt_language_and_rendering():
    c = Chunk("id", "zh/a.md", "配置", ["配置", "端口"], "默认端口为 {7432}。", 20, "zh")
    p = prompts.render_prompt(prompts.prompt_template("zh"), c, 2)
    assert "恰好 2 组问答" in p and "默认端口为 {7432}。" in p and "配置 > 端口" in p
    assert "exactly 1 question" in prompts.render_prompt(prompts.prompt_template("en"), c, 1)


def test_load_qa_ignores_torn_lines_and_unfinished_chunks(tmp_path):
    rows = [{"id": "a", "chunk_id": "c1", "question": "q1?", "answer": "a1", "source": "s"},
            {"id": "b", "chunk_id": "c2", "question": "q2?", "answer": "a2", "source": "s"}]
    (tmp_path / qa_store.QA_FILE).write_text("\n".join(json.dumps(r) for r in rows) + '\n{"id": "torn", "chu')
    (tmp_path / qa_store.DONE_FILE).write_text(json.dumps({"chunk_id": "c1", "status": "ok"}) + "\n" +
                                                 json.dumps({"chunk_id": "c2", "status": "failed"}) + "\n")
    assert [r["id"] for r in qa_store.load_qa(tmp_path)] == ["a"]
    assert qa_store.done_chunks(tmp_path) == {"c1"}


def test_abstain_questions_keep_only_names_the_excerpt_lacks():
    from tunebook import qa_requests

    chunk = "Set `--horizon` (default 366) to plan a year. The solver stops after max_iterations (60)."
    names = qa_requests.excerpt_names(chunk)
    assert "`--horizon`" in names and "`max_iterations`" in names and "366" not in names
    answer = {"questions": [
        {"name": "--horizon", "question": "What is the default `--horizon` of bwatt?"},  # the excerpt's own name
        {"name": "`cache_ttl`", "question": "What is the default `cache_ttl` of Brindlewatt?"},
        {"name": "warm_start", "question": "Does Brindlewatt keep its results?"},  # the name is not in the question
        {"name": "噪声阈值", "question": "Brindlewatt 的 `噪声阈值` 默认是多少？"}]}
    assert qa_requests.invented_questions(answer, chunk, 4) == ["What is the default `cache_ttl` of Brindlewatt?",
                                                                 "Brindlewatt 的 `噪声阈值` 默认是多少？"]
    assert qa_requests.invented_questions(answer, chunk, 1) == ["What is the default `cache_ttl` of Brindlewatt?"]
    # a teacher that ignores the schema and sends plain strings: they go on to 03's corpus-wide check
    assert qa_requests.invented_questions({"questions": ["What does `--frobnicate` do?"]}, chunk, 2) == [
        "What does `--frobnicate` do?"]


def test_a_windows_path_written_with_single_backslashes_keeps_them():
    # JSON reads "\b" as a backspace: the teacher meant the path's backslash
    raw = r'{"pairs": [{"question": "Where is the config on Windows?", "answer": "%APPDATA%\brindlewatt\brindle.toml"}]}'
    assert answers.parse_pairs(raw)[0].answer == "%APPDATA%\\brindlewatt\\brindle.toml"
    assert answers.string_list(r'{"questions": ["Is \brindle.toml read twice?"]}', "questions", 3) == [
        "Is \\brindle.toml read twice?"]


class _ScriptedTeacher:
    """A stand-in for the client's chat call (no server): returns the scripted paraphrase lists in order and keeps
    the request bodies."""

    def __init__(self, answers: list[list[str]]):
        self.answers, self.bodies = list(answers), []

    async def chat(self, body: dict) -> dict:
        self.bodies.append(body)
        return {"choices": [{"message": {"content": json.dumps({"paraphrases": self.answers.pop(0)})}}]}


def test_paraphrases_drop_the_question_itself_and_ask_again_with_another_seed():
    import asyncio

    from tunebook import qa_requests, settings as st
    from tunebook.serve import Teacher

    q = "What is the default port of Brindlewatt?"
    teacher = Teacher(backend="llama.cpp", base_url="http://127.0.0.1:1/v1", model="m", capacity=1)
    chunk = Chunk(id="c", source="a.md", lang="en", title="t", breadcrumb=[], text="x", tokens=1)
    copy_first = [q, "Which port does Brindlewatt use by default?"]
    cfg = st.load("ci", ["synth.paraphrases=2"]).synth
    # retries off: the copy is dropped, one real rewording left, one request
    client = _ScriptedTeacher([copy_first])
    got = asyncio.run(qa_requests.paraphrases(client, teacher, q, chunk, cfg, seed=7))
    assert got == ["Which port does Brindlewatt use by default?"] and len(client.bodies) == 1
    # one retry: asked again with another seed until two new wordings (the copy, in any case, counts for none)
    client = _ScriptedTeacher([copy_first, ["what is the default port of brindlewatt?",
                                            "By default, on which port does Brindlewatt listen?"]])
    got = asyncio.run(qa_requests.paraphrases(client, teacher, q, chunk, cfg.model_copy(update={"paraphrase_retries": 1}),
                                              seed=7))
    assert got == ["Which port does Brindlewatt use by default?", "By default, on which port does Brindlewatt listen?"]
    assert [b["seed"] for b in client.bodies] == [7, 8]
    # no retry when the first answer already has two new wordings
    client = _ScriptedTeacher([["Which port does Brindlewatt use by default?", "Brindlewatt's default port?"]])
    asyncio.run(qa_requests.paraphrases(client, teacher, q, chunk, cfg.model_copy(update={"paraphrase_retries": 2}), seed=7))
    assert len(client.bodies) == 1
