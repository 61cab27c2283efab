"""05 — does the student know the docs now? Base vs fine-tuned answers, character-level scores, gates, metrics
(the answerers' names: :mod:`tunebook.conditions`; the tables and side-by-side HTML: :mod:`tunebook.eval_tables`).

Both models answer with the same chat template and greedy decoding (:mod:`tunebook.answering`). The base answers
come from the base weights with the adapter switched off; the fine-tuned answers from a merged copy
(:func:`~tunebook.answering.merged_weights`), the model 05 exports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .answering import balanced_batch, gate, generate, generate_scored, load_tuned, merged_weights  # noqa: F401
from .conditions import CONDITION_LABELS, CONDITIONS, MEASURES, conditions_in, fact_group  # noqa: F401
from .eval_tables import SPLITS_SHOWN, metric_rows, metrics_table, score_plot, side_by_side_html, verdict  # noqa: F401
from .surer import surer, surer_pick  # noqa: F401  (05's fifth answerer; benchmarks read surer_pick from here)
from .forgetting import (GENERAL_FILE, forgetting_check, forgetting_check_with, general_metrics,  # noqa: F401
                         general_prompts, score_general)
from .jsonio import write_json, write_jsonl
from .splitting import far_recall
from .text import char_f1, rouge_l

GENERATIONS_FILE = "generations.jsonl"
METRICS_FILE = "metrics.json"


# ---- metrics --------------------------------------------------------------------------------------------------


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Per condition: the mean of each measure (``tuned_judge``), its 95 % bootstrap interval (``tuned_judge_ci``),
    the outcome shares (``tuned_outcomes``) and the invented-value share (``tuned_invents``); the paired gain of
    the fine-tune over the base (``judge_gain``) and the retrieval hit rate."""
    from .outcomes import shares
    from .scope import routed_share
    from .stats import mean_ci, paired_delta_ci

    out: dict[str, Any] = {"n": len(rows)}
    groups = [fact_group(r) or f"#{i}" for i, r in enumerate(rows)]  # a row without an id is its own fact
    if len(set(groups)) < len(groups):
        out["facts"] = len(set(groups))  # several rewordings of one fact: intervals resample whole facts
    conds = conditions_in(rows)
    for c in conds:
        for m in MEASURES:
            vals = [r.get(f"{c}_{m}") for r in rows]
            if any(v is not None for v in vals):
                ci = mean_ci(vals, groups=groups)
                out[f"{c}_{m}"], out[f"{c}_{m}_ci"] = ci["mean"], [ci["lo"], ci["hi"]]
                if m == "exact_values":
                    out[f"{c}_{m}_n"] = ci["n"]
        if any(r.get(f"{c}_outcome") for r in rows):
            out[f"{c}_outcomes"] = shares([r[f"{c}_outcome"] for r in rows if r.get(f"{c}_outcome")])
            out[f"{c}_invents"] = out[f"{c}_outcomes"]["invents"]
        if any(r.get(f"{c}_ungated") is not None for r in rows):  # the confidence gate was on
            out[f"{c}_gated"] = round(sum(r.get(f"{c}_ungated") not in (None, r[c]) for r in rows) / len(rows), 4)
        if c == "switched":
            out["switched_to_adapter"] = routed_share(rows)
        for kept in ("grounded", "recited", "agrees"):  # context_grounding / recited_above / agreement_pass
            if any(f"{c}_{kept}" in r for r in rows):
                out[f"{c}_{kept}"] = round(sum(bool(r.get(f"{c}_{kept}")) for r in rows) / len(rows), 4)
    for m in ("judge", "rouge_l"):
        if f"base_{m}" in out and f"tuned_{m}" in out:
            d = paired_delta_ci([r.get(f"tuned_{m}") for r in rows], [r.get(f"base_{m}") for r in rows],
                                groups=groups)
            out[f"{m}_gain"] = d
    for key, name in (("rag_hit", "retrieval_hit_rate"), ("tuned_rag_hit", "tuned_retrieval_hit_rate")):
        hits = [r[key] for r in rows if r.get(key) is not None]
        if hits:
            out[name] = round(sum(hits) / len(hits), 4)
    if any(r.get("tuned_rag_chunks") for r in rows):
        out["tuned_rag_chunks_mean"] = round(sum(len(r.get("tuned_rag_chunks") or []) for r in rows) / len(rows), 2)
    return out


# ---- generation ---------------------------------------------------------------------------------------------


