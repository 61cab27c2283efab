"""LoRA shape helpers of 04: which layers get an adapter, and an adapter's update scaled after training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .settings import TrainSettings


def layer_kwargs(cfg: TrainSettings, config) -> dict[str, Any]:
    """LoRA on the layers from ``cfg.lora_first_layer`` up only (the bottom ones frozen); nothing when it is 0."""
    if not cfg.lora_first_layer:
        return {}
    n = config.num_hidden_layers
    if cfg.lora_first_layer >= n:
        raise ValueError(f"train.lora_first_layer={cfg.lora_first_layer}: the student has {n} layers (0 … {n - 1})")
    return {"layers_to_transform": list(range(cfg.lora_first_layer, n))}


def scale_adapter(adapter_dir: Path, scale: float) -> None:
    """The saved LoRA adapter's update times ``scale`` (its ``lora_alpha`` in adapter_config.json, which PEFT, the
    merged export and the GGUF export all read): the weights move only that far from the base toward the fine-tuned
    ones — weight-space interpolation (WiSE-FT, Wortsman et al. 2022), against forgetting. The scale is recorded in
    tunebook_train.json's settings (PEFT's config takes no extra keys); scaling twice multiplies."""
    path = Path(adapter_dir) / "adapter_config.json"
    conf = json.loads(path.read_text())
    conf["lora_alpha"] = conf["lora_alpha"] * scale
    conf["alpha_pattern"] = {k: v * scale for k, v in (conf.get("alpha_pattern") or {}).items()}
    path.write_text(json.dumps(conf, indent=2))
