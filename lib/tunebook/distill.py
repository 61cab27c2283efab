"""Replay by distillation (``train.replay_kl``): the replay rows' answer tokens trained to the base student's whole
next-token distribution instead of its greedy answer alone.

Replay (:mod:`tunebook.replay`) mixes the base student's own answers to general instructions into training, as
targets of the usual cross-entropy: at each answer token only the token the base chose counts. Here the loss at those
tokens is the KL divergence from the base's distribution — every probability the base gives at that position, read
from the same model with the LoRA switched off (no second copy) — so each replayed token carries what the base
"knows" there, not one label (learning without forgetting, Li & Hoiem 2016; knowledge distillation, Hinton et al.
2015). The documentation rows keep plain cross-entropy; both are summed per token (the KL times
``train.replay_kl``, its weight) and divided by the batch's trained-token count, as the cross-entropy alone is.

Replay rows are found in a batch by their token ids (the collator is wrapped, see :class:`FlagCollator`). A batch
holding replay tokens runs the transformer once more with the LoRA off, without gradients. Checked on the
transformers + PEFT path (04 on a CPU); Unsloth computes its loss fused, without logits: there the replay rows are
trained by cross-entropy, as with ``train.replay_kl: 0``, and 04 says so (:func:`applies`).
"""

from __future__ import annotations

from typing import Any

REPLAY_KEY = "replay_tokens"  # the collator's per-token flag; taken out before the model sees the batch


