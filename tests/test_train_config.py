"""04's training arguments on this (CPU) machine: what the cpu profile trains with."""

from tunebook import train
from tunebook.settings import Settings, load


def test_cpu_training_arguments(tmp_path):
    cfg = load("cpu").train
    args = train.sft_config(cfg, tmp_path, seed=1, has_eval=False, backend="hf")
    assert args.learning_rate == cfg.learning_rate == Settings().train.learning_rate == 5e-4
    assert args.per_device_train_batch_size == cfg.batch_size and not args.packing
    # padded batches of similar length, from a fresh random mega-batch each time (HF's LengthGroupedSampler)
    assert args.train_sampling_strategy == "group_by_length"
    assert args.completion_only_loss and args.lr_scheduler_type == "cosine"
    assert args.neftune_noise_alpha is None  # NEFTune off unless asked for
    noisy = train.sft_config(cfg.model_copy(update={"neftune_alpha": 5.0}), tmp_path, seed=1, has_eval=False,
                             backend="hf")
    assert noisy.neftune_noise_alpha == 5.0


def test_resume_skips_a_checkpoint_killed_while_it_was_being_saved(tmp_path, capsys):
    """A kill mid-save leaves checkpoint-N without trainer_state.json (written last) or with it cut short:
    the resume takes the newest complete one (CI hit this: resuming from a half-written checkpoint-4 failed)."""
    ckpts = tmp_path / train.CHECKPOINT_DIR
    assert train.last_checkpoint(tmp_path) is None
    for n, state in [(2, '{"global_step": 2}'), (10, '{"global_step": 10}'), (4, None), (12, '{"global_st')]:
        (ckpts / f"checkpoint-{n}").mkdir(parents=True)
        (ckpts / f"checkpoint-{n}" / "adapter_model.safetensors").write_bytes(b"x")
        if state is not None:
            (ckpts / f"checkpoint-{n}" / "trainer_state.json").write_text(state)
    assert train.last_checkpoint(tmp_path) == str(ckpts / "checkpoint-10")  # numeric order, 12 is cut short
    assert "skipping checkpoint-12" in capsys.readouterr().out
    for n in (10, 2):
        (ckpts / f"checkpoint-{n}" / "trainer_state.json").unlink()
    assert train.last_checkpoint(tmp_path) is None  # nothing complete: train from the start
