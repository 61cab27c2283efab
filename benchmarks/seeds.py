"""Two recipes, each trained several times on the same data (``knowledge.py --repeats``): which one is better, beyond
the spread of one recipe between trainings?

One training on the demo's data moves the general-prompt change by up to 0.8 (RESULTS.md, session 22), so a lever
compared on one training each says little. Here each question's grade is first averaged over a recipe's trainings,
then the two recipes are compared question by question (paired bootstrap over the questions: recall questions
resampled by fact, so the rewordings of one fact count once). Reads only the runs' ``eval/`` files: no model.

    .venv/bin/python benchmarks/seeds.py --a outputs/s22demo-b-replay+lr5e-4 outputs/s23demo-replay+lr5e-4-r* \\
        --b outputs/s23demo-replay+kl outputs/s23demo-replay+kl-r*
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from tunebook.evaluate import fact_group  # noqa: E402
from tunebook.jsonio import read_jsonl  # noqa: E402
from tunebook.stats import fmt, mean_ci, paired_delta_ci  # noqa: E402


def load(run_dir: Path) -> dict:
    """One finished run: its metrics, its recall rows and its general rows, by question."""
    ev = run_dir / "eval"
    if not (ev / "metrics.json").is_file():
        sys.exit(f"{run_dir}: no eval/metrics.json (05 did not finish)")
    rows = read_jsonl(ev / "generations.jsonl")
    return {"run": run_dir.name, "metrics": json.loads((ev / "metrics.json").read_text(encoding="utf-8")),
            "recall": {r["question"]: r for r in rows if r.get("split") == "recall"},
            "general": {r["question"]: r for r in read_jsonl(ev / "general.jsonl")} if (ev / "general.jsonl").is_file() else {}}


def averaged(runs: list[dict], part: str, key: str) -> dict[str, float]:
    """Per question of ``part`` asked in every run: ``key`` averaged over the runs."""
    common = set.intersection(*(set(r[part]) for r in runs))
    return {q: sum(r[part][q][key] for r in runs) / len(runs) for q in sorted(common)
            if all(r[part][q].get(key) is not None for r in runs)}


def summary(name: str, runs: list[dict]) -> dict:
    def per_run(split: str, key: str) -> list[float]:
        return [v for r in runs if (v := (r["metrics"].get(split) or {}).get(key)) is not None]

    def rng(v: list[float]) -> str:
        return f"{sum(v) / len(v):.2f} [{min(v):.2f} … {max(v):.2f}]" if v else "–"

    change = [((r["metrics"].get("general") or {}).get("judge_change") or {}).get("mean") for r in runs]
    return {"recipe": name, "trainings": len(runs), "runs": [r["run"] for r in runs],
            "recall judge": rng(per_run("recall", "tuned_judge")),
            "exact": rng(per_run("recall", "tuned_exact_values")),
            "unseen invents": rng(per_run("unseen", "tuned_invents")),
            "out-of-docs invents": rng(per_run("outofdocs", "tuned_invents")),
            "general change": rng([c for c in change if c is not None]),
            "general right": rng([v for r in runs if (v := (r["metrics"].get("general") or {}).get("tuned_right"))
                                  is not None])}


def compare(a: list[dict], b: list[dict]) -> dict:
    """B − A per question, each question's grade averaged over a recipe's trainings."""
    out = {}
    ga, gb = averaged(a, "general", "tuned_judge"), averaged(b, "general", "tuned_judge")
    qs = sorted(set(ga) & set(gb))
    out["general judge (B − A)"] = paired_delta_ci([gb[q] for q in qs], [ga[q] for q in qs])
    out["general questions"] = len(qs)
    ra, rb = averaged(a, "recall", "tuned_judge"), averaged(b, "recall", "tuned_judge")
    qs = sorted(set(ra) & set(rb))
    groups = [fact_group(a[0]["recall"][q]) for q in qs]
    out["recall judge (B − A)"] = paired_delta_ci([rb[q] for q in qs], [ra[q] for q in qs], groups=groups)
    out["recall questions"] = len(qs)
    out["general A"], out["general B"] = mean_ci(list(ga.values())), mean_ci(list(gb.values()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", nargs="+", required=True, help="run dirs of recipe A (the baseline)")
    ap.add_argument("--b", nargs="+", required=True, help="run dirs of recipe B")
    ap.add_argument("--names", default="A,B")
    ap.add_argument("--json", default="", help="also write the numbers here")
    args = ap.parse_args(argv)
    na, nb = args.names.split(",")
    a, b = [load(Path(p)) for p in args.a], [load(Path(p)) for p in args.b]
    rows = [summary(na, a), summary(nb, b)]
    keys = [k for k in rows[0] if k != "runs"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    cmp = compare(a, b)
    print(f"\n{nb} − {na}, per question averaged over each recipe's trainings (95 % paired bootstrap):")
    print(f"  general judge: {fmt(cmp['general judge (B − A)'])} over {cmp['general questions']} prompts "
          f"({na} {fmt(cmp['general A'])}, {nb} {fmt(cmp['general B'])})")
    print(f"  recall judge:  {fmt(cmp['recall judge (B − A)'])} over {cmp['recall questions']} questions (by fact)")
    if args.json:
        Path(args.json).write_text(json.dumps({"recipes": rows, "compare": cmp}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