def select(rows: list[dict], n: int) -> list[dict]:
    """Up to ``n`` eval rows, taken in turn from each split so every split is represented (0 = all)."""
    if not n or n >= len(rows):
        return rows
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r.get("split", "eval"), []).append(r)
    out: list[dict] = []
    queues = [list(v) for v in by_split.values()]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def trained_record(adapter_dir: Path, student: str = "") -> dict[str, Any]:
    """What 04 trained (``train/adapter/tunebook_train.json``): the base model's spec and the system prompt. 05
    compares against that base, and says so when the run's ``student`` setting names another."""
    import json

    rec = json.loads((Path(adapter_dir) / "tunebook_train.json").read_text(encoding="utf-8"))
    out = {"student": rec["student"], "system_prompt": rec.get("settings", {}).get("system_prompt", ""),
           "backend": rec.get("backend", ""), "loaded_from": rec.get("loaded_from", ""),
           "precision": rec.get("settings", {}).get("precision", "auto")}
    if student and student != out["student"]:
        print(f"note: 04 trained {out['student']!r}; the setting student={student!r} is ignored here, the base "
              "model is the one the adapter was trained on")
    return out


def start_student(ev, trained: dict[str, Any], adapter_dir: Path, eval_dir: Path):
    """The llama-server answerer (:mod:`tunebook.student_server`), started, when ``ev.engine`` is ``llama.cpp`` (every
    prompt) or ``hybrid`` (all but the RAG prompts); None means transformers answers. Stop it with ``.stop()`` when
    the answering is done."""
    from . import student_server

    student_server.check_engine(ev.engine, trained["student"])
    if ev.engine == "transformers":
        return None
    return student_server.StudentServer(trained["student"], adapter_dir, student_server.base_dir(trained),
                                        Path(eval_dir) / student_server.SERVER_DIR, parallel=ev.batch_size,
                                        port=ev.engine_port, rag=ev.engine == "llama.cpp").start()


def save_metrics(metrics: dict[str, Any], eval_dir: Path) -> Path:
    return write_json(metrics, Path(eval_dir) / METRICS_FILE)


def question_rows(questions: list[str]) -> list[dict]:
    """Questions of one's own (``evaluate.ask``) as eval rows :func:`compare` takes: split ``ask``, no reference."""
    return [{"id": f"ask-{i}", "split": "ask", "messages": [{"role": "user", "content": q},
                                                            {"role": "assistant", "content": ""}]}
            for i, q in enumerate(q for q in questions if q.strip())]


def compare(model, tok, eval_rows: list[dict], max_new_tokens: int, batch_size: int, system_prompt: str = "",
            rag_index=None, rag_k: int = 2, server=None, abstain_below: float = 0.0,
            train_rows: list[dict] | None = None, provenance_below: float = 0.0, draft_search: bool = False,
            context_grounding: bool = False, recited_above: float = 0.0, agreement_pass: bool = False,
            switch=None, base_passages: bool = False) -> list[dict]:
    """Every eval question answered under each condition (:data:`CONDITIONS`; the RAG ones only with an index),
    greedily, with ROUGE-L and character F1 against the reference. Each answer's confidence is kept
    (``<condition>_confidence``); with ``abstain_below`` > 0 the fine-tuned student's answers below it are replaced
    by "the docs don't cover this" (:func:`gate`), the answer it gave kept as ``<condition>_ungated``; with
    ``provenance_below`` > 0 and the run's ``train_rows``, so are its answers whose trained values all come from
    pairs about other questions (:func:`provenance_gate`). With ``draft_search`` the fine-tuned + RAG prompts also
    hold the chunks found with the student's closed-book answer added to the question
    (:meth:`~tunebook.retrieval.Index.search_with_drafts`; ``tuned_rag_chunks``, ``tuned_rag_hit``). With
    ``context_grounding`` a fine-tuned answer given with chunks passes both gates when it reads its values from them
    (:func:`tunebook.provenance.grounded`; marked ``<condition>_grounded``): the gates guard what the student recalls,
    and a value copied from the chunk in its prompt is not recalled. With ``recited_above`` > 0 a gated fine-tuned answer
    that repeats a trained answer to a question sharing at least that share of the asked one's terms passes too
    (:meth:`tunebook.provenance.TrainedValues.recites`; marked ``<condition>_recited``). With ``agreement_pass`` a
    gated answer given with chunks passes when it says what the passed closed-book fine-tuned answer says
    (:func:`tunebook.provenance.agrees`; marked ``<condition>_agrees``). An index cutting passages (``rag_lines``) gives
    them to the fine-tuned student's RAG prompts, base + RAG keeps whole chunks (``base_passages``: cut them too). With
    a scope ``switch`` (:class:`tunebook.scope.Switch`) each row also has the ``switched`` answer: the (gated)
    fine-tuned one where the switch sends the question to the adapter, else the base's (``switched_from``)."""
    from .provenance import TrainedValues
    from .scope import switch_rows

    trained = TrainedValues(train_rows) if (provenance_below > 0 or recited_above > 0) and train_rows else None
    questions = [r["messages"][0]["content"] for r in eval_rows]
    refs = [r["messages"][-1]["content"] for r in eval_rows]
    recites = (lambda a, q: trained.recites(a, q, recited_above)) if trained is not None and recited_above > 0 else None
    answers, confidence, contexts, found, guided, picked = _answer_all(
        model, tok, questions, max_new_tokens, batch_size, system_prompt, rag_index, rag_k, server, draft_search,
        recites, base_passages)
    rows = []
    for i, (r, q, ref) in enumerate(zip(eval_rows, questions, refs)):
        row = {"id": r["id"], "source": r.get("source", ""), "chunk_id": r.get("chunk_id", ""),
               "split": r.get("split", "eval"), "question": q, "reference": ref,
               "engine": server.engine if server is not None else "transformers",
               **({"train_similarity": r["train_similarity"]} if "train_similarity" in r else {})}
        for cond, ans in answers.items():
            a, conf = ans[i], confidence[cond][i]
            if CONDITIONS[cond][0] and (abstain_below > 0 or trained):  # the gates are the fine-tuned student's
                row[f"{cond}_ungated"] = a
                gated = provenance_gate(gate(a, conf, abstain_below, q), q, trained, provenance_below)
                ctx = contexts[cond][i] if context_grounding and cond in contexts else ""
                why = "" if gated == a else _let_through(a, q, cond, row, ctx, rag_index, trained, recited_above,
                                                         agreement_pass)
                if why:
                    row[f"{cond}_{why}"] = True  # a gate would have stopped it; this is why it did not
                else:
                    a = gated
            row[cond] = a
            row[f"{cond}_confidence"] = conf
            row[f"{cond}_rouge_l"] = round(rouge_l(a, ref), 4)
            row[f"{cond}_char_f1"] = round(char_f1(a, ref), 4)
        _add_picks(row, i, rag_index, found, guided, picked)
        rows.append(row)
    if switch is not None:
        switch_rows(rows, switch.to_adapter(model, tok, questions))
    return rows


