"""What kind of answer is this? correct · partial · abstains · invents · degenerate — by exact checks, no model.

* **degenerate**: empty, a repetition loop, an echo of the question, or the wrong language;
* **abstains**: says the docs don't cover it / it doesn't know, and names no specific value;
* **invents**: names a specific value — a number, a `code` span, an identifier such as ``QM-110`` or
  ``max_iterations``, a file path — that is neither in the reference nor in the question, and is not correct;
* **correct**: states every key fact (the judge's verdicts after the exact checks, else every hard value of the
  reference is in the answer); **partial**: the rest (some facts, or vague).

Checked against the hand-labeled cases in ``tests/data/judge_labels.jsonl``.
"""

from __future__ import annotations

import re
import zlib

OUTCOMES = ("correct", "partial", "abstains", "invents", "degenerate")
# the answer a "docs don't say" training item teaches, and the one 05's confidence gate gives, per page language
ABSTAIN_ANSWER = {"en": "The documentation does not cover this.", "zh": "文档中没有涉及这一点。"}


def abstain_answer(question: str) -> str:
    """The "docs don't cover this" answer in the question's language (05's gates)."""
    from .text import is_chinese

    return ABSTAIN_ANSWER["zh" if is_chinese(question) else "en"]


_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])[-+]?\d+(?:[.,]\d+)*(?:[eE][+-]?\d+)?(?![A-Za-z0-9_])")  # CJK may touch it
_CODE = re.compile(r"`([^`\n]+)`")
# identifiers that can only be specific (ASCII; CJK may touch them): QM-110, BW-502, max_iterations, server.toml, /etc/x, --flag, v7.3, CamelCase
_IDENT = re.compile(r"(?<![\w/.-])(?:--?[a-z][\w-]+|[A-Za-z]+-\d+\w*|[A-Za-z]\w*_\w+|[\w-]+\.(?:toml|ya?ml|json|ini|"
                    r"conf|cfg|log|txt|md|py|sh|exe|bwm|bwr|csv|xml|db|gz|zip)|(?:~|\.{0,2})?/[\w.-]+(?:/[\w.-]+)+|"
                    r"v\d+(?:\.\d+)+|[A-Z][a-z]+[A-Z]\w+)(?![\w])", re.ASCII)  # ASCII: "FuncStudio的下载链接" names FuncStudio
_LIST_MARK = re.compile(r"(?m)^\s*(\d+)[.)、]\s")

_ABSTAIN = re.compile(
    r"(don'?t|do not|doesn'?t|does not|cannot|can'?t|unable to)\s+(know|say|specify|mention|find|determine|provide|"
    r"cover|state|answer)|not (mentioned|specified|documented|covered|stated|provided|available|sure)|"
    r"(don'?t|do not|doesn'?t|does not) have (any )?(information|details?|data)|no (information|mention|details?|data)|isn'?t (mentioned|specified|documented|covered)|"
    r"不知道|不清楚|不确定|无法(确定|回答|得知|判断|提供)|没有(提到|提及|说明|记载|相关信息|给出|明确)|未(提及|提到|说明|给出|明确)|"
    r"文档中?(没有|并未|未)|无相关信息|不能确定", re.I)


_UNITS = {
    "ms": "ms", "millisecond": "ms", "milliseconds": "ms", "毫秒": "ms",
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s", "秒": "s", "秒钟": "s",
    "min": "min", "mins": "min", "minute": "min", "minutes": "min", "分钟": "min", "分": "min",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h", "小时": "h",
    "d": "d", "day": "d", "days": "d", "天": "d", "日": "d",
    "week": "w", "weeks": "w", "周": "w", "星期": "w",
    "month": "mo", "months": "mo", "个月": "mo", "月": "mo",
    "year": "y", "years": "y", "年": "y",
    "b": "B", "byte": "B", "bytes": "B", "字节": "B", "kb": "KB", "kib": "KB", "mb": "MB", "mib": "MB",
    "gb": "GB", "gib": "GB", "tb": "TB", "tib": "TB", "%": "%", "percent": "%",
}
_QTY = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*)\s*(" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
                  + r")(?![a-z])", re.I)


