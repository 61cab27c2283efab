"""What several benchmarks do alike with finished run dirs: judge answers with the run's teacher without touching
the run, and write a result file under ``benchmarks/results/``."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.serve import Teacher  # noqa: E402


@contextmanager
def judge_scratch(run: Path):
    """A scratch dir holding a copy of the run's judge cache: judging there asks the teacher only what the run's own
    judge has not, and leaves the run dir untouched."""
    with tempfile.TemporaryDirectory() as scratch:
        cache = run / "eval" / "judge_cache.jsonl"
        if cache.is_file():
            shutil.copy(cache, Path(scratch) / cache.name)
        yield Path(scratch)


def judged(rows: list[dict], run: Path) -> list[dict]:
    """``rows`` scored by 05's :func:`tunebook.evaluate.score` with the run's teacher (start it first, as 01 would),
    in a :func:`judge_scratch` dir."""
    with judge_scratch(run) as scratch:
        evaluate.score(rows, Teacher.load(run), scratch)
        return list(read_jsonl(scratch / evaluate.GENERATIONS_FILE))


def write_result(stem: str, payload, indent: int = 2) -> Path:
    """``payload`` as ``benchmarks/results/<stem>-<today>.json`` (``-2``, ``-3``, … when that day's file exists: a
    second run the same day must not overwrite the first's committed result); prints and returns the path."""
    out = ROOT / "benchmarks" / "results" / f"{stem}-{date.today()}.json"
    n = 1
    while out.exists():
        n += 1
        out = out.with_name(f"{stem}-{date.today()}-{n}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(payload, indent=indent, ensure_ascii=False))
    print(f"\nwrote {out.relative_to(ROOT)}")
    return out


def run_settings(run: Path):
    """The Settings a finished run dir ran with: its ``params.yaml`` as a resume reads it (a setting the record
    predates takes the value the run ran with, ``rundir.LEGACY``)."""
    from tunebook.rundir import RunDir

    cfg = RunDir(run).recorded_settings()
    if cfg is None:
        raise SystemExit(f"{run}: not a run dir (no params.yaml)")
    return cfg


def eval_prompts(run: Path, ev, limit: int = 0) -> tuple[list[dict], list[str], list[str], dict[str, list[str]]]:
    """A finished run's eval rows (the first ``limit``; 0: all), their questions and references, and 05's prompts
    for them: ``closed`` (the question) and ``rag`` (the question with the chunks BM25 finds for it, ``ev.rag_k``)."""
    from tunebook import retrieval
    from tunebook.retrieval import rag_prompt

    rows = evaluate.select(read_jsonl(run / "data" / "eval.jsonl"), limit)
    questions = [r["messages"][0]["content"] for r in rows]
    refs = [r["messages"][-1]["content"] for r in rows]
    index = retrieval.Index.build(read_jsonl(run / "data" / "chunks.jsonl"), ev.rag_tokenizer)
    rag = [rag_prompt(q, index.context(i)) for q, i in zip(questions, index.search(questions, ev.rag_k))]
    return rows, questions, refs, {"closed": questions, "rag": rag}


def tuned_student(run: Path, ev):
    """The run's student with its adapter, loaded as 05 loads it (``ev.precision``), and its trained record."""
    from tunebook import models

    adapter = run / "train" / "adapter"
    trained = evaluate.trained_record(adapter)
    model, tok = evaluate.load_tuned(adapter, models.hf_model(trained["student"]), ev.precision)
    return model, tok, trained


def split_means(rows: list[dict], split: str, conds: tuple[str, ...]) -> dict:
    """The judge's mean per answerer (the fine-tuned student and ``conds``) over ``rows`` of one split, and n."""
    part = [r for r in rows if r.get("split") == split]
    return {c: (round(sum(r[f"{c}_judge"] for r in part) / len(part), 3) if part else None)
            for c in ("tuned", *conds)} | {"n": len(part)}


def meets(m: dict, c: str) -> bool:
    """``c``'s mean (of :func:`split_means`) is at or above both the fine-tuned student's and base + RAG's."""
    return None not in (m.get(c), m.get("tuned")) and m[c] >= max(m["tuned"], m.get("rag") or 0)


def pooled_two_ways(pooled: list[tuple[str, dict, dict]], ways: tuple[str, str], conds: tuple[str, ...],
                    splits: tuple[str, ...]) -> dict:
    """Judged answers of the same questions two ways (``pooled``: run, first way's row, second's), per split and
    answerer in ``conds``: each way's mean with its 95 % CI, the paired change (second − first) and the invented-value
    shares, grouped by fact over the runs; printed as it goes, returned keyed by split, answerer and ``ways``."""
    from tunebook.evaluate import fact_group
    from tunebook.stats import fmt, mean_ci, paired_delta_ci

    first, second = ways
    summary: dict = {}
    for s in splits:
        part = [(run, x, y) for run, x, y in pooled if x.get("split") == s]
        if not part:
            continue
        groups = [f"{run}:{fact_group(x)}" for run, x, _ in part]
        summary[s] = {"n": len(part)}
        tuned = mean_ci([x["tuned_judge"] for _, x, _ in part], groups=groups)
        print(f"  {s} (n={len(part)}): fine-tuned {fmt(tuned)}")
        for c in conds:
            a = [x[f"{c}_judge"] for _, x, _ in part]
            b = [y[f"{c}_judge"] for _, _, y in part]
            inv = [sum(x[f"{c}_outcome"] == "invents" for x in xs) / len(part)
                   for xs in ([x for _, x, _ in part], [y for _, _, y in part])]
            summary[s][c] = {first: mean_ci(a, groups=groups), second: mean_ci(b, groups=groups),
                             "delta": paired_delta_ci(b, a, groups=groups), "invents": [round(v, 3) for v in inv]}
            print(f"    {c:10s} {fmt(summary[s][c][first])} → {fmt(summary[s][c][second])}   "
                  f"Δ {fmt(summary[s][c]['delta'])}   invents {inv[0]:.2f} → {inv[1]:.2f}")
    return summary


def runs_at_or_above_both(table: list[dict], keys: tuple[str, str], conds: tuple[str, ...]) -> dict:
    """Per answerer in ``conds``, in how many runs of ``table`` its recall mean is at or above both the fine-tuned
    student's and base + RAG's, the first way (``keys[0]``: each run's :func:`split_means` per split) and the second;
    printed, and returned as ``runs_<answerer>_at_or_above_both``: [first, second, runs]."""
    out = {}
    for c in conds:
        a, b = (sum(meets(t[k]["recall"], c) for t in table) for k in keys)
        out[f"runs_{c}_at_or_above_both"] = [a, b, len(table)]
        print(f"  runs where {c} ≥ both fine-tuned and base + RAG on recall: {a} → {b} of {len(table)}")
    return out