def compare_with(ev, model, tok, eval_rows: list[dict], system_prompt: str = "", rag_index=None, server=None,
                 train_rows: list[dict] | None = None, switch=None, base_passages: bool = False) -> list[dict]:
    """:func:`compare` as 05 runs it: answer length, batch size, retrieval and every gate setting from ``ev`` (the
    run's ``evaluate`` settings), so that 05 and the benchmarks that rerun its answering cannot drift apart."""
    return compare(model, tok, eval_rows, ev.max_new_tokens, ev.batch_size, system_prompt, rag_index=rag_index,
                   rag_k=ev.rag_k, server=server, abstain_below=ev.abstain_below, train_rows=train_rows,
                   provenance_below=ev.provenance_below, draft_search=ev.draft_search,
                   context_grounding=ev.context_grounding, recited_above=ev.recited_above,
                   agreement_pass=ev.agreement_pass, switch=switch, base_passages=base_passages)


def _add_picks(row: dict, i: int, rag_index, found: list, guided: list, picked: list[str]) -> None:
    """The row's retrieved chunks and whether they hold its source (base + RAG, and fine-tuned + RAG with the draft),
    and which fine-tuned answer the surer took."""
    from .retrieval import hit_rate

    if found:
        row["rag_chunks"] = [rag_index.chunk_ids[j] for j in found[i]]
        row["rag_hit"] = hit_rate([found[i]], rag_index, [row["chunk_id"]])
    if picked:
        row["surer_from"] = picked[i]
    if guided:
        row["tuned_rag_chunks"] = [rag_index.chunk_ids[j] for j in guided[i]]
        row["tuned_rag_hit"] = hit_rate([guided[i]], rag_index, [row["chunk_id"]])


def _let_through(answer: str, question: str, cond: str, row: dict, ctx: str, rag_index, trained,
                 recited_above: float, agreement_pass: bool) -> str:
    """Why a gated fine-tuned ``answer`` passes after all, "" when it does not: ``grounded`` — it reads its values off
    the chunks in its prompt (``ctx``); ``recited`` — it says what the student learned for this question; ``agrees`` —
    given with chunks, it says what the closed-book answer (``row["tuned"]``), which passed the gates, says."""
    from .provenance import grounded

    if ctx and grounded(answer, question, ctx, rag_index.common_terms(), rag_index.tokenizer):
        return "grounded"
    if trained is not None and trained.recites(answer, question, recited_above):
        return "recited"
    if agreement_pass and CONDITIONS[cond][1] is not False and closed_book_agrees(row, answer, question):
        return "agrees"
    return ""


def closed_book_agrees(row: dict, answer: str, question: str) -> bool:
    """The row's closed-book fine-tuned answer passed the gates and ``answer`` says what it says
    (:func:`tunebook.provenance.agrees`; ``evaluate.agreement_pass``)."""
    from .outcomes import abstains
    from .provenance import agrees

    closed = row.get("tuned")
    return (closed is not None and closed == row.get("tuned_ungated", closed) and not abstains(closed)
            and agrees(answer, closed, question))


