"""04's optional **probe and repair** rounds (``train.repair_rounds``). Before training, the teacher rewrites every
trained question in new words (``train/repair_wordings.jsonl``, a cache a rerun reuses), none of them a training
question or near an eval question. After training, each round asks the student its facts in a *find* wording; the
facts it misses are trained again in the wording they were missed in, together with every trained fact in its own
wording (a round that trains only the misses pulled neighbouring answers towards them: "25,000" for every limit).
A *check* set of other new wordings, never trained, is asked before the first round and after each: the round's
effect on wordings the student has not seen (``train/repair.json``; every probe in ``train/repair_probes.jsonl``).

A hit: the answer states every hard value of the reference (numbers, `code`, identifiers:
:func:`~tunebook.outcomes.exact_values`), or — for a reference without one — shares ≥ half its characters
(:func:`~tunebook.text.char_f1`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .jsonio import write_json, write_jsonl
from .pairs import NearDup, answer, question, trained_facts
from .settings import SynthSettings, TrainSettings
from .train import METRICS_FILE

WORDINGS_FILE = "repair_wordings.jsonl"  # the teacher's cache (train/)
PROBES_FILE = "repair_probes.jsonl"
REPORT_FILE = "repair.json"
PROBE_TOKENS = 64  # as 05's max_new_tokens
NEAR_DUP = 0.8  # 03's near-duplicate threshold: a wording this close to an eval question is not used


def wordings(teacher, facts: list[dict], eval_rows: list[dict], train_rows: list[dict], k: int, cache: Path,
             synth: SynthSettings, threshold: float = NEAR_DUP) -> dict[str, list[str]]:
    """Per fact id, up to ``k`` new wordings of its question by the teacher (03's rewording rules: a question in
    the same language naming every specific value of the original), none equal or near to an eval question and
    none equal to a training question."""
    from .judge import ask_json_cached
    from .prompts import paraphrase_schema, prompt_template, render_fields

    schema = paraphrase_schema(k, synth)  # 02's paraphrase template and schema
    prompts = [render_fields(prompt_template(r.get("lang", "en"), name="paraphrase"), {"k": k, "question": question(r)})
               for r in facts]
    # sampled as 02's paraphrases are: greedy, the 1.5B teacher mostly hands the question back unchanged
    got = ask_json_cached(teacher, prompts, [schema] * len(prompts), cache, max_tokens=96 * k,
                          desc="probe wordings", version="repair-v2", temperature=0.7)
    return usable_wordings(facts, [(rec or {}).get("paraphrases") or [] for rec in got], eval_rows, train_rows,
                           threshold)


def usable_wordings(facts: list[dict], proposed: list[list], eval_rows: list[dict], train_rows: list[dict],
                    threshold: float = NEAR_DUP) -> dict[str, list[str]]:
    """The teacher's proposed wordings per fact, kept where they can stand for the question (03's rewording rules)
    and are neither a training question nor equal or near to an eval question or to a wording kept before (round
    r + 1 probes with a wording that round r may have trained on)."""
    from .splitting import rewording
    from .text import normalize

    asked = NearDup(threshold)
    for r in eval_rows:
        asked.add(r["id"], question(r))
    taken = {normalize(question(r)) for r in train_rows} | {normalize(question(r)) for r in eval_rows}
    out: dict[str, list[str]] = {}
    for r, wordings_ in zip(facts, proposed):
        keep: list[str] = []
        for p in wordings_:
            p = str(p).strip()
            if normalize(p) in taken or asked.query(p) is not None or not rewording(p, r):
                continue
            taken.add(normalize(p))
            asked.add(f"{r['id']}-w{len(keep)}", p)  # a later wording near this one would not be new to the student
            keep.append(p)
        out[r["id"]] = keep
    return out


def prepare(run_dir: Path, cfg) -> tuple[list[dict], dict[str, list[str]]]:
    """Before training (the teacher may have to leave the GPU for it): the trained facts and, per fact,
    ``repair_rounds + 1`` new wordings of its question."""
    from .jsonio import read_jsonl
    from .serve import ensure

    data = run_dir / "data"
    train_rows, eval_rows = read_jsonl(data / "train.jsonl"), read_jsonl(data / "eval.jsonl")
    facts = trained_facts(train_rows)
    teacher = ensure(run_dir)
    if teacher is None:
        raise RuntimeError("train.repair_rounds needs the teacher to reword the trained questions: run 01_serve first")
    worded = wordings(teacher, facts, eval_rows, train_rows, cfg.train.repair_rounds + 1,
                      run_dir / "train" / WORDINGS_FILE, cfg.synth, cfg.inspect.near_dup_threshold)
    print(f"probe and repair: {sum(bool(w) for w in worded.values())} of {len(facts)} trained facts got new wordings "
          f"({sum(map(len, worded.values()))} in all; ones near an eval question are not used)")
    return facts, worded


def plot(report: dict[str, Any]):
    from . import plots

    rounds = report["rounds"]
    return plots.bars(["before repair"] + [f"after round {r['round']}" for r in rounds[1:]],
                      [r["check_hit_rate"] or 0.0 for r in rounds],
                      f"trained facts stated in an unseen wording ({rounds[0]['check_probed']} checked)",
                      ylabel="share stated")


def hit(said: str, reference: str, asked: str) -> bool:
    from .outcomes import exact_values
    from .text import char_f1

    share = exact_values(said, reference, asked)
    return share == 1.0 if share is not None else char_f1(said, reference) >= 0.5


def probe(model, tok, facts: list[dict], asked: dict[str, str], batch_size: int, system_prompt: str,
          desc: str, backend: str = "hf") -> list[dict]:
    """Ask each fact (that has one) its wording in ``asked``; greedy, the adapter on top of the base as trained."""
    from .answering import generate, generating

    todo = [r for r in facts if asked.get(r["id"])]
    questions = [asked[r["id"]] for r in todo]
    with generating(model, tok, backend):
        answers = generate(model, tok, questions, PROBE_TOKENS, batch_size, adapter=True,
                           system_prompt=system_prompt, desc=desc, merged=False)
    return [{"id": r["id"], "question": q, "reference": answer(r), "answer": a, "hit": hit(a, answer(r), q)}
            for r, q, a in zip(todo, questions, answers)]


def plan(worded: dict[str, list[str]], rounds: int) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Which wording asks what: a fact with two or more wordings gives its first to the **check** set (asked before
    the first round and after each, never trained: the round's effect on wordings the student has not seen); the
    others, in turn, are the **find** wordings of rounds 1, 2, … (a miss there is trained in that wording)."""
    check = {i: w[0] for i, w in worded.items() if len(w) >= 2}
    rest = {i: (w[1:] if i in check else w) for i, w in worded.items()}
    return check, [{i: w[r] for i, w in rest.items() if len(w) > r} for r in range(rounds)]


