"""05 — does the student know the docs now? Base vs fine-tuned answers, character-level scores, and exports.

Both models answer with the same chat template and greedy decoding. The base answers come from the same
weights with the adapter switched off, so one copy of the model is in memory.
"""

from __future__ import annotations

import html
import json
import re
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
FACTS_SCHEMA = {"type": "object", "properties": {"facts": {
    "type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "minLength": 2, "maxLength": 160}}},
    "required": ["facts"], "additionalProperties": False}
VERDICTS = ("stated", "missing", "contradicted")


def verdict_schema(n: int) -> dict[str, Any]:
    """One verdict per key fact, exactly ``n`` of them."""
    return {"type": "object", "properties": {"verdicts": {
        "type": "array", "minItems": n, "maxItems": n, "items": {"type": "string", "enum": list(VERDICTS)}}},
        "required": ["verdicts"], "additionalProperties": False}


def fact_score(verdicts: list[str]) -> float:
    """0–5: the share of the reference's key facts the answer states (missing and contradicted count nothing)."""
    return round(5 * sum(v == "stated" for v in verdicts) / len(verdicts), 2) if verdicts else 0.0


def grounded_facts(facts: list[str], reference: str, min_overlap: float = 0.5) -> list[str]:
    """Key facts must come from the reference: a fact whose character bigrams are mostly not in the reference
    (background the judge added, or a translation) is dropped — 03's grounding measure; if none is left, the
    reference itself is the one fact. Measured: the 1.5B teacher padded one-line references with up to three
    invented "facts"."""
    from .inspection import grounding

    kept = [f for f in facts if grounding(f, reference) >= min_overlap]
    return kept or [reference.strip()]


_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:/-]\d+)*(?:[eE][+-]?\d+)?(?!\w)")
_CODE = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"\b[A-Z][A-Za-z]{3,}\b")


def _same_number(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return float(a.replace(",", "")) == float(b.replace(",", ""))
    except ValueError:
        return False


def hard_tokens(fact: str, reference: str, question: str) -> list[str]:
    """What a fact can't be stated without: its numbers, `code` spans, and capitalized names — each only when it
    is in the reference and not already in the question (the question gives those away)."""
    ref, q = reference.lower(), question.lower()
    words = fact.split()
    first = words[0] if len(words) > 1 else ""  # a sentence's first word is capitalized anyway; a lone name is not
    out = [n for n in _NUMBER.findall(fact) if n in reference and n not in question]
    out += [c for c in _CODE.findall(fact) if c.lower() in ref and c.lower() not in q]
    out += [w for w in _NAME.findall(fact) if w != first and w.lower() in ref and w.lower() not in q]
    return list(dict.fromkeys(out))


def has_token(answer: str, token: str) -> bool:
    if _NUMBER.fullmatch(token):
        return any(_same_number(token, n) for n in _NUMBER.findall(answer))
    return token.lower() in answer.lower()


def check_verdicts(verdicts: list[str], facts: list[str], answer: str, reference: str, question: str) -> list[str]:
    """The judge's verdicts, with "stated" taken back where the answer lacks one of the fact's hard tokens (a
    number, `code` or name). Measured on the cpu demo: the 1.5B judge marked "1000" as stating "60" and "0.01" as
    stating "1e-6"; what it cannot compare, this checks exactly."""
    out = []
    for v, f in zip(verdicts, facts):
        if v == "stated" and not all(has_token(answer, tok) for tok in hard_tokens(f, reference, question)):
            v = "missing"
        out.append(v)
    return out


def _judge_key(prompt: str, model: str, version: str = "v2") -> str:
    import hashlib

    return hashlib.sha256(f"{version}\n{model}\n{prompt}".encode()).hexdigest()[:24]


JUDGE_PROMPTS = {"reference": "judge.md", "facts": "judge_facts.md", "general": "judge_general.md",
                 "qa": "judge_qa.md"}


def _template(kind: str) -> str:
    return (PARAMS_DIR / "prompts" / JUDGE_PROMPTS[kind]).read_text(encoding="utf-8")


def ask_json_cached(teacher, prompts: list[str], schemas: list[dict], cache_path: Path, max_tokens: int,
                    desc: str, version: str = "v2") -> list[dict | None]:
    """Ask the teacher each prompt (greedy, schema-constrained JSON), ``teacher.capacity`` at a time, through a
    JSONL cache keyed by a hash of the prompt and the teacher model: a rerun asks only what is new. An item that
    fails stays None (and is asked again next time)."""
    import asyncio

    from .synthesize import load_answer, run_sync

    cache: dict[str, dict] = {}
    if cache_path.is_file():
        cache = {rec["key"]: rec for rec in read_jsonl(cache_path) if "key" in rec}
    keys = [_judge_key(p, teacher.model, version) for p in prompts]
    todo = list({k: (k, p, s) for k, p, s in zip(keys, prompts, schemas) if k not in cache}.values())

    async def ask_all() -> None:
        client = teacher.client(timeout=300, max_retries=3, asynchronous=True)
        sem = asyncio.Semaphore(max(1, teacher.capacity))
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_path, "a", encoding="utf-8") as fh, bar(total=len(todo), desc=desc) as pbar:
            async def one(key: str, prompt: str, schema: dict) -> None:
                async with sem:
                    try:
                        r = await client.chat.completions.create(
                            model=teacher.model, messages=[{"role": "user", "content": prompt}],
                            max_tokens=max_tokens, temperature=0.0, response_format={
                                "type": "json_schema", "json_schema": {"name": "verdict", "schema": schema,
                                                                       "strict": True}})
                        value = load_answer(r.choices[0].message.content or "")[0]
                        if not isinstance(value, dict):
                            raise ValueError(f"not a JSON object: {str(value)[:80]}")
                    except Exception as e:  # left None: asked again next time
                        print(f"{desc}: {type(e).__name__}: {e}")
                        pbar.update(1)
                        return
                cache[key] = {"key": key, **value}
                fh.write(json.dumps(cache[key], ensure_ascii=False) + "\n")
                fh.flush()
                pbar.update(1)

            await asyncio.gather(*(one(k, p, s) for k, p, s in todo))
        await client.close()

    if todo:
        run_sync(ask_all)
    return [cache.get(k) for k in keys]


