"""train.replay_kl (tunebook.distill): replay answer tokens trained to the base's distribution, the rest by CE."""

import pytest

from tunebook import settings as st


def _rows(words: list[str]) -> list[dict]:
    return [{"messages": [{"role": "user", "content": " ".join(words[i:i + 3])},
                          {"role": "assistant", "content": " ".join(words[i + 3:i + 6])}]} for i in range(0, len(words), 6)]


@pytest.fixture
def kl_trainer(tiny_lm, tmp_path):
    pytest.importorskip("trl")
    from peft import LoraConfig

    from tunebook import train

    model, tok = tiny_lm
    model.train()
    tok.padding_side = "right"
    docs = _rows([f"w{i}" for i in range(24)])  # 4 documentation rows
    replay = _rows([f"w{i}" for i in range(30, 42)])  # 2 replay rows, last in the train set
    ds = train.rows_dataset(docs + replay)
    cfg = st.TrainSettings(epochs=1, batch_size=2, max_steps=3, precision="fp32", replay_kl=1.0)
    args = train.sft_config(cfg, tmp_path, seed=1, has_eval=False, backend="hf")
    peft = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    trainer = train.make_trainer(train.Student(model, tok, "hf", "tiny"), peft, ds, None, args, distill=replay)
    return trainer


def _manual(trainer, batch):
    """CE summed over the documentation answer tokens, KL(base || tuned) summed over the replay ones, all tokens."""
    import torch
    import torch.nn.functional as F

    model = trainer.model
    fwd = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        tuned = model(**fwd).logits[:, :-1].float()
        with model.disable_adapter():
            base = model(**fwd).logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    trained = target != -100
    rep = trained & batch["replay_tokens"][:, 1:]
    doc = trained & ~rep
    ce = F.cross_entropy(tuned[doc], target[doc], reduction="sum")
    kl = (base[rep].softmax(-1) * (base[rep].log_softmax(-1) - tuned[rep].log_softmax(-1))).sum()
    return ce, kl, int(trained.sum())


def test_replay_rows_are_flagged_by_their_tokens(kl_trainer):
    ds = kl_trainer.train_dataset
    batch = kl_trainer.data_collator([ds[0], ds[4], ds[5]])
    flags, mask = batch["replay_tokens"], batch["attention_mask"].bool()
    assert not flags[0].any()
    assert flags[1].equal(mask[1]) and flags[2].equal(mask[2])  # every real token of a replay row, no padding
    assert batch["input_ids"].shape == flags.shape


def test_loss_is_ce_on_docs_plus_kl_on_replay_per_trained_token(kl_trainer):
    import torch

    model = kl_trainer.model
    batch = kl_trainer.data_collator([kl_trainer.train_dataset[i] for i in (0, 4)])
    # LoRA B starts at zero: the fine-tuned model is the base, the KL is 0
    ce, kl, n = _manual(kl_trainer, batch)
    assert float(kl) == pytest.approx(0.0, abs=1e-6)
    loss = kl_trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(n))
    assert float(loss.detach()) == pytest.approx(float(ce) / n, rel=1e-4)
    # a trained-looking adapter: the replay tokens now pay the KL from the base, not the CE of the base's answer
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ce, kl, n = _manual(kl_trainer, batch)
    assert float(kl) > 1e-3
    loss = kl_trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(n))
    assert float(loss.detach()) == pytest.approx(float(ce + kl) / n, rel=1e-4)
    # a weight scales the KL alone
    kl_trainer.kl_weight = 3.0
    loss = kl_trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(n))
    assert float(loss.detach()) == pytest.approx(float(ce + 3 * kl) / n, rel=1e-4)
    kl_trainer.kl_weight = 1.0
    # a batch without replay rows: the trainer's own cross-entropy, untouched
    plain = kl_trainer.data_collator([kl_trainer.train_dataset[i] for i in (0, 1)])
    ce, kl, n = _manual(kl_trainer, plain)
    assert float(kl) == 0.0
    assert float(kl_trainer.compute_loss(model, dict(plain), num_items_in_batch=torch.tensor(n)).detach()) == \
        pytest.approx(float(ce) / n, rel=1e-4)


def test_training_reports_the_replay_kl(kl_trainer, tmp_path):
    from tunebook import train

    metrics = train.train(kl_trainer, tmp_path)
    assert metrics["steps"] == 3
    assert metrics["replay_kl_per_token"] is not None and metrics["replay_kl_per_token"] >= 0
    assert metrics["replay_kl_weight"] == 1.0


def test_replay_kl_is_the_cpu_default_and_loads_without_replay_rows_or_on_unsloth():
    assert st.load("cpu").train.replay_kl == 4 and st.load("gpu").train.replay_kl == 0
    assert st.load("ci", ["train.replay_fraction=0"]).train.replay_kl == 4  # nothing to distil: unused
    assert st.load("ci", ["train.replay_fraction=0.1", "train.backend=unsloth"]).train.backend == "unsloth"
    assert st.load("cpu", ["train.replay_kl=2.5"]).train.replay_kl == 2.5


