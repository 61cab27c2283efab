"""Exact checks of a judge's verdicts: what a key fact can't be stated without (its numbers, `code`, names,
identifiers, the command it names), whether an answer says it (by value, with its unit, not as one of two
alternatives), and the corrections :func:`check_verdicts` makes to a small judge's stated / missing / contradicted.
No model here: :mod:`tunebook.judge` asks the teacher and applies these; ``benchmarks/rejudge.py`` reapplies them
to finished runs."""

from __future__ import annotations

import re


_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])\d+(?:[.,:/-]\d+)*(?:[eE][+-]?\d+)?(?![A-Za-z0-9_])")  # "2000行": CJK may touch it


_CODE = re.compile(r"`([^`]+)`")


_NAME = re.compile(r"\b[A-Z][A-Za-z]{3,}\b")


def _same_number(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return float(a.replace(",", "")) == float(b.replace(",", ""))
    except ValueError:
        return False


def hard_tokens(fact: str, reference: str, question: str) -> list[str]:
    """What a fact can't be stated without: its numbers, `code` spans, capitalized names, identifiers
    (``BWATT_LICENSE``, ``--seed``, ``brindle.toml``: :func:`~tunebook.outcomes.identifiers`) and the commands it
    names outside code (:func:`commands`) — each only when it is in the reference and not already in the question
    (the question gives those away)."""
    from .outcomes import identifiers, mentions

    ref, q = reference.lower(), question.lower()
    out = [n for n in _NUMBER.findall(fact) if n in reference and n not in question]
    out += [c for c in _CODE.findall(fact) if c.lower() in ref and not mentions(q, c)]
    out += [w for w in names(fact) if w.lower() in ref and w.lower() not in q]
    out += [i for i in identifiers(_CODE.sub(" ", fact)) + commands(fact) if i.lower() in ref and not mentions(q, i)]
    return list(dict.fromkeys(out))


def names(fact: str) -> list[str]:
    """The capitalized names of a fact ("Matlab", "Professional"), its first word aside unless it is all there is."""
    words = fact.split()
    first = words[0] if len(words) > 1 else ""  # a sentence's first word is capitalized anyway; a lone name is not
    return [w for w in _NAME.findall(fact) if w != first]


_COMMAND_WORD = re.compile(r"(?<![\w./-])([a-z][a-z0-9_.-]{2,})(?=\s+--?[a-z])")
_COMMAND_LINE = re.compile(r"[a-z][\w.-]*(?: +[\w.=/<>-]+){2,}|[a-z][\w.-]*(?: +[\w.=/<>-]+)*? +(?:--?[a-z]|\S*=)\S*.*")
_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")
_PROSE = frozenset("the and for via with using use pass set add run call append specify give try type enter include "
                   "supply provide then also flag option".split())  # words that precede a flag in prose


def commands(fact: str) -> list[str]:
    """The commands a fact names outside `code` spans: the program or subcommand a flag follows ("virtualenv" in
    "create it with virtualenv -p python3.10 env"; ``python -m venv`` does not state it; not a prose word: "pass
    --seed"), and in Chinese text a run of lower-case ASCII words that is a command line — three words or more, or
    with a flag or ``=`` ("用 conda activate xsim 激活"; not "front matter", "macOS 13"). Measured: CloudPSS's base
    answers were credited for ``python -m venv myenv`` where the fact was "virtualenv -p …" (RESULTS.md, session 30)."""
    plain = _CODE.sub(" ", fact)
    out = [w for w in _COMMAND_WORD.findall(plain) if w not in _PROSE]
    if _NOT_ASCII.search(plain):
        out += [m.group(0).rstrip(".,:;") for seg in _NOT_ASCII.split(plain)
                if (m := _COMMAND_LINE.fullmatch(seg.strip()))]
    return out


_OR = r"\s*(?:\bor\b|或者?|还是|/)\s*"
_AFTER = re.compile(rf"^[`'\"]?(?:\s*[^\s\d`'\"/]{{1,3}})?{_OR}[`'\"]?([\w.~/-]+)")
_LISTED = re.compile(r"[、,，]\s*[`'\"]?$")
_BEFORE = re.compile(rf"([\w.~/-]+)[`'\"]?{_OR}[`'\"]?$")


def hedged(answer: str, token: str, reference: str, question: str) -> bool:
    """The answer names ``token`` only as one of two alternatives, the other a value of its kind that the reference
    and the question lack: "`cinder.toml` or `cinder.yaml`", "30 天或者 90 天", "`source` 或 `activate`". A hedge states
    neither; "Linux or Windows" where the docs name both is a list."""
    a, t = answer.lower(), token.lower().strip("`")
    ref, q = reference.lower(), question.lower()
    number = bool(_NUMBER.fullmatch(t))
    for m in re.finditer(re.escape(t), a):
        before = a[:m.start()]
        after, prior = _AFTER.match(a[m.end():]), _BEFORE.search(before)
        for alt, lead in ((after, before), (prior, before[:prior.start()] if prior else "")):
            if _LISTED.search(lead):  # "keep-both、prefer-local 或 prefer-newest": a list's last item, not a hedge
                continue
            other = alt.group(1).strip(".-/") if alt else ""
            if not other or other == t or _whole(other, ref) or _whole(other, q):
                continue
            if (bool(_NUMBER.fullmatch(other)) if number else re.search(r"[a-z]", other) and other.isascii()):
                return True
    return False


def _whole(value: str, text: str) -> bool:
    """``value`` is in ``text`` as a whole token ("sync.log" is not in "tidesync.log")."""
    return re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", text) is not None


_STOP = frozenset("that this with from into must should will have been were when then than only also each your their "
                  "there which what where does they them these those such some more most very just over under after "
                  "before about other used using make makes".split())


def rest_said(fact: str, answer: str, question: str, skip: list[str]) -> float | None:
    """How much of a fact an answer says beyond its ``skip`` tokens and the question's words: the share of the fact's
    Chinese character bigrams and English content words (≥ 4 letters, matched by their first five) found in the
    answer. None when nothing is left. A generic list that names "Matlab" and "Python" says none of "the Matlab
    and Python versions must be compatible" beyond the names (0.0); English character bigrams can't tell that."""
    from .text import CJK_CHARS

    text = fact
    for t in skip:
        text = re.sub(re.escape(t), " ", text, flags=re.I)
    q, a = question.lower(), answer.lower()
    qgrams = {q[i:i + 2] for i in range(len(q) - 1)}
    grams = {run[i:i + 2] for run in re.findall(f"[{CJK_CHARS}]+", text) for i in range(len(run) - 1)} - qgrams
    words = {w[:5] for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in _STOP}
    qwords = {w[:5] for w in re.findall(r"[a-z]{4,}", q)}
    units = [g in a for g in grams] + [re.search(rf"\b{w}", a) is not None for w in words - qwords]
    return sum(units) / len(units) if units else None


def has_token(answer: str, token: str) -> bool:
    """The token is in the answer: a number by value, a quantity (`24h`) by value and unit ("24 hours"), else
    verbatim (case aside)."""
    from .outcomes import quantities

    qty = quantities(token)
    if len(qty) == 1 and not _NUMBER.fullmatch(token) and qty[0] in quantities(answer):
        return True
    if _NUMBER.fullmatch(token):
        from .text import arabic_numerals

        answer = arabic_numerals(answer)
        return any(_same_number(token, n) for n in _NUMBER.findall(answer))
    from .outcomes import mentions

    return mentions(answer.lower(), token)


def unit_mismatch(fact: str, answer: str) -> bool:
    """The fact gives a number with a unit (512 MB, 900 秒) and the answer has that number only without it or
    with another unit (512 GB, "900")."""
    from .outcomes import quantities

    have = quantities(answer)
    for value, unit in quantities(fact):
        if any(v == value for v, _ in have) and not any(v == value and u == unit for v, u in have):
            return True
        if not any(v == value for v, _ in have) and re.search(rf"(?<![\d.]){value:g}(?![\d.])", answer):
            return True
    return False


_YES_NO_EN = re.compile(r"^\s*(is|are|does|do|can|will|should|has|have|was|were|could|would|must|may)\b", re.I)
_YES_NO_ZH = re.compile(r"吗\s*[？?]?\s*$|是否|能否|可否")
_LEAD = re.compile(r"^\W*(?:(是的|是|对|可以|会|能|支持|yes\b)|(不|否|没有|no\b))", re.I)
_NEGATION = re.compile(r"(?:不会|不能|不可以|不支持|无法|没有|不是|不再|并不|不|cannot|can't|can not|does not|doesn't|"
                       r"do not|don't|will not|won't|is not|isn't|are not|aren't|not)\s*(\w{1,2}|[A-Za-z]+)", re.I)


def yes_no(question: str) -> bool:
    """A question answered by yes or no ("…会覆盖旧的项目吗？", "Does the dashboard …?") that negates nothing itself."""
    q = question.strip()
    return bool(_YES_NO_ZH.search(q) or _YES_NO_EN.match(q)) and not _NEGATION.search(q)


def says_yes(text: str, question: str) -> bool | None:
    """Whether ``text`` answers the yes/no ``question`` yes (True) or no (False): its opening word ("是的", "不", "No")
    if it has one, else whether its first sentence negates a word of the question ("点击保存按钮*不会覆盖*旧的项目" for
    "…会覆盖旧的项目吗？"). None when it says neither clearly (no sentence, or negations of other words only count as
    a yes)."""
    first = re.split(r"[。.!！\n]", text.strip(), maxsplit=1)[0]
    if not first:
        return None
    lead = _LEAD.match(first)
    if lead:
        return lead.group(1) is not None
    q = question.lower()
    return not any(m.group(1).lower() in q for m in _NEGATION.finditer(first))


REST = 0.1  # rest_said below this: the answer names the fact's tokens (or words) and says nothing else of it


def says_little(fact: str, answer: str, question: str, skip: list[str] | None = None) -> bool:
    """:func:`rest_said` is below ``REST``: the answer says next to nothing of the fact beyond ``skip`` and the
    question (False when nothing is left to say)."""
    share = rest_said(fact, answer, question, skip or [])
    return share is not None and share < REST


_LIST_ITEM = re.compile(r"(?m)^\s*(?:[-*•]|\d+[.)、])\s")


def listing(answer: str) -> bool:
    """The answer is a list (≥ 3 bulleted or numbered lines): the shape of a small model's generic answer."""
    return len(_LIST_ITEM.findall(answer)) >= 3


def says_tokens(fact: str, tokens: list[str], answer: str, reference: str, question: str) -> bool:
    """The answer states a fact with hard tokens: every token in it (numbers by value, with the fact's unit), none
    only as one of two alternatives (:func:`hedged`); a list (:func:`listing`) that names a fact's tokens when they are
    names alone ("Matlab", "Python") must also say something of the rest (:func:`rest_said` ≥ ``REST``): names are
    easy to list without stating anything. Prose is not asked for more: "FuncStudio-SDK 分为 Python-SDK 和 Matlab-SDK"
    states "针对 Python 算法的 Python-SDK 和针对 Matlab 算法的 Matlab-SDK" (cps-s33a, base + RAG)."""
    if not all(has_token(answer, t) and not hedged(answer, t, reference, question) for t in tokens):
        return False
    if unit_mismatch(fact, answer):
        return False
    return not (set(tokens) <= set(names(fact)) and listing(answer) and says_little(fact, answer, question, tokens))


def check_verdicts(verdicts: list[str], facts: list[str], answer: str, reference: str, question: str,
                   overlap: float = 0.5) -> list[str]:
    """The judge's verdicts, corrected by exact checks where they can decide. Measured on the 90 hand-labeled cases
    (``tests/data/judge_labels.jsonl``): the 1.5B judge alone agreed with the labels on 70 % of facts — it marked
    correct answers "contradicted" (43 of 184 facts) and read "1000" as stating "60". So:

    * a degenerate answer (empty, a loop, an echo) states nothing;
    * a yes/no question answered the other way than the reference (:func:`says_yes`) contradicts every fact — the
      1.5B judge credited "点击保存按钮不会覆盖旧的项目" for "是的，…新的修改将会覆盖旧的项目" (cps-s16b, base and base + RAG);
    * a fact with hard tokens (its numbers, `code`, names and commands that the question does not give away) is
      stated exactly when all of them are in the answer (numbers by value, and with the fact's unit), none only as
      one of two alternatives, and — when they are names alone — with something of the rest (:func:`says_tokens`);
    * a "contradicted" needs evidence: an abstaining answer, or a fact with hard tokens while the answer names no
      value the reference lacks, is only "missing";
    * a fact without hard tokens keeps the judge's verdict unless the answer says it nearly word for word (its
      character bigrams, :func:`text.grounding` ≥ ``overlap``; "missing" needs ``overlap`` + 0.2) — or names a
      value the reference lacks while saying little of the fact beyond the question's words
      (:func:`text.grounding_beyond` < ``overlap`` − 0.3): then "stated" is "missing" (the judge read an invented
      file name as "an empty template", an invented URL as "the current platform's address"; the labeled stated
      facts of this kind say 0.33–0.43 of theirs) — or says next to nothing of it beyond the question's words
      (< ``overlap`` − 0.35, value or not): the base's generic answers on CloudPSS ("a tab list" for "the project
      description and docs preview", another product's console steps, "是的，可以" for "可以，再次点击保存按钮…")
      were called stated; every labeled stated fact without hard tokens says ≥ 0.18 of its own — and, in English,
      where character bigrams can't tell, a generic list that says none of the fact's own words
      (:func:`listing`, :func:`says_little`).
    """
    from .outcomes import abstains, degenerate, invented

    if degenerate(answer, question):  # an empty answer, a loop or an echo states nothing, whatever the judge read
        return ["missing"] * len(verdicts)
    conflict = bool(invented(answer, reference, question))
    abstaining = abstains(answer)
    if yes_no(question) and not abstaining:  # "不会覆盖" for "是的，…会覆盖…" is a contradiction, however close its words
        yes = says_yes(reference, question)
        said = says_yes(answer, question)
        if None not in (yes, said) and yes != said:
            return ["contradicted"] * len(verdicts)
    out = []
    for v, f in zip(verdicts, facts):
        tokens = hard_tokens(f, reference, question)
        if tokens:
            if says_tokens(f, tokens, answer, reference, question):
                v = "stated"
            elif v == "stated":
                v = "missing"
            elif v == "contradicted" and not conflict:
                v = "missing"
        else:
            v = _without_tokens(v, f, answer, question, abstaining, conflict, overlap)
        out.append(v)
    return out


def _without_tokens(v: str, fact: str, answer: str, question: str, abstaining: bool, conflict: bool,
                    overlap: float) -> str:
    """:func:`check_verdicts` for a fact without hard tokens: the judge's verdict, by the answer's words."""
    from .text import grounding, grounding_beyond, is_chinese

    share = grounding(fact, answer)
    if v == "contradicted" and share >= overlap:  # first: "the docs don't cover this" states itself
        return "stated"
    if v == "contradicted" and abstaining and not conflict:
        return "missing"
    if v == "missing" and share >= overlap + 0.2:
        return "stated"
    if v == "stated" and grounding_beyond(fact, answer, question) < overlap - (0.3 if conflict else 0.35):
        return "missing"  # "生成一份名为 `file_not_found.txt` 的文件" does not state "只包含注释的空模板"
    if v == "stated" and not is_chinese(fact) and listing(answer) and says_little(fact, answer, question):
        return "missing"  # a generic English list ("- A stable internet connection …") for "a signed-in account"
    return v
