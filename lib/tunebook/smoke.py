"""01's smoke tests of a running teacher: an answer streamed token by token (latency to the first token, tokens/s)
and JSON under a schema, which 02 relies on."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator, Protocol

from . import client
from .server_commands import ServeError


class Served(Protocol):
    """What the smoke tests need of a ``serve.Teacher`` (which imports this module, so is not imported here)."""

    base_url: str
    model: str

    def api_key(self) -> str: ...


def stream_answer(teacher: Served, prompt: str, max_tokens: int = 96) -> Iterator[str]:
    body = {"model": teacher.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.0}
    yield from client.stream(teacher.base_url, teacher.api_key(), body, timeout=300)


def smoke_stream(teacher: Served, prompt: str, max_tokens: int = 96) -> dict[str, Any]:
    """Stream an answer to stdout; return latency to the first token, tokens and tokens/s."""
    t0 = time.perf_counter()
    first = None
    pieces: list[str] = []
    for piece in stream_answer(teacher, prompt, max_tokens):
        if first is None:
            first = time.perf_counter() - t0
        pieces.append(piece)
        print(piece, end="", flush=True)
    total = time.perf_counter() - t0
    print()
    n = len(pieces)
    gen_time = max(total - (first or 0.0), 1e-6)
    return {"first_token_s": round(first or total, 3), "total_s": round(total, 3), "tokens": n,
            "tokens_per_s": round(max(n - 1, 0) / gen_time, 2), "text": "".join(pieces)}


SMOKE_SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string", "maxLength": 40}, "score": {"type": "integer", "minimum": 0, "maximum": 5}},
    "required": ["topic", "score"],
    "additionalProperties": False,
}


def smoke_json_schema(teacher: Served) -> dict[str, Any]:
    """Ask for JSON under a schema (02 relies on this) and validate what comes back."""
    body = {"model": teacher.model, "max_tokens": 160, "temperature": 0.0,
            "messages": [{"role": "user",
                          "content": "Name a physics topic and rate its difficulty from 0 to 5, as JSON."}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "smoke", "schema": SMOKE_SCHEMA, "strict": True}}}
    data = json.loads(client.message(client.complete(teacher.base_url, teacher.api_key(), body, timeout=300))[0])
    ok = isinstance(data.get("topic"), str) and isinstance(data.get("score"), int) and 0 <= data["score"] <= 5
    if not ok:
        raise ServeError(f"json_schema response does not match the schema: {data!r}")
    return data
