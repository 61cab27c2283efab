"""Text measures shared by 03 and 05, all at the character level so they work for Chinese without a segmenter:
normalization, shingles, grounding of an answer in its source, character F1 and ROUGE-L."""

from __future__ import annotations

import re
import unicodedata


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\W_]+", "", text)


def plain(text: str) -> str:
    """Lower case, single spaces, no backticks: how an answer is looked for inside a longer text ("`900` seconds"
    holds "900 seconds")."""
    return " ".join(text.replace("`", "").lower().split())


def shingles(text: str, k: int = 3) -> set[str]:
    t = normalize(text)
    return {t[i:i + k] for i in range(max(1, len(t) - k + 1))} if t else set()


def jaccard(a: str, b: str) -> float:
    """Exact Jaccard similarity of two texts' character 3-shingles (what 03's MinHash estimates)."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


def _bigrams(text: str) -> set[str]:
    t = normalize(text)
    return {t[i:i + 2] for i in range(len(t) - 1)}


def grounding(ans: str, chunk_text: str) -> float:
    """Share of the answer's character bigrams that occur in its chunk (1.0 = every bigram is in the source)."""
    c = normalize(chunk_text)
    grams = _bigrams(ans)
    if not grams:
        a = normalize(ans)
        return 1.0 if a and a in c else 0.0
    return sum(g in c for g in grams) / len(grams)


def grounding_beyond(text: str, source: str, given: str) -> float:
    """:func:`grounding` of ``text`` in ``source`` over only the bigrams ``given`` lacks — how much of a fact an
    answer says beyond what its question already words ("修改为当前平台的地址" vs an answer that repeats the question
    and adds a made-up URL: 0). Plain :func:`grounding` when ``given`` holds every bigram of ``text``."""
    grams = _bigrams(text) - _bigrams(given)
    if not grams:
        return grounding(text, source)
    s = normalize(source)
    return sum(g in s for g in grams) / len(grams)


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



_CJK_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CJK_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_CJK_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")


def _cjk_value(run: str) -> int | None:
    total, section, digit = 0, 0, None
    for ch in run:
        if ch in _CJK_DIGITS:
            digit = _CJK_DIGITS[ch]
        else:
            unit = _CJK_UNITS[ch]
            if unit >= 10_000:
                total += (section + (digit or 0)) * unit
                section, digit = 0, None
            else:
                section += (1 if digit is None else digit) * unit
                digit = None
    return total + section + (digit or 0)


def arabic_numerals(text: str) -> str:
    """Chinese numerals written out ("两千", "三十五", "一万") as digits, so numbers compare by value; single
    characters stay (一 is also "one of", 十 "ten" only in context)."""
    return _CJK_NUMBER.sub(lambda m: str(_cjk_value(m.group(0))) if len(m.group(0)) > 1 else m.group(0), text)


_QUESTION = re.compile(r"([?？]\s*$)|^(what|which|how|why|when|where|who|whom|whose|is|are|was|were|does|do|did|can|"
                       r"could|should|will|would|may|tell me|name|list|explain|describe)\b|(吗|什么|如何|多少|哪|怎么|怎样|几|是否|为何|为什么|^请|"
                       r"^(说明|列出|介绍|描述|解释))",
                       re.I)


_JSON_DEBRIS = ("']", '"]', "]}", '{"', "['")
_REQUEST = re.compile(r"(tell me|name|list|explain|describe)\b|请?(说明|列出|介绍|描述|解释|告诉)", re.I)


def is_question(text: str) -> bool:
    """It reads as a question or a request (ends with ?, starts with what / 请 / 说明…, holds 吗 / 什么 / 如何…)."""
    return bool(_QUESTION.search(text.strip()))


CJK_CHARS = r"\u3400-\u9fff\uf900-\ufaff"  # CJK ideographs (+ extension A, compatibility): the one class for every module
CJK = re.compile(f"[{CJK_CHARS}]")


def is_chinese(text: str) -> bool:
    """Written in Chinese: four or more CJK characters (a question of two words has more)."""
    return len(CJK.findall(text)) >= 4


_SENTENCE_END = re.compile(r"[.!?](\s|$)|[。！？]")  # "4.2.1" and "cache.max_size_mb" end nothing


def usable_paraphrase(p: str, q: str, a: str) -> bool:
    """A paraphrase must read as one question in the question's language and must not be the answer in disguise:
    it may repeat what the answer repeats of the question ("The default value for the `--step` flag is …"), but
    not what the answer adds (most of the answer's character bigrams that the question lacks). A question that ends
    with a question mark is reworded as one that does too, or as a request ("Tell me …", "请说明 …"): in the runs of
    2026-12-01 every usable-looking rewording without one (18 of 552) was broken — cut off ("有什么方法可以创建一个内置"),
    stripped of its subject ("默认值是什么" for "配置文件中 `method` 的默认值是什么？") or not a question ("请参考 …
    官方文档"). It keeps some of the question's wording (≥ 15 % of its character bigrams): of 273 rewordings in the
    runs of 2026-12-01/02 the two under that were "您有什么问题吗？" (for "什么是本地接入方式？") and "或' '的其他说法吗？";
    the lowest right one kept 18 % ("如何设置密钥？")."""
    p = p.strip()
    if not is_question(p) or is_chinese(p) != is_chinese(q):
        return False
    if q.strip().endswith(("?", "？")) and not p.endswith(("?", "？")) and not _REQUEST.match(p):
        return False
    if any(s in p for s in _JSON_DEBRIS) or grounding(q, p) < 0.15:
        return False  # JSON left in the text ("...']}，你最常…"), or about something else ("您有什么问题吗？")
    if _SENTENCE_END.search(p.rstrip(".!?。！？ ")):  # one sentence only
        return False
    added = _bigrams(a) - _bigrams(q)
    if added and len(added & _bigrams(p)) / len(added) >= 0.6:
        return False
    return normalize(p) != normalize(a)
