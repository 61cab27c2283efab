"""05 — does the student know the docs now? Base vs fine-tuned answers, character-level scores, and exports.

Both models answer with the same chat template and greedy decoding. The base answers come from the same
weights with the adapter switched off, so one copy of the model is in memory.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable

from .chat import chat_messages
from .judge import judge
from .jsonio import write_json, write_jsonl
from .paths import PARAMS_DIR
from .progress import bar
from .text import char_f1, rouge_l

GENERATIONS_FILE = "generations.jsonl"
METRICS_FILE = "metrics.json"


# ---- metrics (character level: works for Chinese without a word segmenter) ---------------------------------


def summarize(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(rows)}
    for model in ("base", "tuned"):
        for metric in ("rouge_l", "char_f1", "judge"):
            vals = [r[f"{model}_{metric}"] for r in rows if r.get(f"{model}_{metric}") is not None]
            if metric != "judge" or vals:
                out[f"{model}_{metric}"] = round(sum(vals) / len(vals), 4) if vals else None
    return out


# ---- generation ---------------------------------------------------------------------------------------------


def select(rows: list[dict], n: int) -> list[dict]:
    """Up to ``n`` eval rows, taken in turn from each split so every split is represented (0 = all)."""
    if not n or n >= len(rows):
        return rows
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(r.get("split", "eval"), []).append(r)
    out: list[dict] = []
    queues = [list(v) for v in by_split.values()]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def load_tuned(adapter_dir: Path, base_source: str):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    tok = AutoTokenizer.from_pretrained(str(adapter_dir))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(base_source, dtype=dtype)
    if cuda:
        base = base.to("cuda")
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    return model, tok


def _prompts(tok, questions: Iterable[str], system_prompt: str = "") -> list[str]:
    return [tok.apply_chat_template(chat_messages(q, system_prompt), tokenize=False, add_generation_prompt=True)
            for q in questions]


def generate(model, tok, questions: list[str], max_new_tokens: int, batch_size: int, adapter: bool,
             system_prompt: str = "", desc: str = "") -> list[str]:
    import contextlib

    import torch

    prompts = _prompts(tok, questions, system_prompt)
    answers: list[str] = []
    ctx = contextlib.nullcontext() if adapter else model.disable_adapter()
    with ctx, torch.inference_mode(), bar(total=len(prompts), desc=desc or ("fine-tuned" if adapter else "base")) as pbar:
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i:i + batch_size]
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            for row in out[:, enc["input_ids"].shape[1]:]:
                answers.append(tok.decode(row, skip_special_tokens=True).strip())
            pbar.update(len(batch))
    return answers


def compare(model, tok, eval_rows: list[dict], max_new_tokens: int, batch_size: int, system_prompt: str = "") -> list[dict]:
    questions = [r["messages"][0]["content"] for r in eval_rows]
    refs = [r["messages"][-1]["content"] for r in eval_rows]
    base = generate(model, tok, questions, max_new_tokens, batch_size, adapter=False, system_prompt=system_prompt)
    tuned = generate(model, tok, questions, max_new_tokens, batch_size, adapter=True, system_prompt=system_prompt)
    rows = []
    for r, q, ref, b, t in zip(eval_rows, questions, refs, base, tuned):
        rows.append({
            "id": r["id"], "source": r.get("source", ""), "split": r.get("split", "eval"), "question": q,
            "reference": ref, "base": b, "tuned": t,
            "base_rouge_l": round(rouge_l(b, ref), 4), "tuned_rouge_l": round(rouge_l(t, ref), 4),
            "base_char_f1": round(char_f1(b, ref), 4), "tuned_char_f1": round(char_f1(t, ref), 4),
        })
    return rows


def write_results(rows: list[dict], eval_dir: Path) -> dict[str, Any]:
    write_jsonl(rows, eval_dir / GENERATIONS_FILE)
    metrics = {"all": summarize(rows)}
    for split in sorted({r["split"] for r in rows}):
        metrics[split] = summarize([r for r in rows if r["split"] == split])
    write_json(metrics, eval_dir / METRICS_FILE)
    return metrics


def side_by_side_html(rows: list[dict], limit: int = 50) -> str:
    """Question, reference, both answers and their scores; with the judge on, the key facts it checked and each
    model's verdict per fact (✓ stated, · missing, ✗ contradicted)."""
    def cell(text: str) -> str:
        return f"<td style='text-align:left;vertical-align:top'>{html.escape(text)}</td>"

    mark = {"stated": "✓", "missing": "·", "contradicted": "✗"}

    def facts(r: dict) -> str:
        if not r.get("key_facts"):
            return "<td></td>"
        base, tuned = r.get("base_verdicts") or [], r.get("tuned_verdicts") or []
        items = []
        for i, f in enumerate(r["key_facts"]):
            b = mark.get(base[i], "?") if i < len(base) else "?"
            t = mark.get(tuned[i], "?") if i < len(tuned) else "?"
            items.append(f"<li>{b} {t} {html.escape(f)}</li>")
        return f"<td style='text-align:left;vertical-align:top'><ul style='margin:0'>{''.join(items)}</ul></td>"

    def score(r: dict, key: str, fmt: str) -> str:
        b, t = r.get(f"base_{key}"), r.get(f"tuned_{key}")
        return f"{'–' if b is None else format(b, fmt)} → {'–' if t is None else format(t, fmt)}"

    judged = any(r.get("key_facts") for r in rows)
    head = ("<tr><th>question</th><th>reference</th><th>base</th><th>fine-tuned</th><th>ROUGE-L base → tuned</th>"
            + ("<th>judge /5 base → tuned</th><th>key facts (base, tuned)</th>" if judged else "") + "</tr>")
    body = "".join(
        f"<tr>{cell(r['question'])}{cell(r['reference'])}{cell(r['base'])}{cell(r['tuned'])}"
        f"<td>{score(r, 'rouge_l', '.2f')}</td>"
        + (f"<td>{score(r, 'judge', '.1f')}</td>{facts(r)}" if judged else "") + "</tr>"
        for r in rows[:limit]
    )
    return f"<table class='tunebook-compare'>{head}{body}</table>"


