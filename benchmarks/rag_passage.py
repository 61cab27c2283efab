"""RAG prompts with the passage about the question instead of whole chunks (``evaluate.rag_lines``): faster, and no worse?

05's two RAG passes are most of its answering time on a 2-core CPU: a whole 384-token chunk is ~300 tokens of prompt
per answer, read at the CPU's matmul peak (RESULTS.md, session 26), and fine-tuned + RAG reads two chunks with draft
search. Where fine-tuned + RAG lost to the closed-book student, it mostly read a neighbouring table row of its prompt
(RESULTS.md, session 17; demo-s30a: BW-101 and BW-310 answered with BW-204's meaning). :func:`tunebook.retrieval.passage`
keeps of each retrieved chunk the line that shares the most (idf-weighted) terms with the question — with the
student's closed-book draft for fine-tuned + RAG — ``--lines`` lines either side, its section heading and a cut
table's header. The chunks BM25 finds are the same; only how much of them the prompt holds changes. 05 gives
passages to the fine-tuned student's RAG prompts only; ``--base-too`` cuts base + RAG's as well (session 31: −0.22
[−0.44, −0.04] on samples/docs recall, so the baseline keeps whole chunks).

Same run, same code, both ways, one process: for each finished run every eval question is answered by 05's
:func:`tunebook.evaluate.compare` (the run's adapter and settings, gates included) once with whole chunks and once
with passages — in alternating order over the runs — and both are judged by the run's teacher (start it first, as 01
would; the judge cache is copied, the run dir is not touched). Printed per run and pooled per split with paired,
fact-level 95 % intervals, the mean RAG context in student tokens, and each way's answering seconds (the closed-book
answers are the same work both ways, so the difference is the RAG passes').

    .venv/bin/python benchmarks/rag_passage.py --label samples/docs outputs/demo-s30a outputs/demo-s29a
    .venv/bin/python benchmarks/rag_passage.py --label CloudPSS --base-too outputs/cps-s26a
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.retrieval import Index  # noqa: E402
from bench_io import (judged, meets, pooled_two_ways, run_settings, runs_at_or_above_both,  # noqa: E402
                      split_means, tuned_student, write_result)

CONDS = ("rag", "tuned_rag", "surer")
SPLITS = ("recall", "unseen", "outofdocs")


def answer(run: Path, eval_rows: list[dict], index: Index, cfg, model, tok, trained: dict,
           base_too: bool = False) -> tuple[list[dict], float]:
    ev = cfg.evaluate
    t0 = time.time()
    rows = evaluate.compare_with(ev, model, tok, eval_rows, trained["system_prompt"], rag_index=index,
                                 train_rows=list(read_jsonl(run / "data" / "train.jsonl")), base_passages=base_too)
    return rows, time.time() - t0


def context_tokens(rows: list[dict], index: Index, tok, base_too: bool) -> dict[str, float]:
    """Mean student tokens of the chunks (or passages) each RAG prompt held: base + RAG's, fine-tuned + RAG's."""
    pos = {cid: i for i, cid in enumerate(index.chunk_ids)}
    out = {}
    for cond, about in (("rag", lambda r: r["question"] if base_too else ""),
                        ("tuned_rag", lambda r: f"{r['question']}\n{r.get('tuned_ungated', r['tuned'])}")):
        n = [len(tok(index.context([pos[c] for c in r.get(f"{cond}_chunks") or []], about(r)))["input_ids"])
             for r in rows]
        out[cond] = round(sum(n) / max(1, len(n)), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished, judged run dirs (RAG on)")
    ap.add_argument("--lines", type=int, default=3, help="lines either side of the best line (evaluate.rag_lines)")
    ap.add_argument("--base-too", action="store_true",
                    help="base + RAG's prompts hold passages too (05 gives them only to the fine-tuned student)")
    ap.add_argument("--label", default="", help="the corpus, for the printed table and the JSON file's name")
    a = ap.parse_args(argv)
    table, pooled_rows = [], []  # pooled: (run, whole row, passage row)
    for n_run, run in enumerate(a.runs):
        cfg = run_settings(run)
        eval_rows = list(read_jsonl(run / "data" / "eval.jsonl"))
        if not eval_rows or not cfg.evaluate.rag:
            print(f"{run.name}: no eval rows or RAG off, skipped")
            continue
        chunks = list(read_jsonl(run / "data" / "chunks.jsonl"))
        whole_ix = Index.build(chunks, cfg.evaluate.rag_tokenizer, table_rows=cfg.evaluate.table_rows)
        part_ix = Index.build(chunks, cfg.evaluate.rag_tokenizer, table_rows=cfg.evaluate.table_rows,
                              passage_lines=a.lines)
        model, tok, trained = tuned_student(run, cfg.evaluate)
        ways = [("whole", whole_ix), ("passage", part_ix)]
        answered, seconds = {}, {}
        for name, ix in (ways if n_run % 2 == 0 else ways[::-1]):  # alternate which way goes first
            answered[name], seconds[name] = answer(run, eval_rows, ix, cfg, model, tok, trained, a.base_too)
            print(f"{run.name}: {name} answered in {seconds[name]:.0f} s", flush=True)
        tokens = {name: context_tokens(answered[name], ix, tok, a.base_too) for name, ix in ways}
        del model
        whole, part = judged(answered["whole"], run), judged(answered["passage"], run)
        w_by, p_by = {r["id"]: r for r in whole}, {r["id"]: r for r in part}
        changed = {c: sum(w_by[i][c] != p_by[i][c] for i in w_by) for c in CONDS}
        row = {"run": run.name, "questions": len(eval_rows), "changed": changed,
               "seconds": {k: round(v, 1) for k, v in seconds.items()}, "context_tokens": tokens,
               **{k: {s: split_means(rows, s, CONDS) for s in SPLITS}
                  for k, rows in (("whole", whole), ("passage", part))}}
        table.append(row)
        pooled_rows += [(run.name, w_by[i], p_by[i]) for i in w_by]
        f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        r_w, r_p = row["whole"]["recall"], row["passage"]["recall"]
        print(f"{run.name}: {len(eval_rows)} questions ({r_w['n']} recall); answering {seconds['whole']:.0f} s → "
              f"{seconds['passage']:.0f} s; context tokens {tokens['whole']} → {tokens['passage']}; answers changed "
              f"{changed} · recall " + " · ".join(f"{c} {f(r_w[c])}→{f(r_p[c])}" for c in CONDS)
              + f" · fine-tuned + RAG ≥ both: {meets(r_w, 'tuned_rag')} → {meets(r_p, 'tuned_rag')}", flush=True)
    if not table:
        sys.exit("no finished run with RAG among the given dirs")
    summary: dict = {"lines": a.lines,
                     "seconds": {k: round(sum(t["seconds"][k] for t in table), 1) for k in ("whole", "passage")}}
    print(f"\npooled over {len(table)} runs ({a.label or 'runs given'}), passages of ±{a.lines} lines; answering "
          f"{summary['seconds']['whole']:.0f} s → {summary['seconds']['passage']:.0f} s "
          f"({summary['seconds']['whole'] / summary['seconds']['passage']:.2f}×); "
          "judge 0–5 with 95 % CI, paired by fact:")
    summary |= pooled_two_ways(pooled_rows, ("whole", "passage"), CONDS, SPLITS)
    summary |= runs_at_or_above_both(table, ("whole", "passage"), CONDS)
    write_result(f"rag_passage-{(a.label or 'runs').replace('/', '_')}-lines{a.lines}{'-base-too' * a.base_too}",
                 {"runs": table, "pooled": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
