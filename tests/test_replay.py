"""Replay against forgetting: how many rows, which prompts, and how they join the train split (no model)."""

import pytest

from tunebook import evaluate, replay, train


@pytest.mark.parametrize("name", ["replay.yaml", "replay_worked.yaml"])
def test_replay_prompts_never_overlap_the_forgetting_check(name):
    rp = replay.prompts(name)
    general = [g["question"] for g in evaluate.general_prompts()]
    assert len(rp) >= 40 and len(set(rp)) == len(rp) and not set(rp) & set(general)
    from tunebook.inspection import NearDup

    index = NearDup(0.6)
    for i, q in enumerate(general):
        index.add(str(i), q)
    assert not [q for q in rp if index.query(q) is not None]


def test_every_replay_prompt_file_is_tested():
    from tunebook.paths import PARAMS_DIR

    assert sorted(p.name for p in (PARAMS_DIR / "prompts").glob("replay*.yaml")) == ["replay.yaml", "replay_worked.yaml"]


def test_replay_prompts_by_name_or_path_and_a_clear_error(tmp_path):
    assert replay.prompts("replay_worked.yaml")[2] == "A ticket costs 15 dollars. How much do 3 tickets cost?"
    own = tmp_path / "mine.yaml"
    own.write_text("- Say hi.\n- 说你好。\n", encoding="utf-8")
    assert replay.prompts(own) == ["Say hi.", "说你好。"]
    with pytest.raises(FileNotFoundError, match="replay_worked.yaml"):
        replay.prompts("replay_wroked.yaml")


def test_a_replay_file_that_is_not_there_fails_with_the_settings_before_any_work():
    from tunebook import settings as st

    assert st.load("cpu", ["train.replay_prompts=replay_worked.yaml"]).train.replay_prompts == "replay_worked.yaml"
    with pytest.raises(st.SettingsError, match="replay_prompts.*no such file.*replay_wroked.yaml"):
        st.load("cpu", ["train.replay_prompts=replay_wroked.yaml"])


def test_replay_share_of_the_mixed_train_set():
    assert replay.count_for(90, 0.0, 48) == 0
    assert replay.count_for(90, 0.1, 48) == 10  # 10 of 100 rows
    assert replay.count_for(900, 0.2, 48) == 48  # capped by the prompts there are
    assert replay.count_for(3, 0.1, 48) == 1


def test_replay_rows_join_the_train_split_in_its_format(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"id": "a", "messages": [{"role": "user", "content": "q"}, '
                                          '{"role": "assistant", "content": "a"}]}\n')
    ds = train.load_split(tmp_path / "train.jsonl", "sys")
    rows = [{"id": "replay-1", "split": "replay", "messages": [{"role": "user", "content": "Say hi."},
                                                               {"role": "assistant", "content": "Hi!"}]}]
    mixed = train.add_rows(ds, rows, "sys")
    assert len(mixed) == 2 and mixed[1]["completion"] == [{"role": "assistant", "content": "Hi!"}]
    assert mixed[1]["prompt"][0] == {"role": "system", "content": "sys"}
    assert train.add_rows(ds, [], "sys") is ds