def _ddp() -> bool:
    """Several training processes (``train.world_size``'s reading; train imports this module, so not called)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def applies(backend: str) -> bool:
    """Whether ``backend`` can train by KL: transformers + PEFT in one process (Unsloth's fused loss gives no logits;
    under DDP the KL's forward passes would go around the DDP wrapper, whose gradient sync they need)."""
    return backend == "hf" and not _ddp()


def fallback_note(backend: str) -> str:
    if backend == "hf" and _ddp():
        why = "with train.num_gpus > 1 (DDP) the KL is computed in one process only"
    else:
        why = f"{backend} computes its loss fused, without logits"
    return (f"train.replay_kl: {why}; the replay rows are trained by cross-entropy on the base's answers instead "
            "(as with train.replay_kl: 0)")


class FlagCollator:
    """Wraps the trainer's collator: the batch gets ``replay_tokens``, True on every token of a replay row (found by
    its token ids), laid out as the wrapped collator lays out ``input_ids`` (right-padded rows). Only the padded
    batches of the transformers + PEFT path: packed rows (Unsloth) never get here (:func:`applies`)."""

    def __init__(self, inner, replay: set[tuple[int, ...]]):
        if getattr(inner, "padding_free", False):
            raise ValueError("train.replay_kl flags padded rows; this trainer packs them (padding-free)")
        self.inner, self.replay = inner, replay

    def __getattr__(self, name: str) -> Any:  # pad_token_id, ... of the wrapped collator
        return getattr(self.inner, name)

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        batch = self.inner(examples)
        width = batch["input_ids"].shape[-1]
        batch[REPLAY_KEY] = torch.tensor([[tuple(ex["input_ids"]) in self.replay] * len(ex["input_ids"])
                                          + [False] * (width - len(ex["input_ids"])) for ex in examples],
                                         dtype=torch.bool)
        return batch


def summed_kl(logits, base_logits) -> Any:
    """KL(base ‖ fine-tuned) of the next-token distributions, summed over the positions (rows of the logits)."""
    import torch.nn.functional as F

    tuned = F.log_softmax(logits.float(), dim=-1)
    base = F.log_softmax(base_logits.float(), dim=-1)
    return F.kl_div(tuned, base, log_target=True, reduction="sum")


def base_hidden(causal, fwd: dict, rows) -> Any:
    """The base's last hidden states (LoRA off: the caller's context) of the batch rows ``rows`` only, cut to their
    longest row (rows are right-padded), without the last position (it predicts nothing trained). A batch of four
    with one replay row runs a quarter of the extra forward pass (``benchmarks/kl_rows.py``)."""
    sub = {k: v[rows] for k, v in fwd.items()}
    if "attention_mask" in sub and bool(sub["attention_mask"][:, 0].all()):  # right-padded: cut the padding
        width = int(sub["attention_mask"].sum(1).max())
        sub = {k: v[:, :width] for k, v in sub.items()}
    return causal.model(**sub).last_hidden_state[:, :-1]


def trainer_class():
    """SFTTrainer whose loss on replay answer tokens is ``kl_weight`` × the KL from the base (LoRA off),
    cross-entropy elsewhere."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class ReplayKLTrainer(SFTTrainer):
        kl_weight = 1.0  # train.replay_kl (set by enable)
        prompt_kl = 0.0  # train.prompt_kl: the KL at the documentation rows' prompt positions, its weight
        kl_sum, kl_tokens = 0.0, 0  # over training: the KL per replay token, for train_metrics.json
        base_rows_only = True  # the LoRA-off pass reads only the rows with KL positions (False: the whole batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            flags = inputs.pop(REPLAY_KEY, None)
            labels = inputs.get("labels")
            where = quiet = None
            if flags is not None and labels is not None:
                flags = flags[:, 1:].to(labels.device)
                where = (labels[:, 1:] != -100) & flags  # position t predicts token t + 1
                if self.prompt_kl and "attention_mask" in inputs:  # a documentation row's question and template
                    quiet = (labels[:, 1:] == -100) & inputs["attention_mask"][:, 1:].bool() & ~flags
            if (where is None or not bool(where.any())) and (quiet is None or not bool(quiet.any())):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # TRL's default loss (chunked NLL) projects only the labelled positions and returns no logits: this batch
            # runs the transformer once for the hidden states and projects the trained positions itself
            target = labels[:, 1:]
            docs = (target != -100) & ~where
            if num_items_in_batch is None:  # the batch's trained tokens, replay ones included
                num_items_in_batch = (target != -100).sum()
            peft = self.accelerator.unwrap_model(model)
            causal = peft.get_base_model()  # the LoRA layers sit inside it: on unless disabled below
            head = causal.get_output_embeddings()
            fwd = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            hidden = causal.model(**fwd).last_hidden_state[:, :-1]
            ce = F.cross_entropy(head(hidden[docs]).float(), target[docs], reduction="sum")
            rows = where.any(1) | (quiet.any(1) if quiet is not None else False)  # rows the KL reads
            if not self.base_rows_only:
                rows = torch.ones_like(rows)
            with torch.no_grad(), peft.disable_adapter():
                base = base_hidden(causal, fwd, rows)
            kl = summed_kl(head(hidden[where]), head(base[where[rows][:, :base.shape[1]]]))
            if quiet is not None and bool(quiet.any()):  # LwF on the new data's inputs: the questions read as before
                kl_q = summed_kl(head(hidden[quiet]), head(base[quiet[rows][:, :base.shape[1]]]))
                ce = ce + self.prompt_kl * kl_q
            if model.training:
                self.kl_sum += float(kl.detach())
                self.kl_tokens += int(where.sum())
            loss = (ce + self.kl_weight * kl) / torch.as_tensor(num_items_in_batch, device=ce.device)
            return (loss, {"loss": loss}) if return_outputs else loss

    return ReplayKLTrainer


def _key(prompt: list[dict], completion: list[dict]) -> tuple[str, str]:
    return ([m["content"] for m in prompt if m["role"] == "user"][-1:] or [""])[0], completion[-1]["content"]


def enable(trainer, rows: list[dict], weight: float = 1.0, prompt_weight: float = 0.0) -> int:
    """Wrap ``trainer``'s collator so it flags the replay ``rows`` (``messages`` rows, as 04 mixed them in), found
    in its tokenized train set by question and answer, and weigh their KL by ``weight``; returns how many were found
    (all, or an error)."""
    want = {_key(r["messages"][:-1], r["messages"][-1:]) for r in rows}
    ds = trainer.train_dataset
    found = {tuple(ids) for p, c, ids in zip(ds["prompt"], ds["completion"], ds["input_ids"]) if _key(p, c) in want}
    if len(found) != len(want):
        raise RuntimeError(f"train.replay_kl: {len(want)} replay rows, {len(found)} found in the trainer's train set")
    trainer.data_collator = FlagCollator(trainer.data_collator, found)
    trainer.kl_weight, trainer.prompt_kl = weight, prompt_weight
    return len(found)


def mean_kl(trainer) -> float | None:
    """The KL from the base per replay answer token, over the training so far (None: no replay token yet)."""
    n = getattr(trainer, "kl_tokens", 0)
    return round(trainer.kl_sum / n, 5) if n else None