def test_a_fused_loss_backend_trains_the_replay_rows_by_cross_entropy_and_says_so(tiny_lm, tmp_path, capsys):
    """Unsloth's loss gives no logits: its trainer stays the plain SFTTrainer (CE on the base's answers), with a note.
    The tiny model stands in for an Unsloth one: only the backend's name decides."""
    pytest.importorskip("trl")
    from peft import LoraConfig
    from trl import SFTTrainer

    from tunebook import distill, train

    model, tok = tiny_lm
    tok.padding_side = "right"
    replay = _rows([f"w{i}" for i in range(30, 42)])
    cfg = st.TrainSettings(epochs=1, batch_size=2, max_steps=1, precision="fp32")
    args = train.sft_config(cfg, tmp_path, seed=1, has_eval=False, backend="hf")
    peft = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = train.make_trainer(train.Student(model, tok, "unsloth", "tiny"), peft, train.rows_dataset(replay), None,
                                 args, distill=replay, kl_weight=4)
    assert type(trainer) is SFTTrainer and not isinstance(trainer.data_collator, distill.FlagCollator)
    assert "trained by cross-entropy" in capsys.readouterr().out


def test_a_training_seed_of_its_own_keeps_the_runs_seed():
    assert st.load("ci", []).train_seed == st.load("ci", []).seed
    cfg = st.load("ci", ["train.seed=3"])
    assert (cfg.train_seed, cfg.seed) == (3, st.load("ci", []).seed)


def test_rotated_replay_trains_one_slice_per_pass_and_as_many_steps(tiny_lm, tmp_path):
    """train.replay_rotate: pass e over the train split meets replay slice e only; every documentation row is
    trained once per pass, and a pass has the steps of the plain replay (one slice's worth of rows)."""
    pytest.importorskip("trl")
    from peft import LoraConfig

    from tunebook import replay, train

    model, tok = tiny_lm
    model.train()
    tok.padding_side = "right"
    docs = _rows([f"w{i}" for i in range(24)])  # 4 documentation rows
    rep = _rows([f"w{i}" for i in range(30, 54)])  # 4 replay rows: 2 slices of 2
    ds = train.rows_dataset(docs + rep)
    cfg = st.TrainSettings(epochs=2, batch_size=2, precision="fp32", replay_kl=1.0, replay_rotate=True)
    args = train.sft_config(cfg, tmp_path, seed=1, has_eval=False, backend="hf")
    peft = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = train.make_trainer(train.Student(model, tok, "hf", "tiny"), peft, ds, None, args, distill=rep)
    assert replay.passes(cfg.epochs, cfg.replay_rotate) == 2 and replay.passes(2.5, True) == 3
    assert replay.passes(5, False) == 1
    slices = replay.rotate(trainer, rep, 2)
    assert slices == [[4, 5], [6, 7]]
    ids = [tuple(x) for x in trainer.train_dataset["input_ids"]]
    seen: list[tuple[float, tuple]] = []
    inner = trainer.data_collator

    def spy(examples):
        seen.extend((trainer.state.epoch or 0, tuple(ex["input_ids"])) for ex in examples)
        return inner(examples)

    trainer.data_collator = spy
    metrics = train.train(trainer, tmp_path)
    assert metrics["steps"] == 6  # (4 docs + 2 replay) / batch 2, twice: as without rotating
    first = sorted(ids.index(t) for e, t in seen if e < 1)
    second = sorted(ids.index(t) for e, t in seen if e >= 1)
    assert first == [0, 1, 2, 3, 4, 5] and second == [0, 1, 2, 3, 6, 7]


def test_prompt_kl_adds_the_kl_at_the_documentation_rows_prompt_positions(kl_trainer):
    """train.prompt_kl: the KL from the base also where a documentation row's next token is its question or the
    chat template (never an answer token, never padding, never a replay row), weighted, in every batch."""
    import torch

    model = kl_trainer.model
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    kl_trainer.prompt_kl = 2.0
    for rows in ((0, 4), (0, 1)):  # with a replay row, and a batch of documentation rows only
        batch = kl_trainer.data_collator([kl_trainer.train_dataset[i] for i in rows])
        ce, kl, n = _manual(kl_trainer, batch)
        fwd = {k: batch[k] for k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            tuned = model(**fwd).logits[:, :-1].float()
            with model.disable_adapter():
                base = model(**fwd).logits[:, :-1].float()
        quiet = (batch["labels"][:, 1:] == -100) & batch["attention_mask"][:, 1:].bool() & ~batch["replay_tokens"][:, 1:]
        assert int(quiet.sum()) > 0
        kl_q = (base[quiet].softmax(-1) * (base[quiet].log_softmax(-1) - tuned[quiet].log_softmax(-1))).sum()
        loss = kl_trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(n))
        assert float(loss.detach()) == pytest.approx(float(ce + kl + 2.0 * kl_q) / n, rel=1e-4)
    kl_trainer.prompt_kl = 0.0


def test_the_base_pass_reads_only_the_kl_rows_cut_to_their_length(kl_trainer):
    """distill.base_hidden: the LoRA-off pass over the rows with KL positions, right padding cut to their longest
    row, gives those rows' hidden states as the whole batch's pass does (a faster pass, the same targets)."""
    import torch

    from tunebook import distill

    causal = kl_trainer.model.get_base_model()
    lengths = [12, 5, 8]
    ids = torch.randint(5, 40, (3, 12))
    mask = torch.tensor([[1] * n + [0] * (12 - n) for n in lengths])
    fwd = {"input_ids": ids, "attention_mask": mask}
    rows = torch.tensor([False, True, True])
    with torch.no_grad():
        whole = causal.model(**fwd).last_hidden_state[:, :-1]
        part = distill.base_hidden(causal, fwd, rows)
    assert part.shape[:2] == (2, 7)  # two rows, cut to the longer one (8 tokens), less the last position
    for row, (b, n) in enumerate(zip((1, 2), (5, 8))):
        assert torch.allclose(part[row, :n - 1], whole[b, :n - 1], atol=1e-4)
