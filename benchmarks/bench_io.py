"""What several benchmarks do alike with finished run dirs: judge answers with the run's teacher without touching
the run, and write a result file under ``benchmarks/results/``."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import evaluate  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.serve import Teacher  # noqa: E402


def judged(rows: list[dict], run: Path) -> list[dict]:
    """``rows`` scored by 05's :func:`tunebook.evaluate.score` with the run's teacher (start it first, as 01 would),
    in a scratch dir holding a copy of the run's judge cache: the run dir is not touched."""
    with tempfile.TemporaryDirectory() as scratch:
        cache = run / "eval" / "judge_cache.jsonl"
        if cache.is_file():
            shutil.copy(cache, Path(scratch) / cache.name)
        evaluate.score(rows, Teacher.load(run), Path(scratch))
        return list(read_jsonl(Path(scratch) / evaluate.GENERATIONS_FILE))


def write_result(stem: str, payload, indent: int = 2) -> Path:
    """``payload`` as ``benchmarks/results/<stem>-<today>.json``; prints and returns the path."""
    out = ROOT / "benchmarks" / "results" / f"{stem}-{date.today()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(payload, indent=indent, ensure_ascii=False))
    print(f"\nwrote {out.relative_to(ROOT)}")
    return out
