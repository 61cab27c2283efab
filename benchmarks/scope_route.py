"""Would a scope switch keep the general answers? An offline measurement of 05's ``switched`` answerer (session 27;
built into 05 in session 28: ``tunebook.scope``, ``evaluate.scope_switch``).

The forgetting check (05) asks the fine-tuned student general prompts, and every training lever tried in sessions
20–27 left it 0.3–1.0 under the base there (issue #16). A different answer is a *system*: serve the adapter only to
questions about the docs, and the base to everything else (llama-server switches a LoRA per request; the student
server of 05 already does). This script measures how well such a switch could tell the two apart, and what it would
score, from runs that are already judged — no answer is generated, each question's base and fine-tuned answers and
grades are in ``eval/``:

- the switch: the base student's own sentence embedding (mean of the last hidden states) of the question, compared
  by cosine with the run's **train** questions (about the docs) and with ``params/prompts/replay.yaml`` (general
  prompts that never overlap the forgetting check's): a question goes to the adapter when its nearest train
  question is nearer than its nearest replay prompt. Nothing is fitted to the eval's questions.
- the score: per split, the fine-tuned grade where the switch sends a question to the adapter, the base's grade
  where it sends it to the base.

With ``--probe`` (default ``benchmarks/scope_probe.yaml``) it also counts how many general prompts written unlike
the replay prompts (chat, rewriting, word problems, command lines near a product's docs) the switch sends to the
adapter: the replay prompts and the forgetting check were written in one spirit, users' questions are not.

    .venv/bin/python benchmarks/scope_route.py outputs/demo-s26b outputs/cps-s26a
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import models, replay, scope  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402

PROBE = ROOT / "benchmarks" / "scope_probe.yaml"


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run dirs finished through 05 (eval/ judged)")
    ap.add_argument("--probe", default=str(PROBE), help="general prompts unlike replay.yaml: the share sent to the "
                                                        "adapter is counted (empty: skip)")
    a = ap.parse_args(argv)
    probe = [str(q) for q in yaml.safe_load(Path(a.probe).read_text(encoding="utf-8"))] if a.probe else []
    loaded: dict[str, tuple] = {}  # per student: its model and tokenizer, once
    for run in map(Path, a.runs):
        params = yaml.safe_load((run / "params.yaml").read_text())
        src = models.hf_model(params["student"])
        if src not in loaded:
            tok = AutoTokenizer.from_pretrained(src)
            loaded[src] = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval(), tok
        model, tok = loaded[src]
        prompts_file = (params.get("train") or {}).get("replay_prompts", "replay.yaml")
        switch = scope.for_run(model, tok, read_jsonl(run / "data" / "train.jsonl"), prompts_file)
        gens = read_jsonl(run / "eval" / "generations.jsonl")
        gen_rows = read_jsonl(run / "eval" / "general.jsonl")

        def to_adapter(qs: list[str]) -> list[bool]:
            return switch.to_adapter(model, tok, qs)

        print(f"\n{run.name}: {switch.meta['docs']} train questions, {len(replay.prompts(prompts_file))} replay prompts")
        print("| split | n | to the adapter | base | fine-tuned | switched |")
        print("|---|---|---|---|---|---|")
        for split in ("recall", "unseen"):
            rows = [r for r in gens if r["split"] == split]
            go = to_adapter([r["question"] for r in rows])
            sw = [r["tuned_judge"] if g else r["base_judge"] for r, g in zip(rows, go)]
            print(f"| {split} | {len(rows)} | {sum(go)} | {sum(r['base_judge'] for r in rows) / len(rows):.2f} | "
                  f"{sum(r['tuned_judge'] for r in rows) / len(rows):.2f} | {sum(sw) / len(sw):.2f} |")
        go = to_adapter([r["question"] for r in gen_rows])
        sw = [r["tuned_judge"] if g else r["base_judge"] for r, g in zip(gen_rows, go)]
        b = sum(r["base_judge"] for r in gen_rows) / len(gen_rows)
        t = sum(r["tuned_judge"] for r in gen_rows) / len(gen_rows)
        print(f"| general | {len(gen_rows)} | {sum(go)} | {b:.2f} | {t:.2f} (change {t - b:+.2f}) | "
              f"{sum(sw) / len(sw):.2f} (change {sum(sw) / len(sw) - b:+.2f}) |")
        for r, g in zip(gen_rows, go):
            if g:
                print(f"    to the adapter: {r['question'][:60]}")
        if probe:
            went = [q for q, g in zip(probe, to_adapter(probe)) if g]
            print(f"| probe ({Path(a.probe).name}) | {len(probe)} | {len(went)} | – | – | – |")
            for q in went:
                print(f"    to the adapter: {q[:70]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
