"""Multi-step arithmetic with a worked scratchpad: the task of ``adpo bench reasoning-long``.

A problem is a chain of additions and subtractions, ``"47+85-26+13=?\\n"``; its worked
solution writes every intermediate result on its own line and then the answer after a
marker (the MATH convention, so :mod:`adpo.rewards` extracts it)::

    47+85=132
    132-26=106
    106+13=119
    \\boxed{119}

Difficulty tiers (:data:`TIERS`) grow the number of steps and the operand digits, and
with them the completion (one token per character with :func:`adpo.testing.char_tokenizer`):

====  =====  ======  ======================  ===================================
tier  steps  digits  example prompt          worked-solution tokens (with EOS)
====  =====  ======  ======================  ===================================
1     1      1       ``7+5=?``               ~16
2     2      1       ``7+5-3=?``             ~22
3     3      2       ``47+85-26+13=?``       ~44
4     4      2       ``47+85-26+13-58=?``    ~55
5     5      3       ``472+853-…=?``         ~80
====  =====  ======  ======================  ===================================

The answer is checked by :func:`adpo.rewards.chain_arithmetic_reward` (the one boxed
integer; the reward layer sits above this one, so the check lives there).

Each step carries or borrows more often than not; a subtraction that would make the
running value negative is drawn as an addition instead (values stay non-negative, so
there is no sign to learn). Tier 4 adds a step to tier 3 (the same digits, a longer
chain): the out-of-distribution tier a model warm-started on tiers ≤ 3 has not seen.

Shapes: none (strings and Python ints).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["TIERS", "ChainArithmeticTask", "chain_value", "worked_solution"]

#: tier -> (steps, operand digits)
TIERS: dict[int, tuple[int, int]] = {1: (1, 1), 2: (2, 1), 3: (3, 1), 4: (4, 1), 5: (5, 2)}

_MARKER = "\\boxed{"


def chain_value(operands: list[int], ops: list[str]) -> int:
    """``operands[0] op[0] operands[1] op[1] …`` evaluated left to right (``+``/``-`` only)."""
    if len(operands) != len(ops) + 1:
        raise ValueError(
            f"chain_value: need one more operand than operators, got {len(operands)} and {len(ops)}"
        )
    value = operands[0]
    for op, x in zip(ops, operands[1:], strict=True):
        if op == "+":
            value += x
        elif op == "-":
            value -= x
        else:
            raise ValueError(f"chain_value: operators must be '+' or '-', got {op!r}")
    return value


def worked_solution(operands: list[int], ops: list[str]) -> str:
    """The scratchpad and the marked answer: one ``a∘b=c`` line per step, then ``\\boxed{…}``."""
    lines = []
    value = operands[0]
    for op, x in zip(ops, operands[1:], strict=True):
        new = value + x if op == "+" else value - x
        lines.append(f"{value}{op}{x}={new}")
        value = new
    return "\n".join([*lines, f"{_MARKER}{value}}}"])


@dataclass(frozen=True)
class ChainArithmeticTask:
    """Generated chains of ``steps`` additions/subtractions of ``digits``-digit operands.

    Attributes:
        tier: difficulty tier, a key of :data:`TIERS` (sets ``steps`` and ``digits``).
    """

    tier: int = 3

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(
                f"ChainArithmeticTask: `tier` must be one of {sorted(TIERS)}, got {self.tier!r}"
            )

    @property
    def steps(self) -> int:
        return TIERS[self.tier][0]

    @property
    def digits(self) -> int:
        return TIERS[self.tier][1]

    def max_completion_tokens(self) -> int:
        """Characters (= tokens of the char tokenizer) of the longest worked solution, with EOS.

        Every line is at most ``a∘b=c`` with ``a``, ``c`` < ``10**digits·(steps+1)``.
        """
        top = len(str((10**self.digits - 1) * (self.steps + 1)))
        line = top + 1 + self.digits + 1 + top  # a∘b=c
        return self.steps * (line + 1) + len(_MARKER) + top + 1 + 1  # lines, box, EOS

    def _operand(self, rng: random.Random) -> int:
        lo = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        return rng.randrange(lo, 10**self.digits)

    def sample(self, n: int, seed: int) -> list[dict[str, str | int]]:
        """``n`` rows, deterministic in ``seed``.

        Each row: ``prompt`` (``"47+85-26+13=?\\n"``), ``answer`` (the integer as text),
        ``solution`` (the worked solution, the SFT target) and ``tier``.
        """
        rng = random.Random(seed * 7919 + self.tier)
        rows: list[dict[str, str | int]] = []
        for _ in range(n):
            operands = [self._operand(rng)]
            ops: list[str] = []
            value = operands[0]
            for _ in range(self.steps):
                x = self._operand(rng)
                op = rng.choice("+-")
                if op == "-" and x > value:
                    op = "+"
                value = value + x if op == "+" else value - x
                operands.append(x)
                ops.append(op)
            expr = str(operands[0]) + "".join(
                f"{o}{x}" for o, x in zip(ops, operands[1:], strict=True)
            )
            rows.append(
                {
                    "prompt": f"{expr}=?\n",
                    "answer": str(chain_value(operands, ops)),
                    "solution": worked_solution(operands, ops),
                    "tier": self.tier,
                }
            )
        return rows

    def sample_distinct(
        self, n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[dict[str, str | int]]:
        """``n`` rows with distinct prompts, none of them in ``exclude``.

        Raises:
            ValueError: the tier has too few distinct problems outside ``exclude``.
        """
        out: list[dict[str, str | int]] = []
        seen = set(exclude)
        for row in self.sample(4 * n + 64, seed):
            if row["prompt"] not in seen:
                seen.add(str(row["prompt"]))
                out.append(row)
                if len(out) == n:
                    return out
        raise ValueError(
            f"ChainArithmeticTask(tier={self.tier}): only {len(out)} distinct problems outside "
            f"the excluded set, asked for {n}"
        )
