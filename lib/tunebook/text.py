"""Text measures shared by 03 and 05, all at the character level so they work for Chinese without a segmenter:
normalization, shingles, grounding of an answer in its source, character F1 and ROUGE-L."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\W_]+", "", text)


def shingles(text: str, k: int = 3) -> set[str]:
    t = normalize(text)
    return {t[i:i + k] for i in range(max(1, len(t) - k + 1))} if t else set()


def grounding(ans: str, chunk_text: str) -> float:
    """Share of the answer's character bigrams that occur in its chunk (1.0 = every bigram is in the source)."""
    a = normalize(ans)
    c = normalize(chunk_text)
    grams = {a[i:i + 2] for i in range(len(a) - 1)}
    if not grams:
        return 1.0 if a and a in c else 0.0
    return sum(g in c for g in grams) / len(grams)



def _chars(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    return [c for c in text if not c.isspace() and not unicodedata.category(c).startswith("P")]


def char_f1(pred: str, ref: str) -> float:
    p, r = _chars(pred), _chars(ref)
    if not p or not r:
        return float(p == r)
    from collections import Counter

    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure over characters (longest common subsequence)."""
    p, r = _chars(pred), _chars(ref)
    if not p or not r:
        return float(p == r)
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r, 1):
            cur.append(prev[j - 1] + 1 if a == b else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)

