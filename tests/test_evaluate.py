import pytest

from tunebook import evaluate, judge, outcomes, text


def test_char_metrics_work_for_chinese_and_english():
    assert text.rouge_l("默认端口是7432", "默认端口是7432。") == pytest.approx(1.0)
    assert text.char_f1("The port is 7432", "the port is 7432!") == pytest.approx(1.0)
    assert text.rouge_l("abc", "xyz") == 0.0
    partial = text.rouge_l("端口 8080", "端口 7432")
    assert 0.2 < partial < 0.6
    assert text.char_f1("", "x") == 0.0


def test_rouge_l_is_order_sensitive_f1_is_not():
    assert text.char_f1("abcd", "dcba") == pytest.approx(1.0)
    assert text.rouge_l("abcd", "dcba") == pytest.approx(0.25)


def test_summarize_gives_means_intervals_outcomes_and_the_paired_gain():
    rows = [{"base": "b", "tuned": "t", "base_rouge_l": 0.0, "tuned_rouge_l": 1.0, "base_char_f1": 0.5,
             "tuned_char_f1": 1.0, "base_judge": 0.0, "tuned_judge": j, "base_outcome": "invents",
             "tuned_outcome": "correct" if j == 5.0 else "partial"} for j in (5.0, 2.5, 5.0, 0.0)]
    s = evaluate.summarize(rows)
    assert s["n"] == 4 and s["base_rouge_l"] == 0.0 and s["tuned_rouge_l"] == 1.0 and s["tuned_judge"] == 3.125
    lo, hi = s["tuned_judge_ci"]
    assert 0.0 <= lo < 3.125 < hi <= 5.0
    assert s["base_outcomes"]["invents"] == 1.0 and s["base_invents"] == 1.0
    assert s["tuned_outcomes"] == {"correct": 0.5, "partial": 0.5, "abstains": 0.0, "invents": 0.0, "degenerate": 0.0}
    assert s["judge_gain"]["mean"] == 3.125 and s["judge_gain"]["n"] == 4
    assert "rag_judge" not in s  # conditions that did not run are not reported


def test_recall_worded_far_from_training_is_scored_apart(tmp_path):
    rows = [{"id": str(i), "split": "recall", "question": "q", "reference": "r", "base": "b", "tuned": "t",
             "base_judge": 0.0, "tuned_judge": j, "train_similarity": s}
            for i, (j, s) in enumerate([(5.0, 0.7), (5.0, 0.6), (1.0, 0.3), (2.0, 0.45)])]
    rows.append({**rows[0], "id": "u", "split": "unseen", "train_similarity": 0.1})  # far, but not recall
    m = evaluate.write_results(rows, tmp_path)
    assert m["recall"]["n"] == 4 and m["recall"]["tuned_judge"] == 3.25
    assert m["recall_far"]["n"] == 2 and m["recall_far"]["tuned_judge"] == 1.5
    assert [s for s in evaluate.metrics_table(m).index.get_level_values(0).unique()] == [
        "recall", "recall_far", "unseen", "all"]
    old = [{k: v for k, v in r.items() if k != "train_similarity"} for r in rows]  # a run from before 03 wrote it
    assert "recall_far" not in evaluate.write_results(old, tmp_path)
    m["outofdocs"] = m["unseen"]  # the plot shows every split but "all", recall_far beside recall
    labels = [t.get_text() for t in evaluate.score_plot(m).axes[0].get_xticklabels()]
    assert labels == ["recall (n=4)", "recall_far (n=2)", "unseen (n=1)", "outofdocs (n=1)"]


def test_metrics_table_and_verdict_name_the_winner():
    rows = [{"split": "recall", "base": "b", "rag": "r", "tuned": "t", "tuned_rag": "tr", "base_judge": 1.0,
             "rag_judge": 3.0, "tuned_judge": 4.0, "tuned_rag_judge": 4.5, "rag_hit": True}] * 3
    m = {"conditions": evaluate.conditions_in(rows), "recall": evaluate.summarize(rows)}
    table = evaluate.metrics_table(m)
    assert list(table.index.get_level_values(1)) == ["base", "base + RAG", "fine-tuned", "fine-tuned + RAG"]
    assert table.loc[("recall", "base + RAG"), "retrieval hit"] == 1.0
    assert evaluate.verdict(m).startswith("On this corpus's recall questions (judge), fine-tuned + RAG won")
    tied = [{**r, "rag_judge": 4.5} for r in rows]  # ties are said as ties, not won by whichever came first
    m = {"conditions": evaluate.conditions_in(tied), "recall": evaluate.summarize(tied)}
    assert "base + RAG and fine-tuned + RAG tied for first" in evaluate.verdict(m)
    flat = [{**r, "rag_judge": 0.0, "tuned_judge": 0.0, "tuned_rag_judge": 0.0, "base_judge": 0.0} for r in rows]
    m = {"conditions": evaluate.conditions_in(flat), "recall": evaluate.summarize(flat)}  # seen on the GPU e2e run
    assert "every answerer tied" in evaluate.verdict(m)


