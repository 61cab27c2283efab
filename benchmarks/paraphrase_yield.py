"""How many of the teacher's rewordings can 03 use, per prompt variant and language?

Rewordings carry the recipe (one asked in the recall eval, one trained: benchmarks/RESULTS.md), and 03 drops every
paraphrase that is not a usable rewording of its question (:func:`tunebook.splitting.rewording`: a question, the
question's language, not the answer, naming the question's values, no JSON debris). This asks 02's paraphrase
request again for the questions of finished syntheses — the same request as 02 (:func:`tunebook.qa_requests.
paraphrases`: schema-constrained JSON, a fixed seed per question; the baseline is asked again in the same run, not
read from 02's output) — once per prompts folder, and counts per
language: paraphrases usable, paraphrases that start with the template's placeholder ("..."), questions with ``k``
distinct usable ones (what 03 needs for one recall wording and one trained rewording), paraphrases that repeat the
question as it is (usable by the rules but rewording nothing: session 35 found a quarter of 02's first paraphrases to be
such copies; since then 02's request drops them itself, so a copy now shows as a paraphrase missing) and questions with ``k`` usable ones that are not the question itself, and how much of the question's
terms a usable one keeps (one that drops its subject — "中间区域显示了什么？" — passes 03 but asks something vague). The first folder is the
baseline (default: params/prompts).

    .venv/bin/python benchmarks/paraphrase_yield.py outputs/demo-s16a outputs/cps-s16a \\
        --prompts params/prompts,benchmarks/prompt_variants/paraphrase-example --lang zh

Starts the runs' teacher from their params where it is not running, and stops it after. Writes the table and every paraphrase (with its verdict) as JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook import qa_requests, serve, settings  # noqa: E402
from tunebook.client import Client  # noqa: E402
from tunebook.corpus import Chunk  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.splitting import rewording  # noqa: E402
from tunebook.retrieval import term_set  # noqa: E402
from tunebook.text import is_chinese, normalize  # noqa: E402
from bench_io import write_result  # noqa: E402


def questions(run: Path, lang: str, limit: int) -> list[tuple[dict, Chunk]]:
    chunks = {c["id"]: Chunk(**{k: c[k] for k in Chunk.__dataclass_fields__}) for c in read_jsonl(run / "data" / "chunks.jsonl")}
    out = []
    for r in read_jsonl(run / "data" / "dataset.jsonl"):
        q_lang = "zh" if is_chinese(r["instruction"]) else "en"
        if r.get("kind", "fact") == "fact" and r["chunk_id"] in chunks and lang in ("all", q_lang):
            out.append((r, chunks[r["chunk_id"]]))
    return out[:limit] if limit else out


async def ask_all(run: Path, items: list[tuple[dict, Chunk]], prompts: Path, cfg: settings.SynthSettings,
                  salt: str = "") -> list[list[str]]:
    """02's paraphrase request for each (pair, chunk), seeded per question (``salt`` before the question: another
    seed than 02's); a failed request gives no paraphrase."""
    teacher = serve.ensure(run)  # started from the run's params when it is not running (stopped in main)
    async with Client(teacher.base_url, teacher.api_key(), cfg.request_timeout, cfg.max_retries) as client:
        sem = asyncio.Semaphore(max(1, teacher.capacity))

        async def one(r: dict, chunk: Chunk) -> list[str]:
            seed = qa_requests.seed_for(hashlib.sha256((salt + r["instruction"]).encode()).hexdigest())
            async with sem:
                try:
                    return await qa_requests.paraphrases(client, teacher, r["instruction"], chunk, cfg, seed, prompts)
                except Exception as e:  # noqa: BLE001 — a failed request counts as no paraphrase
                    print(f"  request failed: {e}", file=sys.stderr)
                    return []

        return await asyncio.gather(*(one(r, c) for r, c in items))


