"""More "the docs don't say" training items, made without the teacher: a trained question that names something
specific (a `setting`, --flag, code, file) is asked again about a name the corpus never uses, built from the
corpus's own name parts, and answered with the language's "the docs don't cover this".

"配置文件中 `max_iterations` 的默认值是多少？" (trained, answer 60) gets the twin "配置文件中 `step_iterations` 的默认值
是多少？" → "文档中没有涉及这一点。". The student learns to tell documented names from undocumented ones instead of
filling in a plausible value (Gekhman et al. 2024: fine-tuning on new facts alone raises hallucination). The
teacher's own "docs don't say" questions (02, ``synth.abstain_questions``) stay the out-of-docs eval.
"""

from __future__ import annotations

import random
import re

from .pairs import question
from .text import normalize

_PART = re.compile(r"[A-Za-z]+|\d+")
_CODE = re.compile(r"^([A-Za-z]+-)(\d+)$")  # BW-204, QM-110


def _parts(names: list[str]) -> list[str]:
    return sorted({p.lower() for n in names for p in _PART.findall(n) if len(p) >= 3 and not p.isdigit()})


def fake_name(name: str, corpus: str, vocab: list[str], rng: random.Random) -> str | None:
    """A name shaped like ``name`` (same separators, same code prefix) that occurs nowhere in ``corpus``
    (lower-cased): one word part swapped for another part of the corpus's names, or a code's number changed."""
    if m := _CODE.match(name):
        width = len(m.group(2))
        for _ in range(50):
            cand = f"{m.group(1)}{rng.randrange(10 ** (width - 1), 10 ** width)}"
            if cand.lower() not in corpus:
                return cand
        return None
    words = list(re.finditer(r"[A-Za-z]{3,}", name))
    if not words or not vocab:
        return None
    for _ in range(50):
        w = rng.choice(words)
        part = rng.choice(vocab)
        if part == w.group(0).lower():
            continue
        cand = name[:w.start()] + part + name[w.end():] if len(words) > 1 or rng.random() < 0.5 \
            else name[:w.end()] + ("_" if "-" not in name else "-") + part + name[w.end():]
        if cand.lower() not in corpus:
            return cand
    return None


def swapped_items(train: list[dict], corpus: str, share: float, rng: random.Random,
                  answers: dict[str, str]) -> list[dict]:
    """For ``share`` of the trained fact pairs that name something specific, a twin question about a name the
    corpus lacks, as a ``kind: abstain`` item (``answers``: the abstaining answer per language)."""
    from .outcomes import values

    if share <= 0:
        return []
    corpus = corpus.lower()
    named = []
    for r in train:
        if r.get("kind", "fact") != "fact" or r.get("reworded_from"):
            continue
        names = [v.strip("`") for v in values(question(r)) if not v.replace(".", "").isdigit() and len(v.strip("`")) >= 3]
        if names:
            named.append((r, names[0]))
    vocab = _parts([n for _, n in named] + [v.strip("`") for v in values(corpus) if not v[:1].isdigit()])
    rng.shuffle(named)
    out, seen = [], set()
    for r, name in named[: round(len(named) * share)]:
        fake = fake_name(name, corpus, vocab, rng)
        if fake is None:
            continue
        q = question(r).replace(name, fake)
        if normalize(q) in seen:
            continue
        seen.add(normalize(q))
        lang = r.get("lang", "en")
        out.append({"id": f"{r['id']}-x", "chunk_id": r["chunk_id"], "source": r.get("source", ""), "lang": lang,
                    "kind": "abstain", "instruction": q, "output": answers.get(lang, answers["en"]),
                    "swapped_from": r["id"], "swapped_name": [name, fake]})
    return out
