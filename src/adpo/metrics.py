"""Ranking metrics and seed statistics: NDCG, top-1 accuracy, mean ± std, confidence
intervals, paired differences.

One definition each.

Shapes: ``G`` candidates per list (the last axis is the list), ``...`` any leading axes
(``R`` rows, or ``S`` seeds × ``N`` contexts). ``pred`` is what the model ranks by (e.g.
the anchored score ``log πθ − log π_ref``), ``scores`` the relevance (dataset scores,
utilities or teacher probabilities); ``valid`` marks real candidates (True = counts).

Each caller of an older copy keeps its exact numbers through the options
(``tests/test_metrics.py`` checks them against frozen copies of the old formulas):

* offline listwise trainer: ``ndcg(pred, scores, valid, atol=atol)`` (the defaults);
* bandits benchmark: ``ndcg(logits, utility, gain="minmax", ties="index", degenerate=0.0)``;
* distillation benchmark: ``ndcg(logps, q, gain="linear", ties="index")``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["mean_ci", "mean_std", "ndcg", "paired_differences", "t_critical", "top1_accuracy"]

Gain = Literal["linear", "shifted", "minmax", "exponential"]
Ties = Literal["expected", "index"]


def _check(fn: str, pred: Tensor, scores: Tensor, valid: Tensor | None) -> Tensor:
    if pred.dim() < 1 or pred.shape != scores.shape:
        raise ValueError(
            f"{fn}: `pred` and `scores` must share one [..., G] shape, got "
            f"{tuple(pred.shape)} and {tuple(scores.shape)}"
        )
    if valid is None:
        return torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    if valid.shape != pred.shape:
        raise ValueError(
            f"{fn}: `valid` must have the shape of `pred` {tuple(pred.shape)}, "
            f"got {tuple(valid.shape)}"
        )
    valid = valid.bool()
    empty = valid.sum(-1) == 0
    if empty.any():
        raise ValueError(f"{fn}: `valid` leaves list {tuple(empty.nonzero()[0].tolist())} empty")
    return valid


def top1_accuracy(
    pred: Tensor, scores: Tensor, valid: Tensor | None = None, *, atol: float = 0.0
) -> Tensor:
    """Does the highest ``pred`` fall on a best-scored candidate? ``[..., G] → [...]`` in [0, 1].

    With ties in ``pred`` (within ``atol`` of the maximum) this is
    ``|top(pred) ∩ top(scores)| / |top(pred)|``, the expected accuracy of a uniformly random
    tie-break: an all-tied list scores chance level, not whatever ``argmax`` picks first.

    Args:
        pred: ``[..., G]`` model scores.
        scores: ``[..., G]`` relevance (higher is better).
        valid: ``[..., G]`` bool, real candidates (default: all).
        atol: values of ``pred`` within ``atol`` of the list maximum count as tied.

    Returns:
        ``[...]`` float64.
    """
    valid = _check("top1_accuracy", pred, scores, valid)
    if atol < 0:
        raise ValueError(f"top1_accuracy: `atol` must be >= 0, got {atol!r}")
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64, device=pred.device)
    p = torch.where(valid, pred.double(), neg_inf)  # (..., G)
    s = torch.where(valid, scores.double(), neg_inf)  # (..., G)
    top_p = (p >= p.amax(-1, keepdim=True) - atol) & valid  # (..., G)
    top_s = (s == s.amax(-1, keepdim=True)) & valid  # (..., G)
    return (top_p & top_s).sum(-1).double() / top_p.sum(-1).double()


def _gains(fn: str, scores: Tensor, valid: Tensor, gain: str) -> Tensor:
    """Per-candidate gains ``[..., G]``; 0 on invalid candidates."""
    if not torch.isfinite(scores[valid]).all():
        raise ValueError(f"{fn}: `scores` must be finite on valid candidates")
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    if gain in ("linear", "exponential"):
        if (scores[valid] < 0).any():
            raise ValueError(f"{fn}: gain={gain!r} needs non-negative `scores`")
        g = scores if gain == "linear" else torch.exp2(scores) - 1
        return torch.where(valid, g, zero)
    inf = torch.tensor(float("inf"), dtype=scores.dtype, device=scores.device)
    lo = torch.where(valid, scores, inf).amin(-1, keepdim=True)  # (..., 1)
    g = scores - lo
    if gain == "minmax":
        hi = torch.where(valid, scores, -inf).amax(-1, keepdim=True)  # (..., 1)
        g = g / (hi - lo).clamp_min(1e-12)
    return torch.where(valid, g, zero)


def ndcg(
    pred: Tensor,
    scores: Tensor,
    valid: Tensor | None = None,
    *,
    k: int | None = None,
    gain: Gain = "shifted",
    ties: Ties = "expected",
    atol: float = 0.0,
    degenerate: float = 1.0,
) -> Tensor:
    """NDCG@k of the ranking by ``pred`` (descending) with gains from ``scores``.

    ``DCG@k = Σ_{r ≤ k} gain_(r) / log2(r + 1)`` over the list sorted by ``pred``, divided by
    the DCG@k of the list sorted by gain. Invalid candidates are dropped (masking equals
    slicing).

    Args:
        pred: ``[..., G]`` model scores.
        scores: ``[..., G]`` relevance.
        valid: ``[..., G]`` bool, real candidates (default: all); no list may be empty.
        k: truncation (default ``G``).
        gain: ``"linear"`` — ``scores`` as given (non-negative, e.g. teacher probabilities);
            ``"exponential"`` — ``2^scores − 1`` (non-negative graded labels);
            ``"shifted"`` — ``scores − min`` within the list (any scale, worst gains 0);
            ``"minmax"`` — ``(scores − min)/(max − min)`` within the list.
        ties: ``"expected"`` — candidates whose ``pred`` is tied (consecutive sorted values
            within ``atol``) share their block's positions, each position getting the block's
            mean gain: exactly the expected DCG under uniformly random tie-breaking (an
            untrained model whose scores are all equal scores chance level). Computed per
            list in float64 (a Python loop). ``"index"`` — ties broken by candidate index
            (stable sort), vectorised, in the dtype of ``scores``.
        atol: tie tolerance for ``ties="expected"``.
        degenerate: the value of a list whose ideal DCG is 0 (all gains 0: any order is
            ideal). 1 by default; the bandits benchmark has always reported 0 there.

    Returns:
        ``[...]``: float64 for ``ties="expected"``, else the dtype of ``scores``.
    """
    valid = _check("ndcg", pred, scores, valid)
    G = pred.shape[-1]
    if k is None:
        k = G
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"ndcg: `k` must be an int >= 1, got {k!r}")
    if gain not in ("linear", "shifted", "minmax", "exponential"):
        raise ValueError(
            f"ndcg: `gain` must be 'linear', 'shifted', 'minmax' or 'exponential', got {gain!r}"
        )
    if ties not in ("expected", "index"):
        raise ValueError(f"ndcg: `ties` must be 'expected' or 'index', got {ties!r}")
    if atol < 0:
        raise ValueError(f"ndcg: `atol` must be >= 0, got {atol!r}")
    if ties == "expected":
        return _ndcg_expected(pred, scores, valid, k=k, gain=gain, atol=atol, degenerate=degenerate)

    gains = _gains("ndcg", scores, valid, gain)  # (..., G)
    disc = 1.0 / torch.log2(torch.arange(2, G + 2, dtype=gains.dtype, device=gains.device))
    disc = torch.where(torch.arange(G, device=gains.device) < k, disc, torch.zeros_like(disc))
    # order by (valid first, pred descending, index): invalid candidates always last
    order = pred.argsort(dim=-1, descending=True, stable=True)  # (..., G)
    order = order.gather(
        -1, valid.gather(-1, order).int().argsort(dim=-1, descending=True, stable=True)
    )
    dcg = (gains.gather(-1, order) * disc).sum(-1)  # (...)
    idcg = (gains.sort(dim=-1, descending=True).values * disc).sum(-1)  # (...)
    return torch.where(idcg > 0, dcg / idcg.clamp_min(1e-30), torch.full_like(idcg, degenerate))


def _ndcg_expected(
    pred: Tensor,
    scores: Tensor,
    valid: Tensor,
    *,
    k: int,
    gain: str,
    atol: float,
    degenerate: float,
) -> Tensor:
    """``ties="expected"``: one list at a time, float64, tie blocks closed in sorted order."""
    lead = pred.shape[:-1]
    pred2, scores2, valid2 = (t.reshape(-1, t.shape[-1]) for t in (pred, scores, valid))
    out = torch.full((pred2.shape[0],), float(degenerate), dtype=torch.float64)
    for r in range(pred2.shape[0]):
        v = valid2[r]
        p, s = pred2[r][v].double().cpu(), scores2[r][v].double().cpu()
        g = _gains("ndcg", s, torch.ones_like(s, dtype=torch.bool), gain)
        disc = torch.tensor(
            [1.0 / math.log2(i + 2) if i < k else 0.0 for i in range(len(p))], dtype=torch.float64
        )
        ideal = (g.sort(descending=True).values * disc).sum()
        if ideal <= 0:
            continue
        order = p.argsort(descending=True)
        ps, gs = p[order], g[order]
        dcg, start = 0.0, 0
        for i in range(1, len(ps) + 1):  # close a tie block at i
            if i == len(ps) or ps[i - 1] - ps[i] > atol:
                dcg += float(gs[start:i].mean() * disc[start:i].sum())
                start = i
        out[r] = dcg / float(ideal)
    return out.reshape(lead).to(pred.device)


def mean_std(
    values: Sequence[float],
    *,
    ddof: Literal[0, 1] = 1,
    arithmetic: Literal["numpy", "torch", "exact"] = "numpy",
    skip_nan: bool = False,
) -> tuple[float, float]:
    """Mean and standard deviation of ``values`` (e.g. one metric over seeds).

    Args:
        values: one or more finite numbers (with ``skip_nan``: NaN marks a missing value).
        ddof: 1 — sample std (Bessel-corrected, the default: seeds are a sample);
            0 — population std. A single value has std 0 either way.
        arithmetic: how the float64 sums are taken. The three agree to ~1 ulp but not
            bit for bit (from 5 values on), and committed result files were written with
            each, so each caller keeps its own: ``"numpy"`` (``np.mean``/``np.std``; the
            distillation benchmark), ``"torch"`` (``torch.mean``/``torch.std``; the bandits
            benchmark, whose 4-decimal rounding an ulp can flip), ``"exact"`` (correctly
            rounded, ``statistics.fmean``/``stdev``/``pstdev``; the offline-listwise
            benchmark).
        skip_nan: drop NaN values first, and return ``(nan, nan)`` when only NaNs were
            given (a metric that no seed measured); infinities still raise.

    Returns:
        ``(mean, std)`` as Python floats.
    """
    if ddof not in (0, 1):
        raise ValueError(f"mean_std: `ddof` must be 0 or 1, got {ddof!r}")
    if arithmetic not in ("numpy", "torch", "exact"):
        raise ValueError(
            f"mean_std: `arithmetic` must be 'numpy', 'torch' or 'exact', got {arithmetic!r}"
        )
    xs = [float(x) for x in values]
    if not xs:
        raise ValueError("mean_std: `values` is empty")
    if skip_nan:
        xs = [x for x in xs if not math.isnan(x)]
        if not xs:
            return math.nan, math.nan
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"mean_std: `values` must be finite, got {xs}")
    if len(xs) == 1:
        return xs[0], 0.0
    if arithmetic == "exact":
        return statistics.fmean(xs), statistics.stdev(xs) if ddof == 1 else statistics.pstdev(xs)
    if arithmetic == "torch":
        t = torch.tensor(xs, dtype=torch.float64)
        return float(t.mean()), float(t.std(correction=ddof))
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=ddof))


def _t_two_sided(t: float, df: int) -> float:
    """``P(|T| < t)`` for Student's t with an integer ``df`` (closed-form finite sums,
    Abramowitz & Stegun 26.7.3–26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2:  # odd: (2/π)(θ + sin θ·(cos θ + ⅔cos³θ + … ))
        term, total = c, 0.0
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + s * total) if df > 1 else 2 * theta / math.pi
    term, total = 1.0, 0.0  # even: sin θ·(1 + ½cos²θ + ⅜cos⁴θ + … )
    for k in range(1, df // 2 + 1):
        total += term
        term *= c * c * (2 * k - 1) / (2 * k)
    return s * total


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided critical value of Student's t: ``P(|T| < t) = level`` for ``df`` degrees of
    freedom (12.706 for df 1, 2.776 for df 4 at 95 %), by bisection on the exact CDF."""
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ValueError(f"t_critical: `df` must be an integer >= 1, got {df!r}")
    if not 0 < level < 1:
        raise ValueError(f"t_critical: `level` must lie in (0, 1), got {level!r}")
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < level:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if _t_two_sided(mid, df) < level else (lo, mid)
    return hi


def mean_ci(
    values: Sequence[float],
    *,
    level: float = 0.95,
    arithmetic: Literal["numpy", "torch", "exact"] = "numpy",
    skip_nan: bool = False,
) -> tuple[float, float]:
    """Mean and the half-width of its two-sided ``level`` Student-t interval,
    ``t_critical(n − 1, level) · std / √n`` (sample std; NaN half-width for one value).

    E.g. paired differences over seeds: an interval that excludes 0 says the sign is
    consistent at that level under a normal model of the seeds. Arguments as in
    :func:`mean_std`.
    """
    mean, std = mean_std(values, arithmetic=arithmetic, skip_nan=skip_nan)
    n = sum(1 for x in values if not (skip_nan and math.isnan(float(x))))
    if n < 2 or math.isnan(std):
        return mean, math.nan
    return mean, t_critical(n - 1, level) * std / math.sqrt(n)


def paired_differences(
    rows: Iterable[Mapping[str, Any]],
    metrics: Sequence[str],
    *,
    base: Hashable,
    by: str,
    pair: str,
    arithmetic: Literal["numpy", "torch", "exact"] = "numpy",
) -> dict[Hashable, dict[str, Any]]:
    """Each group's metric minus ``base``'s on the same pair, as mean ± std over the pairs.

    E.g. objectives paired by seed: runs on one seed share its warm start, and warm starts
    differ a lot between seeds, so the difference on each seed says more than the
    objectives' own mean ± std over seeds.

    Args:
        rows: one mapping per run, holding ``by``, ``pair`` and the metrics.
        metrics: keys to difference. A missing or NaN value leaves that pair out of that
            metric (its mean is NaN when no pair has it).
        base: the group the others are compared with (it gets no entry itself).
        by: the key naming a run's group (e.g. ``"loss"``: the objective).
        pair: the key that pairs runs across groups (e.g. ``"seed"``).
        arithmetic: as in :func:`mean_std`.

    Returns:
        ``{group: {metric: {"mean", "std", "ci95", "n_below", "n_above"}, …,
        f"n_{pair}s": pairs in common with base}}`` (``"n_seeds"`` for ``pair="seed"``):
        ``ci95`` the half-width of the 95 % t-interval of the mean difference
        (:func:`mean_ci`), ``n_below``/``n_above`` the pairs where the group is below/above
        ``base``. Groups in the order they first appear in ``rows``; a group with no pair in
        common with ``base`` has no entry.
    """
    count = f"n_{pair}s"
    if count in metrics:
        raise ValueError(f"paired_differences: a metric may not be named {count!r} (the count)")
    runs = list(rows)
    at: dict[tuple[Hashable, Hashable], Mapping[str, Any]] = {}
    for r in runs:
        key = (r[by], r[pair])
        if key in at:
            raise ValueError(
                f"paired_differences: two runs with {by}={key[0]!r}, {pair}={key[1]!r}"
            )
        at[key] = r
    groups = list(dict.fromkeys(r[by] for r in runs))
    pairs = list(dict.fromkeys(r[pair] for r in runs))
    out: dict[Hashable, dict[str, Any]] = {}
    for g in groups:
        common = [p for p in pairs if (g, p) in at and (base, p) in at]
        if g == base or not common:
            continue
        entry: dict[str, Any] = {}
        for m in metrics:
            d = [
                float(at[(g, p)].get(m, math.nan)) - float(at[(base, p)].get(m, math.nan))
                for p in common
            ]
            mean, std = mean_std(d, arithmetic=arithmetic, skip_nan=True)
            _, half = mean_ci(d, arithmetic=arithmetic, skip_nan=True)
            entry[m] = {
                "mean": mean,
                "std": std,
                "ci95": half,
                "n_below": sum(x < 0 for x in d),
                "n_above": sum(x > 0 for x in d),
            }
        entry[count] = len(common)
        out[g] = entry
    return out
