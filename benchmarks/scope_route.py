"""Would a scope switch keep the general answers? An offline measurement, not a lever of 05 (session 27).

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

    .venv/bin/python benchmarks/scope_route.py outputs/demo-s26b outputs/cps-s26a
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import models, replay  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402


def embed(texts: list[str], model, tok, batch: int = 16):
    import torch

    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, truncation=True, max_length=128)
        with torch.no_grad():
            h = model(**enc, output_hidden_states=True).hidden_states[-1].float()
        m = enc["attention_mask"].unsqueeze(-1).float()
        v = (h * m).sum(1) / m.sum(1)
        out.append(torch.nn.functional.normalize(v, dim=-1))
    return torch.cat(out)


def main(runs: list[str]) -> int:
    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    general_q = replay.prompts("replay.yaml")
    loaded: dict[str, tuple] = {}  # per student: its model, tokenizer and the replay prompts' embeddings, once
    for run in map(Path, runs):
        params = yaml.safe_load((run / "params.yaml").read_text())
        src = models.hf_model(params["student"])
        if src not in loaded:
            tok = AutoTokenizer.from_pretrained(src)
            tok.padding_side = "right"
            model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
            loaded[src] = model, tok, embed(general_q, model, tok)
        model, tok, neg = loaded[src]
        train_q = [r["messages"][0]["content"] for r in read_jsonl(run / "data" / "train.jsonl")]
        gens = read_jsonl(run / "eval" / "generations.jsonl")
        gen_rows = read_jsonl(run / "eval" / "general.jsonl")
        pos = embed(train_q, model, tok)

        def to_adapter(qs: list[str]) -> list[bool]:
            e = embed(qs, model, tok)
            return ((e @ pos.T).max(1).values > (e @ neg.T).max(1).values).tolist()

        print(f"\n{run.name}: {len(train_q)} train questions, {len(general_q)} replay prompts")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