def test_fact_score_counts_only_stated_facts():
    assert judge.fact_score(["stated", "stated", "missing", "contradicted"]) == 2.5
    assert judge.fact_score(["contradicted"]) == 0.0
    assert judge.fact_score(["stated"]) == 5.0
    assert judge.fact_score([]) == 0.0


def test_verdict_schema_asks_exactly_one_verdict_per_fact():
    s = judge.verdict_schema(3)["properties"]["verdicts"]
    assert s["minItems"] == s["maxItems"] == 3 and s["items"]["enum"] == ["stated", "missing", "contradicted"]


def test_side_by_side_shows_the_judged_key_facts():
    rows = [{"question": "Port?", "reference": "8080", "base": "80", "tuned": "8080", "base_rouge_l": 0.0,
             "tuned_rouge_l": 1.0, "key_facts": ["the port is 8080"], "base_judge": 0.0, "tuned_judge": 5.0,
             "base_verdicts": ["contradicted"], "tuned_verdicts": ["stated"]},
            {"question": "<b>", "reference": "r", "base": "b", "tuned": "t", "base_rouge_l": 0.1, "tuned_rouge_l": 0.2,
             "key_facts": None, "base_judge": None, "tuned_judge": None}]
    out = evaluate.side_by_side_html(rows)
    assert "✗ ✓ the port is 8080" in out and "judge 0.0" in out and "judge 5.0" in out and "&lt;b&gt;" in out
    plain = evaluate.side_by_side_html([{k: v for k, v in rows[0].items() if "judge" not in k and "fact" not in k
                                         and "verdict" not in k}])
    assert "key facts" not in plain and "ROUGE-L 1.00" in plain and "<th>fine-tuned</th>" in plain


def test_grounded_facts_drop_what_the_reference_does_not_say():
    ref = "The other options are `parquet` and `json`."
    facts = [ref, "The `parquet` format is a columnar storage format optimized for analytics."]
    assert judge.grounded_facts(facts, ref) == [ref]
    assert judge.grounded_facts(["used for grid simulation"], "Brindlewatt 是电网仿真工具。") == ["Brindlewatt 是电网仿真工具。"]


def test_a_stated_verdict_needs_the_facts_numbers_code_and_names():
    q, ref = "默认情况下，`max_iterations` 的值是什么？", "60"
    assert judge.check_verdicts(["stated"], ["60"], "默认值是 1000。", ref, q) == ["missing"]
    assert judge.check_verdicts(["stated"], ["60"], "默认是 60。", ref, q) == ["stated"]
    ref2 = "The default `tolerance` is 1e-6 in the Professional edition."
    fact = ref2
    assert judge.hard_tokens(fact, ref2, "What is the default tolerance?") == ["1e-6", "Professional"]  # `tolerance` is in the question
    assert judge.check_verdicts(["stated"], [fact], "It is 0.000001 (`tolerance`, Professional).", ref2,
                                   "What is the default tolerance?") == ["stated"]
    assert judge.check_verdicts(["stated", "contradicted"], [fact, fact], "tolerance is 0.01", ref2,
                                   "What is the default tolerance?") == ["missing", "contradicted"]


def test_a_lone_name_is_a_hard_token():
    assert judge.hard_tokens("Brindlewatt", "Brindlewatt", "What is the name of the product?") == ["Brindlewatt"]
    assert judge.check_verdicts(["stated"], ["Brindlewatt"], 'It is called "Brindle".', "Brindlewatt",
                                   "What is the name of the product?") == ["missing"]


