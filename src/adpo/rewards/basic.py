"""Exact-match, arithmetic and format rewards (TRL reward-function interface).

Shapes: ``N`` completions in one call (B prompts × G completions, flattened).
"""

from __future__ import annotations

import re
from typing import Any

from adpo.rewards.text import (
    _shorten,
    completion_text,
    extract_boxed,
    extract_boxed_all,
    normalize_answer,
)

__all__ = [
    "FormatReward",
    "arithmetic_reward",
    "boxed_integer_score",
    "chain_arithmetic_reward",
    "completion_text",
    "exact_match_reward",
    "extract_boxed_integer",
    "normalize_answer",
]


def exact_match_reward(
    completions: list[Any], answer: list[str], **kwargs: Any
) -> list[float | None]:
    """1.0 when the completion's answer equals ``answer`` after :func:`normalize_answer`.

    The completion's answer is the content of its last ``\\boxed{…}`` if it has one,
    otherwise the whole completion. A missing (``None``) reference answer gives ``None``.

    Args:
        completions: ``N`` completions (strings or message lists).
        answer: ``N`` reference answers (the dataset's ``answer`` column, repeated per
            completion by the trainer).
    """
    if len(completions) != len(answer):
        raise ValueError(
            f"exact_match_reward: got {len(completions)} completions but {len(answer)} answers"
        )
    out: list[float | None] = []
    for c, a in zip(completions, answer, strict=True):
        if a is None:
            out.append(None)
            continue
        text = completion_text(c)
        boxed = extract_boxed(text)
        got = boxed if boxed is not None else text
        out.append(float(normalize_answer(got) == normalize_answer(str(a))))
    return out


def arithmetic_reward(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """:meth:`adpo.data.arithmetic.ArithmeticTask.reward`: 1.0 for the exactly right integer answer.

    The answer is read from the start of the completion (digits, an optional leading
    minus) up to the first other character, so ``"46"`` and ``"46 because…"`` both count.
    """
    from adpo.data.arithmetic import ArithmeticTask

    if len(completions) != len(answer):
        raise ValueError(
            f"arithmetic_reward: got {len(completions)} completions but {len(answer)} answers"
        )
    return [
        ArithmeticTask.reward(completion_text(c), str(a))
        for c, a in zip(completions, answer, strict=True)
    ]


_BOXED_MARKER = "\\boxed{"
_INT = re.compile(r"\s*(-?)([0-9]+)\s*")


def _integer_text(text: str) -> str | None:
    """The integer ``text`` holds (ASCII digits, optional minus, spaces around) in canonical
    form (``" -007 "`` → ``"-7"``, ``"-0"`` → ``"0"``); ``None`` for anything else.

    String work only: ``int()`` refuses more than 4,300 digits (Python ≥ 3.11) and is
    quadratic in the digits before that, and a completion can hold any number of them.
    """
    m = _INT.fullmatch(text)
    if m is None:
        return None
    digits = m.group(2).lstrip("0") or "0"
    return "-" + digits if m.group(1) and digits != "0" else digits


def extract_boxed_integer(text: str) -> str | None:
    """The integer of a completion's one ``\\boxed{…}``, as text (``"012"`` → ``"12"``).

    ``None`` when the text has no ``\\boxed{`` marker, more than one, an unclosed one, or a
    box that does not hold exactly one integer (ASCII digits, optional minus). Never
    raises on a string, and takes time linear in its length.
    """
    boxes = extract_boxed_all(text)
    if len(boxes) != 1 or text.count(_BOXED_MARKER) != 1:
        return None
    return _integer_text(boxes[0])


def boxed_integer_score(completion: str, answer: str) -> float:
    """1.0 when :func:`extract_boxed_integer` of ``completion`` equals the integer ``answer``.

    Raises:
        ValueError: ``answer`` is not an integer.
    """
    want = _integer_text(str(answer))
    if want is None:
        raise ValueError(
            f"boxed_integer_score: `answer` must be an integer, got {_shorten(answer)!r}"
        )
    return float(extract_boxed_integer(completion) == want)


def chain_arithmetic_reward(
    completions: list[Any], answer: list[str], **kwargs: Any
) -> list[float]:
    """1.0 for the right boxed integer after a worked scratchpad, else 0.0 (TRL interface).

    The reward of :class:`adpo.data.chain_arithmetic.ChainArithmeticTask`
    (``adpo bench reasoning-long``): :func:`boxed_integer_score` per completion. No marker,
    two markers, an unclosed box or a box without one integer give 0.0, never an exception.
    """
    if len(completions) != len(answer):
        raise ValueError(
            f"chain_arithmetic_reward: got {len(completions)} completions but {len(answer)} answers"
        )
    return [
        boxed_integer_score(completion_text(c), str(a))
        for c, a in zip(completions, answer, strict=True)
    ]


class FormatReward:
    """1.0 when a completion is well formed, else 0.0.

    With ``pattern=None`` (default), "well formed" means exactly one non-empty
    ``\\boxed{…}`` (the MATH answer convention). With a regular expression, it means
    ``re.search(pattern, text)`` finds a match (use ``^…$`` to require a full match).

    Every check here is string code in time linear in the completion's length, except a
    user ``pattern``, which runs as given: Python's ``re`` has no timeout, and a pattern
    with nested quantifiers (``(a+)+$``) takes exponential time on some texts.

    Args:
        pattern: regular expression, or None for the boxed-answer check.
        name: the name TRL logs the reward under (``rewards/<name>/mean``).
    """

    def __init__(self, pattern: str | None = None, *, name: str = "format"):
        self.pattern = None if pattern is None else re.compile(pattern, re.DOTALL)
        self.__name__ = name

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        out = []
        for c in completions:
            text = completion_text(c)
            if self.pattern is None:
                boxes = extract_boxed_all(text)
                ok = len(boxes) == 1 and boxes[0].strip() != ""
            else:
                ok = self.pattern.search(text) is not None
            out.append(float(ok))
        return out

    def __repr__(self) -> str:
        pat = None if self.pattern is None else self.pattern.pattern
        return f"FormatReward(pattern={pat!r}, name={self.__name__!r})"
