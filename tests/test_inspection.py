import json
import random

import pytest

from tunebook import inspection, near_duplicates, pairs, splitting, text
from tunebook.settings import InspectSettings

FACTS = ["port", "cache size", "trial length", "bus limit", "release date", "config file", "licence variable",
         "import limit", "solver timeout", "thread count", "error code", "team name", "installer name",
         "minimum memory", "log level", "horizon", "step size", "export format"]


def _rows(n_chunks=6, per_chunk=3):
    rows = []
    k = 0
    for c in range(n_chunks):
        for q in range(per_chunk):
            fact = FACTS[k % len(FACTS)]
            k += 1
            rows.append({"id": f"{c}-{q}", "chunk_id": f"c{c}", "source": f"s{c % 2}.md", "lang": "en",
                         "instruction": f"What is the Brindlewatt {fact} for setup {c}{q}?",
                         "output": f"The {fact} is 4{c}{q}.",
                         "paraphrases": [f"Tell me which {fact} variant #{c}{q} of Brindlewatt uses, please."]})
    return rows


def _chunks(rows, extra=1):
    by = {}
    for r in rows:
        by.setdefault(r["chunk_id"], []).append(r["output"])
    out = [{"id": cid, "text": " ".join(v), "source": "s.md", "breadcrumb": ["T"], "tokens": 20} for cid, v in by.items()]
    return out + [{"id": f"empty{i}", "text": "nothing", "source": "s.md", "breadcrumb": ["T"], "tokens": 5}
                  for i in range(extra)]


def test_filters_record_a_reason_for_each_drop():
    rows = _rows()
    rows.append({**rows[0], "id": "dup", "instruction": "  what is the BRINDLEWATT port for setup 00 ?"})
    rows.append({**rows[3], "id": "near", "instruction": rows[3]["instruction"].replace("?", " exactly?")})
    rows.append({**rows[1], "id": "meta", "instruction": "According to the text, what is the port?"})
    rows.append({**rows[1], "id": "meta-zh", "instruction": "根据文本，默认端口是多少？"})
    rows.append({**rows[1], "id": "section-zh", "instruction": "本节介绍什么？"})
    rows.append({**rows[1], "id": "section", "instruction": "What does this section cover?"})
    rows.append({**rows[2], "id": "empty", "output": "  "})
    rows.append({**rows[2], "id": "refuse", "instruction": "What is the limit of Brindlewatt?",
                 "output": "I'm sorry, I cannot say."})
    rows.append({**rows[2], "id": "trunc", "instruction": "How does the Brindlewatt solver iterate?",
                 "output": "It iterates by", "finish_reason": "length"})
    rows.append({**rows[4], "id": "ungrounded", "instruction": "Who founded the moon colony?",
                 "output": "Zorblax the Magnificent"})
    chunks = {c["id"]: c["text"] for c in _chunks(_rows())}
    long_q = {**rows[5], "id": "long", "instruction": "Why " + "very " * 50 + "long?"}
    rows.append(long_q)
    rows.append({**rows[6], "id": "statement", "instruction": "缓存目录可以放到空间更大的磁盘上。"})
    rows.append({**rows[6], "id": "breadcrumb", "instruction": "FuncStudio 执行器的安装和配置 > 执行器配置 > 编辑配置文件"})
    rows.append({**rows[7], "id": "echo", "instruction": "如何新建一个存放 Brindlewatt 虚拟环境的目录？",
                 "output": "需要新建一个存放 Brindlewatt 虚拟环境的目录。"})
    kept, dropped = inspection.filter_rows(rows, InspectSettings(max_tokens=40), chunks,
                                           count_tokens=lambda q, a: len((q + a).split()))
    reasons = {d["id"]: d["drop_reason"] for d in dropped}
    assert reasons == {
        "dup": "exact duplicate of 0-0", "near": "near duplicate of 1-0",
        "meta": "meta-phrasing in question", "meta-zh": "meta-phrasing in question", "empty": "empty field",
        "section-zh": "meta-phrasing in question", "section": "meta-phrasing in question",
        "refuse": "refusal", "trunc": "truncated", "ungrounded": "not grounded in its chunk",
        "long": "over max_tokens", "statement": "not a question", "breadcrumb": "not a question",
        "echo": "answer repeats the question"}
    assert len(kept) == 18 and all(r["grounding"] >= 0.3 for r in kept)


