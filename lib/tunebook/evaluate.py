"""05 — does the student know the docs now? Base vs fine-tuned answers, character-level scores, and exports.

Both models answer with the same chat template and greedy decoding. The base answers come from the same
weights with the adapter switched off, so one copy of the model is in memory.
"""

from __future__ import annotations

import html
import json
import unicodedata
from pathlib import Path
from typing import Any, Iterable

from .jsonio import read_jsonl, write_json, write_jsonl
from .paths import PARAMS_DIR
from .progress import bar

GENERATIONS_FILE = "generations.jsonl"
METRICS_FILE = "metrics.json"


# ---- metrics (character level: works for Chinese without a word segmenter) ---------------------------------


def _chars(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    return [c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P")]


def char_f1(pred: str, ref: str) -> float:
    p, r = _chars(pred), _chars(ref)
    if not p or not r:
        return float(p == r)
    from collections import Counter

    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure over characters (longest common subsequence)."""
    p, r = _chars(pred), _chars(ref)
    if not p or not r:
        return float(p == r)
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r, 1):
            cur.append(prev[j - 1] + 1 if a == b else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


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


def chat_messages(question: str, system_prompt: str = "") -> list[dict[str, str]]:
    """The conversation every model of the workbook is asked in: optional system message, then the question."""
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}]


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
    def cell(text: str) -> str:
        return f"<td style='text-align:left;vertical-align:top'>{html.escape(text)}</td>"

    head = ("<tr><th>question</th><th>reference</th><th>base</th><th>fine-tuned</th>"
            "<th>ROUGE-L base → tuned</th></tr>")
    body = "".join(
        f"<tr>{cell(r['question'])}{cell(r['reference'])}{cell(r['base'])}{cell(r['tuned'])}"
        f"<td>{r['base_rouge_l']:.2f} → {r['tuned_rouge_l']:.2f}</td></tr>"
        for r in rows[:limit]
    )
    return f"<table class='tunebook-compare'>{head}{body}</table>"


# ---- export -------------------------------------------------------------------------------------------------


def export_merged(model, tok, out_dir: Path) -> Path:
    """Merge the LoRA weights into a copy of the base and save it in 16-bit (vLLM / transformers ready)."""
    import torch

    merged = model.merge_and_unload()
    merged = merged.to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    tok.padding_side = "right"
    tok.save_pretrained(str(out_dir))
    return out_dir


def copy_adapter(adapter_dir: Path, out_dir: Path) -> Path:
    import shutil

    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(adapter_dir, out_dir)
    return out_dir




# ---- LLM judge through the teacher --------------------------------------------------------------------------

JUDGE_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 5}},
                "required": ["score"], "additionalProperties": False}
# Reference-based grading first states whether the key facts agree; a mismatch caps the score at 2. Small judges
# are lenient with confident wrong numbers otherwise.
FACT_JUDGE_SCHEMA = {"type": "object", "properties": {
    "key_facts_match": {"type": "boolean"}, "score": {"type": "integer", "minimum": 0, "maximum": 5}},
    "required": ["key_facts_match", "score"], "additionalProperties": False}


def _judge_key(prompt: str, model: str) -> str:
    import hashlib

    return hashlib.sha256(f"v2\n{model}\n{prompt}".encode()).hexdigest()[:24]


JUDGE_PROMPTS = {"reference": "judge.md", "general": "judge_general.md", "qa": "judge_qa.md"}


def judge(teacher, items: list[dict[str, str]], cache_path: Path, kind: str = "reference") -> list[int | None]:
    """Score items 0–5 with the teacher, using the rubric in ``params/prompts/``: ``reference`` (an answer against
    a reference answer; key facts first), ``general`` (an answer without reference) or ``qa`` (a training pair
    against its source chunk, for 03).

    ``items`` hold the template's fields. Scores are cached in ``cache_path`` (JSONL keyed by a hash of the prompt
    and the judge model), so a rerun asks only what is new.
    """
    import asyncio

    from .synthesize import render_fields, run_sync

    with_reference = kind == "reference"
    template = (PARAMS_DIR / "prompts" / JUDGE_PROMPTS[kind]).read_text(encoding="utf-8")
    cache: dict[str, int] = {}
    if cache_path.is_file():
        cache = {rec["key"]: rec["score"] for rec in read_jsonl(cache_path) if "key" in rec and "score" in rec}
    prompts = [render_fields(template, it) for it in items]
    keys = [_judge_key(p, teacher.model) for p in prompts]
    todo = [(k, p) for k, p in zip(keys, prompts) if k not in cache]

    async def ask_all() -> None:
        client = teacher.client(timeout=300, max_retries=3, asynchronous=True)
        sem = asyncio.Semaphore(max(1, teacher.capacity))
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_path, "a", encoding="utf-8") as fh, bar(total=len(todo), desc="judge") as pbar:
            async def one(key: str, prompt: str) -> None:
                async with sem:
                    try:
                        schema = FACT_JUDGE_SCHEMA if with_reference else JUDGE_SCHEMA
                        r = await client.chat.completions.create(
                            model=teacher.model, messages=[{"role": "user", "content": prompt}], max_tokens=48,
                            temperature=0.0, response_format={"type": "json_schema", "json_schema": {
                                "name": "score", "schema": schema, "strict": True}})
                        verdict = json.loads(r.choices[0].message.content or "{}")
                        score = int(verdict["score"])
                        if with_reference and not verdict.get("key_facts_match", True):
                            score = min(score, 2)
                    except Exception as e:  # an unscored item stays None and is retried next time
                        print(f"judge: {type(e).__name__}: {e}")
                        pbar.update(1)
                        return
                cache[key] = max(0, min(5, score))
                fh.write(json.dumps({"key": key, "score": cache[key]}) + "\n")
                fh.flush()
                pbar.update(1)

            await asyncio.gather(*(one(k, p) for k, p in todo))
        await client.close()

    if todo:
        run_sync(ask_all)
    return [cache.get(k) for k in keys]


def add_judge_scores(rows: list[dict], teacher, eval_dir: Path) -> None:
    cache = eval_dir / "judge_cache.jsonl"
    for model in ("base", "tuned"):
        scores = judge(teacher, [{"question": r["question"], "reference": r["reference"], "answer": r[model]}
                                 for r in rows], cache)
        for r, s in zip(rows, scores):
            r[f"{model}_judge"] = s


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