def _answer_all(model, tok, questions: list[str], max_new_tokens: int, batch_size: int, system_prompt: str,
                rag_index, rag_k: int, server, draft_search: bool, recites=None, base_passages: bool = False):
    """:func:`compare`'s answers: per condition the answers and their confidences, per RAG condition the chunks each
    prompt held, the chunks found with the question (``found``) and with the draft too (``guided``), and which answer
    the surer took per question (``picked``; ``recites(answer, question)``: a closed-book recital wins it)."""
    from .retrieval import rag_prompt

    prompts = {False: questions}
    found: list[list[int]] = []
    contexts: dict[str, list[str]] = {}  # per RAG condition, the chunks each prompt held
    if rag_index is not None:
        found = rag_index.search(questions, rag_k)
        contexts["rag"] = [rag_index.context(idx, q if base_passages else "") for idx, q in zip(found, questions)]
        prompts[True] = [rag_prompt(q, c) for q, c in zip(questions, contexts["rag"])]
    answers, confidence = {}, {}
    guided: list[list[int]] = []
    for cond, (adapter, rag) in CONDITIONS.items():
        if rag in prompts:
            todo = prompts[rag]
            if rag:
                contexts[cond] = contexts["rag"]
            if cond == "tuned_rag" and (draft_search or (rag_index.passage_lines and not base_passages)):
                if draft_search:  # the closed-book answers ("tuned") came first
                    guided = rag_index.search_with_drafts(questions, answers["tuned"], rag_k)
                about = [f"{q}\n{d}" if draft_search else q for q, d in zip(questions, answers["tuned"])]
                contexts[cond] = [rag_index.context(idx, a) for idx, a in zip(guided or found, about)]
                todo = [rag_prompt(q, c) for q, c in zip(questions, contexts[cond])]
            answers[cond], confidence[cond] = generate_scored(
                model, tok, todo, max_new_tokens, batch_size, adapter=adapter, system_prompt=system_prompt,
                desc=CONDITION_LABELS[cond], server=server.for_prompts(rag) if server is not None else None)
    picked: list[str] = []
    if "tuned_rag" in answers:
        recited = [bool(recites and recites(a, q)) for a, q in zip(answers["tuned"], questions)]
        answers["surer"], confidence["surer"], picked = surer(answers, confidence, recited)
        contexts["surer"] = [c if p == "tuned_rag" else "" for c, p in zip(contexts["tuned_rag"], picked)]
    return answers, confidence, contexts, found, guided, picked


def provenance_gate(answer: str, question: str, trained, below: float) -> str:
    """The answer, or "the docs don't cover this" when every value it learned comes from trained pairs about other
    questions (:meth:`tunebook.provenance.TrainedValues.transplanted`; ``trained`` None: off)."""
    from .outcomes import abstain_answer, abstains

    if trained is None or abstains(answer) or not trained.transplanted(answer, question, below):
        return answer
    return abstain_answer(question)


def add_outcomes(rows: list[dict]) -> None:
    """``<condition>_outcome`` (correct · partial · abstains · invents · degenerate) and ``<condition>_exact_values``
    (the share of the reference's hard values — numbers, codes, identifiers — found verbatim in the answer)."""
    from .outcomes import classify, exact_values

    for r in rows:
        for c in conditions_in([r]):
            r[f"{c}_outcome"] = classify(r[c], r["reference"], r["question"], r.get(f"{c}_verdicts"))
            r[f"{c}_exact_values"] = exact_values(r[c], r["reference"], r["question"])


def score(rows: list[dict], teacher, eval_dir: Path) -> dict[str, Any]:
    """Judge every answer by key facts (when a teacher is given), classify it, write ``generations.jsonl`` and
    ``metrics.json``; returns the metrics."""
    from .judge import add_judge_scores

    if teacher is not None:
        add_judge_scores(rows, teacher, eval_dir, tuple(conditions_in(rows)))
    add_outcomes(rows)
    return write_results(rows, eval_dir)


def write_results(rows: list[dict], eval_dir: Path) -> dict[str, Any]:
    write_jsonl(rows, eval_dir / GENERATIONS_FILE)
    metrics: dict[str, Any] = {"conditions": conditions_in(rows), "engine": rows[0].get("engine") if rows else None,
                               "all": summarize(rows)}
    for split in sorted({r["split"] for r in rows}):
        metrics[split] = summarize([r for r in rows if r["split"] == split])
    far = far_recall(rows)
    if far:  # recall worded far from every training question (03's ``train_similarity``)
        metrics["recall_far"] = summarize(far)
    write_json(metrics, eval_dir / METRICS_FILE)
    return metrics