def test_a_single_clause_reference_is_its_own_fact_without_asking_the_teacher(tmp_path):
    for ref in ["60", "24 hours", "The Professional edition allows up to 4,000 generators per model.",
                "Linux: `~/.config/brindlewatt/brindle.toml`", "Brindlewatt 的版本是 4.2.1（2025-03-14 发布）。"]:
        assert judge.one_fact(ref), ref
    for ref in ["负载率超过 100% 的线路显示为红色，介于 80% 到 100% 之间的显示为橙色",
                "The Professional edition cannot be raised. Customers can write to support.", "端口；超时"]:
        assert not judge.one_fact(ref), ref

    class NoTeacher:  # every reference below is one clause: a request would fail
        model, base_url, capacity = "none", "http://127.0.0.1:9", 1

        def api_key(self):
            raise AssertionError("the teacher was asked")

    facts = judge.key_facts(NoTeacher(), [{"question": "Cache size?", "reference": "Capped at **2048 MB**."},
                                          {"question": "Seed?", "reference": "17"}], tmp_path / "cache.jsonl")
    assert facts == [["Capped at 2048 MB."], ["17"]]


def test_a_parenthetical_with_its_own_value_is_a_fact_of_its_own():
    """"4.2.1" for "Brindlewatt 版本是什么？" stated nothing of the one fact "…4.2.1（2025-03-14 发布）" (demo-s14b,
    demo-s16a): the aside is a second fact, so the version alone is half the answer, not none of it."""
    q = "Brindlewatt 版本是什么？"
    ref = "Brindlewatt 的版本是 4.2.1（2025-03-14 发布）。"
    facts = judge.asides(ref, q)
    assert facts == ["Brindlewatt 的版本是 4.2.1。", "2025-03-14 发布"]
    assert judge.check_verdicts(["missing", "missing"], facts, "4.2.1", ref, q) == ["stated", "missing"]
    assert judge.check_verdicts(["missing"] * 2, facts, "Brindlewatt 的版本是 4.2.1（2025-03-14 发布）", ref, q) == \
        ["stated", "stated"]
    assert judge.asides("默认是 24 小时（`--horizon 24h`）。", "默认仿真时长是多少？") == ["默认是 24 小时。", "`--horizon 24h`"]
    assert judge.asides("资源 ID（`RID`）中的项目ID和名称", "保存项目时需要填写哪些信息？") == ["资源 ID（`RID`）中的项目ID和名称"]
    assert judge.asides("The cache (in MB) is small", "Cache?") == ["The cache (in MB) is small"]  # no value in it


def test_a_quantity_in_code_is_stated_by_value_and_unit():
    ref = "The default value for the simulation time horizon is `24h`."
    q = "What is the default simulation time horizon?"
    assert judge.check_verdicts(["stated"], [ref], "It is 24 hours by default.", ref, q) == ["stated"]
    assert judge.check_verdicts(["stated"], [ref], "It is 24 minutes by default.", ref, q) == ["missing"]


def test_batches_are_equal_and_few():
    assert [evaluate.balanced_batch(n, 16) for n in (1, 16, 17, 22, 30, 33)] == [1, 16, 9, 11, 15, 11]
    assert evaluate.balanced_batch(0, 16) == 1 and evaluate.balanced_batch(22, 8) == 8


def test_a_served_teacher_writes_the_grade_as_a_digit():
    class T:
        backend = "llama.cpp"
    assert judge.score_format(T()) == "digit"
    T.backend = "external"
    assert judge.score_format(T()) == "json"
    for kind in ("general", "qa"):
        text = (judge.PARAMS_DIR / "prompts" / judge.JUDGE_PROMPTS[kind]).read_text()
        assert "{{score_format}}" in text


def test_a_flag_named_without_its_dashes_is_the_flag():
    ref = "The default value for the `--step` flag is `900` seconds."
    q = "What is the default value of the 'step' flag?"
    assert judge.hard_tokens(ref, ref, q) == ["900"]  # the question gives the flag away
    assert judge.check_verdicts(["missing"], [ref], "The default value for the 'step' flag is `900` seconds.", ref,
                                q) == ["stated"]
    assert judge.has_token("use --step 900 or 'step'", "--step") and not judge.has_token("steps of 900", "--step")
    # a whole word only: the CONFIG inside BWATT_CONFIG is not the flag --config; -v is too short to match bare
    ref2 = "设置环境变量 `BWATT_CONFIG`，其优先级低于 `--config`。"
    assert judge.hard_tokens(ref2, ref2, "如何设置环境变量 `BWATT_CONFIG`？") == ["--config"]
    assert not outcomes.mentions("verbose output", "-v") and outcomes.mentions("the 'step' flag", "--step")
    # the plain word is not the flag's name: "which flag limits the solver threads?" asks for `--threads`
    assert not outcomes.mentions("which flag limits the number of solver threads?", "--threads")
    assert outcomes.mentions("threads 参数的默认值是多少？", "--threads")
    assert outcomes.exact_values("The 'step' flag defaults to 900 seconds.", ref, q) == 1.0