def judge(teacher, items: list[dict[str, str]], cache_path: Path, kind: str = "general") -> list[int | None]:
    """Score items 0–5 with the teacher, using a holistic rubric in ``params/prompts/``: ``general`` (an answer
    without reference, for the forgetting check) or ``qa`` (a training pair against its source chunk, for 03).
    Answers with a reference are scored by key facts instead: :func:`judge_against_reference`."""
    from .synthesize import render_fields

    template = _template(kind)
    prompts = [render_fields(template, it) for it in items]
    got = ask_json_cached(teacher, prompts, [JUDGE_SCHEMA] * len(prompts), cache_path, max_tokens=48,
                          desc="judge")
    out: list[int | None] = []
    for rec in got:
        try:
            out.append(max(0, min(5, int(rec["score"]))) if rec else None)
        except (KeyError, TypeError, ValueError):
            out.append(None)
    return out


def key_facts(teacher, items: list[dict[str, str]], cache_path: Path) -> list[list[str] | None]:
    """The key facts (1–3) a correct answer to each question must state, taken by the teacher from the reference
    answer alone — once per question, so base and fine-tuned answers are checked against the same list."""
    from .synthesize import render_fields

    template = _template("facts")
    prompts = [render_fields(template, it) for it in items]
    got = ask_json_cached(teacher, prompts, [FACTS_SCHEMA] * len(prompts), cache_path, max_tokens=320,
                          desc="judge: key facts", version="facts-v1")
    out: list[list[str] | None] = []
    for rec in got:
        facts = [str(f).strip() for f in (rec or {}).get("facts") or [] if str(f).strip()]
        out.append(facts[:3] or None)
    return out


def judge_against_reference(teacher, items: list[dict[str, Any]], cache_path: Path
                            ) -> list[tuple[float, list[str]] | tuple[None, None]]:
    """Reference-anchored judge: for each item (``question``, ``reference``, ``facts`` from :func:`key_facts`,
    ``answer``) the teacher marks every key fact as stated, missing or contradicted by the answer, a fact's numbers,
    `code` and names must be in the answer for "stated" to stand (:func:`check_verdicts`), and the score is
    5 × the share stated (0–5). Small judges asked for one holistic 0–5 grade are lenient with fluent but wrong answers (the
    1.5B teacher gave the base model's invented answers 3.5 of 5); checking named facts one by one is not."""
    from .synthesize import render_fields

    template = _template("reference")
    prompts, schemas, idx = [], [], []
    for i, it in enumerate(items):
        if it.get("facts"):
            facts = "\n".join(f"{n}. {f}" for n, f in enumerate(it["facts"], 1))
            prompts.append(render_fields(template, {**it, "facts": facts, "n": len(it["facts"])}))
            schemas.append(verdict_schema(len(it["facts"])))
            idx.append(i)
    got = ask_json_cached(teacher, prompts, schemas, cache_path, max_tokens=24 + 8 * 4, desc="judge",
                          version="verdicts-v1")
    out: list[tuple[float, list[str]] | tuple[None, None]] = [(None, None)] * len(items)
    for i, rec in zip(idx, got):
        verdicts = [str(v) for v in (rec or {}).get("verdicts") or []]
        it = items[i]
        if len(verdicts) == len(it["facts"]) and all(v in VERDICTS for v in verdicts):
            verdicts = check_verdicts(verdicts, it["facts"], it["answer"], it.get("reference", ""), it["question"])
            out[i] = (fact_score(verdicts), verdicts)
    return out


def add_judge_scores(rows: list[dict], teacher, eval_dir: Path) -> None:
    """``<model>_judge`` (0–5 by key facts) and ``<model>_verdicts`` per row, and the row's ``key_facts``."""
    cache = eval_dir / "judge_cache.jsonl"
    facts = key_facts(teacher, [{"question": r["question"], "reference": r["reference"]} for r in rows], cache)
    for r, f in zip(rows, facts):
        r["key_facts"] = grounded_facts(f, r["reference"]) if f else None
    for model in ("base", "tuned"):
        scored = judge_against_reference(
            teacher, [{"question": r["question"], "reference": r["reference"], "facts": r["key_facts"],
                       "answer": r[model]} for r in rows], cache)
        for r, (score, verdicts) in zip(rows, scored):
            r[f"{model}_judge"] = score
            r[f"{model}_verdicts"] = verdicts


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
