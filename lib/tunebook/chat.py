"""The conversation every model of the workbook is asked in (training, eval, served exports, token counts)."""

from __future__ import annotations


def chat_messages(question: str, system_prompt: str = "") -> list[dict[str, str]]:
    """The conversation every model of the workbook is asked in: optional system message, then the question."""
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}]

