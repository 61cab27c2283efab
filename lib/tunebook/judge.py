"""The teacher as a judge: key facts of a reference, a verdict per fact checked exactly, holistic 0–5 rubrics.

Small judges asked for one holistic 0–5 grade are lenient with fluent but wrong answers; here the teacher lists the
key facts of the reference once per question, marks each stated / missing / contradicted per answer, and a
"stated" stands only if the fact's numbers, `code` and names really are in the answer (the exact checks:
:mod:`tunebook.fact_checks`). Checked against the hand-labeled cases in ``tests/data/judge_labels.jsonl``
(``tests/test_judge_labels.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .fact_checks import check_verdicts, has_token, hard_tokens, says_yes, yes_no  # noqa: F401  (re-exported: tests
# and benchmarks call them as judge.*)
from .jsonio import read_jsonl
from .paths import PARAMS_DIR
from .progress import bar


JUDGE_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 5}},
                "required": ["score"], "additionalProperties": False}


# the grade as a bare digit: one token to decode instead of a JSON object's 7–14, for teachers tunebook serves
# (llama.cpp, vLLM: a JSON schema may be a bare integer there; OpenAI-style APIs want an object)
DIGIT_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 5}
SCORE_FORMATS = {"json": 'Answer with JSON: {"score": <0-5>}', "digit": "Answer with the score alone: one digit, 0-5."}


def score_format(teacher) -> str:
    """``digit`` for a teacher served by llama.cpp or vLLM, else ``json``."""
    return "digit" if getattr(teacher, "backend", "") in ("llama.cpp", "vllm") else "json"


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
    from .text import grounding

    kept = [f for f in facts if grounding(f, reference) >= min_overlap]
    return kept or [reference.strip()]


def _judge_key(prompt: str, model: str, version: str = "v2") -> str:
    import hashlib

    return hashlib.sha256(f"{version}\n{model}\n{prompt}".encode()).hexdigest()[:24]


JUDGE_PROMPTS = {"reference": "judge.md", "facts": "judge_facts.md", "general": "judge_general.md",
                 "qa": "judge_qa.md"}


def _template(kind: str) -> str:
    return (PARAMS_DIR / "prompts" / JUDGE_PROMPTS[kind]).read_text(encoding="utf-8")


def ask_json_cached(teacher, prompts: list[str], schemas: list[dict], cache_path: Path, max_tokens: int,
                    desc: str, version: str = "v2", scalar_key: str = "", temperature: float = 0.0
                    ) -> list[dict | None]:
    """Ask the teacher each prompt (greedy unless ``temperature``: then sampled with a seed per prompt;
    schema-constrained JSON), ``teacher.capacity`` at a time, through a JSONL cache keyed by a hash of the prompt
    and the teacher model: a rerun asks only what is new. An item that fails stays None (and is asked again next
    time). With ``scalar_key`` a bare JSON value is kept as ``{scalar_key: value}``."""
    from .answers import load_answer
    from .client import complete_all, message

    cache: dict[str, dict] = {}
    if cache_path.is_file():
        cache = {rec["key"]: rec for rec in read_jsonl(cache_path) if "key" in rec}
    keys = [_judge_key(p, teacher.model, version) for p in prompts]
    todo = list({k: (k, p, s) for k, p, s in zip(keys, prompts, schemas) if k not in cache}.values())
    if not todo:
        return [cache.get(k) for k in keys]
    bodies = [{"model": teacher.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
               "temperature": temperature, **({"seed": int(key[:8], 16) % 2**31} if temperature else {}),
               "response_format": {"type": "json_schema", "json_schema": {
                   "name": "verdict", "schema": schema, "strict": True}}} for key, prompt, schema in todo]
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_path, "a", encoding="utf-8") as fh, bar(total=len(todo), desc=desc) as pbar:
        def done(i: int, result: Any) -> None:
            pbar.update(1)
            try:
                if isinstance(result, BaseException):
                    raise result
                value = load_answer(message(result)[0])[0]
                if scalar_key and isinstance(value, (int, float, str)) and not isinstance(value, bool):
                    value = {scalar_key: value}
                if not isinstance(value, dict):
                    raise ValueError(f"not a JSON object: {str(value)[:80]}")
            except Exception as e:  # left None: asked again next time
                print(f"{desc}: {type(e).__name__}: {e}")
                return
            key = todo[i][0]
            cache[key] = {"key": key, **value}
            fh.write(json.dumps(cache[key], ensure_ascii=False) + "\n")
            fh.flush()

        complete_all(teacher.base_url, teacher.api_key(), bodies, teacher.capacity, timeout=300, max_retries=3,
                     on_done=done)
    return [cache.get(k) for k in keys]


def judge(teacher, items: list[dict[str, str]], cache_path: Path, kind: str = "general", fmt: str = ""
          ) -> list[int | None]:
    """Score items 0–5 with the teacher, using a holistic rubric in ``params/prompts/``: ``general`` (an answer
    without reference, for the forgetting check) or ``qa`` (a training pair against its source chunk, for 03).
    Answers with a reference are scored by key facts instead: :func:`judge_against_reference`. ``fmt`` (``json`` or
    ``digit``, default :func:`score_format`) is how the teacher writes the grade."""
    from .prompts import render_fields

    fmt = fmt or score_format(teacher)
    template = _template(kind)
    prompts = [render_fields(template, {**it, "score_format": SCORE_FORMATS[fmt]}) for it in items]
    schema = DIGIT_SCHEMA if fmt == "digit" else JUDGE_SCHEMA
    got = ask_json_cached(teacher, prompts, [schema] * len(prompts), cache_path, max_tokens=48 if fmt == "json" else 4,
                          desc="judge", scalar_key="score")
    out: list[int | None] = []
    for rec in got:
        try:
            out.append(max(0, min(5, int(rec["score"]))) if rec else None)
        except (KeyError, TypeError, ValueError):
            out.append(None)
    return out


# a break inside a reference: a sentence end or a clause separator followed by more text ("4,000" is no break)
_FACT_BREAK = re.compile(r"[。！？；，、;!?](?=\s*\S)|[.,](?=\s+\S)")


_EMPHASIS = re.compile(r"\*\*|__")


def one_fact(reference: str) -> bool:
    """A reference that is a single clause ("60", "24 hours", "The Professional edition allows up to 4 concurrent
    runs.") is its own one key fact: the teacher is not asked. Measured on the runs of 2026-12-01: 20 of the demo's
    23 references and 31 of 35 in the knowledge ablation are single clauses, and for every one the teacher returned
    one fact, the reference itself — with markdown dropped, context added ("25 个字符" → "密钥包含25个字符"), or once
    changed (`24h` → "24 hours")."""
    return not _FACT_BREAK.search(reference.strip().rstrip("。.!！?？"))


_ASIDE = re.compile(r"\s*[（(]([^（）()]+)[）)]")


def asides(reference: str, question: str) -> list[str]:
    """A single-clause reference's key facts: itself, or — when a parenthetical aside in it holds a hard token
    (:func:`hard_tokens`: "4.2.1（2025-03-14 发布）", "24 小时（`--horizon 24h`）", "Otterbay's “电网工具组”（Grid Tools
    team）") — the clause without its asides, and each such aside as a fact of its own. One fact with every token of
    both needed "4.2.1" for "Brindlewatt 版本是什么？" to state nothing (0 of 5, the closed-book "4.2.1（2025-03-14
    发布）" 5 of 5); as two facts the release date is still worth half. The clause must keep a hard token of its own
    ("资源 ID（`RID`）…" stays one fact)."""
    held: list[str] = []

    def cut(m: re.Match) -> str:
        if not hard_tokens(m.group(1), reference, question):
            return m.group(0)
        held.append(m.group(1).strip())
        return ""

    rest = _ASIDE.sub(cut, reference).strip()
    if not held or not hard_tokens(rest, reference, question):  # the clause itself must still say something exact
        return [reference]
    return [rest, *held]


def key_facts(teacher, items: list[dict[str, str]], cache_path: Path) -> list[list[str] | None]:
    """The key facts (1–3) a correct answer to each question must state, taken by the teacher from the reference
    answer alone — once per question, so base and fine-tuned answers are checked against the same list. A
    single-clause reference is its own one fact (:func:`one_fact`), without a request."""
    from .prompts import render_fields

    out: list[list[str] | None] = [asides(_EMPHASIS.sub("", it["reference"]).strip(), it["question"])
                                   if one_fact(it["reference"]) else None for it in items]
    asked = [i for i, f in enumerate(out) if f is None]
    template = _template("facts")
    prompts = [render_fields(template, items[i]) for i in asked]
    got = ask_json_cached(teacher, prompts, [FACTS_SCHEMA] * len(prompts), cache_path, max_tokens=320,
                          desc="judge: key facts", version="facts-v1")
    for i, rec in zip(asked, got):
        facts = [str(f).strip() for f in (rec or {}).get("facts") or [] if str(f).strip()]
        out[i] = facts[:3] or None
    return out


def exact_verdicts(item: dict[str, Any]) -> list[str] | None:
    """The verdicts when every key fact has hard tokens (numbers, `code`, names not in the question): then
    :func:`check_verdicts` decides "stated" by them whatever the judge says, and a judge's "contradicted" stands
    only with a conflicting value — so the teacher need not be asked (on fact-heavy docs most items). None when a
    fact needs the judge."""
    from .outcomes import degenerate, invented

    answer, reference, question = item["answer"], item.get("reference", ""), item["question"]
    if degenerate(answer, question):
        return ["missing"] * len(item["facts"])
    if not all(hard_tokens(f, reference, question) for f in item["facts"]):
        return None
    conflict = bool(invented(answer, reference, question))
    return check_verdicts(["contradicted" if conflict else "missing"] * len(item["facts"]), item["facts"], answer,
                          reference, question)


def judge_against_reference(teacher, items: list[dict[str, Any]], cache_path: Path
                            ) -> list[tuple[float, list[str]] | tuple[None, None]]:
    """Reference-anchored judge: for each item (``question``, ``reference``, ``facts`` from :func:`key_facts`,
    ``answer``) the teacher marks every key fact as stated, missing or contradicted by the answer, a fact's numbers,
    `code` and names must be in the answer for "stated" to stand (:func:`check_verdicts`), and the score is
    5 × the share stated (0–5). Small judges asked for one holistic 0–5 grade are lenient with fluent but wrong answers (the
    1.5B teacher gave the base model's invented answers 3.5 of 5); checking named facts one by one is not."""
    from .prompts import render_fields

    template = _template("reference")
    prompts, schemas, idx = [], [], []
    out: list[tuple[float, list[str]] | tuple[None, None]] = [(None, None)] * len(items)
    for i, it in enumerate(items):
        exact = exact_verdicts(it) if it.get("facts") else None
        if exact is not None:  # every fact decided by its numbers, codes and names: no request
            out[i] = (fact_score(exact), exact)
        elif it.get("facts"):
            facts = "\n".join(f"{n}. {f}" for n, f in enumerate(it["facts"], 1))
            prompts.append(render_fields(template, {**it, "facts": facts, "n": len(it["facts"])}))
            schemas.append(verdict_schema(len(it["facts"])))
            idx.append(i)
    got = ask_json_cached(teacher, prompts, schemas, cache_path, max_tokens=24 + 8 * 4, desc="judge",
                          version="verdicts-v1")
    for i, rec in zip(idx, got):
        verdicts = [str(v) for v in (rec or {}).get("verdicts") or []]
        it = items[i]
        if len(verdicts) == len(it["facts"]) and all(v in VERDICTS for v in verdicts):
            verdicts = check_verdicts(verdicts, it["facts"], it["answer"], it.get("reference", ""), it["question"])
            out[i] = (fact_score(verdicts), verdicts)
    return out


def add_judge_scores(rows: list[dict], teacher, eval_dir: Path, conditions: tuple[str, ...] = ("base", "tuned")
                     ) -> None:
    """``<condition>_judge`` (0–5 by key facts) and ``<condition>_verdicts`` per row (each answer column named in
    ``conditions``), and the row's ``key_facts``."""
    cache = eval_dir / "judge_cache.jsonl"
    facts = key_facts(teacher, [{"question": r["question"], "reference": r["reference"]} for r in rows], cache)
    for r, f in zip(rows, facts):
        r["key_facts"] = grounded_facts(f, r["reference"]) if f else None
    for model in conditions:
        scored = judge_against_reference(
            teacher, [{"question": r["question"], "reference": r["reference"], "facts": r["key_facts"],
                       "answer": r[model]} for r in rows], cache)
        for r, (score, verdicts) in zip(rows, scored):
            r[f"{model}_judge"] = score
            r[f"{model}_verdicts"] = verdicts

