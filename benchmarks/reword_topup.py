"""Does a trained rewording per fact help recall? The same synthesis and eval, with the missing rewordings filled in.

03 trains one rewording per pair (``inspect.train_rewordings`` 1) out of the teacher's paraphrases left after the
recall wording. Session 35 found that about half the recalled pairs of a run get none: 02's first paraphrase is often
the question copied as it is (16 of 34 train pairs on samples/docs, 15 of 53 on CloudPSS), so the one real rewording
goes to the recall eval and nothing is left to train. Pooled over four runs, recall questions whose pair had a trained
rewording scored 4.39 against 3.82 (CloudPSS 4.47 against 3.08) — an observation, confounded by which questions the
teacher copies.

This measures it as an intervention. It copies finished run dir SRC (01 and 02 only) to a new run dir, asks the teacher
for ``-k`` more paraphrases of every train pair that was asked in the recall split but trained no rewording (02's
paraphrase request, the prompts folder ``--prompts``, another seed than 02's), and writes them into the copy's
``dataset.jsonl`` after the pair's recall wording. 03 picks recall wordings before it adds training rewordings, so the
copy's eval is SRC's question for question (checked after 03 by ``--check``); only the topped-up pairs' training
changes. Then continue the copy like any synthesis, e.g.

    .venv/bin/python benchmarks/reword_topup.py outputs/cps-s34a --out s35cps-topup-synth
    .venv/bin/python benchmarks/knowledge.py --synth outputs/s35cps-topup-synth --prefix s35cpsrw --rows defaults
    .venv/bin/python benchmarks/reword_topup.py outputs/cps-s34a --check outputs/s35cpsrw-defaults

``--check RUN`` (no teacher): RUN's eval against SRC's, and recall per answerer for the topped-up pairs and for the
rest, each SRC → RUN with paired 95 % intervals (the rest is the retraining's own noise).
Needs the run's teacher (started from the run's params if it is not running; stopped again after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tunebook import serve, settings, stats  # noqa: E402
from tunebook.corpus import Chunk  # noqa: E402
from tunebook.jsonio import read_jsonl, write_jsonl  # noqa: E402
from tunebook.pairs import question  # noqa: E402
from tunebook.splitting import add_train_similarity, rewording  # noqa: E402
from tunebook.text import normalize  # noqa: E402
from bench_io import write_result  # noqa: E402
from paraphrase_yield import ask_all  # noqa: E402

CONDS = ("tuned", "rag", "tuned_rag", "surer")


def pair(g: dict) -> str:
    """The train pair a recall row asks about (generations.jsonl keeps the id, "<pair>-p", not ``paraphrase_of``)."""
    return g.get("paraphrase_of") or g["id"].rsplit("-p", 1)[0]


def lacking(src: Path) -> dict[str, str]:
    """SRC's train pairs asked in recall that trained no rewording: pair id -> its recall wording."""
    recall = {r["paraphrase_of"]: question(r) for r in read_jsonl(src / "data" / "eval.jsonl")
              if r.get("split") == "recall" and r.get("paraphrase_of")}
    reworded = {r["reworded_from"] for r in read_jsonl(src / "data" / "train.jsonl") if r.get("reworded_from")}
    return {pid: q for pid, q in recall.items() if pid not in reworded}


