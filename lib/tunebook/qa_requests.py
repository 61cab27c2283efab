"""02's requests for one chunk, on one endpoint: its question/answer pairs (schema-constrained JSON, falling back to
``json_object`` and then plain text where an endpoint rejects a response format), a paraphrase request per question,
and questions on the chunk's topic that it does not answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .answers import AnswerError, QAPair, inspect_answer, load_answer, string_list
from .client import Client, Rejected, message
from .corpus import Chunk
from .outcomes import ABSTAIN_ANSWER
from .paths import PARAMS_DIR
from .prompts import (abstain_schema, paraphrase_schema, prompt_template, qa_schema, questions_for, render_fields,
                      render_prompt)
from .serve import Teacher
from .settings import SynthSettings
from .text import normalize


def request_extra(teacher: Teacher, cfg: SynthSettings) -> dict[str, Any]:
    """``synth.reproducible`` on llama-server: no reuse of a cached prompt prefix (evaluated in other batch shapes,
    it shifts logits slightly), so one prompt + seed always gives one answer."""
    if cfg.reproducible and teacher.backend == "llama.cpp":
        return {"cache_prompt": False}
    return {}


def seed_for(key: str) -> int:
    """A fixed sampling seed per request, so a rerun asks exactly the same question of the teacher."""
    return int(key[:8], 16) % 2**31


def _schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


async def ask_pairs(client: Client, teacher: Teacher, chunk: Chunk, cfg: SynthSettings, template: str, key: str,
                    note: Callable[[str], None]) -> tuple[list[QAPair], Any, str]:
    """The chunk's pairs, its token usage and finish reason; the response formats are tried in turn."""
    n = questions_for(chunk, cfg)
    messages = [{"role": "user", "content": render_prompt(template, chunk, n)}]
    formats = [_schema_format("qa_pairs", qa_schema(n, cfg)), {"type": "json_object"}, None]
    last_exc: Exception | None = None
    for fmt in formats:
        body: dict[str, Any] = {"model": teacher.model, "messages": messages, "temperature": cfg.temperature,
                                "max_tokens": cfg.max_tokens, "seed": seed_for(key), **request_extra(teacher, cfg)}
        if fmt is not None:
            body["response_format"] = fmt
        try:
            data = await client.chat(body)
        except Rejected as e:  # e.g. this endpoint lacks this response format: try the next one
            last_exc = e
            note("format_fallback")
            continue
        content, reasoning, finish = message(data)
        if reasoning:  # a thinking model: the JSON is in content, or only in its reasoning when content is empty
            note("reasoning_content")
            content = content if content.strip() else reasoning
        return inspect_answer(content, finish, n, note), data.get("usage") or {}, finish
    raise AnswerError("http_4xx", f"teacher rejected every response format: {last_exc}")


async def paraphrases(client: Client, teacher: Teacher, question: str, chunk: Chunk, cfg: SynthSettings,
                      seed: int | None = None, prompts_dir: Path = PARAMS_DIR / "prompts") -> list[str]:
    """A separate, focused request per question: small teachers mix up paraphrases and answers otherwise. The
    template also gets the page's title and breadcrumb, so a rewording can name what the question is about."""
    prompt = render_fields(prompt_template(chunk.lang, prompts_dir, name="paraphrase"),
                           {"k": cfg.paraphrases, "question": question, "title": chunk.title,
                            "breadcrumb": " > ".join(chunk.breadcrumb)})
    body = {"model": teacher.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.7,
            "max_tokens": 256, "seed": seed, **request_extra(teacher, cfg),
            "response_format": _schema_format("paraphrases", paraphrase_schema(cfg.paraphrases, cfg))}
    said: dict[str, str] = {}  # normalized -> as written; the question itself rewords nothing (session 35: 61 of the
    for attempt in range(1 + cfg.paraphrase_retries):  # 1.5B teacher's 296 paraphrases on two corpora were the question)
        if attempt:
            body = {**body, "seed": None if seed is None else (seed + attempt) % 2**31}
        content, _, _ = message(await client.chat(body))
        for p in string_list(content, "paraphrases", cfg.paraphrases):
            said.setdefault(normalize(p), p)
        said.pop(normalize(question), None)
        if len(said) >= cfg.paraphrases:
            break
    return list(said.values())[: cfg.paraphrases]


async def unanswered(client: Client, teacher: Teacher, chunk: Chunk, cfg: SynthSettings, seed: int | None = None,
                     prompts_dir: Path = PARAMS_DIR / "prompts") -> list[str]:
    """Questions on the chunk's topic that it does not answer (a separate request, like the paraphrases): the
    teacher invents a name the excerpt does not use (it is shown the names it does use) and asks about it. A
    question whose name is in the excerpt, or not in the question, is left out here; 03 checks the whole corpus."""
    prompt = render_prompt(prompt_template(chunk.lang, prompts_dir, name="abstain"), chunk, 0)
    prompt = render_fields(prompt, {"k": cfg.abstain_questions, "names": excerpt_names(chunk.text)})
    body = {"model": teacher.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.7,
            "max_tokens": 96 * cfg.abstain_questions + 32, "seed": seed, **request_extra(teacher, cfg),
            "response_format": _schema_format("questions", abstain_schema(cfg.abstain_questions, cfg))}
    content, _, _ = message(await client.chat(body))
    return invented_questions(load_answer(content)[0], chunk.text, cfg.abstain_questions)


def excerpt_names(text: str, limit: int = 30) -> str:
    """The `code` spans and identifiers an excerpt uses, as the abstain prompt lists them (numbers left out)."""
    from .outcomes import values

    names = [v.strip("`") for v in values(text) if not v[:1].isdigit()]
    return ", ".join(f"`{n}`" for n in list(dict.fromkeys(n for n in names if len(n) >= 2))[:limit]) or "(none)"


def invented_questions(data: Any, chunk_text: str, limit: int) -> list[str]:
    """Questions from ``{"questions": [{"name", "question"}]}`` whose invented name is really new to the excerpt
    and named in the question (plain strings, from a teacher that ignored the schema, pass through to 03)."""
    items = data.get("questions", []) if isinstance(data, dict) else []
    text, out = chunk_text.lower(), []
    for it in items:
        if isinstance(it, str):
            q = it.strip()
        elif isinstance(it, dict) and isinstance(it.get("question"), str):
            q, name = it["question"].strip(), str(it.get("name") or "").strip().strip("`'\" ").lower()
            if not name or name in text or name not in q.lower():
                continue
        else:
            continue
        if len(q) >= 4:
            out.append(q)
    return out[:limit]


def abstain_pairs(questions: list[str], lang: str) -> list[QAPair]:
    """Training pairs for questions the docs do not answer: the language's "the docs don't cover this"."""
    answer = ABSTAIN_ANSWER.get(lang, ABSTAIN_ANSWER["en"])
    return [QAPair(question=q, answer=answer, kind="abstain") for q in questions]
