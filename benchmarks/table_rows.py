"""Do RAG prompts read tables better with each row written as a line of its own (``evaluate.table_rows``)?

Looking at where fine-tuned + RAG lost to the closed-book student or to base + RAG (RESULTS.md, session 17), most of
its wrong answers read the neighbouring row of a Markdown table in its prompt: 25,000 (buses) for "how many
generators" in 8 of 13 samples/docs runs, BW-204's fix for BW-310, `--threads` 8 from an example command next to the
flag table. :func:`tunebook.retrieval.table_rows` writes each row as "Generators per model — Community: 150;
Professional: 4,000": the row names its columns.

Same run, same code, both ways: for each finished run, the eval questions whose RAG prompts hold a table (the
others' prompts do not change) are answered again by 05's :func:`tunebook.evaluate.compare` — the run's adapter and
settings, gates included — once with tables as written and once as rows, and both are judged by the run's teacher
(start it first, as 01 would; the judge cache is copied, the run dir is not touched). Printed per run and pooled per
split with paired, fact-level 95 % intervals; the run-level "fine-tuned + RAG ≥ both" target uses the recorded rows
for the questions without a table.

    .venv/bin/python benchmarks/table_rows.py --label samples/docs outputs/demo-s1[1-6]*
    .venv/bin/python benchmarks/table_rows.py --label CloudPSS outputs/cps-s16b
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate, models  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.retrieval import Index, table_rows  # noqa: E402
from bench_io import (judged, meets, pooled_two_ways, run_settings, runs_at_or_above_both,  # noqa: E402
                      split_means, write_result)

CONDS = ("rag", "tuned_rag", "surer")
SPLITS = ("recall", "unseen", "outofdocs")


def with_tables(rows: list[dict], index: Index) -> set[str]:
    """Ids of the rows whose RAG prompts (base + RAG's chunks, fine-tuned + RAG's) hold a Markdown table."""
    tabled = {cid for cid, text in zip(index.chunk_ids, index.texts) if table_rows(text) != text}
    return {r["id"] for r in rows if tabled & set((r.get("rag_chunks") or []) + (r.get("tuned_rag_chunks") or []))}


def answer(run: Path, eval_rows: list[dict], index: Index, cfg, model, tok, trained: dict) -> list[dict]:
    ev = cfg.evaluate
    return evaluate.compare_with(ev, model, tok, eval_rows, trained["system_prompt"], rag_index=index,
                                 train_rows=list(read_jsonl(run / "data" / "train.jsonl")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished, judged run dirs")
    ap.add_argument("--label", default="", help="the corpus, for the printed table and the JSON file's name")
    a = ap.parse_args(argv)
    table, pooled_rows = [], []  # pooled: (run, off row, on row)
    for run in a.runs:
        gen = run / "eval" / evaluate.GENERATIONS_FILE
        if not gen.is_file():
            print(f"{run.name}: no eval/{evaluate.GENERATIONS_FILE}, skipped")
            continue
        recorded = list(read_jsonl(gen))
        cfg = run_settings(run)
        chunks = list(read_jsonl(run / "data" / "chunks.jsonl"))
        plain = Index.build(chunks, cfg.evaluate.rag_tokenizer)
        rows_index = Index.build(chunks, cfg.evaluate.rag_tokenizer, table_rows=True)
        ids = with_tables(recorded, plain)
        eval_rows = [r for r in read_jsonl(run / "data" / "eval.jsonl") if r["id"] in ids]
        if not eval_rows:
            print(f"{run.name}: no RAG prompt held a table, skipped")
            continue
        t0 = time.time()
        adapter_dir = run / "train" / "adapter"
        trained = evaluate.trained_record(adapter_dir)
        model, tok = evaluate.load_tuned(adapter_dir, models.hf_model(trained["student"]), cfg.evaluate.precision)
        off = judged(answer(run, eval_rows, plain, cfg, model, tok, trained), run)
        on = judged(answer(run, eval_rows, rows_index, cfg, model, tok, trained), run)
        del model
        off_by, on_by = {r["id"]: r for r in off}, {r["id"]: r for r in on}
        whole_off = [off_by.get(r["id"], r) for r in recorded]
        whole_on = [on_by.get(r["id"], r) for r in recorded]
        changed = {c: sum(off_by[i][c] != on_by[i][c] for i in off_by) for c in CONDS}
        row = {"run": run.name, "questions": len(eval_rows), "changed": changed, "seconds": round(time.time() - t0),
               **{k: {s: split_means(rows, s, CONDS) for s in SPLITS}
                  for k, rows in (("off", off), ("on", on), ("run_off", whole_off), ("run_on", whole_on))}}
        table.append(row)
        pooled_rows += [(run.name, off_by[i], on_by[i]) for i in off_by]
        f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        r_off, r_on = row["off"]["recall"], row["on"]["recall"]
        print(f"{run.name}: {len(eval_rows)} questions with a table ({r_off['n']} recall), {row['seconds']} s, "
              f"answers changed {changed} · recall " + " · ".join(f"{c} {f(r_off[c])}→{f(r_on[c])}" for c in CONDS)
              + f" · whole run fine-tuned + RAG ≥ both: {meets(row['run_off']['recall'], 'tuned_rag')} → "
              f"{meets(row['run_on']['recall'], 'tuned_rag')}", flush=True)
    if not table:
        sys.exit("no run with a table in its RAG prompts among the given dirs")
    summary: dict = {}
    print(f"\npooled over {len(table)} runs ({a.label or 'runs given'}), the questions whose RAG prompts hold a table; "
          "judge 0–5 with 95 % CI, paired by fact:")
    summary |= pooled_two_ways(pooled_rows, ("off", "on"), CONDS, SPLITS)
    summary |= runs_at_or_above_both(table, ("run_off", "run_on"), CONDS)
    write_result(f"table_rows-{(a.label or 'runs').replace('/', '_')}", {"runs": table, "pooled": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
