"""The scope switch: the adapter answers questions about the docs, the base student everything else (05's sixth
answerer, ``switched``; ``evaluate.scope_switch``).

Every training lever against forgetting tried in sessions 20–27 (replay, its KL to the base, rotation, the KL at the
questions, dropout) left the fine-tuned student 0.3–1.0 of 5 under the base on general prompts. A served system need
not forget: llama-server switches a LoRA per request (scale 1 or 0; 05's student server does), so the product can
send the docs' questions to the adapter and everything else to the base weights.

The switch decides from the **base** student's own sentence embedding of a question (the mean of its last hidden
states over the bare question's tokens), compared by cosine with
the run's **train** questions (about the docs) and with the **replay prompts** (``train.replay_prompts``, general
prompts that never overlap the forgetting check's ``general.yaml``): the adapter answers when the nearest train
question is nearer than the nearest general prompt. It has no threshold and is fitted to nothing of the eval
(``benchmarks/scope_route.py`` measured it offline on six runs first, RESULTS.md session 27).

What it does not do: a merged export or an Ollama import is the fine-tuned student alone and still forgets; the
switch needs the adapter served beside the base (:func:`save` writes what a server-side router needs).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

SCOPE_FILE = "scope.safetensors"  # under export/scope/: both sides' embeddings, for a router in front of llama-server
COPIED = ("", "_confidence", "_rouge_l", "_char_f1", "_ungated")  # what a switched answer takes from its source


def embed(model, tok, texts: list[str], batch: int = 16, max_length: int = 128):
    """Unit-length sentence embeddings of ``texts`` by the base weights (a PEFT model's adapter is switched off):
    the mean of the last hidden states over each text's tokens, in float32."""
    import torch

    if not texts:
        return torch.zeros((0, model.config.hidden_size))
    off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = inner.get_decoder() if hasattr(inner, "get_decoder") else inner  # no LM head: 5.4 s for 7.4 (109 texts)
    side, tok.padding_side = tok.padding_side, "right"  # positions from 0 for every text, as in training
    out = []
    try:
        with off, torch.inference_mode():
            for i in range(0, len(texts), batch):
                enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, truncation=True,
                          max_length=max_length).to(model.device)
                h = body(**enc).last_hidden_state.float()  # the final norm's output, as hidden_states[-1]
                m = enc["attention_mask"].unsqueeze(-1).float()
                out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).cpu())
    finally:
        tok.padding_side = side
    return torch.cat(out)


class Switch:
    """The scope switch of one run: the embeddings of its train questions (``docs``) and of the general prompts."""

    def __init__(self, docs, general, meta: dict[str, str] | None = None):
        if not len(docs) or not len(general):
            raise ValueError("the scope switch needs both train questions and general prompts")
        self.docs, self.general, self.meta = docs, general, dict(meta or {})

    @classmethod
    def build(cls, model, tok, doc_questions: list[str], general_prompts: list[str], **meta: str) -> "Switch":
        return cls(embed(model, tok, doc_questions), embed(model, tok, general_prompts),
                   {**meta, "docs": str(len(doc_questions)), "general": str(len(general_prompts))})

    def margins(self, model, tok, questions: list[str]) -> list[float]:
        """Per question, the cosine of its nearest train question minus that of its nearest general prompt."""
        if not questions:
            return []
        e = embed(model, tok, questions)
        return ((e @ self.docs.T).max(1).values - (e @ self.general.T).max(1).values).tolist()

    def to_adapter(self, model, tok, questions: list[str]) -> list[bool]:
        """Per question: does the adapter answer it (its nearest train question is nearer than any general prompt)?"""
        return [m > 0 for m in self.margins(model, tok, questions)]

    def save(self, path: Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"docs": self.docs.contiguous(), "general": self.general.contiguous()}, str(path), metadata=self.meta)
        return path

    @classmethod
    def load(cls, path: Path) -> "Switch":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return cls(f.get_tensor("docs"), f.get_tensor("general"), f.metadata() or {})


