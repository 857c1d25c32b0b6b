"""Small NaN-aware summaries shared by the reasoning benchmarks (NaN: not measured), and
the seed band their curve plots draw."""

from __future__ import annotations

import math

import numpy as np

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


def paired_cell(v: dict) -> str:
    """One cell of a paired-difference table: ``+0.007 ± 0.008 [−0.003, +0.017] (1/4)`` —
    mean ± std over the pairs, the 95 % t-interval, pairs below/above the base (an entry of
    :func:`adpo.metrics.paired_differences`)."""
    half = v.get("ci95", math.nan)
    interval = "" if math.isnan(half) else f" [{v['mean'] - half:+.3f}, {v['mean'] + half:+.3f}]"
    counts = f" ({v['n_below']}/{v['n_above']})" if "n_below" in v else ""
    return f"{v['mean']:+.3f} ± {v['std']:.3f}{interval}{counts}"


#: the legend of :func:`paired_cell` under a table
PAIRED_CELL_NOTE = "Paired cells: mean ± std over seeds [95 % t-interval] (seeds below/above GRPO)."


def seed_band(
    per_seed: list[list[tuple[float, float]]], smooth: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean ± std over seeds of ``(step, value)`` curves, for a plot's line and band.

    The curves are cut to the shortest one (seeds that logged fewer points), each is
    smoothed by a ``smooth``-point moving mean when it is long enough, and the steps are the
    first curve's. Returns ``(steps, mean, std)``, each ``(n,)``.
    """
    n = min(len(p) for p in per_seed)
    steps = np.array([p[0] for p in per_seed[0][:n]])
    vals = np.array([[v for _, v in p[:n]] for p in per_seed])  # (seeds, n)
    if smooth > 1 and n >= smooth:
        kernel = np.ones(smooth) / smooth
        vals = np.stack([np.convolve(v, kernel, mode="valid") for v in vals])
        steps = steps[smooth - 1 :]
    return steps, vals.mean(0), vals.std(0)
