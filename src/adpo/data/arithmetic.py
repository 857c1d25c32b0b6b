"""Generated integer arithmetic: a verifiable task built in code (no download).

:class:`ArithmeticTask` draws ``"12+34="`` → ``"46"`` problems, checks answers exactly and
gives partial credit for listwise data. Used by the demo, the benchmarks, the embedded
default of ``adpo train-offline`` and :func:`adpo.rewards.arithmetic_reward`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["ArithmeticTask"]


@dataclass(frozen=True)
class ArithmeticTask:
    """Generated integer arithmetic: prompts ``"a+b="`` (or ``-``, ``*``), answers ``str(a∘b)``.

    Attributes:
        digits: operands are uniform in ``[0, 10**digits)``.
        ops: operators to draw from.
    """

    digits: int = 2
    ops: str = "+"

    def __post_init__(self) -> None:
        if self.digits < 1:
            raise ValueError(f"ArithmeticTask: `digits` must be >= 1, got {self.digits}")
        if not self.ops or set(self.ops) - set("+-*"):
            raise ValueError(
                f"ArithmeticTask: `ops` must be a non-empty subset of '+-*', got {self.ops!r}"
            )

    def sample(self, n: int, seed: int) -> list[dict[str, str]]:
        """``n`` rows ``{"prompt": "12+34=", "answer": "46"}``, deterministic in ``seed``."""
        rng = random.Random(seed)
        hi = 10**self.digits
        rows = []
        for _ in range(n):
            a, b, op = rng.randrange(hi), rng.randrange(hi), rng.choice(self.ops)
            value = a + b if op == "+" else a - b if op == "-" else a * b
            rows.append({"prompt": f"{a}{op}{b}=", "answer": str(value)})
        return rows

    @staticmethod
    def extract(completion: str) -> str:
        """The answer a completion gives: text up to the first non-answer character."""
        out = []
        for ch in completion.strip():
            if ch.isdigit() or (ch == "-" and not out):
                out.append(ch)
            else:
                break
        return "".join(out)

    @classmethod
    def reward(cls, completion: str, answer: str) -> float:
        """1.0 for an exactly right answer, else 0.0."""
        return float(cls.extract(completion) == answer)

    @classmethod
    def score(cls, completion: str, answer: str) -> float:
        """Partial credit in [0, 1]: fraction of answer digits right, position by position
        (right-aligned), minus a penalty for wrong length. 1.0 iff exactly right."""
        got = cls.extract(completion)
        if got == answer:
            return 1.0
        if not got:
            return 0.0
        width = max(len(got), len(answer))
        g, a = got.rjust(width), answer.rjust(width)
        same = sum(x == y for x, y in zip(g, a, strict=True))
        return 0.9 * same / width