def for_run(model, tok, train_rows: list[dict], replay_prompts: str) -> Switch:
    """The run's switch: its train questions against the replay prompts file ``replay_prompts``
    (``train.replay_prompts``)."""
    from . import replay

    questions = [r["messages"][0]["content"] for r in train_rows]
    return Switch.build(model, tok, questions, replay.prompts(replay_prompts), replay_prompts=str(replay_prompts))


def switch_rows(rows: list[dict], to_adapter: list[bool]) -> None:
    """Each row's ``switched`` answer (with its confidence, scores and ungated answer) copied from ``tuned`` where the
    switch sends the question to the adapter, else from ``base``; ``switched_from`` says which."""
    for row, go in zip(rows, to_adapter):
        src = "tuned" if go else "base"
        row["switched_from"] = src
        for suffix in COPIED:
            if f"{src}{suffix}" in row:
                row[f"switched{suffix}"] = row[f"{src}{suffix}"]


def routed_share(rows: list[dict[str, Any]]) -> float | None:
    """The share of rows the switch sent to the adapter (None: the switch was off)."""
    went = [r["switched_from"] == "tuned" for r in rows if "switched_from" in r]
    return round(sum(went) / len(went), 4) if went else None


def answer(switch: Switch, model, tok, questions: list[str], max_new_tokens: int, batch_size: int,
           system_prompt: str = "", server=None) -> tuple[list[str], list[str]]:
    """The switched system's answers to ``questions`` and who gave each (``tuned`` or ``base``): the docs' questions
    asked with the adapter, the rest without — through transformers, or through llama-server with the LoRA's scale
    picked per request (``server``: a started :class:`tunebook.student_server.StudentServer`). Ungated."""
    from .answering import generate

    go = switch.to_adapter(model, tok, questions)
    out = [""] * len(questions)
    for adapter in (True, False):
        idx = [i for i, g in enumerate(go) if g == adapter]
        if idx:
            said = generate(model, tok, [questions[i] for i in idx], max_new_tokens, batch_size, adapter=adapter,
                            system_prompt=system_prompt, desc="switched: " + ("fine-tuned" if adapter else "base"),
                            server=server)
            for i, a in zip(idx, said):
                out[i] = a
    return out, ["tuned" if g else "base" for g in go]


def export(switch: Switch, adapter_dir: Path, trained: dict[str, Any], export_dir: Path) -> dict[str, str]:
    """What serving the switched system takes besides the base student's GGUF, under ``export/scope/``: the switch
    (:data:`SCOPE_FILE`) and, for a GGUF student (``trained``: :func:`tunebook.evaluate.trained_record`), the adapter
    as a GGUF LoRA (llama.cpp's converter) for ``llama-server --lora FILE --lora-init-without-apply``, whose scale
    each request then sets (1: a docs question, 0: any other). A student from the hub or a folder has no GGUF to
    serve it beside: the switch alone is written (vLLM's ``--enable-lora`` or transformers serve that adapter).
    Recorded in ``export/exports.json`` beside the other exports."""
    import json

    from . import models
    from .export import EXPORTS_FILE
    from .jsonio import write_json
    from .student_server import base_dir, lora_to_gguf

    out_dir = Path(export_dir) / "scope"
    out_dir.mkdir(parents=True, exist_ok=True)
    done = {"scope": str(switch.save(out_dir / SCOPE_FILE))}
    if models.parse(trained["student"]).kind in ("bundled", "gguf"):
        done["scope_lora_gguf"] = str(lora_to_gguf(Path(adapter_dir), base_dir(trained), out_dir / "adapter-lora.gguf"))
    else:
        print(f"export/scope: the switch only; {trained['student']!r} is not a GGUF, so no GGUF LoRA to serve beside it")
    record = Path(export_dir) / EXPORTS_FILE
    write_json({**(json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}), **done}, record)
    return done
