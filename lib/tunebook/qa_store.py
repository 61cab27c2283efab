"""02's files in ``data/``, crash-safe: every finished chunk's pairs are appended (and flushed) to ``qa.jsonl`` and
recorded in ``chunks_done.jsonl`` at once, so a crash loses at most the requests in flight and a rerun continues
where it stopped; ``dataset.jsonl`` is then assembled from them, the same whatever crashes happened on the way."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .corpus import Chunk
from .jsonio import read_jsonl, write_jsonl

QA_FILE = "qa.jsonl"  # append-only answers of every run (the cache)
DONE_FILE = "chunks_done.jsonl"  # one record per finished chunk (its cache key and row ids)
FAILURES_FILE = "failures.jsonl"  # one record per failed attempt, with its kind
DATASET_FILE = "dataset.jsonl"  # the final pairs: deterministic order, no duplicates
CHUNKS_FILE = "chunks.jsonl"


def done_chunks(data_dir: Path) -> set[str]:
    """Cache keys of finished chunks (``chunks_done.jsonl``; a torn last line after a crash is ignored)."""
    path = Path(data_dir) / DONE_FILE
    done: set[str] = set()
    if path.is_file():
        for rec in read_jsonl(path):
            if rec.get("status") == "ok":
                done.add(rec.get("key") or rec["chunk_id"])
    return done


class Writer:
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
