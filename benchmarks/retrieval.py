"""Which tokenizer retrieves better for 05's RAG baseline: jieba words or character bigrams (BM25, bm25s)?

For every question of a run (the synthesized pairs in ``data/dataset.jsonl`` and their paraphrases), is the chunk
it was written from among the top k of the run's chunks? Prints hit@k per tokenizer and language, and the time to
build the index and search.

    .venv/bin/python benchmarks/retrieval.py outputs/RUN [outputs/OTHER_RUN …]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import retrieval  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402


def questions(run: Path) -> list[tuple[str, str, str]]:
    """``(question, source chunk id, lang)`` for every pair and paraphrase of the run."""
    out = []
    for r in read_jsonl(run / "data" / "dataset.jsonl"):
        for q in [r["instruction"], *(r.get("paraphrases") or [])]:
            out.append((q, r["chunk_id"], r.get("lang", "")))
    return out


def measure(run: Path, ks=(1, 2, 3, 5)) -> list[dict]:
    chunks = read_jsonl(run / "data" / "chunks.jsonl")
    qs = questions(run)
    rows = []
    for tok in ("jieba", "char2"):
        t0 = time.perf_counter()
        index = retrieval.Index.build(chunks, tok)
        found = index.search([q for q, _, _ in qs], max(ks))
        secs = time.perf_counter() - t0
        for lang in sorted({lang for _, _, lang in qs}) + ["all"]:
            sel = [(f, cid) for f, (_, cid, la) in zip(found, qs) if lang in ("all", la)]
            row = {"run": run.name, "tokenizer": tok, "lang": lang, "questions": len(sel), "chunks": len(chunks),
                   "seconds": round(secs, 2)}
            for k in ks:
                row[f"hit@{k}"] = round(sum(cid in {index.chunk_ids[i] for i in f[:k]} for f, cid in sel) / len(sel), 3)
            rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    rows = [r for run in argv for r in measure(Path(run))]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
