"""03 — look at the synthesized pairs, drop bad and duplicate ones, and split train/eval without leaks.

Every dropped row keeps a reason. The eval split has two parts:

* **recall** — a paraphrase of a question whose pair *is* in train (tests learned knowledge, not memorised wording);
* **unseen** — pairs from chunks held out of training entirely (tests guessing / generalisation).

Eval questions that are exact or near duplicates (MinHash) of a train question are removed, so the split is
leak-free. Files are written in the chat ``messages`` form that 04 trains on, plus alpaca / ShareGPT exports and a
LLaMA-Factory ``dataset_info.json``.
"""

from __future__ import annotations

import html
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .jsonio import write_json, write_jsonl
from .pairs import NearDup, answer, question  # noqa: F401  (03's notebook reads rows through these)
from .settings import InspectSettings
from .splitting import add_train_similarity, far_recall, split
# 03's notebook and tests use grounding and normalize from here
from .text import grounding, is_question, normalize  # noqa: F401

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
REPORT_FILE = "inspect_report.json"
DROPPED_FILE = "dropped.jsonl"

# a question that points at its passage ("根据上文", "according to the text") or at "this section" ("本节介绍什么？": a
# CloudPSS pair of 2026-12-06, whose recall rewording "这节主要讲什么？" could be either of two sibling pages) names
# nothing a reader of the whole docs could look up; "本节点" (this node) and "该节能" (energy saving) are no section
_META = re.compile(r"(根据(文本|文档|上文|本文|片段|材料)|文中|本文|上文|该片段|(本|这|该)(一)?(小)?节(?![点约省能日奏假制流])|本章|本页|"
                   r"according to the (text|passage|document|excerpt)|the (text|passage|excerpt) (says|states|mentions)|"
                   r"in (this|the) (text|passage|excerpt)|\bthis (section|chapter|page|tutorial)\b)", re.I)
_REFUSAL = re.compile(r"(I('m| am) sorry|I cannot|I can't|as an AI|无法回答|抱歉|我不知道)", re.I)
# a question that asks for a count or a size, and an answer that states one (digits, 两千, "three", 三)
_ASKS_NUMBER = re.compile(r"\bhow (many|much|long|large|big|often)\b|\b(maximum|minimum|max|min) (number|size|length|count)\b|"
                          r"\bnumber of\b|多少|几(个|种|项|天|位|次|小时|分钟|秒)|多大|多长|多久", re.I)
_STATES_NUMBER = re.compile(r"\d|[零〇一二两三四五六七八九十百千万亿]|\b(one|two|three|four|five|six|seven|eight|nine|ten|"
                            r"eleven|twelve|twenty|hundred|thousand|million|once|twice|single|no)\b", re.I)
_TERMINAL = re.compile(r"[.!?。！？)）\]】\"”'`]$")


# ---- filters --------------------------------------------------------------------------------------------


@dataclass
class InspectResult:
    kept: list[dict]
    dropped: list[dict]
    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def filter_rows(rows: list[dict], cfg: InspectSettings, chunks: dict[str, str] | None = None,
                count_tokens: Callable[[str, str], int] | None = None,
                judge_scores: dict[str, int | None] | None = None) -> tuple[list[dict], list[dict]]:
    """Quality filters and dedup (exact, then near-duplicate on the question and on question+answer).

    Each kept row gains ``grounding`` (and ``tokens`` when a tokenizer is given); each dropped row a ``drop_reason``.
    """
    kept: list[dict] = []
    dropped: list[dict] = []
    exact: dict[str, str] = {}
    corpus = "\n".join((chunks or {}).values()).lower()
    near_q = NearDup(cfg.near_dup_threshold)
    near_qa = NearDup(cfg.near_dup_threshold)
    for r in rows:
        q, a = question(r), answer(r)
        r = dict(r)
        reason = None
        if not q or not a:
            reason = "empty field"
        elif len(a) < cfg.min_answer_chars:
            reason = "answer too short"
        elif r.get("finish_reason") == "length" and not _TERMINAL.search(a):
            reason = "truncated"
        elif _META.search(q):
            reason = "meta-phrasing in question"
        elif cfg.questions_only and not is_question(q):  # a statement, a heading breadcrumb ("安装 > 执行器配置")
            reason = "not a question"
        elif _REFUSAL.search(a):
            reason = "refusal"
        elif _ASKS_NUMBER.search(q) and not _STATES_NUMBER.search(a):  # "maximum number of buses?" → "Limits …"
            reason = "no number for a how-many question"
        elif repeats_question(a, q):  # "执行器配置文件的名称是什么？" → "执行器配置文件"
            reason = "answer repeats the question"
        if reason is None and count_tokens is not None:
            r["tokens"] = count_tokens(q, a)
            if r["tokens"] > cfg.max_tokens:
                reason = "over max_tokens"
        abstain = r.get("kind") == "abstain"  # "the docs don't cover this": nothing to ground, nothing to judge
        if reason is None and not abstain and chunks is not None and r.get("chunk_id") in chunks:
            r["grounding"] = round(grounding(a, chunks[r["chunk_id"]]), 3)
            if r["grounding"] < cfg.min_grounding:
                reason = "not grounded in its chunk"
        if reason is None and not abstain and judge_scores is not None and judge_scores.get(r["id"]) is not None:
            r["judge"] = judge_scores[r["id"]]
            if r["judge"] < cfg.min_judge:
                reason = f"judge score {r['judge']} below {cfg.min_judge}"
        dup = None  # the kept row a duplicate repeats (its id is also in the reason)
        if reason is None:
            reason, dup = _duplicate(q, a, abstain, corpus, exact, near_q, near_qa)
        if reason:
            dropped.append({**r, "drop_reason": reason, **({"duplicate_of": dup} if dup else {})})
            continue
        exact[normalize(q)] = r["id"]
        near_q.add(r["id"], q)
        near_qa.add(r["id"], q + "\n" + a)
        kept.append(r)
    return kept, dropped