def test_an_answer_that_names_what_the_question_asks_for_is_not_an_echo():
    q = "What is the environment variable to set for a purchased Brindlewatt license?"
    assert not inspection.repeats_question("BWATT_LICENSE", q)
    assert not inspection.repeats_question("The default value for the `--threads` flag is `4`.",
                                           "What is the default value for the `--threads` flag?")
    assert inspection.repeats_question("执行器配置文件", "执行器配置文件的名称是什么？")


def test_split_recall_and_unseen_are_leak_free(tmp_path):
    rows = _rows()
    res = inspection.run(rows, _chunks(rows), InspectSettings(eval_fraction=0.34, recall_fraction=0.5), seed=3,
                         data_dir=tmp_path)
    train_chunks = {r["chunk_id"] for r in res.train}
    unseen = [r for r in res.eval if r["split"] == "unseen"]
    recall = [r for r in res.eval if r["split"] == "recall"]
    assert unseen and recall
    assert not ({r["chunk_id"] for r in unseen} & train_chunks)
    train_ids = {r["id"] for r in res.train}
    assert all(r["paraphrase_of"] in train_ids for r in recall)
    # no eval question is an exact or near duplicate of a train question
    index = inspection.NearDup(0.8)
    for r in res.train:
        index.add(r["id"], r["instruction"])
    train_norm = {inspection.normalize(r["instruction"]) for r in res.train}
    for r in res.eval:
        assert inspection.normalize(r["instruction"]) not in train_norm
        assert index.query(r["instruction"]) is None
    again = splitting.split(res.kept, InspectSettings(eval_fraction=0.34, recall_fraction=0.5), seed=3)
    assert [r["id"] for r in again[1]] == [r["id"] for r in res.eval]
    first = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    evals = [json.loads(x) for x in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert {e["split"] for e in evals} == {"recall", "unseen"}
    report = json.loads((tmp_path / "inspect_report.json").read_text())
    assert report["train"] == len(res.train) and report["eval_recall"] == len(recall)
    assert report["chunks_without_pairs"] == 1
    # every eval row says how close its wording comes to a training question, and recall stays under the guard's
    train_q = [r["instruction"] for r in res.train]
    for e, r in zip(evals, res.eval):
        assert e["train_similarity"] == r["train_similarity"] == round(max(
            near_duplicates.jaccard(r["instruction"], q) for q in train_q), 3)
    assert all(0.0 <= e["train_similarity"] < 0.8 for e in evals if e["split"] == "recall")
    assert report["eval_recall_far"] == sum(e["train_similarity"] < splitting.FAR_BELOW for e in evals
                                            if e["split"] == "recall")


def test_paraphrase_too_close_to_its_original_is_not_a_recall_question():
    rows = _rows()
    for r in rows:
        r["paraphrases"] = [r["instruction"].replace("?", " ?")]  # the same wording
        r["output"] = f"Value {r['id'].replace('-', '')}77."  # not spelled out in the paraphrase
    train, evals, leak = splitting.split(rows, InspectSettings(eval_fraction=0.34, recall_fraction=1.0), seed=1)
    assert not [r for r in evals if r["split"] == "recall"]
    assert leak["recall_paraphrases_too_close"] >= 1
    assert (leak["recall_paraphrases_too_close"] + leak["recall_paraphrases_unusable"]
            == len([r for r in train if r.get("paraphrases")]))


def test_unseen_folds_hold_out_disjoint_chunks_and_fold_0_is_the_old_split():
    rows = _rows(n_chunks=9)
    cfg = dict(eval_fraction=0.34, recall_fraction=1.0)
    held = []
    for k in range(3):  # 9 chunks, 3 held out per fold: folds 0, 1, 2
        train, unseen = splitting._hold_out_chunks(rows, InspectSettings(**cfg, unseen_fold=k), random.Random(5))
        chunks = {r["chunk_id"] for r in unseen}
        assert len(chunks) == 3 and not chunks & {r["chunk_id"] for r in train}  # whole chunks, none trained
        held.append(chunks)
    assert not (held[0] & held[1] or held[0] & held[2] or held[1] & held[2])  # every chunk asked unseen in one fold
    assert set.union(*held) == {r["chunk_id"] for r in rows}
    default = splitting.split(rows, InspectSettings(**cfg), seed=5)  # unseen_fold 0 is the split runs always made
    assert default == splitting.split(rows, InspectSettings(**cfg, unseen_fold=0), seed=5)
    with pytest.raises(ValueError, match=r"unseen_fold=3: 9 chunks with pairs make 3 folds of 3"):
        splitting.split(rows, InspectSettings(**cfg, unseen_fold=3), seed=5)


def test_exports_for_other_tools(tmp_path):
    rows = _rows()
    inspection.run(rows, _chunks(rows), InspectSettings(eval_fraction=0.34), seed=3, data_dir=tmp_path)
    alpaca = json.loads((tmp_path / "train_alpaca.json").read_text())
    assert set(alpaca[0]) == {"instruction", "input", "output"}
    share = json.loads((tmp_path / "train_sharegpt.json").read_text())
    assert [t["from"] for t in share[0]["conversations"]] == ["human", "gpt"]
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["tunebook_sharegpt"]["formatting"] == "sharegpt"
    assert info["tunebook_alpaca"]["file_name"] == "train_alpaca.json"


def test_split_needs_two_chunks():
    with pytest.raises(ValueError, match="at least 2 chunks"):
        splitting.split([r for r in _rows() if r["chunk_id"] == "c0"], InspectSettings(), 0)


def test_grounding_score():
    assert inspection.grounding("默认端口是7432", "Brindlewatt 的默认端口是 7432。") == 1.0
    assert inspection.grounding("completely unrelated words", "默认端口是 7432") < 0.1


def test_sample_table_escapes_html():
    html = inspection.sample_table([{"source": "a.md", "instruction": "<b>x</b>?", "output": "y & z"}], 5)
    assert "&lt;b&gt;" in html and "y &amp; z" in html


def test_browser_builds_widgets():
    rows = _rows()
    res = inspection.InspectResult(kept=rows, dropped=[{**rows[0], "drop_reason": "refusal"}], train=rows[:10],
                                   eval=[{**r, "split": "unseen"} for r in rows[10:]])
    box = inspection.browser(res)
    src, flag, score = box.children[0].children
    flag.value = "refusal"
    assert "1 rows" in box.children[1].value


def test_paraphrase_must_be_a_question_not_the_answer():
    q, a = "What is the default export format?", "The default format is csv."
    assert text.usable_paraphrase("Which format does bwatt export by default?", q, a)
    assert not text.usable_paraphrase("bwatt 默认导出什么格式？", q, a)  # another language than the question
    assert text.usable_paraphrase("bwatt 默认导出什么格式？", "bwatt 的默认导出格式是什么？", "csv")
    assert not text.usable_paraphrase("The default format is CSV.", q, a)
    assert not text.usable_paraphrase("The default format is csv?", q, a)
    # cut off, or stripped of its subject: a question mark in the question asks for one in the rewording
    assert not text.usable_paraphrase("有什么方法可以创建一个内置", "如何创建一个内置的示例模型？", "执行 `bwatt new --example harbour`。")
    assert not text.usable_paraphrase("默认值是什么", "配置文件中 `method` 的默认值是什么？", "`newton`")
    assert text.usable_paraphrase("配置文件里 `method` 默认设为什么？", "配置文件中 `method` 的默认值是什么？", "`newton`")
    assert not text.usable_paraphrase("请参考 FuncStudio 的官方文档以获取详细步骤。", "FuncStudio 本地执行器的安装步骤是什么？", "1. …")
    assert not text.usable_paraphrase("您有什么问题吗？", "什么是本地接入方式？", "支持 Python 和 Matlab 接入。")
    assert not text.usable_paraphrase("...']}，你最常遇到的问题是什么？", "用户最常遇到的问题是什么？", "找不到模型文件。")
    assert text.usable_paraphrase("如何设置密钥？", "密钥可以通过哪些方式设置？", "环境变量 `BWATT_LICENSE`。")
    assert text.usable_paraphrase("请说明配置文件中 `method` 的默认值。", "配置文件中 `method` 的默认值是什么？", "`newton`")
    leaky = "How many buses fit? The Professional edition has a limit of 25,000 buses. What is the maximum?"
    assert not text.usable_paraphrase(leaky, "How many buses fit in a model?", "Up to 25,000 buses.")
    assert not text.usable_paraphrase("Which export format is the default, csv?", q, "csv")
    # an answer that restates its question does not make every rewording of it "the answer in disguise"
    full = "The default value for the `--step` flag is `900` seconds."
    assert text.usable_paraphrase("What does the `--step` flag default to?", "What is the default value for the `--step` flag?", full)
    assert not text.usable_paraphrase("Is the `--step` flag's default value 900 seconds?", "What is the default value for the `--step` flag?", full)
    assert text.usable_paraphrase("When did Brindlewatt 4.2.1 first appear?", "When was Brindlewatt 4.2.1 released?", "2025-03-14")


def test_a_how_many_question_needs_a_number_in_its_answer():
    rows = [{"id": str(i), "chunk_id": "c", "instruction": q, "output": a} for i, (q, a) in enumerate([
        ("What is the maximum number of buses in the Professional edition?",
         "Limits in the Professional edition cannot be raised with a configuration key."),
        ("How many buses does the Professional edition allow?", "Up to 25,000 buses per model."),
        ("许可证密钥共有多少个字符？", "共二十五个字符。"),
        ("许可证密钥有多长？", "密钥以 `OTB-` 开头。"),
        ("What is the default export format?", "The default format is csv.")])]
    kept, dropped = inspection.filter_rows(rows, InspectSettings())
    assert [d["id"] for d in dropped] == ["0", "3"]
    assert {d["drop_reason"] for d in dropped} == {"no number for a how-many question"}


def test_a_rewording_keeps_the_values_its_question_names():
    r = {"instruction": "配置文件中 `max_iterations` 的默认值是多少？", "output": "60"}
    assert splitting.rewording("`max_iterations` 在配置文件里默认设为多少？", r)
    assert not splitting.rewording("默认值是多少？", r)  # which default? the docs answer that ambiguously
    assert not splitting.rewording("What is the default of `max_iterations`?", r)  # not the page's language
    code = {"instruction": "What does error BW-204 mean?", "output": "The solver did not converge."}
    assert splitting.rewording("What is the meaning of the BW-204 error?", code)
    assert not splitting.rewording("What does this error code mean?", code)


def test_judge_scores_drop_low_pairs_with_a_reason():
    rows = _rows()
    scores = {r["id"]: 5 for r in rows}
    scores[rows[0]["id"]] = 1
    kept, dropped = inspection.filter_rows(rows, InspectSettings(min_judge=3), judge_scores=scores)
    assert [d["drop_reason"] for d in dropped] == ["judge score 1 below 3"]
    assert inspection.reason_kind(dropped[0]["drop_reason"]) == "judge score too low"
    assert all(r["judge"] == 5 for r in kept)


def _reworded_rows():
    rows = _rows()
    for r in rows:
        fact = r["instruction"].split("Brindlewatt ")[1].split(" for")[0]
        tag = r["id"]
        r["paraphrases"] = [f"Tell me which {fact} variant #{tag} of Brindlewatt uses, please.",
                            f"For setup {tag}, what {fact} does Brindlewatt come with?",
                            f"Which {fact} value is configured in Brindlewatt case {tag}?",
                            f"In Brindlewatt, setup {tag}: {fact}?"]
    return rows


def test_rewordings_become_training_items_and_never_reach_the_recall_split(tmp_path):
    rows = _reworded_rows()
    cfg = InspectSettings(eval_fraction=0.34, recall_fraction=1.0, train_rewordings=3)
    train, evals, leak = splitting.split(rows, cfg, seed=3)
    reworded = [r for r in train if r.get("reworded_from")]
    assert reworded and all(r["output"] == next(x["output"] for x in rows if x["id"] == r["reworded_from"])
                            for r in reworded)
    per = {}
    for r in reworded:
        per[r["reworded_from"]] = per.get(r["reworded_from"], 0) + 1
    assert max(per.values()) <= 3
    recall = [r for r in evals if r["split"] == "recall"]
    assert recall
    index = inspection.NearDup(cfg.near_dup_threshold)
    for r in train:
        index.add(r["id"], inspection.question(r))
    trained = {inspection.normalize(inspection.question(r)) for r in train}
    for r in recall:  # the no-leak guarantee: no recall question is (near) any training wording
        assert inspection.normalize(r["instruction"]) not in trained and index.query(r["instruction"]) is None
    res = inspection.run(rows, _chunks(rows), cfg, 3, tmp_path)
    assert res.report["train_rewordings"] == len(reworded)
    assert [json.loads(x).get("reworded_from") for x in (tmp_path / "train.jsonl").read_text().splitlines()].count(None) \
        == len(train) - len(reworded)


def test_a_pairs_own_recall_wording_is_not_counted_as_a_rewording_lost_to_recall():
    # 02's paraphrases of a pair: the one asked in recall comes back in the same list; it is spent on the eval, not a
    # training rewording the leak guard stopped (session 35: the demo reported 33 "too close", of which 31 were these)
    rows = _reworded_rows()
    for r in rows:
        r["paraphrases"] = r["paraphrases"][:2]
    cfg = InspectSettings(eval_fraction=0.34, recall_fraction=1.0, train_rewordings=1)
    train, evals, leak = splitting.split(rows, cfg, seed=3)
    recall = [r for r in evals if r["split"] == "recall"]
    assert recall and leak["rewordings_too_close_to_recall"] == 0
    trained = {r["reworded_from"]: r["instruction"] for r in train if r.get("reworded_from")}
    assert all(trained[r["paraphrase_of"]] != r["instruction"] for r in recall if r["paraphrase_of"] in trained)
    assert len(trained) == len(recall)  # each recalled pair trains its other wording


def test_abstain_items_are_trained_and_asked_out_of_docs():
    rows = _rows()
    topics = ["gpu_accel", "mobile_app", "ldap_login", "dark_mode", "k8s_deploy", "rest_api",
              "offline_licence", "arabic_ui", "plugin_signing", "audit_log", "saml_sso", "python_sdk"]
    for i, topic in enumerate(topics):
        rows.append({"id": f"a{i}", "chunk_id": f"c{i % 6}", "source": "s0.md", "lang": "en", "kind": "abstain",
                     "instruction": f"Is `{topic}` in Brindlewatt?" if i % 2 else f"How do I set up `{topic}`?",
                     "output": "The documentation does not cover this.", "paraphrases": []})
    rows.append({**rows[-1], "id": "answered", "instruction": "What is the Brindlewatt port for setup 00 again?"})
    cfg = InspectSettings(eval_fraction=0.34, abstain_eval_fraction=0.5)
    kept, dropped = inspection.filter_rows(rows, cfg, {c["id"]: c["text"] for c in _chunks(_rows())})
    assert sum(r.get("kind") == "abstain" for r in kept) == 12  # not dropped as ungrounded
    assert {d["id"]: d["drop_reason"] for d in dropped}["answered"].startswith("abstain question names nothing")
    train, evals, _ = splitting.split(kept, cfg, seed=1)
    ood = [r for r in evals if r["split"] == "outofdocs"]
    assert len(ood) == 6 and sum(r.get("kind") == "abstain" for r in train) == 6
    assert not {r["id"] for r in ood} & {r["id"] for r in train}
    no_train = splitting.split(kept, cfg.model_copy(update={"abstain_train": False}), seed=1)[0]
    assert not any(r.get("kind") == "abstain" for r in no_train)


def test_two_recall_wordings_per_pair_stay_apart_from_training_and_are_one_fact_for_the_intervals():
    from tunebook import evaluate, stats

    rows = _reworded_rows()
    cfg = InspectSettings(eval_fraction=0.34, recall_fraction=1.0, train_rewordings=2, recall_wordings=2)
    train, evals, _ = splitting.split(rows, cfg, seed=3)
    recall = [r for r in evals if r["split"] == "recall"]
    per = {}
    for r in recall:
        per.setdefault(r["paraphrase_of"], []).append(r["instruction"])
    assert per and all(len(v) <= 2 and len(set(v)) == len(v) for v in per.values())
    assert sum(len(v) == 2 for v in per.values()) >= len(per) // 2  # some wordings are too close to a train one
    assert {evaluate.fact_group(r) for r in recall} == set(per)
    index = inspection.NearDup(cfg.near_dup_threshold)
    for r in train:
        index.add(r["id"], inspection.question(r))
    assert all(index.query(r["instruction"]) is None for r in recall)
    # two wordings of one fact are not two independent questions: the interval resamples facts
    vals, groups = [0, 0, 5, 5, 0, 0, 5, 5], ["a", "a", "b", "b", "c", "c", "d", "d"]
    per_row, per_fact = stats.mean_ci(vals), stats.mean_ci(vals, groups=groups)
    assert per_fact["mean"] == per_row["mean"] == 2.5
    assert per_fact["hi"] - per_fact["lo"] > per_row["hi"] - per_row["lo"]


def test_a_reverse_item_blanks_the_name_the_question_asks_about():
    r = {"instruction": "What is the default value for the `--step` flag?", "headings": ["Command reference"],
         "output": "The default value for the `--step` flag is `900` seconds."}
    assert pairs.reverse_item(r) == ('Fill in the blank about Command reference: "The default value for the ___ flag '
                                     'is `900` seconds."', r["output"])
    zh = {"instruction": "BW-204 错误码是什么意思？", "output": "求解器未收敛。", "headings": ["常见问题"]}
    assert pairs.reverse_item(zh) == ("关于常见问题，填空：“___：求解器未收敛。”", "BW-204：求解器未收敛。")
    none = [{"instruction": "How do I install Brindlewatt?", "output": "Run the installer."},  # names nothing
            {"instruction": "Is `a` or `b` the default?", "output": "`a`."},  # two names: which one?
            {"instruction": "What is `opt`?", "output": "`opt` is the option `opt`."},  # named twice
            {"instruction": "Which edition is FuncStudio?", "output": "FuncStudio is free.",
             "headings": ["FuncStudio 安装"]},  # the page's own product name
            {"instruction": "What is `x` in the steps?", "output": "`x` " + "then more " * 30}]  # a paragraph
    assert [pairs.reverse_item(x) for x in none] == [None] * len(none)


def test_reverse_items_are_trained_and_never_near_an_eval_question(tmp_path):
    rows = []
    for c in range(6):
        for q in range(3):
            name, value = f"opt_{c}_{q}", 700 + 3 * c + q
            rows.append({"id": f"{c}-{q}", "chunk_id": f"c{c}", "source": "s.md", "lang": "en", "headings": ["Setup"],
                         "instruction": f"What is the default of `{name}` in Brindlewatt?",
                         "output": f"`{name}` defaults to {value}.",
                         "paraphrases": [f"Which value does Brindlewatt use for `{name}` by default?"]})
    rows[0]["output"] = "It is 700, or `opt_0_0` per `opt_0_0`."  # names it twice: no reverse item
    res = inspection.run(rows, _chunks(rows), InspectSettings(eval_fraction=0.34, recall_fraction=0.5,
                                                              reverse_train=True), seed=3, data_dir=tmp_path)
    rev = [r for r in res.train if r.get("reverse_of")]
    facts = {r["id"] for r in res.train if not r.get("reverse_of")}
    assert rev and all(r["reverse_of"] in facts and r["id"] == r["reverse_of"] + "-rev" for r in rev)
    assert res.report["train_reverse"] == len(rev) and all("___" in r["instruction"] for r in rev)
    assert all(r["reverse_of"] != "0-0" for r in rev)
    held = {r["chunk_id"] for r in res.eval if r["split"] == "unseen"}
    assert not any(r["chunk_id"] in held for r in rev)
    index = inspection.NearDup(0.8)
    for r in res.eval:
        index.add(r["id"], inspection.question(r))
    assert all(index.query(inspection.question(r)) is None for r in rev)
    assert not any(r.get("reverse_of") for r in pairs.trained_facts([{**r, "kind": "fact"} for r in res.train]))
    off = inspection.run(rows, _chunks(rows), InspectSettings(eval_fraction=0.34, recall_fraction=0.5,
                                                              reverse_train=False), seed=3, data_dir=tmp_path)
    assert off.report["train_reverse"] == 0
    assert not any(r.get("reverse_of") for r in off.train)
