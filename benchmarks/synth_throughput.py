"""02's synthesis throughput: pairs/min and tokens/s against requests in flight, and the client's own ceiling.

Part 1 — the client alone: ``synthesize.generate`` against an instant local OpenAI-compatible server (a separate
process that answers every chat completion at once with a valid pair), many small chunks: requests/s the client
handles (tunebook.client, retries armed, schema parsing, pydantic validation, the crash-safe writer, progress bar).
Target: >= 2,000 requests/s, so the client is never the bottleneck.

Part 2 — a real llama-server (the profile's teacher) on the sample corpus, fresh cache each point:
  (a) server slots = requests in flight = P for P in --parallel (what tunebook does by default: in flight =
      teacher slots from teacher.json);
  (b) the profile's server (serve.parallel slots) with the client's in-flight count swept over --inflight;
      tunebook's default (in flight = slots) must reach >= 95 % of the best point.

  python benchmarks/synth_throughput.py                      # ci profile (SmolLM2-135M), both parts
  python benchmarks/synth_throughput.py --profile cpu --chunks 12 --inflight 1,2,4 --parallel 2
Prints tables and the ratios; writes JSON with --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "lib"))

CANNED = json.dumps({"pairs": [{"question": "Which port does Brindlewatt listen on by default?",
                                "answer": "Port 7402."}]})
RESPONSE_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "instant",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": CANNED}}],
    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(RESPONSE_BODY)).encode() + b"\r\n\r\n" + RESPONSE_BODY)


# ---------------------------------------------------------------------------------------------------------------
# part 1: instant server (own process) + the client
def instant_server(port_file: str) -> None:
    """HTTP/1.1 keep-alive server answering every request with RESPONSE; writes its port to port_file."""

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            while True:
                i = self.buf.find(b"\r\n\r\n")
                if i < 0:
                    return
                m = re.search(rb"content-length:\s*(\d+)", self.buf[:i], re.I)
                end = i + 4 + (int(m.group(1)) if m else 0)
                if len(self.buf) < end:
                    return
                self.buf = self.buf[end:]
                self.t.write(RESPONSE)

    async def main():
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", 0, backlog=1024)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


def client_ceiling(n: int, inflight: int, repeats: int) -> list[dict]:
    from tunebook import settings as st, synthesize
    from tunebook.corpus import Chunk
    from tunebook.serve import Teacher

    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    port_file = tmp / "port"
    srv = subprocess.Popen([sys.executable, __file__, "--instant-server", str(port_file)])
    try:
        for _ in range(100):
            if port_file.is_file() and port_file.read_text():
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        teacher = Teacher(backend="openai", base_url=url, model="instant", capacity=inflight)
        cfg = st.load("ci", ["synth.paraphrases=0"]).synth
        chunks = [Chunk(f"b{i:06d}", "bench.md", "Bench", ["Bench"], f"Brindlewatt fact number {i}.", 10, "en")
                  for i in range(n)]
        out = []
        for r in range(repeats):
            data = tmp / f"data{r}"
            stats = synthesize.generate(chunks, teacher, cfg, data, show_progress=False)
            assert stats.chunks_ok == n, stats.errors[:3]
            out.append({"requests": stats.requests, "seconds": stats.seconds,
                        "requests_per_s": round(stats.requests / stats.seconds, 1), "pairs": stats.pairs,
                        "inflight": inflight})
            print(f"  client: {stats.requests} requests in {stats.seconds:.2f} s = "
                  f"{stats.requests / stats.seconds:,.0f} req/s (in flight {inflight})", flush=True)
        return out
    finally:
        srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# part 2: llama-server
from dataclasses import replace  # noqa: E402


def llama_point(profile: str, chunks, parallel: int, inflight_list: list[int], port: int,
                repeats: int = 3) -> list[dict]:
    from tunebook import serve, settings as st, synthesize

    cfg = st.load(profile, [f"serve.parallel={parallel}", f"serve.port={port}", "synth.paraphrases=0"])
    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-llama-"))
    t = serve.start(cfg.serve, cfg.teacher, tmp)
    try:
        # warm-up: model pages in memory, two requests per slot
        synthesize.generate(chunks[: 2 * parallel], t, cfg.synth.model_copy(update={"concurrency": parallel}),
                            tmp / "warm", show_progress=False)
        res = []
        for c in inflight_list:
            runs = []
            for r in range(repeats):  # the median of a few runs: one run of a small model is noisy
                # fresh text per run (the shared template prefix stays): no answer comes from llama-server's
                # prompt cache of an earlier run, as none would in a real synthesis
                fresh = [replace(ch, id=f"{ch.id}-c{c}r{r}", text=f"[c{c}r{r}] {ch.text}") for ch in chunks]
                s = synthesize.generate(fresh, t, cfg.synth.model_copy(update={"concurrency": c}),
                                        tmp / f"c{c}-{r}", show_progress=False)
                runs.append({"seconds": s.seconds, "pairs": s.pairs, "chunks_ok": s.chunks_ok,
                             "completion_tokens": s.completion_tokens,
                             "tokens_per_s": round(s.completion_tokens / s.seconds, 2),
                             "pairs_per_min": round(s.pairs * 60 / s.seconds, 2)})
            mid = sorted(runs, key=lambda x: x["tokens_per_s"])[len(runs) // 2]
            row = {"slots": parallel, "inflight": c, "chunks": len(chunks), "chunks_ok": mid["chunks_ok"],
                   "pairs": mid["pairs"], "seconds": mid["seconds"], "completion_tokens": mid["completion_tokens"],
                   "pairs_per_min": mid["pairs_per_min"], "tokens_per_s": mid["tokens_per_s"],
                   "runs_tokens_per_s": [x["tokens_per_s"] for x in runs], "default": c == parallel}
            print(f"  llama-server slots {parallel}, in flight {c}: {row['pairs_per_min']} pairs/min, "
                  f"{row['tokens_per_s']} tok/s (median of {row['runs_tokens_per_s']})", flush=True)
            res.append(row)
        return res
    finally:
        serve.stop(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def corpus_chunks(profile: str, n: int):
    from tunebook import corpus as corpus_lib, settings as st
    from tunebook.paths import project_path

    cfg = st.load(profile)
    docs, _ = corpus_lib.read_corpus(project_path(cfg.corpus), cfg.synth.include, cfg.synth.exclude)
    chunks = corpus_lib.chunk_corpus(docs, cfg.synth.chunk_tokens, cfg.synth.min_chunk_tokens)
    return (chunks * (n // max(1, len(chunks)) + 1))[:n] if len(chunks) < n else chunks[:n]


def _distinct(chunks):
    """Repeated chunks (a small corpus) get distinct ids so each is asked, not deduplicated."""
    from dataclasses import replace

    return [replace(c, id=f"{c.id}-{i}") for i, c in enumerate(chunks)]


def table(rows: list[dict], best_tps: float) -> str:
    lines = ["| slots | in flight | pairs/min | completion tokens/s (median) | runs | vs best tokens/s | chunks ok |",
             "|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        mark = " (default)" if r["default"] else ""
        lines.append(f"| {r['slots']} | {r['inflight']}{mark} | {r['pairs_per_min']:.1f} | {r['tokens_per_s']:.1f} | "
                     f"{', '.join(f'{x:.1f}' for x in r['runs_tokens_per_s'])} | {r['tokens_per_s'] / best_tps:.2f} | "
                     f"{r['chunks_ok']}/{r['chunks']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="ci", help="profile whose teacher, corpus and chunking are used")
    ap.add_argument("--chunks", type=int, default=16, help="chunks per llama-server point")
    ap.add_argument("--inflight", default="1,2,3,4,8", help="client in-flight counts against the profile's server")
    ap.add_argument("--parallel", default="1,2,4", help="server slots for sweep (a), in flight = slots")
    ap.add_argument("--client-requests", type=int, default=4000)
    ap.add_argument("--client-inflight", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--llama-repeats", type=int, default=3, help="runs per llama-server point (median kept)")
    ap.add_argument("--skip-client", action="store_true")
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--port", type=int, default=18300)
    ap.add_argument("--out", help="write all results as JSON here")
    ap.add_argument("--instant-server", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.instant_server:
        instant_server(a.instant_server)
        return 0
    from tunebook import settings as st

    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "profile": a.profile}
    ok = True
    if not a.skip_client:
        print("part 1: client against an instant local server", flush=True)
        runs = client_ceiling(a.client_requests, a.client_inflight, a.repeats)
        best = max(r["requests_per_s"] for r in runs)
        result["client"] = {"runs": runs, "best_requests_per_s": best, "target": 2000, "pass": best >= 2000}
        print(f"client ceiling: {best:,.0f} requests/s (target >= 2,000: {'PASS' if best >= 2000 else 'FAIL'})\n")
        ok &= best >= 2000
    if not a.skip_llama:
        default_slots = st.load(a.profile).serve.parallel
        chunks = _distinct(corpus_chunks(a.profile, a.chunks))
        print(f"part 2: llama-server, teacher {st.load(a.profile).teacher}, {len(chunks)} chunks per point", flush=True)
        rows_a = []
        for p in [int(x) for x in a.parallel.split(",") if x]:
            rows_a += llama_point(a.profile, chunks, p, [p], a.port, a.llama_repeats)
        rows_b = llama_point(a.profile, chunks, default_slots, [int(x) for x in a.inflight.split(",") if x], a.port,
                             a.llama_repeats)
        best = max(r["tokens_per_s"] for r in rows_b)  # the client setting, against the profile's server
        default = next(r for r in rows_b if r["default"])
        ratio = default["tokens_per_s"] / best
        best_pairs = max(r["pairs_per_min"] for r in rows_b)
        best_a = max(r["tokens_per_s"] for r in rows_a) if rows_a else 0.0
        result["llama"] = {"slots_sweep": rows_a, "inflight_sweep": rows_b, "best_tokens_per_s": best,
                           "default_tokens_per_s": default["tokens_per_s"], "default_vs_best": round(ratio, 3),
                           "default_pairs_vs_best": round(default["pairs_per_min"] / best_pairs, 3),
                           "default_vs_best_slots_setting": round(default["tokens_per_s"] / best_a, 3) if best_a else None}
        print("\n(a) server slots = requests in flight (serve.parallel: a server setting)\n" + table(rows_a, best))
        print(f"\n(b) the profile's server ({default_slots} slots), client in flight swept\n" + table(rows_b, best))
        print(f"\ndefault in flight (= {default_slots} slots): {ratio:.1%} of the best tokens/s over in-flight counts, "
              f"{default['pairs_per_min'] / best_pairs:.1%} of the best pairs/min (target >= 95%: "
              f"{'PASS' if ratio >= 0.95 else 'FAIL'})")
        if best_a:
            print(f"the profile's server vs the best slot count of sweep (a): {default['tokens_per_s'] / best_a:.1%}")
        ok &= ratio >= 0.95
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
