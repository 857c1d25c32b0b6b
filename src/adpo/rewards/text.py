"""Text of completions and answers: the string helpers every reward shares.

Pure functions on strings (no math-verify, no model), so :mod:`adpo.rewards.basic` and
:mod:`adpo.rewards.math` both build on them without importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["completion_text", "extract_boxed", "extract_boxed_all", "normalize_answer"]


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or a list of chat messages (their contents joined).

    TRL passes plain strings for plain prompts and ``[{"role": "assistant", "content": …}]``
    for conversational ones.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        parts = []
        for message in completion:
            content = message.get("content", "") if isinstance(message, dict) else message
            if isinstance(content, list):  # content blocks [{"type": "text", "text": …}]
                content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
            parts.append(str(content))
        return "".join(parts)
    raise TypeError(
        f"completion_text: a completion must be a string or a list of messages, got "
        f"{type(completion).__name__}"
    )


_WS = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Normalise a short answer for string comparison.

    Strips whitespace and surrounding ``$…$``, ``\\text{…}``, a trailing period; drops
    thousands separators in plain numbers (``1,000`` → ``1000``); collapses inner
    whitespace; lower-cases.
    """
    s = text.strip().rstrip(".").strip()
    lo, hi = 0, len(s)  # peel $…$ pairs by index: slicing each time is quadratic
    while hi - lo >= 2 and s[lo] == "$" and s[hi - 1] == "$":
        lo, hi = lo + 1, hi - 1
        while lo < hi and s[lo].isspace():
            lo += 1
        while hi > lo and s[hi - 1].isspace():
            hi -= 1
    s = s[lo:hi]
    m = re.fullmatch(r"\\text\{(.*)\}", s)
    if m:
        s = m.group(1).strip()
    s = s.rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return _WS.sub(" ", s).lower()


_BOX = re.compile(r"\\(?:boxed|fbox)\{")
_BRACE = re.compile(r"[{}]")


def extract_boxed_all(text: str) -> list[str]:
    """Contents of every ``\\boxed{…}`` (or ``\\fbox{…}``) in ``text``, braces balanced.

    One pass over the text (time linear in its length, whatever it holds); boxes inside
    a box are part of its content, an unclosed box ends the list.
    """
    out = []
    i = 0
    while (marker := _BOX.search(text, i)) is not None:
        depth = 1
        for brace in _BRACE.finditer(text, marker.end()):
            depth += 1 if brace.group() == "{" else -1
            if not depth:
                break
        if depth:  # unbalanced: no closing brace
            return out
        out.append(text[marker.end() : brace.start()])
        i = brace.end()
    return out


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` in ``text``, or None."""
    boxes = extract_boxed_all(text)
    return boxes[-1] if boxes else None


def _shorten(text: str, limit: int = 160) -> str:
    """``text`` when it has at most ``limit`` characters, else its start, ``…`` and its length.

    Log messages quote completions and error texts through it, so one long completion
    cannot flood a training log.
    """
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