def quantities(text: str) -> list[tuple[float, str]]:
    """``(value, unit)`` of every number with a unit: "512 MB", "900 秒", "36 hours" — Markdown aside ("`900`
    seconds", "**512** MB": base + RAG answers write them so, and were judged to drop the unit)."""
    out = []
    for num, unit in _QTY.findall(re.sub(r"[`*]", "", text)):
        v = _num(num)
        if v is not None:
            out.append((v, _UNITS[unit.lower()]))
    return out


def wrong_units(answer: str, reference: str) -> list[str]:
    """Quantities whose number is in the reference but only with another unit (512 GB for 512 MB)."""
    ref = quantities(reference)
    out = []
    for v, unit in quantities(answer):
        units = {u for x, u in ref if x == v}
        if units and unit not in units:
            out.append(f"{v:g} {unit}")
    return out


def _num(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def _nums(text: str) -> list[float]:
    from .text import arabic_numerals

    return [x for x in (_num(n) for n in _NUMBER.findall(arabic_numerals(text))) if x is not None]


def numbers(text: str) -> list[str]:
    """The numbers a text states, as written ("25,000", "4.2.1", "0.5"), list markers left out."""
    marks = {m.start(1) for m in _LIST_MARK.finditer(text)}
    return [m.group(0) for m in _NUMBER.finditer(text) if m.start() not in marks]


def identifiers(text: str) -> list[str]:
    """The identifiers ``text`` names outside `code` spans: flags, codes (``BW-502``), snake_case names, file names,
    paths, versions, CamelCase."""
    return _IDENT.findall(text)


def values(text: str) -> list[str]:
    """The specific values an answer names: numbers (not list markers), `code` spans, identifiers, paths."""
    nums = numbers(text)
    codes = _CODE.findall(text)
    plain = _CODE.sub(" ", text)
    idents = identifiers(plain)
    return list(dict.fromkeys(nums + codes + idents))


def mentions(text: str, value: str) -> bool:
    """``value`` is in ``text`` (lower-cased): verbatim, quotes and backticks aside — or, for a command-line flag
    (``--step``), its name written as a name: quoted (`` `step` ``, 'step') or called a flag or option ("the step
    flag", "step 参数"). A reworded question that drops the dashes so gives the flag away, and an answer that drops
    them states it; the plain word ("the simulation horizon" for ``--horizon``, "which flag limits the threads") does
    neither, nor does a name of < 3 characters (``-v``)."""
    v = value.lower().strip()
    bare = v.strip("`'\" ")
    if v in text or bare in text:
        return True
    core = bare.lstrip("-")
    if not bare.startswith("-") or len(core) < 3:
        return False
    name = re.escape(core)
    return bool(re.search(rf"([`'\"‘“]){name}[`'\"’”]|(?<![\w-]){name}\s*(?:flag|option|switch|参数|选项)", text))


def names(text: str, value: str) -> bool:
    """``text`` names ``value``: a number by value ("4,000" in "4000"), anything else as :func:`mentions` reads it."""
    return _known(value, text.lower(), _nums(text))


def _known(value: str, sources: str, source_numbers: list[float]) -> bool:
    n = _num(value)
    if n is not None and _NUMBER.fullmatch(value):
        return any(n == x for x in source_numbers)
    return mentions(sources, value)


def new_values(text: str, question: str) -> list[str]:
    """The specific values ``text`` names (:func:`values`) that ``question`` does not already name (numbers by
    value, flags by name: :func:`mentions`)."""
    q, q_numbers = question.lower(), _nums(question)
    return [v for v in values(text) if not _known(v, q, q_numbers)]


def invented(answer: str, reference: str, question: str) -> list[str]:
    """Values the answer names that are in neither the reference nor the question."""
    sources = (reference + "\n" + question).lower()
    source_numbers = _nums(reference + "\n" + question)
    return [v for v in values(answer) if not _known(v, sources, source_numbers)] + wrong_units(answer, reference)


def is_repetitive(text: str) -> bool:
    """A loop: the same span over and over (compresses far better than prose), or one line repeated."""
    t = text.strip()
    if len(t) < 40:
        return False
    lines = [x.strip() for x in t.splitlines() if x.strip()]
    if len(lines) >= 4 and len(set(lines)) <= len(lines) / 3:
        return True
    ratio = len(zlib.compress(t.encode("utf-8"), 9)) / len(t.encode("utf-8"))
    if ratio < 0.22:
        return True
    # a phrase of >= 6 characters that makes up most of the text
    for size in (6, 10, 16, 24):
        for start in range(0, min(len(t) - size, 60), 3):
            span = t[start:start + size]
            if t.count(span) >= 3 and t.count(span) * size >= 0.6 * len(t):
                return True
    return False


_PATHLIKE = re.compile(r"\S*[/\\]\S*")
_FENCED = re.compile(r"```.*?(?:```|$)", re.S)  # a fenced code block, closed or cut off
# a line of code given without a fence: a SQL statement, a Python line, a shell command (lower-case Python keywords and
# command names: an English sentence starts with a capital; "If you …" stays prose)
_CODE_LINE = re.compile(
    r"^\s*(?:(?i:select\s+(?:\*|count\([^)]*\)|distinct\s+[\w.]+|[\w.]+(?:\s*,\s*[\w.]+)*)\s+from\s+\w+"
    r"|insert\s+into|update\s+\w+\s+set|delete\s+from|create\s+table)\b"
    r"|(?:def|class|return|import|from|for|while|if|elif|print|lambda)\b(?=.*[(:=\[])"
    r"|(?:git|ls|cd|grep|find|wc|cat|echo|pip|python|npm|docker|curl|mkdir|df|du|tar|chmod)\s+\S).*$", re.M)


def _prose(text: str) -> str:
    """The words of ``text`` outside code blocks, unfenced lines of code, `code` spans, paths, identifiers and
    numbers."""
    text = _FENCED.sub(" ", text)
    text = _CODE_LINE.sub(" ", text)
    text = _CODE.sub(" ", text)
    text = _PATHLIKE.sub(" ", text)
    text = _IDENT.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    return " ".join(text.split())


def degenerate(answer: str, question: str) -> str:
    """Why an answer is degenerate ("" if it is not)."""
    a = answer.strip()
    if not a:
        return "empty"
    if is_repetitive(a):
        return "repetition"
    norm = lambda s: re.sub(r"\W+", "", s.lower())  # noqa: E731
    na, nq = norm(a), norm(question)
    if na and nq and (na == nq or (len(na) < 1.3 * len(nq) and nq in na) or not na.replace(nq, "")):
        return "echoes the question"
    from .text import CJK, is_chinese

    q_zh = is_chinese(question)
    a_cjk = len(CJK.findall(a))
    if q_zh and a_cjk == 0 and len(_prose(a)) > 30:  # a bare path, `code` or value has no language
        return "wrong language"
    if not q_zh and a_cjk > max(10, len(a) * 0.3):
        return "wrong language"
    return ""


def abstains(answer: str) -> bool:
    return bool(_ABSTAIN.search(answer))


def classify(answer: str, reference: str, question: str, verdicts: list[str] | None = None) -> str:
    """One of :data:`OUTCOMES`. ``verdicts`` are the judge's per-fact verdicts after the exact checks; without
    them, "correct" means every hard value of the reference (numbers, codes, identifiers not in the question) is
    in the answer."""
    if degenerate(answer, question):
        return "degenerate"
    wrong = invented(answer, reference, question)
    if verdicts:
        if all(v == "stated" for v in verdicts) and not wrong_units(answer, reference):
            return "correct"
        # a contradicted fact is a wrong claim (another value, name, path or step), named or not
        if "contradicted" in verdicts or (wrong and not abstains(answer)):
            return "invents"
        if abstains(answer) and not any(v == "stated" for v in verdicts):
            return "abstains"
        return "partial"
    needed = new_values(reference, question)
    have = [v for v in needed if _known(v, answer.lower(), _nums(answer))]
    if needed and len(have) == len(needed) and not wrong:
        return "correct"
    if wrong:
        return "invents"
    if abstains(answer):
        return "abstains"
    return "partial"


def exact_values(answer: str, reference: str, question: str) -> float | None:
    """Share of the reference's hard values (numbers, `code`, identifiers not already in the question) that the
    answer states verbatim (numbers by value); None when the reference has none."""
    needed = new_values(reference, question)
    if not needed:
        return None
    return round(sum(_known(v, answer.lower(), _nums(answer)) for v in needed) / len(needed), 4)


def shares(outcomes: list[str]) -> dict[str, float]:
    n = len(outcomes)
    return {o: round(sum(x == o for x in outcomes) / n, 4) if n else 0.0 for o in OUTCOMES}
