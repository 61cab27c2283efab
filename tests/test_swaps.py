"""03's "docs don't say" twins: a trained question about a name the corpus lacks, answered by abstaining."""

import random

from tunebook import splitting, swaps
from tunebook.outcomes import ABSTAIN_ANSWER
from tunebook.settings import InspectSettings

CORPUS = ("配置文件中 `max_iterations` 默认为 60，`step_seconds` 默认为 900。错误码 BW-204 表示求解器没有收敛。"
          "The `--seed` flag sets the random seed; `cache.max_size_mb` caps the cache.").lower()


def test_a_fake_name_keeps_the_shape_and_is_not_in_the_corpus():
    rng = random.Random(0)
    vocab = swaps._parts(["max_iterations", "step_seconds", "cache.max_size_mb", "seed"])
    for name in ("max_iterations", "step_seconds", "cache.max_size_mb", "--seed"):
        for _ in range(10):
            fake = swaps.fake_name(name, CORPUS, vocab, rng)
            assert fake and fake.lower() not in CORPUS and fake != name
            assert fake.startswith("--") == name.startswith("--")
    code = swaps.fake_name("BW-204", CORPUS, vocab, rng)
    assert code.startswith("BW-") and len(code) == 6 and code.lower() not in CORPUS


def _row(i, q, a, lang="zh", chunk="c0"):
    return {"id": f"r{i}", "chunk_id": chunk, "lang": lang, "instruction": q, "output": a, "kind": "fact"}


def test_swapped_twins_abstain_in_the_page_language_and_only_for_named_things():
    train = [_row(0, "配置文件中 `max_iterations` 的默认值是多少？", "60"),
             _row(1, "错误码 BW-204 表示什么？", "求解器没有收敛。"),
             _row(2, "What does the `--seed` flag set?", "The random seed.", lang="en"),
             _row(3, "What is the default export format?", "csv", lang="en")]
    items = swaps.swapped_items(train, CORPUS, 1.0, random.Random(1), ABSTAIN_ANSWER)
    assert sorted(r["swapped_from"] for r in items) == ["r0", "r1", "r2"]  # r3 names nothing specific
    for r in items:
        real, fake = r["swapped_name"]
        src = next(t for t in train if t["id"] == r["swapped_from"])
        assert r["instruction"] == src["instruction"].replace(real, fake)
        assert r["kind"] == "abstain" and r["output"] == ABSTAIN_ANSWER[src["lang"]]
        assert fake.lower() not in CORPUS
    assert swaps.swapped_items(train, CORPUS, 0.0, random.Random(1), ABSTAIN_ANSWER) == []


def test_split_trains_the_twins_and_never_asks_them():
    rows = [_row(i, f"配置文件中 `key_{name}` 的默认值是多少？", str(i), chunk=f"c{i % 4}")
            for i, name in enumerate(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"])]
    corpus = " ".join(f"`key_{n}` {i}" for i, n in enumerate(["alpha", "beta", "gamma", "delta", "omega", "sigma",
                                                                 "kappa", "theta"]))
    train, evals, leak = splitting.split(rows, InspectSettings(abstain_swaps=1.0, eval_fraction=0.25), 3, corpus)
    twins = [r for r in train if r.get("swapped_from")]
    assert twins and leak["swaps_too_close_to_eval"] >= 0
    trained_facts = {r["id"] for r in train if not r.get("swapped_from")}
    assert {r["swapped_from"] for r in twins} <= trained_facts
    assert not any(r.get("swapped_from") for r in evals)
