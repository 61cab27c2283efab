"""03's train/eval split, leak-free: whole chunks held out (**unseen**), trained pairs asked in other words
(**recall**), "the docs don't say" items asked (**outofdocs**) or trained on, and optional training rewordings and reverse
questions that never come near an eval question."""

from __future__ import annotations

import random
from typing import Callable

from .pairs import NearDup, answer, question
from .settings import InspectSettings
from .text import jaccard, normalize, usable_paraphrase

# A recall question sharing less than half its character 3-shingles with every training question (Jaccard) is asked
# "far" from what was trained: 05 scores those apart (``recall_far``). On demo-s33a / cps-s33a 10 of 29 and 4 of 22
# recall questions were that far; the rest differ from a trained wording by a word or two.
FAR_BELOW = 0.5


def split(rows: list[dict], cfg: InspectSettings, seed: int, corpus: str = ""
          ) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Unseen: whole held-out chunks. Recall: a paraphrase of some train pairs, asked again. Out-of-docs: some of
    the "docs don't say" items. With ``train_rewordings``, each train pair's other paraphrases become training
    items too (same answer) — never one close to a recall question, so no training wording reaches the eval.

    Returns ``(train, eval, leak_counts)``; eval rows carry ``split`` = ``recall``, ``unseen`` or ``outofdocs``.
    """
    rng = random.Random(seed)
    facts = [r for r in rows if r.get("kind") != "abstain"]
    train, unseen = _hold_out_chunks(facts, cfg, rng)
    leaks = near(train, cfg.near_dup_threshold)
    leak = {"unseen_dropped_as_duplicates": 0, "recall_paraphrases_too_close": 0, "recall_paraphrases_unusable": 0,
            "rewordings_too_close_to_recall": 0, "swaps_too_close_to_eval": 0, "reverse_too_close_to_eval": 0}
    clean_unseen = [r for r in unseen if not leaks(question(r))]
    leak["unseen_dropped_as_duplicates"] = len(unseen) - len(clean_unseen)
    recall = _recall(train, cfg, rng, leaks, leak)
    train = train + _rewordings(train, recall, cfg, leak)
    abstain_train, outofdocs = _abstain_items([r for r in rows if r.get("kind") == "abstain"], cfg, rng)
    swapped = _swaps(train, recall + clean_unseen + outofdocs, corpus, cfg, rng, leak)
    reverse = _reverse(train, recall + clean_unseen + outofdocs, cfg, leak)
    return train + reverse + abstain_train + swapped, recall + clean_unseen + outofdocs, leak


def add_train_similarity(evals: list[dict], train: list[dict]) -> None:
    """``train_similarity`` on each eval row: the Jaccard similarity of its question's character 3-shingles with
    the closest training question (rewordings, reverse and abstain items included) — how far the eval's wording is
    from anything the student was trained on (1.0: a training question; MinHash kept recall under
    ``near_dup_threshold``)."""
    trained = [question(t) for t in train]
    for r in evals:
        r["train_similarity"] = round(max((jaccard(question(r), t) for t in trained), default=0.0), 3)


def far_recall(rows: list[dict]) -> list[dict]:
    """The recall rows worded far from every training question (``train_similarity`` under :data:`FAR_BELOW`); a
    row without ``train_similarity`` (a run from before 03 wrote it) is not counted as far."""
    return [r for r in rows if r.get("split") == "recall" and r.get("train_similarity", 1.0) < FAR_BELOW]


def near(rows: list[dict], threshold: float) -> Callable[[str], bool]:
    """Is a question the same as (normalized) or a near duplicate of (MinHash) one of these rows' questions?"""
    index, exact = NearDup(threshold), {normalize(question(r)) for r in rows}
    for r in rows:
        index.add(r["id"], question(r))
    return lambda q: normalize(q) in exact or index.query(q) is not None


def _reverse(train: list[dict], evals: list[dict], cfg: InspectSettings, leak: dict[str, int]) -> list[dict]:
    """``reverse_train``: each trained pair once more the other way round (:func:`~tunebook.pairs.reverse_item`: the
    answer's statement with the asked-about name blanked out), none close to an eval question."""
    from .pairs import reverse_item

    if not cfg.reverse_train:
        return []
    asked = near(evals, cfg.near_dup_threshold)
    out = []
    for r in train:
        item = None if r.get("reworded_from") or r.get("kind", "fact") != "fact" else reverse_item(r)
        if item is None:
            continue
        if asked(item[0]):
            leak["reverse_too_close_to_eval"] += 1
            continue
        out.append({**{k: v for k, v in r.items() if k != "paraphrases"}, "id": f"{r['id']}-rev",
                    "instruction": item[0], "output": item[1], "reverse_of": r["id"]})
    return out


def _swaps(train: list[dict], evals: list[dict], corpus: str, cfg: InspectSettings, rng: random.Random,
           leak: dict[str, int]) -> list[dict]:
    """``abstain_swaps``: twins of trained questions about names the corpus lacks (:mod:`tunebook.swaps`), none
    close to an eval question."""
    from .outcomes import ABSTAIN_ANSWER
    from .swaps import swapped_items

    items = swapped_items(train, corpus, cfg.abstain_swaps, rng, ABSTAIN_ANSWER)
    asked = near(evals, cfg.near_dup_threshold)
    keep = [r for r in items if not asked(question(r))]
    leak["swaps_too_close_to_eval"] = len(items) - len(keep)
    return keep