def top_up(src: Path, out: Path, prompts: Path, k: int) -> dict:
    from knowledge import copy_run

    copy_run(src, out, ("01_serve", "02_synthesize"))
    need = lacking(src)
    rows = list(read_jsonl(out / "data" / "dataset.jsonl"))
    chunks = {c["id"]: Chunk(**{f: c[f] for f in Chunk.__dataclass_fields__}) for c in read_jsonl(out / "data" / "chunks.jsonl")}
    items = [(r, chunks[r["chunk_id"]]) for r in rows if r["id"] in need]
    try:
        said = asyncio.run(ask_all(out, items, prompts, settings.SynthSettings(paraphrases=k), salt="topup:"))
    finally:
        serve.stop(out)
    added, log = 0, []
    for (r, _), ps in zip(items, said):
        recall_q = need[r["id"]]
        old = [p for p in r.get("paraphrases") or [] if normalize(p) != normalize(recall_q)]
        fresh = [p for p in ps if normalize(p) != normalize(recall_q) and rewording(p, r)]  # 02's request drops copies
        added += bool(fresh)
        r["paraphrases"] = [recall_q, *dict.fromkeys(fresh), *old]
        log.append({"id": r["id"], "question": question(r), "recall": recall_q, "asked": ps, "kept": fresh})
    write_jsonl(rows, out / "data" / "dataset.jsonl")
    (out / "data" / "topup.json").write_text(json.dumps({"src": str(src), "prompts": str(prompts), "pairs": log},
                                                         ensure_ascii=False, indent=1))
    print(f"{len(need)} recalled pairs without a trained rewording; {added} got at least one usable new paraphrase → {out}")
    return {"lacking": len(need), "topped_up": added}


def check(src: Path, run: Path) -> dict:
    """RUN's eval is SRC's; recall per answerer on the topped-up pairs and on the rest, SRC → RUN."""
    same = [question(r) for r in read_jsonl(src / "data" / "eval.jsonl")] == \
           [question(r) for r in read_jsonl(run / "data" / "eval.jsonl")]
    log = json.loads((run / "data" / "topup.json").read_text())  # knowledge.py copies data/ with it
    topped = {p["id"] for p in log["pairs"] if p["kept"]}
    trained = {r["reworded_from"] for r in read_jsonl(run / "data" / "train.jsonl") if r.get("reworded_from")}
    a = {g["id"]: g for g in read_jsonl(src / "eval" / "generations.jsonl") if g.get("split") == "recall"}
    b = {g["id"]: g for g in read_jsonl(run / "eval" / "generations.jsonl") if g.get("split") == "recall"}
    out = {"same_eval": same, "topped_up_pairs": len(topped), "now_trained_of_them": len(topped & trained)}
    # how close the recall questions now are to anything trained (a top-up rewording may land nearer the recall
    # wording than 02's did: that would lift recall by wording, not by knowledge)
    sim = {}
    for tag, d in (("before", src), ("after", run)):
        ev = [r for r in read_jsonl(d / "data" / "eval.jsonl") if r.get("split") == "recall"]
        add_train_similarity(ev, list(read_jsonl(d / "data" / "train.jsonl")))
        sim[tag] = {r["paraphrase_of"]: r["train_similarity"] for r in ev}
    for name, pick in (("topped up", lambda g: pair(g) in topped), ("the rest", lambda g: pair(g) not in topped),
                       ("all", lambda g: True)):
        ids = [i for i in a if i in b and pick(a[i])]
        out[name] = {"n": len(ids)}
        pids = [pair(a[i]) for i in ids]
        out[name]["train_similarity"] = {t: round(sum(sim[t].get(q, 0) for q in pids) / max(1, len(pids)), 3) for t in sim}
        for c in CONDS if ids else ():
            x = [a[i][f"{c}_judge"] for i in ids]
            y = [b[i][f"{c}_judge"] for i in ids]
            out[name][c] = {"before": round(sum(x) / len(x), 2), "after": round(sum(y) / len(y), 2),
                            "after − before": stats.fmt(stats.paired_delta_ci(y, x))}
    print(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="a finished run dir (03 done: its eval and train split)")
    ap.add_argument("--out", default="", help="the new run dir's name under outputs/")
    ap.add_argument("--prompts", default="params/prompts", help="the prompts folder of the paraphrase request")
    ap.add_argument("-k", type=int, default=2, help="paraphrases asked per pair")
    ap.add_argument("--check", type=Path, default=None, help="a run continued from the copy: compare it with SRC")
    a = ap.parse_args(argv)
    if a.check:
        write_result(f"reword_topup-check-{a.check.name}", check(a.src, a.check))
        return 0
    if not a.out:
        ap.error("--out NAME (or --check RUN)")
    res = top_up(a.src, ROOT / "outputs" / a.out, (ROOT / a.prompts).resolve(), a.k)
    write_result(f"reword_topup-{a.out}", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
