"""04's training arguments on this (CPU) machine: what the cpu profile trains with."""

from tunebook import train
from tunebook.settings import Settings, load


def test_cpu_training_arguments(tmp_path):
    cfg = load("cpu").train
    args = train.sft_config(cfg, tmp_path, seed=1, has_eval=False, backend="hf")
    assert args.learning_rate == cfg.learning_rate == Settings().train.learning_rate == 1e-3
    assert args.per_device_train_batch_size == cfg.batch_size and not args.packing
    # padded batches of similar length, from a fresh random mega-batch each time (HF's LengthGroupedSampler)
    assert args.train_sampling_strategy == "group_by_length"
    assert args.completion_only_loss and args.lr_scheduler_type == "cosine"
