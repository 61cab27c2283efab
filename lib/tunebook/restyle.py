"""Training answers in the student's own words (self-distillation of the targets, SDFT: Yang et al., ACL 2024).

The teacher often answers with a bare value ("7432", "1e-6", "4,000"), and the fine-tuned student answered general
questions in fragments too ("中国的首都是哪座城市？" → "上海"). With ``train.restyle_answers`` 04 shows the base student
each train question with the teacher's answer and lets it restate the answer in one sentence of its own; the
restatement replaces the training target when it states the answer's values, adds no value and no explanation
(:func:`keeps`) and ends inside the length limit; otherwise the teacher's answer stays (:mod:`tunebook.restate` has
the teacher write sentences instead).

Measured (knowledge.py ``replay+restyle``, samples/docs, session 22): 58 of 63 answers restated, recall 4.38 → 3.65,
general change −0.83 → −0.95 — the forgotten general answers kept the sentence and lost the value ("中国的首都是上海。"),
so style was not the cause. Off by default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .jsonio import read_jsonl, write_jsonl
from .precision import contiguous_head_input

RESTYLE_FILE = "restyle.jsonl"
TEMPLATES = {  # the question, the teacher's answer as a reference, and the request for one sentence that holds it
    "en": "{question}\n\nReference answer: {answer}\nAnswer the question above in one complete sentence that "
          "includes the reference answer.",
    "zh": "{question}\n\n参考答案：{answer}\n请用一句完整的中文句子回答上面的问题，句中包含参考答案。",
}
ECHOES = ("reference answer", "参考答案")  # a restatement that quotes the request is not an answer
SLACK_CHARS = 10  # a restatement may be this much longer than question and answer together (no added explanations)
NEW_TERMS = 2  # ... and use this many search terms that neither has ("made by Alibaba Cloud" for a product's name: 3)


def lang_of(row: dict) -> str:
    from .text import CJK

    lang = row.get("lang") or ("zh" if CJK.search(row["messages"][0]["content"]) else "en")
    return "zh" if lang.startswith("zh") else "en"


def request(row: dict) -> str:
    msgs = row["messages"]
    return TEMPLATES[lang_of(row)].format(question=msgs[0]["content"], answer=msgs[-1]["content"])


def keeps(new: str, old: str, question: str, lang: str = "en") -> bool:
    """Whether a restatement can replace the teacher's answer: it states every value of the answer (numbers, codes,
    identifiers: :func:`~tunebook.outcomes.exact_values`; an answer without any, verbatim), names no value that
    neither the question nor the answer names, adds no explanation (at most :data:`SLACK_CHARS` longer than question
    and answer together, at most :data:`NEW_TERMS` search terms of its own), does not quote the request, is not
    degenerate, and is Chinese for a Chinese pair."""
    from .outcomes import degenerate, exact_values, new_values
    from .retrieval import term_set
    from .text import CJK, plain

    s = new.strip()
    if not s or degenerate(s, question) or any(e in s.lower() for e in ECHOES):
        return False
    if len(s) > len(question) + len(old) + SLACK_CHARS or new_values(s, question + "\n" + old):
        return False
    if len(term_set(s) - term_set(question) - term_set(old)) > NEW_TERMS:
        return False
    values = exact_values(s, old, question)  # the answer's numbers, codes, names; a value-free answer: all of it
    return (values == 1.0 if values is not None else plain(old.strip().rstrip("。.！!")) in plain(s)) and (
        bool(CJK.search(s)) if lang == "zh" else True)


def _key(student: str, system_prompt: str, max_new_tokens: int, rows: list[dict]) -> str:
    asked = [[r["messages"][0]["content"], r["messages"][-1]["content"]] for r in rows]
    return hashlib.sha256(json.dumps([student, system_prompt, max_new_tokens, TEMPLATES, asked]).encode()).hexdigest()[:16]


def rewrite(model, tok, rows: list[dict], student: str, data_dir: Path, system_prompt: str = "",
            max_new_tokens: int = 64, batch_size: int = 16, backend: str = "hf") -> tuple[list[dict], dict[str, Any]]:
    """``rows`` (train.jsonl's ``messages`` rows) with each answer restated by the base student where the
    restatement may replace it (:func:`keeps`), and a report (restated, kept as written and why). Every answer asked is
    written to ``data/restyle.jsonl`` (question, teacher's answer, the student's, used or not), which also caches the
    work under a key of student, prompts and rows."""
    path = Path(data_dir) / RESTYLE_FILE
    key = _key(student, system_prompt, max_new_tokens, rows)
    done = read_jsonl(path) if path.is_file() else []
    if not (done and len(done) == len(rows) and all(d.get("key") == key for d in done)):
        done = _ask(model, tok, rows, key, system_prompt, max_new_tokens, batch_size, backend)
        write_jsonl(done, path)
    out, report = [], {"rows": len(rows), "restated": 0, "kept_unfit": 0, "kept_too_long": 0}
    for r, d in zip(rows, done):
        if d["used"]:
            r = {**r, "messages": [*r["messages"][:-1], {**r["messages"][-1], "content": d["restated"]}],
                 "teacher_answer": d["answer"]}
            report["restated"] += 1
        else:
            report["kept_too_long" if not d["ended"] else "kept_unfit"] += 1
        out.append(r)
    return out, report


def _ask(model, tok, rows, key, system_prompt, max_new_tokens, batch_size, backend) -> list[dict]:
    from .answering import balanced_batch, by_length, generating, greedy_ended
    from .chat import chat_messages
    from .progress import bar

    texts = [tok.apply_chat_template(chat_messages(request(r), system_prompt), tokenize=False,
                                     add_generation_prompt=True) for r in rows]
    said: dict[int, tuple[str, bool]] = {}
    order = by_length(tok, texts)
    size = balanced_batch(len(texts), batch_size)
    with generating(model, tok, backend), bar(total=len(texts), desc="restyle: the student's own words") as pbar:
        contiguous_head_input(model)
        for i in range(0, len(order), size):
            picked = order[i:i + size]
            said.update(zip(picked, greedy_ended(model, tok, [texts[j] for j in picked], max_new_tokens)))
            pbar.update(len(picked))
    done = []
    for j, r in enumerate(rows):
        question, answer = r["messages"][0]["content"], r["messages"][-1]["content"]
        text, ended = said[j]
        done.append({"key": key, "id": r.get("id", ""), "question": question, "answer": answer, "restated": text,
                     "ended": ended, "used": ended and keeps(text, answer, question, lang_of(r))})
    return done


def train_rows(student, cfg, data_dir: Path) -> tuple[list[dict], dict[str, Any]]:
    """04's train split (``data/train.jsonl``) restated by the loaded base ``student`` (train.Student); ``cfg``: the
    run's Settings."""
    rows = read_jsonl(Path(data_dir) / "train.jsonl")
    return rewrite(student.model, student.tokenizer, rows, cfg.student, data_dir, cfg.train.system_prompt,
                   backend=student.backend)


def summary(report: dict[str, Any]) -> str:
    return (f"restyle: {report['restated']} of {report['rows']} answers in the student's own words; kept as the "
            f"teacher wrote them: {report['kept_unfit']} (changed or added something), {report['kept_too_long']} (ran long)")
