"""05 with the hybrid engine (``evaluate.engine=hybrid``): llama.cpp for the closed-book and general prompts,
transformers for the RAG prompts. Faster, and are the numbers the same?

On a 2-core CPU the closed-book and general answers are decode-bound, where llama-server serving the student's own
GGUF with the LoRA as GGUF decodes 1.2–1.6× faster than bf16 transformers (``eval_engine.py``), while RAG prompts
are prompt-bound, where transformers is faster (RESULTS.md, sessions 9 and 32). The hybrid sends each kind of prompt
to the engine that is faster for it. The weights are the same numbers (04 trains on the GGUF's dequantized copy);
llama.cpp quantizes activations, so some answers change wording — this benchmark measures whether the scores do.

Same run, same code, both ways, one process: for each finished run every eval question is answered by 05's
:func:`tunebook.evaluate.compare` (the run's adapter, settings, gates and scope switch) and the forgetting check's
general prompts by :func:`tunebook.forgetting.forgetting_check`, once with transformers only and once hybrid — in
alternating order over the runs — and everything is judged by the run's teacher (start it first, as 01 would; the
judge cache is copied, the run dir is not touched). Printed per run and pooled per split with paired, fact-level
95 % intervals: each way's answering seconds (the llama-server start and LoRA conversion counted in the hybrid's),
how many answers changed, the judge per answerer, the invented-value shares and the general change.

    .venv/bin/python benchmarks/hybrid_engine.py --label samples/docs outputs/demo-s31a outputs/demo-s30a
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate, forgetting, scope  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.retrieval import Index  # noqa: E402
from tunebook.serve import Teacher  # noqa: E402
from tunebook.stats import fmt, paired_delta_ci  # noqa: E402
from bench_io import (judge_scratch, judged, pooled_two_ways, run_settings, runs_at_or_above_both,  # noqa: E402
                      split_means, tuned_student, write_result)

WAYS = ("transformers", "hybrid")
CONDS = ("base", "rag", "tuned_rag", "surer", "switched")
SPLITS = ("recall", "unseen", "outofdocs")


def answer(run: Path, cfg, model, tok, trained: dict, index: Index, switch, server, scratch: Path) -> tuple[list, list, float]:
    """05's answering cell and forgetting check, as 05 runs them (``server``: None for transformers only)."""
    ev = cfg.evaluate
    t0 = time.time()
    rows = evaluate.compare_with(ev, model, tok, list(read_jsonl(run / "data" / "eval.jsonl")),
                                 trained["system_prompt"], rag_index=index, server=server,
                                 train_rows=list(read_jsonl(run / "data" / "train.jsonl")), switch=switch)
    general = forgetting.forgetting_check_with(ev, model, tok, None, scratch, trained["system_prompt"], server=server,
                                               switch=switch)["rows"]
    return rows, general, time.time() - t0


def judged_general(rows: list[dict], run: Path) -> dict:
    """The forgetting check's rows judged as 05 judges them, in a :func:`bench_io.judge_scratch` dir."""
    with judge_scratch(run) as scratch:
        forgetting.score_general(rows, Teacher.load(run), scratch)
    return forgetting.general_metrics(rows)


