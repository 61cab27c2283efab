"""02, part 2 — ask the teacher for question/answer pairs per chunk as schema-checked JSON, appended to JSONL.

Every finished chunk is appended (and flushed) to ``data/qa.jsonl`` and recorded in ``data/chunks_done.jsonl``
at once, so a crash loses at most the requests in flight and a rerun continues where it stopped. Requests run
concurrently up to the teacher's capacity (``teacher.json``).
"""

from __future__ import annotations

import asyncio
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

QA_FILE = "qa.jsonl"
DONE_FILE = "chunks_done.jsonl"
CHUNKS_FILE = "chunks.jsonl"


class QAPair(BaseModel):
    question: str = Field(min_length=4)
    answer: str = Field(min_length=1)
    paraphrases: list[str] = []

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
    return path.read_text(encoding="utf-8")


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


def parse_pairs(content: str) -> list[QAPair]:
    """Strip reasoning, parse (leniently if needed) and validate the pairs; invalid pairs are dropped."""
    content = _THINK.sub("", content or "").strip()
    content = re.sub(r"^```(?:json)?\s*|\s*```$", "", content)
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        data = json_repair.loads(content)
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


async def _paraphrase(client, teacher: Teacher, question: str, lang: str, cfg: SynthSettings) -> list[str]:
    """A separate, focused request per question: small teachers mix up paraphrases and answers otherwise."""
    prompt = render_fields(prompt_template(lang, name="paraphrase"), {"k": cfg.paraphrases, "question": question})
    r = await client.chat.completions.create(
        model=teacher.model, messages=[{"role": "user", "content": prompt}], temperature=0.7, max_tokens=256,
        response_format={"type": "json_schema", "json_schema": {
            "name": "paraphrases", "schema": paraphrase_schema(cfg.paraphrases, cfg), "strict": True}})
    content = _THINK.sub("", r.choices[0].message.content or "")
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        data = json_repair.loads(content)
    items = data.get("paraphrases", []) if isinstance(data, dict) else []
    return [p.strip() for p in items if isinstance(p, str) and p.strip()][: cfg.paraphrases]


@dataclass
class SynthStats:
    chunks_total: int = 0
    chunks_skipped_done: int = 0
    chunks_ok: int = 0
    chunks_failed: int = 0
    pairs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    concurrency: int = 0
    endpoints: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["errors"] = self.errors[:20]
        d["completion_tokens_per_s"] = round(self.completion_tokens / self.seconds, 2) if self.seconds else 0.0
        return d


def _row_id(chunk_id: str, question: str) -> str:
    return hashlib.sha256(f"{chunk_id}\n{question}".encode()).hexdigest()[:16]


def done_chunks(data_dir: Path) -> set[str]:
    path = data_dir / DONE_FILE
    done: set[str] = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line after a crash
            if rec.get("status") == "ok":
                done.add(rec["chunk_id"])
    return done


class _Writer:
    """Append-only JSONL writer: each chunk's pairs and its done-record are flushed and fsynced together."""

    def __init__(self, data_dir: Path):
        self.qa = open(data_dir / QA_FILE, "a", encoding="utf-8")
        self.done = open(data_dir / DONE_FILE, "a", encoding="utf-8")

    def write(self, rows: list[dict], record: dict) -> None:
        for r in rows:
            self.qa.write(json.dumps(r, ensure_ascii=False) + "\n")
        self.qa.flush()
        os.fsync(self.qa.fileno())
        self.done.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.done.flush()
        os.fsync(self.done.fileno())

    def close(self) -> None:
        self.qa.close()
        self.done.close()


async def _ask(client, teacher: Teacher, chunk: Chunk, cfg: SynthSettings, template: str) -> tuple[list[QAPair], Any, str]:
    import openai

    n = questions_for(chunk, cfg)
    messages = [{"role": "user", "content": render_prompt(template, chunk, n)}]
    formats = [
        {"type": "json_schema", "json_schema": {"name": "qa_pairs", "schema": qa_schema(n, cfg), "strict": True}},
        {"type": "json_object"},
        None,
    ]
    last_exc: Exception | None = None
    for fmt in formats:
        kwargs: dict[str, Any] = {"model": teacher.model, "messages": messages, "temperature": cfg.temperature,
                                  "max_tokens": cfg.max_tokens}
        if fmt is not None:
            kwargs["response_format"] = fmt
        try:
            r = await client.chat.completions.create(**kwargs)
        except openai.BadRequestError as e:  # this endpoint lacks this response format: try the next one
            last_exc = e
            continue
        msg = r.choices[0].message
        content = msg.content or getattr(msg, "reasoning_content", None) or ""
        return parse_pairs(content)[:n], r.usage, r.choices[0].finish_reason
    raise RuntimeError(f"teacher rejected every response format: {last_exc}")


