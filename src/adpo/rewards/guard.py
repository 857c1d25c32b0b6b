"""Fault-tolerant reward functions: one bad sample must not stop a training run.

A reward function that raises for one completion (a parser crash on odd output, a
sandbox error) or returns NaN/inf would otherwise kill the run (TRL calls reward
functions on the whole batch) or poison the group baseline. :func:`guard_reward` wraps a
reward function so that:

* a batch call that raises is retried sample by sample; samples that still raise get
  ``None``. Each retry gets the sample's own slice of every per-sample argument TRL
  passes (``prompts``, ``completions``, ``completion_ids``, the dataset columns and
  ``environments``, TRL's list of one environment instance per completion when the
  trainer has an ``environment_factory``); ``trainer_state`` as it is; and ``log_extra``/
  ``log_metric`` collectors whose values reach TRL's hooks once for the batch (the
  retried samples' ``log_extra`` values in batch order, ``None`` for samples that
  failed or logged nothing; the mean of the retried samples' ``log_metric`` values),
* non-finite values become ``None``,
* failures are counted (``.failures``, ``.calls``) and logged through TRL's
  ``log_metric`` hook as ``rewards/<name>/failures`` (per batch), with one warning per
  distinct error naming the sample (long error texts shortened).

``None`` is TRL's "no reward for this completion": the completion takes no part in its
group's baseline and gets no advantage (GRPO), and no place in the list (ADPO/OPO,
``adpo.trainers.online``). Shapes: ``N`` completions per call.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

from adpo.rewards.text import _shorten

__all__ = ["GuardedReward", "guard_reward", "guard_reward_funcs"]

logger = logging.getLogger("adpo.rewards")


def _name(fn: Callable) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


class GuardedReward:
    """A reward function wrapper that turns per-sample failures into ``None`` (see module doc).

    Attributes:
        fn: the wrapped reward function.
        __name__: the wrapped function's name (TRL logs rewards under it).
        calls: completions scored so far.
        failures: completions whose reward raised or was not finite.
        last_failed: for each sample of the last call, whether its reward failed (raised,
            was not finite, or the wrapped function flagged its ``None`` as a failure in its
            own ``last_failed`` list, as :class:`adpo.rewards.MathReward` does for a
            timeout) as opposed to being ``None`` on purpose (the function's "does not
            apply"); both reach TRL as ``None``. The online trainers read it to drop a
            sample any function failed on.
    """

    def __init__(self, fn: Callable[..., list], *, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"guard_reward: `fn` must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.__name__ = name or _name(fn)
        self.calls = 0
        self.failures = 0
        self.last_failed: list[bool] = []
        self._warned: set[str] = set()

    def _warn(self, index: int, err: str) -> None:
        err = _shorten(err)
        if err not in self._warned:
            self._warned.add(err)
            logger.warning(
                "reward %r failed for sample %d of its batch (%s); the sample gets no reward "
                "and training goes on (further failures of this kind are only counted)",
                self.__name__,
                index,
                err,
            )

    def _one(self, i: int, n: int, kwargs: dict[str, Any], logs: _Logs) -> Any:
        """Sample ``i`` of ``n`` alone: every per-sample list sliced to ``[v[i]]``."""
        sliced = {
            k: [v[i]] if isinstance(v, (list, tuple)) and len(v) == n else v
            for k, v in kwargs.items()
        }
        if kwargs.get("log_extra") is not None:
            sliced["log_extra"] = functools.partial(logs.extra, i)
        if kwargs.get("log_metric") is not None:
            sliced["log_metric"] = functools.partial(logs.metric, i)
        try:
            out = list(self.fn(**sliced))
        except Exception as e:
            self._warn(i, f"{type(e).__name__}: {e}")
            return _FAILED
        if len(out) != 1:
            self._warn(i, f"returned {len(out)} values for one sample")
            return _FAILED
        return out[0]

    def __call__(self, **kwargs: Any) -> list[float | None]:
        n = len(kwargs.get("completions", kwargs.get("prompts", [])))
        inner: list[bool] = [False] * n  # Nones the wrapped function itself calls failures
        try:
            values = list(self.fn(**kwargs))
            reported = getattr(self.fn, "last_failed", None)
            if isinstance(reported, list) and len(reported) == n:
                inner = [bool(x) for x in reported]
        except Exception:
            logs = _Logs(n)
            values = [self._one(i, n, kwargs, logs) for i in range(n)]
            logs.flush(kwargs.get("log_extra"), kwargs.get("log_metric"), values)
        if len(values) != n:
            raise ValueError(
                f"reward {self.__name__!r} returned {len(values)} values for {n} completions"
            )
        out: list[float | None] = []
        flags: list[bool] = []  # True: this sample's reward failed (not a deliberate None)
        for i, v in enumerate(values):
            if v is _FAILED:
                out.append(None)
                flags.append(True)
            elif v is None:
                out.append(None)
                flags.append(inner[i])
            else:
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    self._warn(i, f"returned a non-number {v!r}")
                    f = math.nan
                if math.isfinite(f):
                    out.append(f)
                    flags.append(False)
                else:
                    self._warn(i, f"returned a non-finite value {v!r}")
                    out.append(None)
                    flags.append(True)
        failed = sum(flags)
        self.calls += n
        self.failures += failed
        self.last_failed = flags
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric(f"rewards/{self.__name__}/failures", float(failed))
        return out

    def __repr__(self) -> str:
        return f"GuardedReward({self.__name__!r}, failures={self.failures}/{self.calls})"


class _Logs:
    """What the per-sample retries of one batch log, forwarded to TRL's hooks once.

    TRL's ``log_extra(column, values)`` wants one value per completion of the batch and
    ``log_metric(name, value)`` one scalar per batch: each retry logs here, and
    :meth:`flush` sends each column in batch order (``None`` for a sample that failed or
    did not log it) and each metric's mean over the samples that did not fail.
    """

    def __init__(self, n: int):
        self.columns: dict[str, list] = {}  # column → n values
        self.metrics: dict[str, list[tuple[int, float]]] = {}  # name → (sample, value)
        self.n = n

    def extra(self, i: int, column: str, values: list) -> None:
        values = list(values)
        if len(values) != 1:
            raise ValueError(f"log_extra({column!r}) got {len(values)} values for one sample")
        self.columns.setdefault(column, [None] * self.n)[i] = values[0]

    def metric(self, i: int, name: str, value: float) -> None:
        self.metrics.setdefault(name, []).append((i, float(value)))

    def flush(self, log_extra: Callable | None, log_metric: Callable | None, out: list) -> None:
        ok = [v is not _FAILED for v in out]
        for column, values in self.columns.items():
            log_extra(column, [v if ok[i] else None for i, v in enumerate(values)])
        for name, logged in self.metrics.items():
            kept = [v for i, v in logged if ok[i]]
            if kept:
                log_metric(name, sum(kept) / len(kept))


class _Failed:
    def __repr__(self) -> str:
        return "<reward failed>"


_FAILED: Any = _Failed()


def guard_reward(fn: Callable[..., list], *, name: str | None = None) -> GuardedReward:
    """Wrap ``fn`` (a TRL-style reward function) in a :class:`GuardedReward`.

    Already-guarded functions are returned as they are. Async reward functions are not
    supported (wrap their synchronous core instead).
    """
    if isinstance(fn, GuardedReward):
        return fn
    if _is_async(fn):
        raise TypeError(f"guard_reward: {_name(fn)!r} is async; guard its synchronous core")
    return GuardedReward(fn, name=name)


def guard_reward_funcs(reward_funcs: Any) -> list:
    """TRL's ``reward_funcs`` (one or a list) with every synchronous callable guarded.

    Model ids (``str``), reward models (``nn.Module``) and async functions (TRL awaits
    those itself) pass through as they are.
    """
    from torch import nn

    funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    return [
        f if isinstance(f, (str, nn.Module)) or _is_async(f) else guard_reward(f) for f in funcs
    ]


def _is_async(fn: Callable) -> bool:
    """Whether calling ``fn`` returns a coroutine (partials unwrapped, async ``__call__``
    of callable instances included, as TRL's ``is_async_callable``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )
