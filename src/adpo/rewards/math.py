"""Math answers checked with ``math-verify`` (MATH-style ``problem``/``solution`` data).

The gold answer is parsed from the dataset's ``solution`` text (MATH solutions end with
``\\boxed{answer}``); the completion's answer is its ``\\boxed{…}`` (tried first) or a
final-answer LaTeX expression. ``math_verify.verify`` decides equivalence symbolically
(``\\frac{1}{2}`` = ``0.5`` = ``1/2``).

**Every check has a deadline, from any thread.** Some completions send sympy into
computations that run for minutes while holding the GIL (``\\boxed{2^{2^{2^{2^{2^{100}}}}}}``
froze a whole training process when checked from a worker thread), and math-verify's own
timeout is ``signal.alarm``, which works only in the main thread (and waits for a long
C call to return). So the checks run in a persistent worker process
(:mod:`adpo.rewards._process`: started on first use in about a second, one per
concurrent caller, about 60 MB each, stopped at exit), and a check that gives no answer
within ``timeout`` seconds has its worker killed and replaced: the completion scores
``None`` (unscorable: it leaves its group) and the step goes on. A batch goes to the
worker in one message and its answers stream back (``benchmarks/rewards_deadline.py``
measures the cost against checking in-process).

Shapes: ``N`` completions in one call.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

from adpo.rewards._process import LATE, WorkerPool
from adpo.rewards.text import _shorten, completion_text, extract_boxed, extract_boxed_all

__all__ = ["MathReward", "extract_boxed", "extract_boxed_all", "math_reward", "parse_gold"]

logger = logging.getLogger("adpo.rewards")

_POOL = WorkerPool(__name__)


def _check_timeout(timeout: Any, owner: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{owner}: `timeout` must be a number of seconds, got {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"{owner}: `timeout` must be finite and > 0 seconds, got {timeout!r}")
    return float(timeout)


def _gold_target(solution: str) -> str:
    """The text the gold answer is parsed from: the solution's last box, else the solution."""
    boxed = extract_boxed(solution)
    return f"${boxed}$" if boxed is not None else solution


# ---- run in the worker process (math-verify's own signal timeouts off: the deadline rules)


def _worker_init() -> None:
    import latex2sympy2_extended  # noqa: F401  (imported before the worker says it is ready)
    import math_verify  # noqa: F401

    # "Timeout is disabled" (on purpose) and parse errors of odd completions
    logging.getLogger("math_verify").setLevel(logging.ERROR)