async def generate_async(chunks: list[Chunk], teacher: Teacher, cfg: SynthSettings, data_dir: Path) -> SynthStats:
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    stats = SynthStats(chunks_total=len(chunks))
    done = done_chunks(data_dir)
    todo = [c for c in chunks if c.id not in done]
    stats.chunks_skipped_done = len(chunks) - len(todo)
    urls = teacher.urls
    stats.concurrency = max(1, teacher.capacity) * len(urls)
    clients = {u: teacher.client(timeout=cfg.request_timeout, max_retries=2, asynchronous=True, base_url=u)
               for u in urls}
    inflight = {u: 0 for u in urls}
    stats.endpoints = {u: {"requests": 0, "ok": 0, "errors": 0, "completion_tokens": 0} for u in urls}
    templates = {lang: prompt_template(lang) for lang in {c.lang for c in todo}}
    sem = asyncio.Semaphore(stats.concurrency)
    writer = _Writer(data_dir)
    t0 = time.perf_counter()

    async def ask_anywhere(chunk: Chunk):
        """The least busy endpoint first; if it fails (after the client's own retries), the next one."""
        last: Exception | None = None
        for u in sorted(urls, key=lambda x: inflight[x]):
            inflight[u] += 1
            stats.endpoints[u]["requests"] += 1
            try:
                pairs, usage, finish = await _ask(clients[u], teacher, chunk, cfg, templates[chunk.lang])
            except Exception as e:
                stats.endpoints[u]["errors"] += 1
                last = e
                continue
            finally:
                inflight[u] -= 1
            stats.endpoints[u]["ok"] += 1
            stats.endpoints[u]["completion_tokens"] += (usage.completion_tokens or 0) if usage else 0
            if cfg.paraphrases:
                for p in pairs:
                    try:
                        p.paraphrases = await _paraphrase(clients[u], teacher, p.question, chunk.lang, cfg)
                    except Exception as e:  # a pair without paraphrases is still a good training pair
                        stats.errors.append(f"{chunk.id}: paraphrase: {type(e).__name__}: {e}")
            return pairs, usage, finish
        assert last is not None
        raise last

    async def one(chunk: Chunk) -> None:
        async with sem:
            try:
                pairs, usage, finish = await ask_anywhere(chunk)
            except Exception as e:  # recorded, retried on the next run
                stats.chunks_failed += 1
                stats.errors.append(f"{chunk.id}: {type(e).__name__}: {e}")
                writer.write([], {"chunk_id": chunk.id, "status": "failed", "error": str(e)[:500]})
                return
        if usage is not None:
            stats.prompt_tokens += usage.prompt_tokens or 0
            stats.completion_tokens += usage.completion_tokens or 0
        rows = [
            {
                "id": _row_id(chunk.id, p.question),
                "chunk_id": chunk.id,
                "source": chunk.source,
                "headings": chunk.breadcrumb,
                "lang": chunk.lang,
                "instruction": p.question,
                "input": chunk.text if cfg.mode == "open_book" else "",
                "output": p.answer,
                "paraphrases": p.paraphrases[: cfg.paraphrases],
                "teacher": teacher.model,
                "finish_reason": finish,
            }
            for p in pairs
        ]
        status = "ok" if rows else "failed"
        if not rows:
            stats.chunks_failed += 1
            stats.errors.append(f"{chunk.id}: no valid pairs in the answer")
        else:
            stats.chunks_ok += 1
            stats.pairs += len(rows)
        writer.write(rows, {"chunk_id": chunk.id, "status": status, "pairs": len(rows)})

    try:
        with bar(total=len(todo), desc="chunks", unit="chunk") as pbar:
            tasks = [asyncio.create_task(one(c)) for c in todo]
            for fut in asyncio.as_completed(tasks):
                await fut
                pbar.update(1)
                pbar.set_postfix(pairs=stats.pairs, failed=stats.chunks_failed)
    finally:
        writer.close()
        for c in clients.values():
            await c.close()
    stats.seconds = round(time.perf_counter() - t0, 2)
    return stats


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


def generate(chunks: list[Chunk], teacher: Teacher, cfg: SynthSettings, data_dir: Path) -> SynthStats:
    return run_sync(lambda: generate_async(chunks, teacher, cfg, data_dir))


def write_chunks(chunks: list[Chunk], data_dir: Path) -> Path:
    return write_jsonl((c.to_json() for c in chunks), Path(data_dir) / CHUNKS_FILE)


def load_qa(data_dir: Path) -> list[dict]:
    """The pairs of finished chunks (rows of a chunk later marked failed or torn lines are ignored)."""
    path = Path(data_dir) / QA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run 02_synthesize for this run dir first")
    done = done_chunks(Path(data_dir))
    seen: set[str] = set()
    out = []
    for r in read_jsonl(path):
        if r.get("chunk_id") in done and r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
    return out