def count(items: list[tuple[dict, Chunk]], said: list[list[str]], k: int) -> dict[str, Counter]:
    by: dict[str, Counter] = {}
    for (r, _), ps in zip(items, said):
        c = by.setdefault("zh" if is_chinese(r["instruction"]) else "en", Counter())
        usable = {p for p in ps if rewording(p, r)}
        new = {normalize(p) for p in usable} - {normalize(r["instruction"])}  # a copy of the question rewords nothing
        c["questions"] += 1
        c["copies"] += sum(normalize(p) == normalize(r["instruction"]) for p in ps)
        c[f"questions_with_{k}_new"] += len(new) >= k
        c["paraphrases"] += len(ps)
        c["usable"] += sum(rewording(p, r) for p in ps)
        c["placeholder"] += sum(p.lstrip().startswith(("...", "…")) for p in ps)
        c[f"questions_with_{k}_usable"] += len(usable) >= k
        asked = {t for t in term_set(r["instruction"]) if len(t) > 1}  # does a usable rewording still say what about?
        for p in usable:
            kept = len(asked & term_set(p)) / max(1, len(asked))
            c["terms_kept_x100"] += round(100 * kept)
            c["usable_keeping_half"] += kept >= 0.5
    return by


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run dirs with 02 done (data/dataset.jsonl, chunks.jsonl)")
    ap.add_argument("--prompts", default="params/prompts", help="comma-separated prompts folders; the first is the baseline")
    ap.add_argument("--lang", choices=("zh", "en", "all"), default="all")
    ap.add_argument("--limit", type=int, default=0, help="questions per run (0: all)")
    ap.add_argument("-k", type=int, default=2, help="paraphrases asked per question (synth.paraphrases)")
    ap.add_argument("--label", default="", help="in the JSON file's name, so a second call the same day keeps the first")
    a = ap.parse_args(argv)
    try:
        table, said_by = ask_folders(a)
    finally:
        for run in a.runs:
            serve.stop(run)
    write_result(f"paraphrase_yield{'-' + a.label if a.label else ''}", {"table": table, "paraphrases": said_by})
    return 0


def ask_folders(a) -> tuple[list[dict], dict]:
    cfg = settings.SynthSettings(paraphrases=a.k)
    table, said_by = [], {}
    folders = a.prompts.split(",")
    totals: dict[str, dict[str, Counter]] = {f: {} for f in folders}
    for run in a.runs:  # one teacher at a time: each run's is stopped before the next one's starts
        items = questions(run, a.lang, a.limit)
        for folder in folders:
            said = asyncio.run(ask_all(run, items, (ROOT / folder).resolve(), cfg))
            said_by.setdefault(folder, []).extend(
                {"run": run.name, "question": r["instruction"], "paraphrases": ps,
                 "usable": [rewording(p, r) for p in ps]} for (r, _), ps in zip(items, said))
            for lang, c in count(items, said, a.k).items():
                totals[folder].setdefault(lang, Counter()).update(c)
                table.append({"prompts": folder, "run": run.name, "lang": lang, **c})
        serve.stop(run)
    for folder, total in totals.items():
        for lang, c in sorted(total.items()):
            table.append({"prompts": folder, "run": "all", "lang": lang, **c})
            print(f"{folder} [{lang}]: {c['usable']}/{c['paraphrases']} usable ({c['usable'] / max(1, c['paraphrases']):.0%}), "
                  f"{c['placeholder']} start with the placeholder, {c[f'questions_with_{a.k}_usable']}/{c['questions']} "
                  f"questions with {a.k} usable, {c[f'questions_with_{a.k}_new']} with {a.k} that are not the question itself "
                  f"({c['copies']} paraphrases repeat it); usable ones keep {c['terms_kept_x100'] / max(1, c['usable']):.0f} % of the "
                  f"question's terms on average, {c['usable_keeping_half']}/{c['usable']} keep half or more", flush=True)
    return table, said_by


if __name__ == "__main__":
    raise SystemExit(main())