# ---- export -------------------------------------------------------------------------------------------------


# ---- LLM judge through the teacher --------------------------------------------------------------------------


def general_prompts(path: Path = PARAMS_DIR / "prompts" / "general.yaml") -> list[str]:
    import yaml

    return [str(q) for q in yaml.safe_load(path.read_text(encoding="utf-8")) or []]


def forgetting_check(model, tok, teacher, eval_dir: Path, max_new_tokens: int, batch_size: int,
                     system_prompt: str = "") -> dict[str, Any]:
    """Both models answer general prompts; the judge scores them without a reference (0–5)."""
    qs = general_prompts()
    base = generate(model, tok, qs, max_new_tokens, batch_size, adapter=False, system_prompt=system_prompt,
                    desc="general: base")
    tuned = generate(model, tok, qs, max_new_tokens, batch_size, adapter=True, system_prompt=system_prompt,
                     desc="general: fine-tuned")
    rows = [{"question": q, "base": b, "tuned": t} for q, b, t in zip(qs, base, tuned)]
    out: dict[str, Any] = {"n": len(rows), "rows": rows}
    if teacher is not None:
        cache = eval_dir / "judge_cache.jsonl"
        for m in ("base", "tuned"):
            scores = judge(teacher, [{"question": r["question"], "answer": r[m]} for r in rows], cache, kind="general")
            for r, sc in zip(rows, scores):
                r[f"{m}_judge"] = sc
            vals = [x for x in scores if x is not None]
            out[f"{m}_judge"] = round(sum(vals) / len(vals), 3) if vals else None
        if out.get("base_judge") is not None and out.get("tuned_judge") is not None:
            out["collapsed"] = out["tuned_judge"] < out["base_judge"] - 1.5
    return out