def _hold_out_chunks(rows: list[dict], cfg: InspectSettings, rng: random.Random) -> tuple[list[dict], list[dict]]:
    chunks = sorted({r["chunk_id"] for r in rows})
    if len(chunks) < 2:
        raise ValueError(f"need pairs from at least 2 chunks to split train/eval, got {len(chunks)}: add docs or "
                         "lower synth.chunk_tokens")
    rng.shuffle(chunks)
    n_unseen = min(max(1, round(len(chunks) * cfg.eval_fraction)), len(chunks) - 1)
    # unseen_fold k holds out the k-th run of n_unseen chunks of the same shuffle (0: the first, as always): k runs
    # over disjoint chunks, so several trainings ask unseen questions about every part of a small corpus
    folds = len(chunks) // n_unseen
    if cfg.unseen_fold >= folds:
        raise ValueError(f"inspect.unseen_fold={cfg.unseen_fold}: {len(chunks)} chunks with pairs make {folds} folds of "
                         f"{n_unseen} (inspect.eval_fraction {cfg.eval_fraction}); use 0 … {folds - 1}")
    start = cfg.unseen_fold * n_unseen
    chunks = chunks[start:] + chunks[:start]  # the fold first; min_eval takes the chunks after it
    held = set(chunks[:n_unseen])
    i = n_unseen
    while sum(r["chunk_id"] in held for r in rows) < cfg.min_eval and i < len(chunks) - 1:
        held.add(chunks[i])
        i += 1
    return [r for r in rows if r["chunk_id"] not in held], [{**r, "split": "unseen"} for r in rows if r["chunk_id"] in held]


def _recall(train: list[dict], cfg: InspectSettings, rng: random.Random, leaks, leak: dict[str, int]) -> list[dict]:
    recall = []
    candidates = [r for r in train if r.get("paraphrases")]
    rng.shuffle(candidates)
    for r in candidates[: round(len(candidates) * cfg.recall_fraction)]:
        usable = [p for p in r["paraphrases"] if rewording(p, r)]
        if not usable:
            leak["recall_paraphrases_unusable"] += 1
            continue
        paras: list[str] = []
        for p in usable:
            if len(paras) < cfg.recall_wordings and not leaks(p) and normalize(p) not in map(normalize, paras):
                paras.append(p)
        if not paras:
            leak["recall_paraphrases_too_close"] += 1
            continue
        recall += [{**r, "id": r["id"] + ("-p" if i == 0 else f"-p{i + 1}"), "instruction": p, "paraphrase_of": r["id"],
                    "split": "recall"} for i, p in enumerate(paras)]
    return recall


def rewording(p: str, r: dict) -> bool:
    """Can ``p`` stand for the question of pair ``r`` (asked in recall, or trained on)? It must be a usable
    paraphrase (:func:`~tunebook.text.usable_paraphrase`: a question, same language, not the answer) that still
    names every specific value the question names — a `setting`, code, number, file: "默认值是多少？" for
    "配置文件中 `max_iterations` 的默认值是多少？" asks something the docs answer ambiguously."""
    from .outcomes import values

    q = question(r)
    if not usable_paraphrase(p, q, answer(r)):
        return False
    said = normalize(p)
    return all(normalize(v) in said for v in values(q) if normalize(v))


def _rewordings(train: list[dict], recall: list[dict], cfg: InspectSettings, leak: dict[str, int]) -> list[dict]:
    """Up to ``train_rewordings`` other paraphrases per train pair, as training items with the same answer."""
    if not cfg.train_rewordings:
        return []
    asked = near(recall, cfg.near_dup_threshold)
    own = {}  # a pair's own recall wordings: already spent on the eval, not rewordings lost to it
    for e in recall:
        own.setdefault(e["paraphrase_of"], set()).add(normalize(question(e)))
    out = []
    for r in train:
        seen, spent = {normalize(question(r))}, own.get(r["id"], set())
        for p in r.get("paraphrases") or []:
            if len(seen) > cfg.train_rewordings:
                break
            if normalize(p) in seen or normalize(p) in spent or not rewording(p, r):
                continue
            if asked(p):
                leak["rewordings_too_close_to_recall"] += 1
                continue
            seen.add(normalize(p))
            out.append({**r, "id": f"{r['id']}-r{len(seen) - 1}", "instruction": p, "reworded_from": r["id"]})
    return out


def _abstain_items(rows: list[dict], cfg: InspectSettings, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """"The docs don't say" items: ``abstain_eval_fraction`` of them asked in the ``outofdocs`` split (none close to
    a trained one), the rest trained on when ``abstain_train``."""
    rows = list(rows)
    rng.shuffle(rows)
    n_eval = round(len(rows) * cfg.abstain_eval_fraction)
    train = rows[n_eval:] if cfg.abstain_train else []
    index = NearDup(cfg.near_dup_threshold)
    for r in train:
        index.add(r["id"], question(r))
    evals = [{**r, "split": "outofdocs"} for r in rows[:n_eval] if index.query(question(r)) is None]
    return train, evals