def _duplicate(q: str, a: str, abstain: bool, corpus: str, exact: dict[str, str], near_q: NearDup,
               near_qa: NearDup) -> tuple[str | None, str | None]:
    """Why a row repeats one already kept (exact, then MinHash near duplicate of the question, then of question +
    answer), and the kept row's id; ``(None, None)`` for a new one."""
    if abstain and not names_something_new(q, corpus):
        return "abstain question names nothing the docs lack (they may answer it)", None
    if abstain and (dup := near_q.query(q)) is not None:
        return f"abstain question close to a documented one: {dup}", dup
    if (dup := exact.get(normalize(q))) is not None:
        return f"exact duplicate of {dup}", dup
    if (dup := near_q.query(q)) is not None:
        return f"near duplicate of {dup}", dup
    if (dup := near_qa.query(q + "\n" + a)) is not None:
        return f"near duplicate (q+a) of {dup}", dup
    return None, None


def names_something_new(q: str, corpus: str) -> bool:
    """A "docs don't say" question is only trusted when it names a specific thing — a `setting`, --flag, code,
    file or number — that occurs nowhere in the corpus: then the docs cannot answer it. (Measured: the 1.5B teacher,
    asked for questions its excerpt does not answer, wrote "What is the default format for exporting results?"
    about an excerpt that states it.)"""
    from .outcomes import values

    named = [v for v in values(q) if len(v) >= 3 and not v.isdigit()]
    return bool(named) and any(v.lower().strip("`") not in corpus for v in named)


def repeats_question(ans: str, q: str) -> bool:
    """The answer says nothing its question does not: no value the question lacks and ≥ 75 % of its character
    bigrams and every Latin word from the question ("如何新建一个存放虚拟环境的目录？" → "需要新建一个存放虚拟环境的目录。").
    A bare value the question asks for (`BWATT_LICENSE`, "The default format is csv.") is new, so kept."""
    from .outcomes import new_values

    words = set(re.findall(r"[a-z][a-z0-9]+", ans.lower())) - set(re.findall(r"[a-z][a-z0-9]+", q.lower()))
    return grounding(ans, q) >= 0.75 and not words and not new_values(ans, q)


def reason_kind(reason: str) -> str:
    return re.sub(r"^judge score .*", "judge score too low", reason.split(" of ")[0])


def judge_rows(rows: list[dict], chunks: list[dict], teacher, cache_path: Path) -> dict[str, int | None]:
    """Optional LLM judge of each pair against its chunk (rubric in ``params/prompts/judge_qa.md``), cached."""
    from .judge import judge

    text = {c["id"]: c["text"] for c in chunks}
    items = [{"chunk": text.get(r["chunk_id"], ""), "question": question(r), "answer": answer(r)} for r in rows]
    return dict(zip((r["id"] for r in rows), judge(teacher, items, cache_path, kind="qa")))


# ---- files ----------------------------------------------------------------------------------------------


