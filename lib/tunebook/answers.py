"""A teacher's JSON answers, read leniently: ``<think>`` blocks and code fences stripped, broken JSON repaired
(json-repair), question/answer pairs validated one by one; what was repaired is counted, an unusable answer is an
:class:`AnswerError` of a named kind."""

from __future__ import annotations

import json
import re
from typing import Any, Callable

import json_repair
from pydantic import BaseModel, Field, ValidationError, field_validator


# JSON's \b and \f escapes: a teacher writing a Windows path ("%APPDATA%\brindlewatt") as JSON without doubling the
# backslash gets a backspace; docs text never holds these control characters, so they are read back as written
_CONTROL_ESCAPES = str.maketrans({"\b": "\\b", "\f": "\\f"})


def _unescape_controls(v: str) -> str:
    return v.translate(_CONTROL_ESCAPES)


class QAPair(BaseModel):
    question: str = Field(min_length=4)
    answer: str = Field(min_length=1)
    paraphrases: list[str] = []
    kind: str = "fact"  # "abstain": a question on the chunk's topic that the docs do not answer

    @field_validator("question", "answer")
    @classmethod
    def _strip(cls, v: str) -> str:
        return _unescape_controls(v).strip()

    @field_validator("paraphrases")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        return [_unescape_controls(p).strip() for p in v if isinstance(p, str) and len(p.strip()) >= 4]


_THINK = re.compile(r"<think>.*?</think>", re.S)


def load_answer(content: str) -> tuple[Any, bool, str]:
    """A teacher's JSON answer without ``<think>`` blocks or code fences: (data, whether it was valid JSON as sent
    or needed json-repair, the stripped text)."""
    body = _THINK.sub("", content or "").strip()
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", body)
    try:
        return json.loads(body), True, body
    except json.JSONDecodeError:
        return json_repair.loads(body), False, body


def parse_pairs(content: str) -> list[QAPair]:
    """Strip reasoning, parse (leniently if needed) and validate the pairs; invalid pairs are dropped."""
    return valid_pairs(load_answer(content)[0])


def valid_pairs(data: Any) -> list[QAPair]:
    """The pairs in parsed JSON (``{"pairs": [...]}``, ``{"qa": [...]}`` or a bare list) that validate."""
    if isinstance(data, dict):
        items = data.get("pairs", data.get("qa", []))
    elif isinstance(data, list):
        items = data
    else:
        items = []
    pairs = []
    for item in items if isinstance(items, list) else []:
        try:
            pairs.append(QAPair.model_validate(item))
        except ValidationError:
            continue
    return pairs


def string_list(content: str, field: str, limit: int, min_chars: int = 1) -> list[str]:
    """The strings under ``field`` of a JSON answer (paraphrases, unanswered questions), stripped, at most
    ``limit``."""
    data = load_answer(content)[0]
    items = data.get(field, []) if isinstance(data, dict) else []
    return [_unescape_controls(s).strip() for s in items if isinstance(s, str) and len(s.strip()) >= min_chars][:limit]


class AnswerError(Exception):
    """The teacher answered, but with nothing usable; ``kind`` is one of FAILURE_KINDS."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def inspect_answer(content: str, finish: str | None, n: int, note: Callable[[str], None]) -> list[QAPair]:
    """Validated pairs of one answer; counts what was repaired (``note``) and raises AnswerError when nothing is
    usable (malformed JSON, wrong schema, an answer cut at max_tokens)."""
    if _THINK.search(content or ""):
        note("think_block")
    data, valid, body = load_answer(content)
    if not valid:
        note("malformed_json")
        if data not in ("", None, [], {}):
            note("json_repaired")
    pairs = valid_pairs(data)[:n]
    if pairs:
        return pairs
    if finish == "length":
        raise AnswerError("truncated_output", "the answer was cut at max_tokens before any complete pair")
    if not isinstance(data, (dict, list)) or data in ({}, []):
        raise AnswerError("malformed_json", f"not JSON: {body[:120]!r}")
    raise AnswerError("schema_invalid", f"JSON without valid pairs: {body[:120]!r}")
