"""GPU memory over a tunebook run, per card and per process, tagged with the step that is running (issue #18).

Samples NVML every --every seconds until the file --stop exists (or it is killed) and writes a CSV:
  t_s, step, gpu, used_mib, procs   (procs: "pid:name:MiB;…" of the compute processes on that card)
``--summary`` turns such a CSV into a Markdown table: per step and card, the used memory at the step's start,
its peak and at its end, and the peak of the llama-server processes (the teacher or a served-GGUF check).

  python benchmarks/gpu_mem_sampler.py --run-dir outputs/gpu-e2e --csv mem.csv --stop /tmp/stop &
  python benchmarks/gpu_mem_sampler.py --summary mem.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def running_step(run_dir: Path) -> str:
    try:
        rec = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return ""
    steps = rec.get("steps", {})
    return next((s for s, e in steps.items() if e.get("status") == "running"), "")


def sample(a) -> int:
    import pynvml as nv

    nv.nvmlInit()
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
    run_dir, t0 = Path(a.run_dir), time.time()
    with open(a.csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["t_s", "step", "gpu", "used_mib", "procs"])
        while not (a.stop and os.path.exists(a.stop)):
            step = running_step(run_dir)
            for i, h in enumerate(handles):
                used = nv.nvmlDeviceGetMemoryInfo(h).used // 2**20
                try:
                    procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
                    ps = ";".join(f"{p.pid}:{proc_name(p.pid)}:{(p.usedGpuMemory or 0) // 2**20}" for p in procs)
                except nv.NVMLError as e:
                    ps = f"nvml:{e}"
                w.writerow([round(time.time() - t0, 2), step, i, used, ps])
            fh.flush()
            time.sleep(a.every)
    return 0


def summary(path: str) -> str:
    rows = list(csv.DictReader(open(path)))
    segs: list[tuple[str, str, list[dict]]] = []  # consecutive samples of one step on one card
    for gpu in sorted({r["gpu"] for r in rows}):
        for r in (r for r in rows if r["gpu"] == gpu):
            step = r["step"] or "(between steps)"
            if segs and segs[-1][0] == step and segs[-1][1] == gpu:
                segs[-1][2].append(r)
            else:
                segs.append((step, gpu, [r]))
    out = ["| step | card | seconds | used MiB at start → peak → end | llama-server MiB (peak) | python MiB (peak) |",
           "|---|---|---:|---|---:|---:|"]

    def peak_of(rs, names):
        best = 0
        for r in rs:
            tot = 0
            for p in filter(None, r["procs"].split(";")):
                parts = p.split(":")
                if len(parts) == 3 and parts[1].startswith(names):
                    tot += int(parts[2])
            best = max(best, tot)
        return best

    for step, gpu, rs in sorted(segs, key=lambda x: (x[1], float(x[2][0]["t_s"]))):
        used = [int(r["used_mib"]) for r in rs]
        out.append(f"| {step} | {gpu} | {rs[0]['t_s']}–{rs[-1]['t_s']} | {used[0]:,} → {max(used):,} → {used[-1]:,} | "
                   f"{peak_of(rs, ('llama-server', 'llama'))} | {peak_of(rs, ('python', 'pt_main'))} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="outputs/gpu-e2e")
    ap.add_argument("--csv", default="mem.csv")
    ap.add_argument("--stop", default="")
    ap.add_argument("--every", type=float, default=0.5)
    ap.add_argument("--summary", metavar="CSV")
    a = ap.parse_args(argv)
    if a.summary:
        print(summary(a.summary))
        return 0
    return sample(a)


if __name__ == "__main__":
    raise SystemExit(main())
