"""02, part 2 — ask the teacher for question/answer pairs per chunk as schema-checked JSON, appended to JSONL.

Every finished chunk is appended (and flushed) to ``data/qa.jsonl`` and recorded in ``data/chunks_done.jsonl``
at once, so a crash loses at most the requests in flight and a rerun continues where it stopped. Requests run
concurrently up to the teacher's capacity (``teacher.json``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import json_repair
from pydantic import BaseModel, Field, ValidationError, field_validator

from .corpus import Chunk
from .jsonio import read_jsonl, write_jsonl
from .paths import PARAMS_DIR
from .progress import bar
from .serve import Teacher
from .settings import SynthSettings

T = TypeVar("T")

QA_FILE = "qa.jsonl"  # append-only answers of every run (the cache)
DONE_FILE = "chunks_done.jsonl"  # one record per finished chunk (its cache key and row ids)
FAILURES_FILE = "failures.jsonl"  # one record per failed attempt, with its kind
DATASET_FILE = "dataset.jsonl"  # the final pairs: deterministic order, no duplicates
CHUNKS_FILE = "chunks.jsonl"


class QAPair(BaseModel):
    question: str = Field(min_length=4)
    answer: str = Field(min_length=1)
    paraphrases: list[str] = []
    kind: str = "fact"  # "abstain": a question on the chunk's topic that the docs do not answer

    @field_validator("question", "answer")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @field_validator("paraphrases")
    @classmethod
    def _clean(cls, v: list[str]) -> list[str]:
        return [p.strip() for p in v if isinstance(p, str) and len(p.strip()) >= 4]


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


def paraphrase_schema(k: int, cfg: SynthSettings) -> dict[str, Any]:
    return {"type": "object", "properties": {"paraphrases": {
        "type": "array", "minItems": k, "maxItems": k,
        "items": {"type": "string", "minLength": 4, "maxLength": cfg.max_question_chars}}},
        "required": ["paraphrases"], "additionalProperties": False}


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


class Transient(Exception):
    """A failed attempt worth retrying (429, 5xx, timeout, dropped connection, body cut short)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class Rejected(Exception):
    """The endpoint refused the request (4xx other than 429): not retried; for a response format, try the next."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.kind, self.status = "http_4xx", status


def _backoff(state) -> float:
    """Exponential backoff with jitter (0.5 s → 8 s), at least the server's Retry-After."""
    from tenacity import wait_exponential, wait_random

    wait = (wait_exponential(multiplier=0.5, max=8.0) + wait_random(0, 0.5))(state)
    exc = state.outcome.exception() if state.outcome else None
    ra = getattr(exc, "retry_after", None)
    return max(wait, ra) if ra else wait


