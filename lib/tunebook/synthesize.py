"""02, part 2 — ask the teacher for question/answer pairs per chunk as schema-checked JSON, appended to JSONL.

Every finished chunk is appended (and flushed) to ``data/qa.jsonl`` and recorded in ``data/chunks_done.jsonl``
at once (:mod:`.qa_store`), so a crash loses at most the requests in flight and a rerun continues where it stopped.
Requests (:mod:`.qa_requests`, over :mod:`.client`) run concurrently up to the teacher's capacity
(``teacher.json``), spread over its endpoints; every failure is counted by kind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import qa_requests
from .answers import AnswerError, QAPair
from .client import Client, EndpointError, run_sync
from .corpus import Chunk
from .paths import PARAMS_DIR
from .progress import bar
from .prompts import prompt_template, questions_for
from .qa_store import Writer, done_chunks, write_chunks, write_dataset
from .serve import Teacher
from .settings import SynthSettings

# what the notebooks call through this module (02: synthesize.render_prompt, .DATASET_FILE, .load_qa; 03 and 05:
# .CHUNKS_FILE, .read_jsonl), now at home in prompts, qa_store and jsonio
from .jsonio import read_jsonl  # noqa: F401
from .prompts import render_prompt  # noqa: F401
from .qa_store import CHUNKS_FILE, DATASET_FILE, load_qa  # noqa: F401

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


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _row_id(chunk_id: str, question: str) -> str:
    return hashlib.sha256(f"{chunk_id}\n{question}".encode()).hexdigest()[:16]


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


def classify(e: BaseException) -> str:
    if isinstance(e, (AnswerError, EndpointError)):
        return e.kind
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    return "connection" if isinstance(e, OSError) else "malformed_json"


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


class Synthesis:
    """One run over the chunks still to do: the state their concurrent tasks share — the counts (``stats``), the
    crash-safe writer, a client per endpoint and each endpoint's load and health."""

    def __init__(self, teacher: Teacher, cfg: SynthSettings, data_dir: Path, prompts_dir: Path,
                 keys: dict[str, str], stats: SynthStats, langs: set[str]):
        self.teacher, self.cfg, self.prompts_dir, self.keys, self.stats = teacher, cfg, prompts_dir, keys, stats
        self.urls = teacher.urls
        self.writer = Writer(data_dir)
        self.clients = {u: Client(u, teacher.api_key(), cfg.request_timeout, cfg.max_retries, self.request_fault)
                        for u in self.urls}
        self.inflight = {u: 0 for u in self.urls}
        self.down_until = {u: 0.0 for u in self.urls}
        self.templates = {lang: prompt_template(lang, prompts_dir) for lang in langs}
        self.sem = asyncio.Semaphore(stats.concurrency)

    def note(self, kind: str) -> None:
        counts = self.stats.failures if kind in self.stats.failures else self.stats.handled
        counts[kind] = counts.get(kind, 0) + 1

    def request_fault(self, kind: str, detail: str) -> None:  # every failed HTTP attempt, also those a retry fixed
        self.note(kind)
        self.writer.failure({"stage": "request", "kind": kind, "error": detail[:300]})

    async def _extras(self, client: Client, chunk: Chunk, key: str, pairs: list[QAPair]) -> list[QAPair]:
        """Paraphrases for each pair and the "docs don't say" pairs; a failure there costs only those."""
        cfg = self.cfg
        for p in pairs if cfg.paraphrases else []:
            try:
                p.paraphrases = await qa_requests.paraphrases(client, self.teacher, p.question, chunk, cfg,
                                                              qa_requests.seed_for(_sha(key + p.question)),
                                                              self.prompts_dir)
            except Exception as e:  # a pair without paraphrases is still a good training pair
                self.writer.failure({"chunk_id": chunk.id, "key": key, "kind": classify(e), "stage": "paraphrase",
                                     "error": _error(e)})
        unanswered: list[str] = []
        if cfg.abstain_questions:
            try:
                unanswered = await qa_requests.unanswered(client, self.teacher, chunk, cfg,
                                                          qa_requests.seed_for(_sha(key + "abstain")), self.prompts_dir)
            except Exception as e:  # the chunk's pairs stand without them
                self.writer.failure({"chunk_id": chunk.id, "key": key, "kind": classify(e), "stage": "abstain",
                                     "error": _error(e)})
        return pairs + qa_requests.abstain_pairs(unanswered, chunk.lang)

    async def _ask_at(self, u: str, chunk: Chunk, key: str) -> tuple[list[QAPair], dict, str]:
        self.inflight[u] += 1
        self.stats.endpoints[u]["requests"] += 1
        self.stats.requests += 1
        try:
            pairs, usage, finish = await qa_requests.ask_pairs(self.clients[u], self.teacher, chunk, self.cfg,
                                                               self.templates[chunk.lang], key, self.note)
            pairs = await self._extras(self.clients[u], chunk, key, pairs)
        finally:
            self.inflight[u] -= 1
        ep = self.stats.endpoints[u]
        ep["ok"] += 1
        ep["pairs"] += len(pairs)
        ep["completion_tokens"] += usage.get("completion_tokens") or 0
        return pairs, usage, finish

    async def ask_anywhere(self, chunk: Chunk, key: str) -> tuple[list[QAPair], dict, str]:
        """Healthy endpoints first, least busy first; an endpoint that fails to connect rests for 10 s and its
        request goes to the next one, so a dead replica costs a retry, never a chunk."""
        last: Exception | None = None
        now = time.monotonic()
        for u in sorted(self.urls, key=lambda x: (self.down_until[x] > now, self.inflight[x])):
            try:
                return await self._ask_at(u, chunk, key)
            except AnswerError:
                raise  # the endpoint works; the answer was bad: retry the chunk, not another endpoint
            except Exception as e:
                self.stats.endpoints[u]["errors"] += 1
                if classify(e) in ("connection", "timeout"):
                    self.down_until[u] = time.monotonic() + 10.0
                last = e
        assert last is not None
        raise last

    async def one(self, chunk: Chunk) -> None:
        """A chunk, asked up to ``synth.attempts`` times; its pairs, or its failure, recorded."""
        key = self.keys[chunk.id]
        for attempt in range(1, self.cfg.attempts + 1):
            try:
                async with self.sem:
                    pairs, usage, finish = await self.ask_anywhere(chunk, key)
                break
            except Exception as e:
                kind = classify(e)
                if isinstance(e, AnswerError):
                    self.note(kind)  # transport faults were counted by the transport, on every attempt
                self.writer.failure({"chunk_id": chunk.id, "key": key, "source": chunk.source, "attempt": attempt,
                                     "kind": kind, "error": _error(e)})
                if attempt < self.cfg.attempts:
                    self.note("retried_chunk")
                    await asyncio.sleep(min(8.0, 0.5 * 2 ** attempt))
                    continue
                self.stats.chunks_failed += 1  # left for the next run
                self.stats.errors.append(f"{chunk.id}: {kind}: {e}"[:300])
                self.writer.write([], {"chunk_id": chunk.id, "key": key, "status": "failed", "kind": kind})
                return
        self.stats.prompt_tokens += usage.get("prompt_tokens") or 0
        self.stats.completion_tokens += usage.get("completion_tokens") or 0
        rows = self.rows(chunk, key, pairs, finish)
        self.stats.chunks_ok += 1
        self.stats.pairs += len(rows)
        self.writer.write(rows, {"chunk_id": chunk.id, "key": key, "status": "ok", "ids": [r["id"] for r in rows]})

    def rows(self, chunk: Chunk, key: str, pairs: list[QAPair], finish: str) -> list[dict[str, Any]]:
        return [
            {
                "id": _row_id(chunk.id, p.question),
                "key": key,
                "pair_index": i,
                "chunk_id": chunk.id,
                "source": chunk.source,
                "headings": chunk.breadcrumb,
                "lang": chunk.lang,
                "instruction": p.question,
                "input": chunk.text if self.cfg.mode == "open_book" else "",
                "output": p.answer,
                "paraphrases": p.paraphrases[: self.cfg.paraphrases],
                "kind": p.kind,  # "fact" or "abstain" (a question the docs do not answer); every row has it
                "teacher": self.teacher.model,
                "finish_reason": finish,
            }
            for i, p in enumerate(pairs)
        ]

    async def run(self, todo: list[Chunk], show_progress: bool) -> None:
        """Every chunk in ``todo``, concurrently; the writer and clients closed at the end, whatever happens."""
        t0 = time.perf_counter()
        try:
            with bar(total=len(todo), desc="chunks", unit="chunk", disable=not show_progress) as pbar:
                tasks = [asyncio.create_task(self.one(c)) for c in todo]
                for fut in asyncio.as_completed(tasks):
                    await fut
                    pbar.update(1)
                    elapsed = time.perf_counter() - t0
                    pbar.set_postfix(pairs=self.stats.pairs, tok_s=f"{self.stats.completion_tokens / elapsed:.1f}",
                                     failed=self.stats.chunks_failed, refresh=False)
        finally:
            self.writer.close()
            for c in self.clients.values():
                await c.close()
        self.stats.seconds = round(time.perf_counter() - t0, 2)


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
    synthesis = Synthesis(teacher, cfg, data_dir, prompts_dir, keys, stats, {c.lang for c in todo})
    await synthesis.run(todo, show_progress)
    write_dataset(chunks, keys, data_dir)
    return stats


def generate(chunks: list[Chunk], teacher: Teacher, cfg: SynthSettings, data_dir: Path, **kw) -> SynthStats:
    return run_sync(lambda: generate_async(chunks, teacher, cfg, data_dir, **kw))


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
