"""Does the student know the docs? An ablation of the knowledge levers, each row measured on the same data and eval.

One synthesis (01+02) with every ingredient the levers need — ``synth.paraphrases`` rewordings per question and
``synth.abstain_questions`` "the docs don't say" questions per chunk — then, for each row, a copy of that run dir
continued with ``tunebook run --from 03`` and the row's settings. The eval is the same for every row: 03 picks the
recall paraphrases and the held-out chunks before it adds any training rewording, and the out-of-docs questions
are held out whether or not the rest is trained on. Exports are switched off (they don't change what is measured).

    .venv/bin/python benchmarks/knowledge.py                       # samples/docs, cpu profile, every row
    .venv/bin/python benchmarks/knowledge.py --corpus ../shared/corpora/cloudpss-sample --rows today,all
    .venv/bin/python benchmarks/knowledge.py --reuse                # rows only, over an existing synthesis
    .venv/bin/python benchmarks/knowledge.py --synth outputs/knowledge-20261201-synth --prefix knowledge-s8
    .venv/bin/python benchmarks/knowledge.py --synth outputs/demo-s14c --prefix s16 --rows today,today+neftune --repeats 3

Prints one table (recall judge and exact key values, unseen and out-of-docs invented-value rates, general judge,
train seconds) and writes it as JSON next to the runs; with ``--repeats N`` each row is trained N times and the
mean and range per row follow the table (training k > 1 with ``train.seed=k``: the same split and eval, another
LoRA initialisation and row order) — one recipe's recall moves by 0.25–0.4 between trainings (RESULTS.md, session
15) and its general change by up to 0.8 (session 22), more than most levers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUNEBOOK = str(Path(sys.executable).parent / "tunebook")

# the row name -> its settings over the base recipe (03/04 settings only: the synthesis is shared)
# every row names its learning rate: a reused synthesis keeps the settings it was made with (params.yaml)
_NONE = ["inspect.abstain_train=false", "inspect.abstain_swaps=0", "train.replay_fraction=0", "inspect.reverse_train=false"]
_LR = "train.learning_rate=0.001"  # the default until session 21 (5e-4 since; today's recipe is the row replay+kl4)
# replay by cross-entropy (train.replay_kl=0; the default is 4 since session 24: the row replay+kl4 is today's recipe)
_REPLAY = ["inspect.abstain_train=false", "inspect.abstain_swaps=0", "train.replay_fraction=0.1", "inspect.reverse_train=false",
           "train.replay_kl=0"]
ROWS: dict[str, list[str]] = {
    # the defaults as they ship (params/cpu.yaml; a reused synthesis keeps the settings it was made with), and the
    # context rows over them (session 35: aimed at fine-tuned + RAG reading another line of a chunk that holds the answer)
    "defaults": [],
    "defaults+context3": ["train.context_fraction=0.5", "train.context_lines=3", "train.max_length=768"],
    # session 7's recipe: lr 3e-4, no rewordings (the student got 65-72 % of its own train answers right verbatim)
    "s7": ["train.learning_rate=0.0003", "inspect.train_rewordings=0", *_NONE],
    "lr1e-3": [_LR, "inspect.train_rewordings=0", *_NONE],
    "today": [_LR, "inspect.train_rewordings=1", *_NONE],  # the defaults (the demo has no "docs don't say" items)
    # full-sentence answers: each bare train answer ("4,000") restated by the teacher naming what was asked
    "today+sentences": [_LR, "inspect.train_rewordings=1", *_NONE, "inspect.sentence_answers=true"],
    # sibling contrasts: facts whose questions differ in one name get one teacher-written item stating both answers
    "today+contrast": [_LR, "inspect.train_rewordings=1", *_NONE, "inspect.sibling_contrasts=true"],
    # NEFTune: noise on the input embeddings while training (against fitting one wording)
    "today+neftune": [_LR, "inspect.train_rewordings=1", *_NONE, "train.neftune_alpha=5"],
    "rewordings3": [_LR, "inspect.train_rewordings=3", *_NONE],
    # both directions: each pair's reverse question (value -> name, "Which error code means ...?") trained too
    "today+reverse": [_LR, "inspect.train_rewordings=1", *_NONE, "inspect.reverse_train=true"],  # a later -p wins
    "today+abstain": [_LR, "inspect.train_rewordings=1", "inspect.abstain_train=true", "inspect.abstain_swaps=1",
                      "train.replay_fraction=0", "inspect.reverse_train=false"],
    "today+replay": [_LR, "inspect.train_rewordings=1", "inspect.abstain_train=false", "inspect.abstain_swaps=0",
                     "train.replay_fraction=0.1", "inspect.reverse_train=false", "train.replay_kl=0"],
    # a quarter of the train set replayed (session 20: the forgetting check, graded against references, saw the
    # student forget half the general facts it knew)
    "today+replay25": [_LR, "inspect.train_rewordings=1", "inspect.abstain_train=false", "inspect.abstain_swaps=0",
                       "train.replay_fraction=0.25", "inspect.reverse_train=false", "train.replay_kl=0"],
    # forgetting levers over today+replay (session 21; "LoRA Learns Less and Forgets Less", Biderman et al. 2024:
    # forgetting grows with rank, learning rate and passes; facts live mostly in the MLP weights)
    "replay+r4": [_LR, "inspect.train_rewordings=1", *_REPLAY, "train.lora_r=4", "train.lora_alpha=8"],
    "replay+mlp": [_LR, "inspect.train_rewordings=1", *_REPLAY, "train.lora_targets=[gate_proj,up_proj,down_proj]"],
    "replay+ep3": [_LR, "inspect.train_rewordings=1", *_REPLAY, "train.epochs=3"],
    "replay+lr5e-4": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY],  # session 21-23's recipe
    # the targets in the student's own words (self-distillation, SDFT: Yang et al. 2024; session 22): the base student
    # restates each train answer in one sentence before training, kept where it holds the answer and adds nothing
    "replay+restyle": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.restyle_answers=true"],
    # the replay rows' answer tokens trained to the base's whole next-token distribution (KL, LoRA off for the base)
    # instead of its greedy answer (learning without forgetting; session 23)
    "replay+kl": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=1"],
    # the same KL four times as heavy (the replay rows' share of the loss without more rows to generate and train)
    "replay+kl4": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=4"],
    "replay+kl8": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=8"],
    "replay+kl16": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=16"],
    # twice the replay rows, KL x 4 (session 24: more of the base's distribution to match, not a heavier weight)
    "replay20+kl4": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=4",
                     "train.replay_fraction=0.2"],
    # a worked sum every third replay prompt (params/prompts/replay_worked.yaml; session 25: the fine-tuned student
    # answers the forgetting check's sums in one terse sentence, the base works them out first)
    "replay+kl4+worked": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=4",
                          "train.replay_prompts=replay_worked.yaml"],
    # each pass over the train split meets its own replay prompts (train.replay_rotate; session 27): five times the
    # general prompts over five passes, as many replay rows per pass (diversity over repetition, as for the facts)
    "replay+kl4+rotate": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=4",
                          "train.replay_rotate=true"],
    # LoRA dropout 0.1 on today's recipe (session 27; the default is 0)
    "replay+kl4+drop": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=4",
                        "train.lora_dropout=0.1"],
    # the KL from the base also at the documentation rows' prompt positions (their questions and the chat template,
    # which cross-entropy leaves untrained): learning without forgetting on the new data's inputs (session 27)
    "replay+kl4+pkl1": ["train.learning_rate=0.0005", "inspect.train_rewordings=1", *_REPLAY, "train.replay_kl=4",
                        "train.prompt_kl=1"],
    # the bottom half of the 24 layers frozen (Zheng et al. 2025, "spurious forgetting")
    "replay+top": [_LR, "inspect.train_rewordings=1", *_REPLAY, "train.lora_first_layer=12"],
    # probe and repair: one round on the facts the trained student misses in a new wording
    "lr1e-3+repair": [_LR, "inspect.train_rewordings=0", *_NONE, "train.repair_rounds=1"],
    "today+repair": [_LR, "inspect.train_rewordings=1", *_NONE, "train.repair_rounds=1"],
    # half the facts once more with their retrieved chunk in 05's RAG prompt (for fine-tuned + RAG)
    "today+context": [_LR, "inspect.train_rewordings=1", *_NONE, "train.context_fraction=0.5",
                      "train.max_length=768"],
    # the same with 3 lines of the chunk either side of the answer's line instead of the whole chunk (cheaper rows)
    "today+context3": [_LR, "inspect.train_rewordings=1", *_NONE, "train.context_fraction=0.5",
                       "train.context_lines=3", "train.max_length=768"],
    # and half of those with their numbers changed in chunk and answer: the answer only in the chunk (teaches reading)
    "today+context3+swaps": [_LR, "inspect.train_rewordings=1", *_NONE, "train.context_fraction=0.5",
                             "train.context_lines=3", "train.context_swaps=0.5", "train.max_length=768"],
    # and the RAFT mix: of the context rows, 40 % with swapped numbers (the chunk wins when it has the fact) and 40 %
    # with wrong chunks only (the answer from memory when retrieval misses), 20 % as retrieved
    "today+context3+mix": [_LR, "inspect.train_rewordings=1", *_NONE, "train.context_fraction=0.5",
                           "train.context_lines=3", "train.context_swaps=0.4", "train.context_distractors=0.4",
                           "train.max_length=768"],
}
QUIET_05 = ["evaluate.export_adapter=false", "evaluate.export_merged=false", "evaluate.gguf_types=[]",
            "evaluate.verify_gguf=[]", "evaluate.verify_vllm=false"]


def run(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([TUNEBOOK, "run", "--quiet", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"tunebook run {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return time.perf_counter() - t0


def row_numbers(run_dir: Path) -> dict:
    m = json.loads((run_dir / "eval" / "metrics.json").read_text())
    t = json.loads((run_dir / "train" / "train_metrics.json").read_text())
    rec = json.loads((run_dir / "run.json").read_text())
    get = lambda split, key: (m.get(split) or {}).get(key)  # noqa: E731
    gen = m.get("general") or {}
    change = gen.get("judge_change") or {}
    return {
        "recall_n": get("recall", "n"), "recall_judge": get("recall", "tuned_judge"),
        "recall_judge_ci": get("recall", "tuned_judge_ci"), "recall_exact_values": get("recall", "tuned_exact_values"),
        "recall_rag_judge": get("recall", "rag_judge"), "recall_tuned_rag_judge": get("recall", "tuned_rag_judge"),
        "recall_surer_judge": get("recall", "surer_judge"),
        "unseen_n": get("unseen", "n"), "unseen_judge": get("unseen", "tuned_judge"),
        "unseen_base_judge": get("unseen", "base_judge"),
        "unseen_invents": get("unseen", "tuned_invents"), "unseen_base_invents": get("unseen", "base_invents"),
        "outofdocs_n": get("outofdocs", "n"), "outofdocs_invents": get("outofdocs", "tuned_invents"),
        "outofdocs_abstains": (get("outofdocs", "tuned_outcomes") or {}).get("abstains"),
        "general_base": gen.get("base_judge"), "general_tuned": gen.get("tuned_judge"), "general_n": gen.get("n"),
        "general_change": change.get("mean"), "general_change_ci": [change.get("lo"), change.get("hi")],
        "general_right_base": gen.get("base_right"), "general_right_tuned": gen.get("tuned_right"),
        # 05's scope switch (evaluate.scope_switch): the served system's general grade, the base beside the adapter
        "general_switched": gen.get("switched_judge"), "general_switched_change": (gen.get("switched_change") or {}).get("mean"),
        "train_rows": sum(1 for _ in open(run_dir / "data" / "train.jsonl")), "train_steps": t.get("steps"),
        "train_tokens": t.get("tokens"),
        "train_s": rec["steps"]["04_train"].get("seconds"), "eval_s": rec["steps"]["05_eval_export"].get("seconds"),
        # probe hit rate on the held-back check facts before round 1, after round 1, ... (04's train/repair.json)
        "repair_hit_rates": [r.get("check_hit_rate") for r in (t.get("repair") or {}).get("rounds", [])] or None,
    }


def copy_run(src: Path, d: Path, steps: tuple[str, ...], dirs: tuple[str, ...] = ("data",)) -> dict:
    """A fresh copy of run dir ``src`` at ``d`` with its ``dirs`` (checkpoints left out), params, teacher and the
    run record of ``steps`` only; returns that record (written to ``d/run.json``)."""
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for sub in dirs:
        shutil.copytree(src / sub, d / sub, ignore=shutil.ignore_patterns("checkpoints"))
    for f in ("params.yaml", "teacher.json"):
        shutil.copy(src / f, d / f)
    rec = json.loads((src / "run.json").read_text())
    rec["run_id"] = d.name
    rec["steps"] = {k: v for k, v in rec["steps"].items() if k in steps}
    (d / "run.json").write_text(json.dumps(rec))
    return rec


def print_table(rows: list[dict], keys: list[str]) -> None:
    """``rows`` as a Markdown table of ``keys``: floats to 2 places, lists of floats bracketed, missing as –."""
    def cell(v) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.2f}"
        if isinstance(v, list):
            return "[" + ", ".join(cell(x) for x in v) + "]"
        return str(v)

    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(cell(r.get(k)) for k in keys) + " |")


def run_row(d: Path, base: Path, settings: list[str], env: dict) -> float:
    """A copy of the synthesis run dir ``base`` at ``d`` (01 and 02 done), continued from 03 with ``settings``."""
    copy_run(base, d, ("01_serve", "02_synthesize"))
    return run(["--run-id", d.name, "--from", "03", *sum((["-p", x] for x in settings), [])], env)


def spread(results: list[dict]) -> list[str]:
    """Per row trained more than once (``--repeats``): the mean and range of its recall, unseen and general numbers."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["row"].split("#")[0], []).append(r)
    lines = []
    for name, rs in by.items():
        if len(rs) < 2:
            continue
        parts = []
        for k in ("recall_judge", "recall_exact_values", "recall_tuned_rag_judge", "unseen_invents", "general_change"):
            v = [r[k] for r in rs if r.get(k) is not None]
            if v:
                parts.append(f"{k} {sum(v) / len(v):.2f} [{min(v):.2f}–{max(v):.2f}]")
        lines.append(f"{name} ({len(rs)} trainings): " + ", ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="samples/docs")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--paraphrases", type=int, default=4)
    ap.add_argument("--abstain", type=int, default=1)
    ap.add_argument("--prefix", default=f"knowledge-{date.today():%Y%m%d}")
    ap.add_argument("--reuse", action="store_true", help="keep an existing synthesis run dir")
    ap.add_argument("--synth", default="", help="the synthesis run dir to reuse (default: <prefix>-synth)")
    ap.add_argument("-p", dest="extra", action="append", default=[], help="more settings for every row")
    ap.add_argument("--repeats", type=int, default=1,
                    help="train each row this many times (dirs <prefix>-<row>-r2 …, training k with train.seed=k): "
                         "the spread of one recipe over the same data, split and eval")
    ap.add_argument("--first-repeat", type=int, default=1,
                    help="start at this training (e.g. 2: the row's first training is already there)")
    a = ap.parse_args(argv)
    env = dict(os.environ)
    out = Path(env.get("TUNEBOOK_OUTPUTS", ROOT / "outputs"))
    base = Path(a.synth) if a.synth else out / f"{a.prefix}-synth"
    if a.synth and not (base / "data" / "dataset.jsonl").is_file():
        sys.exit(f"--synth {base}: no data/dataset.jsonl there")
    if not ((a.reuse or a.synth) and (base / "data" / "dataset.jsonl").is_file()):
        secs = run(["--profile", a.profile, "--corpus", a.corpus, "--run-id", base.name, "--to", "02",
                    "-p", f"synth.paraphrases={a.paraphrases}", "-p", f"synth.abstain_questions={a.abstain}",
                    *sum((["-p", x] for x in a.extra), [])], env)
        print(f"synthesis: {secs:.0f} s → {base}", flush=True)
    results_path = out / f"{a.prefix}-results.json"  # rows of earlier calls are kept; a row run again replaces its own
    done = json.loads(results_path.read_text()) if results_path.is_file() else []
    results = []
    for name in a.rows.split(","):
        for k in range(a.first_repeat, a.repeats + 1):
            # another training of the same row: its own training seed (LoRA init, row order); split and eval unchanged
            label = name if k == 1 else f"{name}#{k}"
            d = out / f"{a.prefix}-{name}" if k == 1 else out / f"{a.prefix}-{name}-r{k}"
            seed = [] if k == 1 else [f"train.seed={k}"]
            secs = run_row(d, base, ROWS[name] + QUIET_05 + a.extra + seed, env)
            row = {"row": label, "settings": ROWS[name], "seconds": round(secs), **row_numbers(d)}
            results.append(row)
            print(json.dumps(row), flush=True)
            names = {r["row"] for r in results}  # written after every row: a stopped call keeps the rows it finished
            results_path.write_text(json.dumps([r for r in done if r["row"] not in names] + results, indent=2))
    keys = ["row", "recall_n", "recall_judge", "recall_exact_values", "recall_rag_judge", "unseen_n", "unseen_judge",
            "unseen_base_judge", "unseen_invents", "unseen_base_invents", "outofdocs_n", "outofdocs_invents",
            "outofdocs_abstains", "general_base", "general_tuned", "general_right_tuned", "general_switched", "train_rows", "train_s",
            "repair_hit_rates"]
    import yaml

    corpus = (yaml.safe_load((base / "params.yaml").read_text()) or {}).get("corpus", a.corpus)
    print(f"\ncorpus {corpus} (synthesis {base.name}), profile {a.profile}, {date.today()}")
    print_table(results, keys)
    for line in spread(results):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