def round_rows(facts: list[dict], missed: list[dict]) -> list[dict]:
    """A repair round's items: every trained fact in its own wording (the round rehearses what the student knows,
    so the new items do not pull other answers towards them) and each missed fact in the wording it was missed in."""
    by_id = {r["id"]: r for r in facts}
    fixes = [{**by_id[p["id"]], "id": f"{p['id']}-fix", "reworded_from": p["id"], "repair": True,
              "messages": [{"role": "user", "content": p["question"]},
                           {"role": "assistant", "content": answer(by_id[p["id"]])}]} for p in missed]
    return list(facts) + fixes


def _rate(probes: list[dict]) -> float | None:
    return round(sum(p["hit"] for p in probes) / len(probes), 4) if probes else None


def run_rounds(trainer, student, cfg: TrainSettings, run_dir: Path, facts: list[dict],
               worded: dict[str, list[str]], seed: int, backend: str) -> dict[str, Any]:
    """``cfg.repair_rounds`` rounds on the trained model: probe the round's find wordings, train every fact plus the
    misses in the wording they were missed in; the check set (:func:`plan`) is asked before the first round and
    after each. Writes ``train/repair.json`` and ``train/repair_probes.jsonl``; returns the report and the last
    trainer (whose model the caller saves as the adapter)."""
    from .callbacks import LiveLoss

    out = run_dir / "train"
    t0 = time.perf_counter()
    check, finds = plan(worded, cfg.repair_rounds)
    bs, sp, tok = cfg.batch_size * 4, cfg.system_prompt, student.tokenizer
    log: list[dict] = []

    def ask(asked: dict[str, str], what: str, rnd: int) -> list[dict]:
        probes = probe(trainer.model, tok, facts, asked, bs, sp, f"{what} (round {rnd})", backend)
        log.extend({**p, "round": rnd, "set": what} for p in probes)
        return probes

    checked = ask(check, "check", 0)
    rounds: list[dict[str, Any]] = [{"round": 0, "check_probed": len(checked), "check_hit_rate": _rate(checked)}]
    print(f"before repair: {sum(p['hit'] for p in checked)}/{len(checked)} facts stated in an unseen wording")
    for rnd, asked in enumerate(finds, start=1):
        found = ask(asked, "find", rnd)
        missed = [p for p in found if not p["hit"]]
        entry: dict[str, Any] = {"round": rnd, "find_probed": len(found), "find_missed": len(missed)}
        if missed:
            rows = round_rows(facts, missed)
            trainer = _retrain(trainer, student, cfg, out, rows, seed + rnd, backend,
                               [LiveLoss(title=f"repair round {rnd} loss")])
            entry.update(trained_items=len(rows),
                         train_seconds=round(trainer.state.log_history[-1].get("train_runtime", 0.0), 1))
            checked = ask(check, "check", rnd)
        entry.update(check_probed=len(checked), check_hit_rate=_rate(checked))
        rounds.append(entry)
        print(f"repair round {rnd}: missed {len(missed)}/{len(found)} find wordings"
              + (f", trained {entry['trained_items']} items" if missed else " (nothing to repair)")
              + f"; check set {sum(p['hit'] for p in checked)}/{len(checked)}")
        if not missed:
            break
    report = {"rounds": rounds, "facts": len(facts), "worded": sum(bool(w) for w in worded.values()),
              "seconds": round(time.perf_counter() - t0, 1)}
    write_jsonl(log, out / PROBES_FILE)
    write_json(report, out / REPORT_FILE)
    metrics_path = out / METRICS_FILE
    if metrics_path.is_file():  # 04's metrics say what the adapter went through
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        write_json({**metrics, "repair": report}, metrics_path)
    return {"report": report, "trainer": trainer}


def _retrain(trainer, student, cfg: TrainSettings, out: Path, rows: list[dict], seed: int, backend: str,
             callbacks=()):
    """A short round on ``rows``: the same LoRA weights, trained on by a new trainer (no checkpoints: a crash
    reruns the rounds from the trained adapter)."""
    from dataclasses import replace

    from transformers.trainer_utils import SaveStrategy

    from . import train

    ds = train.rows_dataset(rows, cfg.system_prompt)
    rcfg = cfg.model_copy(update={"epochs": cfg.repair_epochs, "max_steps": -1, "eval_steps": 0})
    args = train.sft_config(rcfg, out / "repair", seed, has_eval=False, backend=backend)
    args.save_strategy = SaveStrategy.NO
    again = train.make_trainer(replace(student, model=trainer.model), None, ds, None, args, callbacks=callbacks)
    again.train()
    return again
