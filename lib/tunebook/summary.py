"""05, last — a one-page run summary (``summary.md`` + ``summary.html``) built from the run dir's records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .stats import fmt


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 50 s``, ``1 h 05 min`` (under 10 s: one decimal)."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def rate(per_s: float | None) -> str:
    """Tokens (or anything) per second with one decimal; ``–`` when not measured."""
    return "–" if not per_s else f"{per_s:.1f}"


def gib(mb: float | None) -> str:
    """MiB (as ``train_metrics.json`` records them) → ``4.9 GiB``; ``–`` when not measured."""
    return "–" if not mb else f"{mb / 1024:.1f} GiB"


def _reasons(counts: dict[str, int] | None) -> str:
    """``{"exact duplicate": 2, "empty": 1}`` → ``(exact duplicate 2, empty 1)``."""
    return f"({', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else ""


def _agreement(g: dict[str, Any]) -> str:
    """``15 of 16 answers agree exactly, mean character F1 0.99``."""
    n, share = g.get("n"), g.get("exact_agreement")
    same = f"{round(share * n)} of {n}" if isinstance(n, int) and share is not None else _fmt(share)
    return f"{same} answers agree exactly, mean character F1 {_fmt(g.get('mean_char_f1'))}"

def _metrics_lines(metrics: dict[str, Any]) -> list[str]:
    """05's table (:func:`evaluate.metric_rows`): per split and condition, judge and exact key values with 95 %
    intervals, invented / abstaining shares, retrieval hit rate."""
    from .eval_tables import metric_rows, verdict

    lines = ["## Metrics: does the student know the docs?", ""]
    sentence = verdict(metrics)
    if sentence:
        lines += [sentence, ""]
    cols = ["split", "condition", "n", "judge 0–5 [95% CI]", "exact key values", "ROUGE-L", "invents a value",
            "abstains", "retrieval hit"]
    lines += ["| " + " | ".join(c.replace("condition", "answerer") for c in cols) + " |", "|---" * len(cols) + "|"]
    for r in metric_rows(metrics):
        lines.append("| " + " | ".join("" if c == "retrieval hit" and r[c] is None else _fmt(r[c]) for c in cols) + " |")
    if "recall_far" in metrics:
        lines += ["", "`recall_far`: the recall questions worded far from every training question (they share under "
                  "half their character 3-shingles with the closest one); the rest differ from a trained wording by a "
                  "word or two."]
    if metrics.get("engine"):
        lines += ["", f"Answered by: {ENGINES.get(metrics['engine'], metrics['engine'])} (`evaluate.engine`)."]
    return lines


ENGINES = {"transformers": "transformers, every prompt",
           "llama.cpp": "llama-server (the student's GGUF, the LoRA as GGUF switched per request), every prompt",
           "hybrid": "llama-server (the student's GGUF, the LoRA as GGUF switched per request) for the closed-book "
                     "questions and general prompts, transformers for the RAG prompts"}


def build(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    data = _load(run_dir / "data" / "inspect_report.json")
    synth = _load(run_dir / "data" / "synth_report.json").get("synth", {})
    train = _load(run_dir / "train" / "train_metrics.json")
    metrics = _load(run_dir / "eval" / "metrics.json")
    exports = _load(run_dir / "export" / "exports.json")
    lines = [f"# Run summary: {run_dir.name}", ""]
    lines += ["## Data", "",
              f"- pairs synthesized: {synth.get('pairs', data.get('rows_in', '–'))} from {synth.get('chunks_total', '–')} "
              f"chunks ({synth.get('chunks_failed', 0)} chunks failed; {rate(synth.get('completion_tokens_per_s'))} "
              "teacher tokens/s)",
              f"- kept {data.get('kept', '–')}, dropped {data.get('dropped', '–')} {_reasons(data.get('drop_reasons'))}",
              f"- train {data.get('train', '–')} · eval recall {data.get('eval_recall', '–')} · eval unseen "
              f"{data.get('eval_unseen', '–')}", ""]
    lines += ["## Training", "",
              f"- backend {train.get('backend', '–')}, {train.get('steps', '–')} steps, {duration(train.get('runtime_s'))}, "
              f"{rate(train.get('tokens_per_s'))} tokens/s, peak memory {gib(train.get('peak_memory_mb'))}",
              f"- loss {_fmt(train.get('first_loss'))} → {_fmt(train.get('final_loss'))}", ""]
    if metrics:
        lines += _metrics_lines(metrics)
        general = metrics.get("general")
        if isinstance(general, dict) and "base_judge" in general:
            change = general.get("judge_change") or {}
            lines += ["", f"General prompts (forgetting check, {general.get('n')} prompts), judge 0–5: base "
                          f"{_fmt(general.get('base_judge'))} → fine-tuned {_fmt(general.get('tuned_judge'))}, change "
                          f"{fmt(change)}{' — COLLAPSED' if general.get('collapsed') else ''}"
                          + (f"; answers stating the reference's fact: base {general['base_right']:.0%} → fine-tuned "
                             f"{general['tuned_right']:.0%}" if general.get("base_right") is not None
                             and general.get("tuned_right") is not None else "")]
            if general.get("switched_change"):
                lines[-1] += (f"; switched (the adapter for {general.get('switched_to_adapter', 0):.0%} of them, "
                              f"the base for the rest): {_fmt(general.get('switched_judge'))}, change "
                              f"{fmt(general['switched_change'])}")
        for q, g in (metrics.get("gguf_agreement") or {}).items():
            lines += ["", f"Exported GGUF {q} served by llama-server vs the notebook's fine-tuned model: "
                          f"{_agreement(g)}"]
        v = metrics.get("vllm_agreement")
        if isinstance(v, dict):
            lines += ["", f"Merged 16-bit model served by vLLM vs the notebook's fine-tuned model: {_agreement(v)}"]
        lines.append("")
    if exports:
        lines += ["## Exports and how to serve them", ""]
        how = {
            "adapter": "PEFT: `PeftModel.from_pretrained(base, '{p}')`",
            "merged": "vLLM: `vllm serve {p}` · transformers: `AutoModelForCausalLM.from_pretrained('{p}')`",
            "modelfile": "Ollama: `cd {d} && ollama create my-docs-model -f Modelfile`",
        }
        for name, path in exports.items():
            if name.startswith("gguf_"):
                hint = f"llama.cpp: `llama-server -m {path} --jinja`"
            else:
                hint = how.get(name, "").format(p=path, d=Path(path).parent)
            lines.append(f"- **{name}**: `{path}` — {hint}")
        lines.append("")
    return "\n".join(lines)


def write(run_dir: Path) -> tuple[Path, Path]:
    from markdown_it import MarkdownIt

    text = build(run_dir)
    md_path = Path(run_dir) / "summary.md"
    md_path.write_text(text, encoding="utf-8")
    body = MarkdownIt("commonmark").enable("table").render(text)
    html_path = Path(run_dir) / "summary.html"
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{Path(run_dir).name}</title>"
                         "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:"
                         "collapse}td,th{border:1px solid #ccc;padding:.2em .5em}</style></head><body>"
                         f"{body}</body></html>", encoding="utf-8")
    return md_path, html_path