def one_run(run: Path, n_run: int) -> tuple[dict, list, list] | None:
    cfg = run_settings(run)
    ev = cfg.evaluate
    if not ev.rag:
        print(f"{run.name}: RAG off, skipped")
        return None
    index = Index.build(list(read_jsonl(run / "data" / "chunks.jsonl")), ev.rag_tokenizer, table_rows=ev.table_rows,
                        passage_lines=ev.rag_lines)
    model, tok, trained = tuned_student(run, ev)
    switch = (scope.for_run(model, tok, list(read_jsonl(run / "data" / "train.jsonl")), cfg.train.replay_prompts)
              if ev.scope_switch else None)
    answered, general, seconds = {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for way in (WAYS if n_run % 2 == 0 else WAYS[::-1]):  # alternate which way goes first
            t0, server = time.time(), None
            if way == "hybrid":
                server = evaluate.start_student(ev.model_copy(update={"engine": "hybrid"}), trained,
                                                run / "train" / "adapter", Path(scratch) / "server")
            try:
                answered[way], general[way], s = answer(run, cfg, model, tok, trained, index, switch, server,
                                                        Path(scratch))
            finally:
                if server is not None:
                    server.stop()
            seconds[way] = round(time.time() - t0, 1)
            print(f"{run.name}: {way} answered in {seconds[way]:.0f} s ({s:.0f} s answering)", flush=True)
    del model
    rows = {w: judged(answered[w], run) for w in WAYS}
    gen = {w: judged_general(general[w], run) for w in WAYS}
    by = {w: {r["id"]: r for r in rows[w]} for w in WAYS}
    ids = list(by["transformers"])
    changed = {c: sum(by["transformers"][i][c] != by["hybrid"][i][c] for i in ids) for c in ("tuned", *CONDS)}
    changed["general_base"], changed["general_tuned"] = (
        sum(x[m] != y[m] for x, y in zip(general["transformers"], general["hybrid"])) for m in ("base", "tuned"))
    row = {"run": run.name, "questions": len(ids), "seconds": seconds, "changed": changed,
           **{w: {s: split_means(rows[w], s, CONDS) for s in SPLITS} for w in WAYS},
           "general": {w: {k: gen[w].get(k) for k in ("base_judge", "tuned_judge", "switched_judge", "judge_change",
                                                       "switched_change")} for w in WAYS},
           "general_changed": [{"question": x["question"], "reference": x.get("reference"),
                                **{f"{m}_{w}": (r[m], r.get(f"{m}_judge")) for w, r in zip(WAYS, (x, y))}}
                               for x, y in zip(general["transformers"], general["hybrid"]) for m in ("base", "tuned")
                               if x[m] != y[m]]}
    g = row["general"]
    print(f"{run.name}: {len(ids)} questions; 05's answering {seconds['transformers']:.0f} s → {seconds['hybrid']:.0f} s "
          f"({seconds['transformers'] / seconds['hybrid']:.2f}×); answers changed {changed}; recall "
          + " · ".join(f"{c} {row['transformers']['recall'][c]}→{row['hybrid']['recall'][c]}" for c in ("tuned", *CONDS))
          + f"; general change {fmt(g['transformers']['judge_change'])} → {fmt(g['hybrid']['judge_change'])}",
          flush=True)
    pooled = [(run.name, by["transformers"][i], by["hybrid"][i]) for i in ids]
    general_pairs = [(run.name, x, y) for x, y in zip(general["transformers"], general["hybrid"])]
    return row, pooled, general_pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished, judged run dirs (RAG on)")
    ap.add_argument("--label", default="", help="the corpus, for the printed table and the JSON file's name")
    a = ap.parse_args(argv)
    table, pooled, general_pairs = [], [], []
    for n_run, run in enumerate(a.runs):
        out = one_run(run.resolve(), n_run)
        if out:
            table.append(out[0])
            pooled += out[1]
            general_pairs += out[2]
    if not table:
        sys.exit("no finished run with RAG among the given dirs")
    summary: dict = {"seconds": {w: round(sum(t["seconds"][w] for t in table), 1) for w in WAYS}}
    print(f"\npooled over {len(table)} runs ({a.label or 'runs given'}); 05's answering "
          f"{summary['seconds']['transformers']:.0f} s → {summary['seconds']['hybrid']:.0f} s "
          f"({summary['seconds']['transformers'] / summary['seconds']['hybrid']:.2f}×); judge 0–5 with 95 % CI, "
          "paired by fact:")
    summary |= pooled_two_ways(pooled, WAYS, ("tuned", *CONDS), SPLITS)
    summary |= runs_at_or_above_both(table, WAYS, ("tuned_rag", "surer"))
    for m in ("base", "tuned", "switched"):
        a_, b_ = ([p[k].get(f"{m}_judge") for p in general_pairs] for k in (1, 2))
        if None not in a_ + b_:
            summary[f"general_{m}_delta"] = paired_delta_ci(b_, a_)
            print(f"  general prompts (n={len(a_)}), {m}: hybrid − transformers {fmt(summary[f'general_{m}_delta'])}")
    write_result(f"hybrid_engine-{(a.label or 'runs').replace('/', '_')}", {"runs": table, "pooled": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