class Endpoint:
    """One OpenAI-compatible endpoint for synthesis: an aiohttp connection pool, ``POST /chat/completions`` with
    plain JSON, retries with backoff by tenacity, and every failed attempt reported by kind (also those a retry
    fixed). Lean on purpose: on the 2-core CI machine the openai client capped synthesis at 260–460 requests/s with
    its typed ``create()`` and ~1,100 with its low-level ``post()`` over aiohttp (request building and typed
    responses cost ~1 ms of CPU a request); this path measured 2,800–3,600 (benchmarks/synth_throughput.py), so
    the client is never what limits a fast teacher."""

    def __init__(self, url: str, api_key: str, timeout: float, max_retries: int,
                 on_fault: Callable[[str, str], None]):
        import aiohttp

        self.url = url.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000),
                                             timeout=aiohttp.ClientTimeout(total=timeout))
        self.max_retries = max_retries
        self.on_fault = on_fault

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

        async for attempt in AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), wait=_backoff,
                                           retry=retry_if_exception_type(Transient), reraise=True):
            with attempt:
                return await self._once(body)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fault(self, kind: str, detail: str, retry_after: float | None = None) -> Transient:
        self.on_fault(kind, f"{self.url}: {detail}")
        return Transient(kind, detail, retry_after)

    async def _once(self, body: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        try:
            async with self.session.post(self.url, data=json.dumps(body, ensure_ascii=False).encode(),
                                         headers=self.headers) as r:
                raw = await r.read()
                status, retry_after = r.status, r.headers.get("Retry-After")
        except asyncio.TimeoutError as e:
            raise self._fault("timeout", f"no answer within the request timeout ({type(e).__name__})") from e
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as e:
            raise self._fault("truncated_stream", f"body cut short: {type(e).__name__}: {e}") from e
        except aiohttp.ClientError as e:
            raise self._fault("connection", f"{type(e).__name__}: {e}") from e
        if status == 429 or status >= 500:
            try:
                ra = float(retry_after) if retry_after else None
            except ValueError:
                ra = None
            raise self._fault("http_429" if status == 429 else "http_5xx", f"HTTP {status}: {raw[:200]!r}", ra)
        if status >= 400:
            self.on_fault("http_4xx", f"{self.url}: HTTP {status}: {raw[:200]!r}")
            raise Rejected(status, raw[:300].decode("utf-8", "replace"))
        try:
            return json.loads(raw)
        except ValueError as e:
            raise self._fault("truncated_stream", f"HTTP {status} with a body that is not JSON: {raw[:120]!r}") from e

    async def close(self) -> None:
        await self.session.close()


def _message(data: dict[str, Any]) -> tuple[str, str, str | None]:
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    return msg.get("content") or "", msg.get("reasoning_content") or msg.get("reasoning") or "", \
        choice.get("finish_reason")


async def _paraphrase(client, teacher: Teacher, question: str, lang: str, cfg: SynthSettings,
                      seed: int | None = None, prompts_dir: Path = PARAMS_DIR / "prompts") -> list[str]:
    """A separate, focused request per question: small teachers mix up paraphrases and answers otherwise."""
    prompt = render_fields(prompt_template(lang, prompts_dir, name="paraphrase"),
                           {"k": cfg.paraphrases, "question": question})
    body = {"model": teacher.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.7,
            "max_tokens": 256, "seed": seed, **_extra(teacher, cfg),
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "paraphrases", "schema": paraphrase_schema(cfg.paraphrases, cfg), "strict": True}}}
    content, _, _ = _message(await client.chat(body))
    data = load_answer(content)[0]
    items = data.get("paraphrases", []) if isinstance(data, dict) else []
    return [p.strip() for p in items if isinstance(p, str) and p.strip()][: cfg.paraphrases]


FAILURE_KINDS = (
    "http_429", "http_5xx", "http_4xx", "timeout", "connection", "truncated_stream",  # transport (each attempt)
    "malformed_json", "schema_invalid", "truncated_output", "no_pairs",  # the answer itself
)
HANDLED_KINDS = ("think_block", "reasoning_content", "json_repaired", "format_fallback", "retried_chunk")


@dataclass
class SynthStats:
    chunks_total: int = 0
    chunks_skipped_done: int = 0
    chunks_ok: int = 0
    chunks_failed: int = 0
    pairs: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    concurrency: int = 0
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=lambda: {k: 0 for k in FAILURE_KINDS})
    handled: dict[str, int] = field(default_factory=lambda: {k: 0 for k in HANDLED_KINDS})
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["errors"] = self.errors[:20]
        d["completion_tokens_per_s"] = round(self.completion_tokens / self.seconds, 2) if self.seconds else 0.0
        d["pairs_per_min"] = round(self.pairs * 60 / self.seconds, 2) if self.seconds else 0.0
        d["endpoints"] = {u: dict(e, completion_tokens_per_s=round(e["completion_tokens"] / self.seconds, 2)
                                  if self.seconds else 0.0) for u, e in self.endpoints.items()}
        return d


def _row_id(chunk_id: str, question: str) -> str:
    return hashlib.sha256(f"{chunk_id}\n{question}".encode()).hexdigest()[:16]


# the trained answer to a question the docs do not cover ("the docs don't say" items), per language
ABSTAIN_ANSWER = {"en": "The documentation does not cover this.", "zh": "文档中没有涉及这一点。"}


def abstain_schema(k: int, cfg: SynthSettings) -> dict[str, Any]:
    return {"type": "object", "properties": {"questions": {
        "type": "array", "minItems": k, "maxItems": k,
        "items": {"type": "string", "minLength": 4, "maxLength": cfg.max_question_chars}}},
        "required": ["questions"], "additionalProperties": False}


