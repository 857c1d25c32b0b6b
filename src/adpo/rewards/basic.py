"""Exact-match, arithmetic and format rewards (TRL reward-function interface).

Shapes: ``N`` completions in one call (B prompts × G completions, flattened).
"""

from __future__ import annotations

import re
from typing import Any

from adpo.rewards.text import completion_text, extract_boxed, extract_boxed_all, normalize_answer

__all__ = [
    "FormatReward",
    "arithmetic_reward",
    "chain_arithmetic_reward",
    "completion_text",
    "exact_match_reward",
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


def chain_arithmetic_reward(
    completions: list[Any], answer: list[str], **kwargs: Any
) -> list[float]:
    """:meth:`adpo.data.chain_arithmetic.ChainArithmeticTask.reward`: 1.0 for the right boxed integer.

    The answer is the content of the completion's one ``\\boxed{…}`` (after a worked
    scratchpad); no marker, two markers, an unclosed box or a box without one integer give
    0.0, never an exception.
    """
    from adpo.data.chain_arithmetic import ChainArithmeticTask

    if len(completions) != len(answer):
        raise ValueError(
            f"chain_arithmetic_reward: got {len(completions)} completions but {len(answer)} answers"
        )
    return [
        ChainArithmeticTask.reward(completion_text(c), str(a))
        for c, a in zip(completions, answer, strict=True)
    ]


class FormatReward:
    """1.0 when a completion is well formed, else 0.0.

    With ``pattern=None`` (default), "well formed" means exactly one non-empty
    ``\\boxed{…}`` (the MATH answer convention). With a regular expression, it means
    ``re.search(pattern, text)`` finds a match (use ``^…$`` to require a full match).

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