def to_messages(r: dict, split_name: str) -> dict:
    q = question(r)
    user = q if not r.get("input") else f"{r['input']}\n\n{q}"
    return {
        "id": r["id"],
        "split": split_name,
        "chunk_id": r["chunk_id"],
        "source": r.get("source", ""),
        "lang": r.get("lang", ""),
        **({"paraphrase_of": r["paraphrase_of"]} if r.get("paraphrase_of") else {}),
        **({"reworded_from": r["reworded_from"]} if r.get("reworded_from") else {}),
        **({"reverse_of": r["reverse_of"]} if r.get("reverse_of") else {}),
        **({"swapped_from": r["swapped_from"]} if r.get("swapped_from") else {}),
        **({"kind": r["kind"]} if r.get("kind") else {}),
        **({"bare_answer": r["bare_answer"]} if r.get("bare_answer") else {}),
        **({"contrast_of": r["contrast_of"]} if r.get("contrast_of") else {}),
        **({"train_similarity": r["train_similarity"]} if "train_similarity" in r else {}),
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer(r)}],
    }


def export_formats(train: list[dict], data_dir: Path) -> dict[str, str]:
    """Alpaca and ShareGPT copies of the train split, and a LLaMA-Factory ``dataset_info.json`` naming them."""
    alpaca = [{"instruction": question(r), "input": r.get("input", ""), "output": answer(r)} for r in train]
    sharegpt = [{"conversations": [{"from": "human", "value": to_messages(r, "train")["messages"][0]["content"]},
                                   {"from": "gpt", "value": answer(r)}]} for r in train]
    paths = {
        "alpaca": write_json(alpaca, data_dir / "train_alpaca.json"),
        "sharegpt": write_json(sharegpt, data_dir / "train_sharegpt.json"),
    }
    info = {
        "tunebook_alpaca": {"file_name": "train_alpaca.json",
                            "columns": {"prompt": "instruction", "query": "input", "response": "output"}},
        "tunebook_sharegpt": {"file_name": "train_sharegpt.json", "formatting": "sharegpt",
                              "columns": {"messages": "conversations"}},
    }
    paths["llamafactory"] = write_json(info, data_dir / "dataset_info.json")
    return {k: str(v) for k, v in paths.items()}


def teacher_items(train: list[dict], evals: list[dict], cfg: InspectSettings, teacher, data_dir: Path,
                  leak: dict[str, int]) -> list[dict]:
    """The train split after the teacher's optional additions: bare answers restated as sentences
    (``cfg.sentence_answers``, :mod:`tunebook.restate`) and sibling contrasts (``cfg.sibling_contrasts``,
    :mod:`tunebook.contrast`; one whose question is near an eval question is left out and counted in ``leak``)."""
    from .pairs import trained_facts

    if cfg.sentence_answers:
        from . import restate

        train = restate.apply(train, restate.sentences(trained_facts(train), teacher, data_dir / "restate_cache.jsonl"))
    if cfg.sibling_contrasts:
        from . import contrast
        from .splitting import near

        close = near(evals, cfg.near_dup_threshold)
        made = contrast.items(trained_facts(train), teacher, data_dir / "contrast_cache.jsonl")
        kept = [r for r in made if not close(question(r))]
        leak["contrasts_too_close_to_eval"] = len(made) - len(kept)
        train = train + kept
    return train