async def _unanswered(client, teacher: Teacher, chunk: Chunk, cfg: SynthSettings, seed: int | None = None,
                      prompts_dir: Path = PARAMS_DIR / "prompts") -> list[str]:
    """Questions on the chunk's topic that it does not answer (a separate request, like the paraphrases)."""
    prompt = render_prompt(prompt_template(chunk.lang, prompts_dir, name="abstain"), chunk, 0)
    prompt = render_fields(prompt, {"k": cfg.abstain_questions})
    body = {"model": teacher.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.7,
            "max_tokens": 64 * cfg.abstain_questions + 32, "seed": seed, **_extra(teacher, cfg),
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "questions", "schema": abstain_schema(cfg.abstain_questions, cfg), "strict": True}}}
    content, _, _ = _message(await client.chat(body))
    data = load_answer(content)[0]
    items = data.get("questions", []) if isinstance(data, dict) else []
    return [q.strip() for q in items if isinstance(q, str) and len(q.strip()) >= 4][: cfg.abstain_questions]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def chunk_key(chunk: Chunk, cfg: SynthSettings, model: str, prompts_dir: Path = PARAMS_DIR / "prompts") -> str:
    """Cache key of a chunk's answer: chunk content + prompt templates + teacher model + generation params. A change
    to any of them makes the chunk be asked again; the old answers stay in qa.jsonl but are no longer used."""
    templates = prompt_template(chunk.lang, prompts_dir)
    if cfg.paraphrases:
        templates += "\0" + prompt_template(chunk.lang, prompts_dir, name="paraphrase")
    if cfg.abstain_questions:
        templates += "\0" + prompt_template(chunk.lang, prompts_dir, name="abstain")
    gen = {"abstain_questions": cfg.abstain_questions} if cfg.abstain_questions else {}
    gen |= {"n": questions_for(chunk, cfg), "temperature": cfg.temperature, "max_tokens": cfg.max_tokens,
           "mode": cfg.mode, "paraphrases": cfg.paraphrases, "max_question_chars": cfg.max_question_chars,
           "max_answer_chars": cfg.max_answer_chars}
    return _sha(json.dumps([chunk.id, _sha(templates), model, gen], sort_keys=True))[:20]


def _extra(teacher: Teacher, cfg: SynthSettings) -> dict[str, Any]:
    """``synth.reproducible`` on llama-server: no reuse of a cached prompt prefix (evaluated in other batch shapes,
    it shifts logits slightly), so one prompt + seed always gives one answer."""
    if cfg.reproducible and teacher.backend == "llama.cpp":
        return {"cache_prompt": False}
    return {}


def _seed(key: str) -> int:
    """A fixed sampling seed per request, so a rerun asks exactly the same question of the teacher."""
    return int(key[:8], 16) % 2**31


def done_chunks(data_dir: Path) -> set[str]:
    """Cache keys of finished chunks (``chunks_done.jsonl``; a torn last line after a crash is ignored)."""
    path = data_dir / DONE_FILE
    done: set[str] = set()
    if path.is_file():
        for rec in read_jsonl(path):
            if rec.get("status") == "ok":
                done.add(rec.get("key") or rec["chunk_id"])
    return done


class _Writer:
    """Append-only JSONL writer. Each chunk's pairs, then its done-record, are flushed to the OS at once (a killed
    process loses nothing written); fsync, against a machine crash, runs at most every ``sync_every_s`` seconds and
    at close, so thousands of chunks a second are not held up by the disk."""

    def __init__(self, data_dir: Path, sync_every_s: float = 1.0):
        self.qa = open(data_dir / QA_FILE, "a", encoding="utf-8")
        self.done = open(data_dir / DONE_FILE, "a", encoding="utf-8")
        self.failures = open(data_dir / FAILURES_FILE, "a", encoding="utf-8")
        self.sync_every_s = sync_every_s
        self._synced = time.monotonic()

    def _append(self, fh, rows: list[dict]) -> None:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()

    def _maybe_sync(self) -> None:
        if time.monotonic() - self._synced >= self.sync_every_s:
            self.sync()

    def sync(self) -> None:
        for fh in (self.qa, self.done, self.failures):
            os.fsync(fh.fileno())
        self._synced = time.monotonic()

    def write(self, rows: list[dict], record: dict) -> None:
        self._append(self.qa, rows)  # pairs before the record that marks them finished
        self._append(self.done, [record])
        self._maybe_sync()

    def failure(self, record: dict) -> None:
        self._append(self.failures, [record])

    def close(self) -> None:
        self.sync()
        self.qa.close()
        self.done.close()
        self.failures.close()


