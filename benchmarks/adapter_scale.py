"""Forgetting vs recall when the trained adapter is scaled down (``train.adapter_scale``), on finished runs.

Scaling a LoRA adapter's update by s moves the weights only part of the way from the base to the fine-tuned ones
(weight-space interpolation, WiSE-FT: Wortsman et al. 2022). Session 20's forgetting check, graded against
references, saw the fine-tuned 0.5B student forget half the general facts it knew ("The largest planet is Earth",
"12 乘以 8 等于 120") while it learned the docs' facts; this measures how much of each survives at smaller s.

For each finished run dir (04 done) and each scale: a copy ``<run>-x<scale>`` with the adapter scaled
(``lora.scale_adapter``, the code 04 runs for ``train.adapter_scale``) and 05 run again on it — same questions,
same judge, no retraining, so the rows differ only by the scale. The run's own 05 is the scale-1.0 row, so pass
the same 05 settings it ran with (``-p``).

    .venv/bin/python benchmarks/adapter_scale.py outputs/s21demo-today+replay --scales 0.5,0.75 \\
        -p evaluate.general_prompts=42 -p evaluate.rag=false

Prints one table per run: recall judge and exact key values, unseen invented-value rate, general judge change
with its 95 % interval, share of general answers right; writes it as JSON next to the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from knowledge import QUIET_05, copy_run, print_table, row_numbers, run  # noqa: E402

from tunebook.lora import scale_adapter  # noqa: E402


def scaled_copy(src: Path, scale: float) -> Path:
    """``src`` with 01–04 done and its adapter scaled, ready for ``--from 05``."""
    d = src.parent / f"{src.name}-x{scale:g}"
    rec = copy_run(src, d, ("01_serve", "02_synthesize", "03_inspect", "04_train"), dirs=("data", "train"))
    # the run dir says what its adapter is: 04's output as train.adapter_scale=<scale> makes it (the resume guard
    # then lets 05 run on it, and 05's report shows the setting)
    before = rec["steps"]["04_train"]["settings"].get("train.adapter_scale", 1.0)
    rec["steps"]["04_train"]["settings"]["train.adapter_scale"] = before * scale
    rec.setdefault("settings_history", []).append(
        {"at": datetime.now(timezone.utc).isoformat(), "by": "benchmarks/adapter_scale.py", "step": "04_train",
         "changes": {"train.adapter_scale": [before, before * scale]}})
    (d / "run.json").write_text(json.dumps(rec))
    params = yaml.safe_load((d / "params.yaml").read_text())
    params.setdefault("train", {})["adapter_scale"] = before * scale
    (d / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    scale_adapter(d / "train" / "adapter", scale)
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--scales", default="0.5,0.75")
    ap.add_argument("-p", dest="extra", action="append", default=[], help="05 settings (as the source run had)")
    a = ap.parse_args(argv)
    scales = [float(x) for x in a.scales.split(",")]
    env = dict(os.environ)
    for src in a.runs:
        if not (src / "train" / "adapter" / "adapter_config.json").is_file():
            sys.exit(f"{src}: no trained adapter (train/adapter/adapter_config.json)")
        rows = [{"scale": 1.0, "run": src.name, **row_numbers(src)}]
        for s in scales:
            d = scaled_copy(src, s)
            secs = run(["--run-id", d.name, "--from", "05", *sum((["-p", x] for x in QUIET_05 + a.extra), [])], env)
            rows.append({"scale": s, "run": d.name, "seconds": round(secs), **row_numbers(d)})
            print(json.dumps(rows[-1]), flush=True)
            (src.parent / f"{src.name}-scales.json").write_text(json.dumps(rows, indent=2))
        print(f"\n{src.name}, {date.today()}: recall n={rows[0]['recall_n']}, unseen n={rows[0]['unseen_n']}, "
              f"general n={rows[0]['general_n']}")
        print_table(rows, ["scale", "recall_judge", "recall_exact_values", "unseen_invents", "general_tuned",
                           "general_change", "general_change_ci", "general_right_tuned"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
