"""Math answers checked with ``math-verify`` (MATH-style ``problem``/``solution`` data).

The gold answer is parsed from the dataset's ``solution`` text (MATH solutions end with
``\\boxed{answer}``); the completion's answer is its ``\\boxed{…}`` (tried first) or a
final-answer LaTeX expression. ``math_verify.verify`` decides equivalence symbolically
(``\\frac{1}{2}`` = ``0.5`` = ``1/2``).

Shapes: ``N`` completions in one call.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from adpo.rewards.text import completion_text, extract_boxed, extract_boxed_all

__all__ = ["extract_boxed", "extract_boxed_all", "math_reward", "parse_gold"]


def _timeouts() -> tuple[int | None, int | None]:
    # math-verify times out with signal.alarm, which only works in the main thread
    if threading.current_thread() is threading.main_thread():
        return 10, 5
    logging.getLogger("math_verify.parser").setLevel(logging.ERROR)
    logging.getLogger("math_verify.grader").setLevel(logging.ERROR)
    return None, None


def parse_gold(solution: str) -> list:
    """Parse a reference ``solution`` (its boxed answer first); ``[]`` if nothing parses."""
    from math_verify import LatexExtractionConfig, parse

    parsing_timeout, _ = _timeouts()
    boxed = extract_boxed(solution)
    target = f"${boxed}$" if boxed is not None else solution
    gold = parse(
        target,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
        parsing_timeout=parsing_timeout,
    )
    if not gold:  # plain answers ("42", "x+1") without LaTeX markup
        from math_verify import ExprExtractionConfig

        gold = parse(
            target,
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            parsing_timeout=parsing_timeout,
        )
    return gold


def math_reward(completions: list[Any], solution: list[str], **kwargs: Any) -> list[float | None]:
    """1.0 when the completion's final answer equals the solution's, by ``math-verify``.

    The completion must give its answer in LaTeX (``\\boxed{…}`` preferred, as MATH
    asks); a solution whose answer cannot be parsed gives ``None`` (no signal for that
    prompt, rather than a wrong 0).

    Args:
        completions: ``N`` completions (strings or message lists).
        solution: ``N`` reference solutions (the dataset's ``solution`` column).
    """
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse, verify

    if len(completions) != len(solution):
        raise ValueError(
            f"math_reward: got {len(completions)} completions but {len(solution)} solutions"
        )
    parsing_timeout, verify_timeout = _timeouts()
    gold_cache: dict[str, list] = {}
    out: list[float | None] = []
    for c, sol in zip(completions, solution, strict=True):
        if sol is None:
            out.append(None)
            continue
        if sol not in gold_cache:
            gold_cache[sol] = parse_gold(str(sol))
        gold = gold_cache[sol]
        if not gold:
            out.append(None)
            continue
        pred = parse(
            completion_text(c),
            extraction_config=[
                LatexExtractionConfig(
                    normalization_config=NormalizationConfig(units=True),
                    boxed_match_priority=0,
                    try_extract_without_anchor=False,
                )
            ],
            extraction_mode="first_match",
            parsing_timeout=parsing_timeout,
        )
        out.append(float(verify(gold, pred, timeout_seconds=verify_timeout)) if pred else 0.0)
    return out
