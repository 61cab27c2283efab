"""02's requests to the teacher, as text: prompt templates from ``params/prompts/`` with ``{{name}}`` fields, and the
JSON schemas the answers must follow (pairs per chunk, paraphrases, questions the docs do not answer)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from .corpus import Chunk
from .paths import PARAMS_DIR
from .settings import SynthSettings


def questions_for(chunk: Chunk, cfg: SynthSettings) -> int:
    n = round(chunk.tokens * cfg.questions_per_100_tokens / 100)
    return max(cfg.min_questions, min(cfg.max_questions, n))


def qa_schema(n: int, cfg: SynthSettings) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "pairs": {
                "type": "array",
                "minItems": n,
                "maxItems": n,
                "items": {
                    "type": "object",
                    "properties": {
                        "question": {"type": "string", "minLength": 4, "maxLength": cfg.max_question_chars},
                        "answer": {"type": "string", "minLength": 1, "maxLength": cfg.max_answer_chars},
                    },
                    "required": ["question", "answer"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["pairs"],
        "additionalProperties": False,
    }


def paraphrase_schema(k: int, cfg: SynthSettings) -> dict[str, Any]:
    return {"type": "object", "properties": {"paraphrases": {
        "type": "array", "minItems": k, "maxItems": k,
        "items": {"type": "string", "minLength": 4, "maxLength": cfg.max_question_chars}}},
        "required": ["paraphrases"], "additionalProperties": False}


def abstain_schema(k: int, cfg: SynthSettings) -> dict[str, Any]:
    """Each "docs don't say" question comes with the name it invents: asked for the name first, the 1.5B teacher
    stops reusing the excerpt's own names (it did in 13 of 13 questions when asked for questions alone)."""
    item = {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 60},
        "question": {"type": "string", "minLength": 4, "maxLength": cfg.max_question_chars}},
        "required": ["name", "question"], "additionalProperties": False}
    return {"type": "object", "properties": {"questions": {"type": "array", "minItems": k, "maxItems": k, "items": item}},
            "required": ["questions"], "additionalProperties": False}


def prompt_template(lang: str, prompts_dir: Path = PARAMS_DIR / "prompts", name: str = "qa") -> str:
    path = prompts_dir / f"{name}_{lang}.md"
    if not path.is_file():
        path = prompts_dir / f"{name}_en.md"
    return _read(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read(path: str, mtime_ns: int) -> str:  # an edited template (new mtime) is read again
    return Path(path).read_text(encoding="utf-8")


def render_fields(template: str, values: dict[str, Any]) -> str:
    """Fill ``{{name}}`` placeholders (other braces, e.g. JSON examples or code in a chunk, stay as they are)."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(values.get(m.group(1), m.group(0))), template)


def render_prompt(template: str, chunk: Chunk, n: int) -> str:
    values = {"n": str(n), "title": chunk.title, "breadcrumb": " > ".join(chunk.breadcrumb), "chunk": chunk.text,
              "source": chunk.source}
    return render_fields(template, values)
