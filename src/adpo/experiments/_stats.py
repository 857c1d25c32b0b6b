"""Small NaN-aware summaries shared by the reasoning benchmarks (NaN: not measured)."""

from __future__ import annotations

import math

from adpo.metrics import mean_std


def nanmean(xs: list[float]) -> float:
    """Mean of the values that exist, summed left to right (NaN: none exists)."""
    v = [x for x in xs if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is 0 or NaN."""
    return a / b if b and not math.isnan(b) else math.nan


def seed_mean_std(xs: list[float]) -> tuple[float, float]:
    """:func:`adpo.metrics.mean_std` over the seeds that have a value (NaN: none)."""
    return mean_std(xs, skip_nan=True) if xs else (math.nan, math.nan)
