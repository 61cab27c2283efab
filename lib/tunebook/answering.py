"""05's answerer: the student loaded with its adapter, greedy answers in equal batches (transformers, or the
llama-server of :mod:`tunebook.student_server`), each with its **confidence**, and the gate that turns an unsure
fine-tuned answer into "the docs don't cover this"."""

from __future__ import annotations

import contextlib
import weakref
from pathlib import Path
from typing import Iterable

from .chat import chat_messages
from .progress import bar


def load_tuned(adapter_dir: Path, base_source: str, precision: str = "auto"):
    """The base model with the adapter on top (switched off per call for the base answers), in ``precision``
    (:mod:`tunebook.precision`: bf16 on a GPU or a CPU with AMX, else float32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import precision as _precision

    cuda = torch.cuda.is_available()
    dtype = _precision.dtype(precision)
    tok = AutoTokenizer.from_pretrained(str(adapter_dir))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(base_source, dtype=dtype)
    if cuda:
        base = base.to("cuda")
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    _precision.contiguous_head_input(base)
    return model, tok


_MERGED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def merged_weights(model):
    """The fine-tuned answerer: a copy of ``model`` (base + adapter) with the LoRA weights merged into the base
    weights, made once per model — the 16-bit model 05 exports, and as fast as the base (the LoRA side path in
    float32 made fine-tuned + RAG 1.8× slower than base + RAG on the demo). ``model`` itself keeps its adapter
    unmerged, so its base answers stay exact."""
    import copy

    if model not in _MERGED:
        _MERGED[model] = copy.deepcopy(model).merge_and_unload().eval()
    return _MERGED[model]


def balanced_batch(n: int, most: int) -> int:
    """Equal batches of at most ``most``: 22 questions in 2 batches of 11, not 16 + 6 — every batch decodes up to
    ``max_new_tokens`` steps, so the number of batches is what costs."""
    import math

    if n <= 0:
        return 1
    return math.ceil(n / math.ceil(n / max(1, most)))


def _prompts(tok, questions: Iterable[str], system_prompt: str = "") -> list[str]:
    return [tok.apply_chat_template(chat_messages(q, system_prompt), tokenize=False, add_generation_prompt=True)
            for q in questions]


def generate(model, tok, questions: list[str], max_new_tokens: int, batch_size: int, adapter: bool,
             system_prompt: str = "", desc: str = "", server=None, merged: bool = True) -> list[str]:
    """Greedy answers, in order: through ``server`` (a :class:`~tunebook.student_server.StudentServer`) when one
    is given, else with transformers in batches of ``batch_size`` — the fine-tuned ones by the merged copy
    (:func:`merged_weights`) unless ``merged`` is False (the adapter on top of the base, as trained)."""
    return generate_scored(model, tok, questions, max_new_tokens, batch_size, adapter, system_prompt, desc, server,
                           merged)[0]


def generate_scored(model, tok, questions: list[str], max_new_tokens: int, batch_size: int, adapter: bool,
                    system_prompt: str = "", desc: str = "", server=None, merged: bool = True,
                    sort: bool = True) -> tuple[list[str], list[float | None]]:
    """:func:`generate`, and each answer's **confidence**: the lowest probability the model gave a token it chose
    (greedy), over the answer's tokens before the end-of-turn. A fact the student learnt comes out with every token
    near 1; an invented value usually has one token the model was unsure of (``benchmarks/abstain_gate.py``).
    With ``sort`` the batches are formed shortest prompt first (:func:`by_length`); answers come back in order."""
    import torch
    from transformers import LogitsProcessorList

    prompts = _prompts(tok, questions, system_prompt)
    if server is not None:
        return server.answer_scored(prompts, adapter, max_new_tokens, desc or ("fine-tuned" if adapter else "base"))
    answers: list[str] = [""] * len(prompts)
    confidence: list[float | None] = [None] * len(prompts)
    ctx = contextlib.nullcontext() if adapter else model.disable_adapter()
    if adapter and merged:
        model = merged_weights(model)
    batch_size = balanced_batch(len(prompts), batch_size)
    stops = _stop_ids(model, tok)
    order = by_length(tok, prompts) if sort else list(range(len(prompts)))
    with ctx, torch.inference_mode(), bar(total=len(prompts), desc=desc or ("fine-tuned" if adapter else "base")) as pbar:
        for i in range(0, len(order), batch_size):
            picked = order[i:i + batch_size]
            enc = tok([prompts[j] for j in picked], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(model.device)
            chosen = _chosen_logprob()
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 logits_processor=LogitsProcessorList([chosen]))
            steps = torch.stack(chosen.steps, 1) if chosen.steps else None  # [batch, generated steps]
            for b, (j, row) in enumerate(zip(picked, out[:, enc["input_ids"].shape[1]:])):
                answers[j] = tok.decode(row, skip_special_tokens=True).strip()
                ids = row.tolist()
                n = next((k for k, t in enumerate(ids) if t in stops), len(ids))  # the answer's own tokens
                confidence[j] = round(float(steps[b, :n].min().exp()), 4) if steps is not None and n else None
            pbar.update(len(picked))
    return answers, confidence


def by_length(tok, prompts: list[str]) -> list[int]:
    """The prompts' indices, shortest prompt first: batches of similar lengths pad less (RAG prompts with one chunk
    run from ~260 to ~430 tokens on the demo; in question order 15 % of the tokens read were padding)."""
    lengths = [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
    return sorted(range(len(prompts)), key=lambda i: lengths[i])


@contextlib.contextmanager
def generating(model, tok, backend: str = "hf"):
    """``model`` switched to generation inside the block — Unsloth's inference path (its models switch through
    FastLanguageModel), eval mode, the tokenizer padding on the left — and back afterwards, even on an error: the
    same model goes on training (04's replay, restyle and probe-and-repair ask it before or between rounds)."""
    was_training, side = model.training, tok.padding_side
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    tok.padding_side = "left"  # generation pads on the left; training on the right
    try:
        yield model
    finally:
        tok.padding_side = side
        if backend == "unsloth":
            FastLanguageModel.for_training(model)
        if was_training:
            model.train()


def greedy_ended(model, tok, texts: list[str], max_new_tokens: int) -> list[tuple[str, bool]]:
    """One batch of templated ``texts`` (left-padded), answered greedily: each answer and whether it ended (an
    end-of-sequence or padding token) inside ``max_new_tokens``."""
    import torch

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    said = []
    for seq in out[:, enc["input_ids"].shape[1]:]:
        ended = bool((seq == tok.eos_token_id).any()) or (pad is not None and bool((seq == pad).any()))
        said.append((tok.decode(seq, skip_special_tokens=True).strip(), ended))
    return said


def _stop_ids(model, tok) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids | {t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None}


def _chosen_logprob():
    """A transformers logits processor that runs last among generate's: it records, per step and row, the
    log-probability of the token greedy decoding is about to pick (the largest) and leaves the scores alone."""
    import torch
    from transformers import LogitsProcessor

    class ChosenLogprob(LogitsProcessor):
        def __init__(self):
            self.steps: list = []

        def __call__(self, input_ids, scores):
            self.steps.append(torch.log_softmax(scores.float(), -1).max(-1).values)
            return scores

    return ChosenLogprob()


def gate(answer: str, confidence: float | None, threshold: float, question: str) -> str:
    """The answer, or "the docs don't cover this" (in the question's language) when its confidence is below
    ``threshold`` (0 switches the gate off; an answer without a confidence is kept)."""
    from .outcomes import abstain_answer

    if threshold <= 0 or confidence is None or confidence >= threshold:
        return answer
    return abstain_answer(question)