@functools.lru_cache(maxsize=4096)
def _parse_gold(target: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    gold = parse(
        target,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
        parsing_timeout=None,
    )
    if not gold:  # plain answers ("42", "x+1") without LaTeX markup
        gold = parse(
            target,
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            parsing_timeout=None,
        )
    return gold


def _gold_parses(target: str) -> bool:
    return bool(_parse_gold(target))


def _gold_text(target: str) -> list[str]:
    # text, not sympy objects: unpickling factorial(100000000) in the caller evaluates it
    return [str(x) for x in _parse_gold(target)]


def _score(text: str, target: str) -> float | None:
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse, verify

    gold = _parse_gold(target)
    if not gold:
        return None
    pred = parse(
        text,
        extraction_config=[
            LatexExtractionConfig(
                normalization_config=NormalizationConfig(units=True),
                boxed_match_priority=0,
                try_extract_without_anchor=False,
            )
        ],
        extraction_mode="first_match",
        parsing_timeout=None,
    )
    return float(verify(gold, pred, timeout_seconds=None)) if pred else 0.0


# ---- the caller's side


def _check_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("math_verify") is None:
        raise ImportError("adpo.rewards.math_reward needs math-verify: pip install 'adpo[rl]'")


def parse_gold(solution: str, *, timeout: float = 5.0) -> list[str]:
    """What ``math-verify`` reads as the answer of a reference ``solution``; ``[]`` if nothing.

    Check a dataset's solutions before training: a solution that gives ``[]`` makes
    :func:`math_reward` return ``None`` for its completions. The solution's last
    ``\\boxed{…}`` is parsed first (else the whole text, as LaTeX or a plain expression);
    the answer comes back as text (math-verify's parsed expression and the matched
    string), since its sympy objects stay in the worker process (module doc), where
    this parse runs with a deadline: one that takes longer than ``timeout`` seconds
    gives ``[]`` with a warning.

    Args:
        solution: one reference solution (MATH's ``solution`` text, or a bare answer).
        timeout: seconds the parse may take; finite and > 0 (the default as
            :class:`MathReward`'s).

    Returns:
        ``[str(expression), matched text]``, or ``[]``.
    """
    timeout = _check_timeout(timeout, "parse_gold")
    _check_installed()
    with _POOL.worker() as worker:
        try:
            return worker.call("_gold_text", (_gold_target(str(solution)),), timeout=timeout)
        except TimeoutError:
            logger.warning(
                "parse_gold: no answer within %g s for %r; it counts as unparsable",
                timeout,
                _shorten(solution),
            )
            return []


class MathReward:
    """1.0 when the completion's final answer equals the solution's, by ``math-verify``.

    The completion must give its answer in LaTeX (``\\boxed{…}`` preferred, as MATH
    asks). ``None`` (no signal, rather than a wrong 0) for a completion whose solution is
    missing or has no parsable answer, and for one whose check — parsing its solution or
    itself, and comparing — ran past ``timeout`` seconds (module doc: the checks run in a
    worker process that is killed at the deadline). From any thread, a call takes at
    most ``timeout`` seconds per completion and per distinct solution, plus a worker
    restart (about a second) after each check that ran past it.

    :data:`math_reward` is the instance with the defaults; make another to change them::

        strict = MathReward(timeout=1.0)

    Args:
        timeout: seconds one check may take (finite, > 0). The default, 5 s, is
            math-verify's own default for one parse (``parsing_timeout``) and for one
            comparison (``timeout_seconds``); an ordinary answer takes milliseconds.
        name: the name TRL logs the reward under (``rewards/<name>/mean``).

    Attributes:
        calls: completions scored so far.
        timeouts: completions that got ``None`` because a check ran past the deadline;
            logged per batch through TRL's ``log_metric`` hook as
            ``rewards/<name>/timeouts``, with one warning per batch that had any.
        last_failed: per completion of the last call, whether its ``None`` is a timeout (a
            failure: :func:`adpo.rewards.guard_reward` counts it and the online trainers
            drop the completion from its group) rather than a missing or unparsable
            solution (no signal: an abstention).
    """

    def __init__(self, *, timeout: float = 5.0, name: str = "math_reward"):
        if not isinstance(name, str) or not name:
            raise ValueError(f"MathReward: `name` must be a non-empty string, got {name!r}")
        self.timeout = _check_timeout(timeout, "MathReward")
        self.__name__ = name
        self.calls = 0
        self.timeouts = 0
        self.last_failed: list[bool] = []

    def __call__(
        self, completions: list[Any], solution: list[str], **kwargs: Any
    ) -> list[float | None]:
        """Score ``N`` completions (strings or message lists) against ``N`` solutions.

        Args:
            completions: ``N`` completions (strings or message lists).
            solution: ``N`` reference solutions (the dataset's ``solution`` column).
            **kwargs: TRL's other reward arguments; ``log_metric`` receives the timeout
                count.
        """
        if len(completions) != len(solution):
            raise ValueError(
                f"{self.__name__}: got {len(completions)} completions but {len(solution)} solutions"
            )
        _check_installed()
        texts = [completion_text(c) for c in completions]
        targets = [None if s is None else _gold_target(str(s)) for s in solution]
        distinct = list(dict.fromkeys(t for t in targets if t is not None))
        with _POOL.worker() as worker:
            parses = worker.map("_gold_parses", [(t,) for t in distinct], timeout=self.timeout)
            gold_ok = {t: ok is True for t, ok in zip(distinct, parses, strict=True)}
            todo = [i for i, t in enumerate(targets) if t is not None and gold_ok[t]]
            scores = worker.map(
                "_score", [(texts[i], targets[i]) for i in todo], timeout=self.timeout
            )
        out: list[float | None] = [None] * len(texts)
        for i, score in zip(todo, scores, strict=True):
            out[i] = None if score is LATE else score
        late_gold = [t for t, ok in zip(distinct, parses, strict=True) if ok is LATE]
        late_completions = [i for i, s in zip(todo, scores, strict=True) if s is LATE]
        timed_out = len(late_completions) + sum(targets.count(t) for t in late_gold)
        late = [  # what ran past the deadline, for the warning
            *(f"solution {_shorten(t)!r}" for t in late_gold),
            *(f"completion {_shorten(texts[i])!r}" for i in late_completions),
        ]
        self.calls += len(texts)
        self.timeouts += timed_out
        failed = set(late_completions) | {i for i, t in enumerate(targets) if t in late_gold}
        self.last_failed = [i in failed for i in range(len(texts))]
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric(f"rewards/{self.__name__}/timeouts", float(timed_out))
        if late:
            logger.warning(
                "%s: %d of %d completions get no reward: %d checks ran past the %g s "
                "deadline (the first: %s)",
                self.__name__,
                timed_out,
                len(texts),
                len(late),
                self.timeout,
                late[0],
            )
        return out

    def __repr__(self) -> str:
        return (
            f"MathReward(timeout={self.timeout:g}, name={self.__name__!r}, "
            f"timeouts={self.timeouts}/{self.calls})"
        )


math_reward = MathReward()
"""The :class:`MathReward` with the defaults, TRL's reward interface:
``math_reward(completions, solution, **kwargs) -> list[float | None]``."""