def run(rows: list[dict], chunks: list[dict], cfg: InspectSettings, seed: int, data_dir: Path,
        count_tokens: Callable[[str, str], int] | None = None,
        judge_scores: dict[str, int | None] | None = None, teacher=None) -> InspectResult:
    """Filter, split and write the run's train and eval files (and the exports and report). With
    ``cfg.sentence_answers`` and a ``teacher``, the train split's bare answers are restated as full sentences
    (:mod:`tunebook.restate`, cached in ``data/restate_cache.jsonl``); with ``cfg.sibling_contrasts``, facts the
    student may mix up get a contrast item each (:mod:`tunebook.contrast`, ``data/contrast_cache.jsonl``), unless
    its question is near one the eval asks."""
    data_dir = Path(data_dir)
    chunk_text = {c["id"]: c["text"] for c in chunks}
    kept, dropped = filter_rows(rows, cfg, chunk_text, count_tokens, judge_scores)
    train, evals, leak = split(kept, cfg, seed, corpus="\n".join(chunk_text.values()))
    if teacher is not None:
        train = teacher_items(train, evals, cfg, teacher, data_dir, leak)
    add_train_similarity(evals, train)
    write_jsonl((to_messages(r, "train") for r in train), data_dir / TRAIN_FILE)
    write_jsonl((to_messages(r, r["split"]) for r in evals), data_dir / EVAL_FILE)
    write_jsonl(dropped, data_dir / DROPPED_FILE)
    exports = export_formats(train, data_dir)
    covered = {r["chunk_id"] for r in rows}
    report = {
        "rows_in": len(rows),
        "kept": len(kept),
        "dropped": len(dropped),
        "drop_reasons": dict(Counter(reason_kind(d["drop_reason"]) for d in dropped)),
        "train": len(train),
        "eval": len(evals),
        "eval_recall": sum(r["split"] == "recall" for r in evals),
        "eval_unseen": sum(r["split"] == "unseen" for r in evals),
        "eval_outofdocs": sum(r["split"] == "outofdocs" for r in evals),
        "eval_recall_far": len(far_recall(evals)),
        "train_rewordings": sum(bool(r.get("reworded_from")) for r in train),
        "train_reverse": sum(bool(r.get("reverse_of")) for r in train),
        "train_abstain": sum(r.get("kind") == "abstain" and not r.get("swapped_from") for r in train),
        "train_abstain_swaps": sum(bool(r.get("swapped_from")) for r in train),
        "train_sentence_answers": sum(bool(r.get("bare_answer")) for r in train),
        "train_contrasts": sum(bool(r.get("contrast_of")) for r in train),
        **leak,
        "train_chunks": len({r["chunk_id"] for r in train}),
        "eval_unseen_chunks": len({r["chunk_id"] for r in evals if r["split"] == "unseen"}),
        "chunks_total": len(chunks),
        "chunks_without_pairs": len([c for c in chunks if c["id"] not in covered]),
        "languages": dict(Counter(r.get("lang", "?") for r in kept)),
        "per_source": dict(Counter(r.get("source", "?") for r in kept)),
        "share_over_max_tokens": round(sum(d["drop_reason"] == "over max_tokens" for d in dropped) / max(1, len(rows)), 4),
        "mean_grounding": round(sum(r.get("grounding", 0) for r in kept) / max(1, len(kept)), 3),
        "judged": sum(v is not None for v in (judge_scores or {}).values()),
        "exports": exports,
        "seed": seed,
    }
    write_json(report, data_dir / REPORT_FILE)
    return InspectResult(kept=kept, dropped=dropped, train=train, eval=evals, report=report)


# ---- tokens ---------------------------------------------------------------------------------------------


def token_counter(tokenizer, system_prompt: str = "") -> Callable[[str, str], int]:
    """Length of a pair as the student will see it: its chat template applied to question and answer."""
    from .chat import chat_messages

    def count(q: str, a: str) -> int:
        msgs = chat_messages(q, system_prompt) + [{"role": "assistant", "content": a}]
        if getattr(tokenizer, "chat_template", None):
            return len(tokenizer.apply_chat_template(msgs, tokenize=True))
        return len(tokenizer(q + "\n" + a)["input_ids"])

    return count


# ---- display --------------------------------------------------------------------------------------------


def sample_table(rows: list[dict], n: int, seed: int = 0) -> str:
    """A static HTML table of sample rows (shows in papermill reports, where widgets don't)."""
    rng = random.Random(seed)
    pick = rows if len(rows) <= n else rng.sample(rows, n)
    head = "<tr><th>source</th><th>split / flag</th><th>question</th><th>answer</th><th>grounding</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r.get('source', ''))}</td>"
        f"<td>{html.escape(r.get('drop_reason') or r.get('split', 'train'))}</td>"
        f"<td>{html.escape(question(r))}</td><td>{html.escape(answer(r))}</td>"
        f"<td>{r.get('grounding', '')}</td></tr>"
        for r in pick
    )
    return f"<table class='tunebook-samples'>{head}{body}</table>"


def browser(res: InspectResult, page: int = 10):
    """An ipywidgets sample browser for JupyterLab: filter by source, flag and grounding score."""
    import ipywidgets as w

    rows = [{**r, "split": "train"} for r in res.train] + res.eval + res.dropped
    sources = ["(all)"] + sorted({r.get("source", "") for r in rows})
    flags = ["(all)", "train", "recall", "unseen"] + sorted({reason_kind(r["drop_reason"]) for r in res.dropped})
    src = w.Dropdown(options=sources, description="source")
    flag = w.Dropdown(options=flags, description="flag")
    score = w.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="grounding ≥")
    out = w.HTML()

    def refresh(*_):
        sel = [r for r in rows
               if (src.value == "(all)" or r.get("source") == src.value)
               and (flag.value == "(all)" or (reason_kind(r["drop_reason"]) if r.get("drop_reason") else r.get("split")) == flag.value)
               and float(r.get("grounding", 1.0)) >= score.value]
        out.value = f"<p>{len(sel)} rows</p>" + sample_table(sel[:page], page)

    for c in (src, flag, score):
        c.observe(refresh, names="value")
    refresh()
    return w.VBox([w.HBox([src, flag, score]), out])