class AnswerError(Exception):
    """The teacher answered, but with nothing usable; ``kind`` is one of FAILURE_KINDS."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def classify(e: BaseException) -> str:
    if isinstance(e, (AnswerError, Transient, Rejected)):
        return e.kind
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    return "connection" if isinstance(e, OSError) else "malformed_json"


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


async def _ask(client, teacher: Teacher, chunk: Chunk, cfg: SynthSettings, template: str, key: str,
               note: Callable[[str], None]) -> tuple[list[QAPair], Any, str]:
    n = questions_for(chunk, cfg)
    messages = [{"role": "user", "content": render_prompt(template, chunk, n)}]
    formats = [
        {"type": "json_schema", "json_schema": {"name": "qa_pairs", "schema": qa_schema(n, cfg), "strict": True}},
        {"type": "json_object"},
        None,
    ]
    last_exc: Exception | None = None
    for fmt in formats:
        body: dict[str, Any] = {"model": teacher.model, "messages": messages, "temperature": cfg.temperature,
                                "max_tokens": cfg.max_tokens, "seed": _seed(key), **_extra(teacher, cfg)}
        if fmt is not None:
            body["response_format"] = fmt
        try:
            data = await client.chat(body)
        except Rejected as e:  # e.g. this endpoint lacks this response format: try the next one
            last_exc = e
            note("format_fallback")
            continue
        content, reasoning, finish = _message(data)
        if reasoning:  # a thinking model: the JSON is in content, or only in its reasoning when content is empty
            note("reasoning_content")
            content = content if content.strip() else reasoning
        return inspect_answer(content, finish, n, note), data.get("usage") or {}, finish
    raise AnswerError("http_4xx", f"teacher rejected every response format: {last_exc}")


async def generate_async(chunks: list[Chunk], teacher: Teacher, cfg: SynthSettings, data_dir: Path,
                         prompts_dir: Path = PARAMS_DIR / "prompts", show_progress: bool = True) -> SynthStats:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    chunks = list({c.id: c for c in chunks}.values())  # identical chunks are asked once
    keys = {c.id: chunk_key(c, cfg, teacher.model, prompts_dir) for c in chunks}
    stats = SynthStats(chunks_total=len(chunks))
    done = done_chunks(data_dir)
    todo = [c for c in chunks if keys[c.id] not in done]
    stats.chunks_skipped_done = len(chunks) - len(todo)
    urls = teacher.urls
    # reproducible: one request at a time, since a server batching two sequences computes each a little differently
    # (seen: two runs' answers parted after ~130 characters with 2 slots busy, in the whole-run kill trials)
    stats.concurrency = cfg.concurrency or (1 if cfg.reproducible else max(1, teacher.capacity) * len(urls))
    stats.endpoints = {u: {"requests": 0, "ok": 0, "errors": 0, "completion_tokens": 0, "pairs": 0} for u in urls}

    def note(kind: str) -> None:
        counts = stats.failures if kind in stats.failures else stats.handled
        counts[kind] = counts.get(kind, 0) + 1

    def request_fault(kind: str, detail: str) -> None:  # every failed HTTP attempt, also those a retry fixed
        note(kind)
        writer.failure({"stage": "request", "kind": kind, "error": detail[:300]})

    def client_for(u: str) -> Endpoint:
        return Endpoint(u, teacher.api_key(), cfg.request_timeout, cfg.max_retries, request_fault)

    writer = _Writer(data_dir)
    clients = {u: client_for(u) for u in urls}
    inflight = {u: 0 for u in urls}
    down_until = {u: 0.0 for u in urls}
    templates = {lang: prompt_template(lang, prompts_dir) for lang in {c.lang for c in todo}}
    sem = asyncio.Semaphore(stats.concurrency)
    t0 = time.perf_counter()

    async def ask_anywhere(chunk: Chunk, key: str):
        """Healthy endpoints first, least busy first; an endpoint that fails to connect rests for 10 s and its
        request goes to the next one, so a dead replica costs a retry, never a chunk."""
        last: Exception | None = None
        now = time.monotonic()
        for u in sorted(urls, key=lambda x: (down_until[x] > now, inflight[x])):
            inflight[u] += 1
            stats.endpoints[u]["requests"] += 1
            stats.requests += 1
            try:
                pairs, usage, finish = await _ask(clients[u], teacher, chunk, cfg, templates[chunk.lang], key, note)
                if cfg.paraphrases:
                    for p in pairs:
                        try:
                            p.paraphrases = await _paraphrase(clients[u], teacher, p.question, chunk.lang, cfg,
                                                              _seed(_sha(key + p.question)), prompts_dir)
                        except Exception as e:  # a pair without paraphrases is still a good training pair
                            writer.failure({"chunk_id": chunk.id, "key": key, "kind": classify(e),
                                            "stage": "paraphrase", "error": f"{type(e).__name__}: {e}"[:300]})
                unanswered: list[str] = []
                if cfg.abstain_questions:
                    try:
                        unanswered = await _unanswered(clients[u], teacher, chunk, cfg, _seed(_sha(key + "abstain")),
                                                       prompts_dir)
                    except Exception as e:  # the chunk's pairs stand without them
                        writer.failure({"chunk_id": chunk.id, "key": key, "kind": classify(e),
                                        "stage": "abstain", "error": f"{type(e).__name__}: {e}"[:300]})
                pairs = pairs + [QAPair(question=q, answer=ABSTAIN_ANSWER.get(chunk.lang, ABSTAIN_ANSWER["en"]),
                                        kind="abstain") for q in unanswered]
            except AnswerError:
                raise  # the endpoint works; the answer was bad: retry the chunk, not another endpoint
            except Exception as e:
                stats.endpoints[u]["errors"] += 1
                if classify(e) in ("connection", "timeout"):
                    down_until[u] = time.monotonic() + 10.0
                last = e
                continue
            finally:
                inflight[u] -= 1
            stats.endpoints[u]["ok"] += 1
            stats.endpoints[u]["pairs"] += len(pairs)
            stats.endpoints[u]["completion_tokens"] += usage.get("completion_tokens") or 0
            return pairs, usage, finish
        assert last is not None
        raise last

    async def one(chunk: Chunk) -> None:
        key = keys[chunk.id]
        for attempt in range(1, cfg.attempts + 1):
            try:
                async with sem:
                    pairs, usage, finish = await ask_anywhere(chunk, key)
                break
            except Exception as e:
                kind = classify(e)
                if isinstance(e, AnswerError):
                    note(kind)  # transport faults were counted by the transport, on every attempt
                writer.failure({"chunk_id": chunk.id, "key": key, "source": chunk.source, "attempt": attempt,
                                "kind": kind, "error": f"{type(e).__name__}: {e}"[:300]})
                if attempt < cfg.attempts:
                    note("retried_chunk")
                    await asyncio.sleep(min(8.0, 0.5 * 2 ** attempt))
                    continue
                stats.chunks_failed += 1  # left for the next run
                stats.errors.append(f"{chunk.id}: {kind}: {e}"[:300])
                writer.write([], {"chunk_id": chunk.id, "key": key, "status": "failed", "kind": kind})
                return
        stats.prompt_tokens += usage.get("prompt_tokens") or 0
        stats.completion_tokens += usage.get("completion_tokens") or 0
        rows = [
            {
                "id": _row_id(chunk.id, p.question),
                "key": key,
                "pair_index": i,
                "chunk_id": chunk.id,
                "source": chunk.source,
                "headings": chunk.breadcrumb,
                "lang": chunk.lang,
                "instruction": p.question,
                "input": chunk.text if cfg.mode == "open_book" else "",
                "output": p.answer,
                "paraphrases": p.paraphrases[: cfg.paraphrases],
                "kind": p.kind,  # "fact" or "abstain" (a question the docs do not answer); every row has it
                "teacher": teacher.model,
                "finish_reason": finish,
            }
            for i, p in enumerate(pairs)
        ]
        stats.chunks_ok += 1
        stats.pairs += len(rows)
        writer.write(rows, {"chunk_id": chunk.id, "key": key, "status": "ok", "ids": [r["id"] for r in rows]})

    try:
        with bar(total=len(todo), desc="chunks", unit="chunk", disable=not show_progress) as pbar:
            tasks = [asyncio.create_task(one(c)) for c in todo]
            for fut in asyncio.as_completed(tasks):
                await fut
                pbar.update(1)
                elapsed = time.perf_counter() - t0
                pbar.set_postfix(pairs=stats.pairs, tok_s=f"{stats.completion_tokens / elapsed:.1f}",
                                 failed=stats.chunks_failed, refresh=False)
    finally:
        writer.close()
        for c in clients.values():
            await c.close()
    stats.seconds = round(time.perf_counter() - t0, 2)
    write_dataset(chunks, keys, data_dir)
    return stats


def write_dataset(chunks: list[Chunk], keys: dict[str, str], data_dir: Path) -> Path:
    """``dataset.jsonl``: the pairs of every finished chunk of this corpus and these settings, in corpus order then
    answer order, each pair once — the same file whatever crashes and resumes happened on the way."""
    data_dir = Path(data_dir)
    order = {keys[c.id]: i for i, c in enumerate(chunks)}
    chosen: dict[str, set[str] | None] = {}  # key -> the row ids its (first) ok record names
    if (data_dir / DONE_FILE).is_file():
        for rec in read_jsonl(data_dir / DONE_FILE):
            k = rec.get("key")
            if rec.get("status") == "ok" and k in order and k not in chosen:
                chosen[k] = set(rec["ids"]) if "ids" in rec else None
    rows: dict[str, dict] = {}
    if (data_dir / QA_FILE).is_file():
        for r in read_jsonl(data_dir / QA_FILE):
            k = r.get("key")
            if k in chosen and (chosen[k] is None or r["id"] in chosen[k]) and r["id"] not in rows:
                rows[r["id"]] = r
    ordered = sorted(rows.values(), key=lambda r: (order[r["key"]], r.get("pair_index", 0), r["id"]))
    return write_jsonl(ordered, data_dir / DATASET_FILE)


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from sync code, also inside Jupyter's already running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(factory())  # type: ignore[arg-type]
        except BaseException as e:  # re-raised in the caller's thread
            result["error"] = e

    th = threading.Thread(target=target)
    th.start()
    th.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def generate(chunks: list[Chunk], teacher: Teacher, cfg: SynthSettings, data_dir: Path, **kw) -> SynthStats:
    return run_sync(lambda: generate_async(chunks, teacher, cfg, data_dir, **kw))


def write_chunks(chunks: list[Chunk], data_dir: Path) -> Path:
    return write_jsonl((c.to_json() for c in chunks), Path(data_dir) / CHUNKS_FILE)


def load_qa(data_dir: Path) -> list[dict]:
    """The final pairs (``dataset.jsonl``); for a synthesis that never finished, the pairs of its finished chunks
    (rows of a chunk later marked failed and torn lines are ignored)."""
    if (Path(data_dir) / DATASET_FILE).is_file():
        return read_jsonl(Path(data_dir) / DATASET_FILE)
    path = Path(data_dir) / QA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run 02_synthesize for this run dir first")
    done = done_chunks(Path(data_dir))
    seen: set[str] = set()
    out = []
    for r in read_jsonl(path):
        if (r.get("key") or r.get("chunk_id")) in done and r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
    return out


def write_report(stats: SynthStats, corpus_report: Any, data_dir: Path) -> Path:
    """``synth_report.json``: corpus files used / skipped, chunks, pairs, failures and repairs by kind, pairs/min,
    tokens/s, and the same per endpoint."""
    from .jsonio import write_json

    corpus = corpus_report.__dict__ if hasattr(corpus_report, "__dict__") else corpus_report
    return write_json({"synth": stats.as_dict(), "corpus": corpus}, Path(data_dir) / "synth_report.json")


def run_headless(run_dir: Path, cfg, show_progress: bool = True) -> SynthStats:
    """Notebook 02's steps without a notebook (scripts, benchmarks, the crash tests): corpus → chunks → answers."""
    from . import corpus as corpus_lib, serve
    from .paths import project_path

    run_dir = Path(run_dir)
    teacher = Teacher.load(run_dir)
    docs, report = corpus_lib.read_corpus(project_path(cfg.corpus), cfg.synth.include, cfg.synth.exclude,
                                          cfg.synth.max_file_mb)
    chunks = corpus_lib.chunk_corpus(docs, cfg.synth.chunk_tokens, cfg.synth.min_chunk_tokens,
                                     serve.token_counter(teacher))
    if cfg.synth.max_chunks:
        chunks = chunks[: cfg.synth.max_chunks]
    data = run_dir / "data"
    write_chunks(chunks, data)
    stats = generate(chunks, teacher, cfg.synth, data, show_progress=show_progress)
    write_report(stats, report, data)
    return stats


def main(argv: list[str] | None = None) -> int:
    """``python -m tunebook.synthesize RUN_DIR --profile ci -p synth.max_chunks=10``: 02 headless against the
    teacher recorded in RUN_DIR/teacher.json."""
    import argparse

    from . import settings as settings_mod

    ap = argparse.ArgumentParser(prog="python -m tunebook.synthesize", description=main.__doc__)
    ap.add_argument("run_dir")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("-p", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    cfg = settings_mod.load(a.profile, a.overrides)
    stats = run_headless(Path(a.run_dir), cfg, show_progress=not a.quiet)
    d = stats.as_dict()
    print(json.dumps({k: d[k] for k in ("chunks_total", "chunks_skipped_done", "chunks_ok", "chunks_failed", "pairs",
                                        "pairs_per_min", "completion_tokens_per_s", "failures")}))
    return 0 if not stats.chunks_failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