def test_a_descriptive_fact_is_not_stated_by_an_answer_that_invents_something_else():
    q, ref = "如果文件不存在，程序会生成一份什么？", "只包含注释的空模板"
    wrong = "如果文件不存在，程序会生成一份名为 `file_not_found.txt` 的文件。"
    assert judge.check_verdicts(["stated"], [ref], wrong, ref, q) == ["missing"]
    assert judge.check_verdicts(["stated"], [ref], "会生成一个只有注释的空白模板。", ref, q) == ["stated"]
    assert judge.check_verdicts(["stated"], [ref], "一份空的模板，里面只有注释。", ref, q) == ["stated"]  # reworded, no value


def test_an_identifier_without_backticks_is_a_hard_token():
    # the base student's made-up BRINDLEWATT_LICENSE was judged to state BWATT_LICENSE (demo-s12a): an identifier
    # (snake_case, flag, file name, code) is something a fact can't be stated without, backticks or not
    q = "What is the environment variable to set for a purchased Brindlewatt license?"
    assert judge.hard_tokens("BWATT_LICENSE", "BWATT_LICENSE", q) == ["BWATT_LICENSE"]
    assert judge.check_verdicts(["stated"], ["BWATT_LICENSE"], "export BRINDLEWATT_LICENSE=your_key",
                                "BWATT_LICENSE", q) != ["stated"]
    fact = "max_iterations in the [solver] section of brindle.toml"
    assert judge.hard_tokens(fact, fact, "Which setting caps the iterations?") == ["max_iterations", "brindle.toml"]
    # identifiers are ASCII: Chinese text touching a name does not become part of it
    assert outcomes.identifiers("点击安装 FuncStudio的下载链接，修改max_iterations为60") == ["FuncStudio", "max_iterations"]


def test_a_made_up_value_that_only_repeats_the_question_states_nothing():
    # the judge read "修改为 `https://www.example.com`" as "当前平台的地址" (s12cps, base): the answer's words
    # that match the fact are the question's own
    q = "对于其他平台的用户，需要将 `HOME URL` 修改为哪个地址？"
    a = "对于其他平台的用户，需要将 `HOME URL` 修改为 `https://www.example.com`。"
    assert judge.check_verdicts(["stated"], ["当前平台的地址"], a, "当前平台的地址", q) == ["missing"]
    right = "对于其他平台的用户，需要将 `HOME URL` 修改为当前平台的地址，例如 `https://cloudpss.net`。"
    assert judge.check_verdicts(["stated"], ["当前平台的地址"], right, "当前平台的地址", q) == ["stated"]


def test_a_yes_no_question_answered_the_other_way_contradicts_the_fact():
    """cps-s16b: the 1.5B judge called "点击保存按钮不会覆盖旧的项目" stated for "是的，…新的修改将会覆盖旧的项目"."""
    q, ref = "保存项目时，点击保存按钮会覆盖旧的项目吗？", "是的，对于已保存过的项目，再次点击保存按钮，新的修改将会覆盖旧的项目。"
    assert judge.yes_no(q) and not judge.yes_no("What is the port?") and not judge.yes_no("为什么不能保存吗？")
    assert judge.check_verdicts(["stated"], [ref], "点击保存按钮不会覆盖旧的项目。", ref, q) == ["contradicted"]
    assert judge.check_verdicts(["stated"], [ref], "是的，新的修改会覆盖旧的项目。", ref, q) == ["stated"]
    assert judge.check_verdicts(["missing"], [ref], "文档中没有涉及这一点。", ref, q) == ["missing"]  # abstaining
    q2, ref2 = "Is a 32-bit system supported?", "32-bit systems are not supported."
    assert judge.says_yes(ref2, q2) is False and judge.says_yes("No.", q2) is False
    assert judge.check_verdicts(["stated"], [ref2], "Yes, 32-bit systems are supported.", ref2, q2) == ["contradicted"]
    # a negation of another word is not a "no": 支持，没有次数限制 answers "支持…吗？" yes
    assert judge.says_yes("支持，没有次数限制。", "支持撤销和重做吗？") is True
