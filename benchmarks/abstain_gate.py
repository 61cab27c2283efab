"""Does a confidence gate stop the fine-tuned student from inventing values, and what does it cost on recall?

For each finished run dir (01–05 done, judged), the eval questions are answered again with 05's own code
(``evaluate.compare``: same prompts, same retrieval, greedy), which now also records each answer's confidence —
the lowest probability the student gave a token it chose. The answers must match the judged ones in
``eval/generations.jsonl`` (counted, never assumed). Then the fine-tuned answers are re-scored with the gate at
several thresholds: an answer under the threshold becomes "the docs don't cover this" — it states no key fact
(judge 0, exact key values 0) and it abstains. Threshold 0 is the run as judged: the baseline, in the same table.

    .venv/bin/python benchmarks/abstain_gate.py outputs/knowledge-s8-today outputs/knowledge-s8-cloudpss-today

Prints, per run: recall judge and exact key values, unseen judge / invents / abstains, out-of-docs invents, for the
fine-tuned student closed-book and with retrieval; writes the table as JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate, models, retrieval, settings, synthesize  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402

GATED = ("tuned", "tuned_rag")


def answered_again(run: Path) -> tuple[list[dict], dict]:
    cfg = settings.load(str(run / "params.yaml"))
    ev = cfg.evaluate
    judged = list(read_jsonl(run / "eval" / evaluate.GENERATIONS_FILE))
    wanted = {r["id"] for r in judged}
    eval_rows = [r for r in synthesize.read_jsonl(run / "data" / "eval.jsonl") if r["id"] in wanted]
    trained = evaluate.trained_record(run / "train" / "adapter")
    model, tok = evaluate.load_tuned(run / "train" / "adapter", models.hf_model(trained["student"]), ev.precision)
    index = (retrieval.Index.build(synthesize.read_jsonl(run / "data" / "chunks.jsonl"), ev.rag_tokenizer)
             if "rag" in judged[0] else None)
    rows = evaluate.compare(model, tok, eval_rows, ev.max_new_tokens, ev.batch_size, trained["system_prompt"],
                            rag_index=index, rag_k=ev.rag_k)
    by_id = {r["id"]: r for r in rows}
    same = {c: 0 for c in evaluate.conditions_in(judged)}
    for r in judged:
        for c in same:
            new = by_id[r["id"]]
            same[c] += new[c] == r[c]
            r[f"{c}_confidence"] = new[f"{c}_confidence"]
    return judged, {"corpus": cfg.corpus, "same_answer": same, "n": len(judged)}


def gated(rows: list[dict], threshold: float) -> list[dict]:
    out = copy.deepcopy(rows)
    for r in out:
        for c in GATED:
            if c in r and evaluate.gate(r[c], r.get(f"{c}_confidence"), threshold, r["question"]) != r[c]:
                r[f"{c}_judge"] = 0.0 if r.get(f"{c}_judge") is not None else None
                r[f"{c}_exact_values"] = 0.0 if r.get(f"{c}_exact_values") is not None else None
                r[f"{c}_outcome"] = "abstains"
    return out


def surer(rows: list[dict]) -> None:
    """Adds the condition ``surer``: of the fine-tuned student's two answers (closed-book, with the retrieved chunk)
    the one it was more confident of — what a product that has both could answer with."""
    for r in rows:
        if "tuned_rag" not in r:
            continue
        c = evaluate.surer_pick(r.get("tuned_confidence"), r.get("tuned_rag_confidence"))
        for m in ("judge", "exact_values", "outcome"):
            r[f"surer_{m}"] = r.get(f"{c}_{m}")
        r["surer"] = r[c]


def table(rows: list[dict], thresholds: list[float]) -> list[dict]:
    res = []
    for t in thresholds:
        g = gated(rows, t)
        surer(g)
        line: dict = {"threshold": t}
        for split in ("recall", "unseen", "outofdocs"):
            s = evaluate.summarize([r for r in g if r["split"] == split])  # "surer" is one of 05's conditions
            line[f"{split}_n"] = s["n"]
            for c in ("base", *GATED, "surer"):
                if f"{c}_outcomes" not in s:
                    continue
                line[f"{split}_{c}_judge"] = s.get(f"{c}_judge")
                line[f"{split}_{c}_exact"] = s.get(f"{c}_exact_values")
                line[f"{split}_{c}_invents"] = s[f"{c}_outcomes"]["invents"]
                line[f"{split}_{c}_abstains"] = s[f"{c}_outcomes"]["abstains"]
        res.append(line)
    return res


def show(run: str, info: dict, res: list[dict]) -> None:
    def f(v):
        return "  –  " if v is None else f"{v:5.2f}"

    print(f"\n## {run} — corpus {info['corpus']}, {info['n']} questions "
          f"(recall {res[0]['recall_n']}, unseen {res[0]['unseen_n']}, out-of-docs {res[0]['outofdocs_n']}); "
          f"answers equal to the judged ones: {info['same_answer']}")
    print(f"base: recall judge {f(res[0].get('recall_base_judge'))}, unseen judge {f(res[0].get('unseen_base_judge'))}"
          f", unseen invents {f(res[0].get('unseen_base_invents'))}, out-of-docs invents "
          f"{f(res[0].get('outofdocs_base_invents'))}")
    for c in (*GATED, "surer"):
        label = evaluate.CONDITION_LABELS.get(c, "fine-tuned, the surer of its closed-book and RAG answers")
        print(f"\n{label}:\n| gate below | recall judge | recall exact | unseen judge | unseen invents"
              " | unseen abstains | out-of-docs invents | out-of-docs abstains |\n|---|---|---|---|---|---|---|---|")
        for line in res:
            print(f"| {line['threshold']:.2f} | " + " | ".join(f(line.get(k)) for k in (
                f"recall_{c}_judge", f"recall_{c}_exact", f"unseen_{c}_judge", f"unseen_{c}_invents",
                f"unseen_{c}_abstains", f"outofdocs_{c}_invents", f"outofdocs_{c}_abstains")) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--thresholds", default="0,0.2,0.3,0.4,0.5,0.6")
    args = ap.parse_args()
    thresholds = [float(x) for x in args.thresholds.split(",")]
    report = {"date": date.today().isoformat(), "runs": {}}
    for run in args.runs:
        judged, info = answered_again(Path(run))
        res = table(judged, thresholds)
        show(run, info, res)
        report["runs"][run] = {**info, "table": res,
                               "confidence": [{k: r.get(k) for k in ("id", "split", *(
                                   f"{c}_{m}" for c in evaluate.conditions_in(judged)
                                   for m in ("confidence", "outcome", "judge")))} for r in judged]}
    out = ROOT / "benchmarks" / "results" / f"abstain_gate-{report['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
