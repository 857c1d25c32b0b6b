"""Offline ranking metrics over candidate groups: top-1 accuracy and NDCG.

Shapes: ``R`` rows (prompts), ``G`` candidates per row (padded; ``valid`` marks the real
ones). ``pred`` is what the model ranks by (e.g. the anchored score
``log πθ − log π_ref``), ``scores`` the dataset's scores (or teacher probabilities).

Ties in ``pred`` are common (before training ``πθ = π_ref`` and every anchored score is
0), so both metrics are the *expected* value under uniformly random tie-breaking of
``pred``: an all-tied row scores chance level, not whatever ``argmax`` picks first.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ndcg", "top1_accuracy"]


def _check(fn: str, pred: Tensor, scores: Tensor, valid: Tensor) -> None:
    if pred.dim() != 2 or pred.shape != scores.shape or pred.shape != valid.shape:
        raise ValueError(
            f"{fn}: `pred`, `scores` and `valid` must share one [R, G] shape, got "
            f"{tuple(pred.shape)}, {tuple(scores.shape)}, {tuple(valid.shape)}"
        )
    if (valid.sum(-1) == 0).any():
        raise ValueError(f"{fn}: `valid` leaves row {int((valid.sum(-1) == 0).nonzero()[0])} empty")


def top1_accuracy(pred: Tensor, scores: Tensor, valid: Tensor, *, atol: float = 0.0) -> Tensor:
    """Does the highest ``pred`` fall on a best-scored candidate? ``[R, G] → [R]`` in [0, 1].

    With ties in ``pred`` (within ``atol`` of the maximum) this is
    ``|top(pred) ∩ top(scores)| / |top(pred)|``, the accuracy of a random tie-break.

    Args:
        pred: ``[R, G]`` model scores.
        scores: ``[R, G]`` dataset scores (higher is better).
        valid: ``[R, G]`` bool, real candidates.
        atol: values of ``pred`` within ``atol`` of the row maximum count as tied.
    """
    _check("top1_accuracy", pred, scores, valid)
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float64)
    p = torch.where(valid, pred.double(), neg_inf)  # (R, G)
    s = torch.where(valid, scores.double(), neg_inf)  # (R, G)
    top_p = (p >= p.amax(-1, keepdim=True) - atol) & valid  # (R, G)
    top_s = (s == s.amax(-1, keepdim=True)) & valid  # (R, G)
    return (top_p & top_s).sum(-1).double() / top_p.sum(-1).double()


def ndcg(pred: Tensor, scores: Tensor, valid: Tensor, *, atol: float = 0.0) -> Tensor:
    """NDCG@G of the ranking by ``pred`` against gains from ``scores``. ``[R, G] → [R]``.

    Gains are linear, ``scores − min(scores)`` within the row (so the worst candidate
    gains 0 and any score scale works); discounts ``1/log2(1 + rank)``. Candidates whose
    ``pred`` is tied (consecutive values within ``atol``) share their block's positions:
    each position of a block gets the block's mean gain, which is exactly the expected
    DCG under random tie-breaking. A row whose scores are all equal (ideal DCG 0) scores 1.
    """
    _check("ndcg", pred, scores, valid)
    out = torch.ones(pred.shape[0], dtype=torch.float64)
    for r in range(pred.shape[0]):
        v = valid[r]
        p, s = pred[r][v].double(), scores[r][v].double()
        gain = s - s.min()
        disc = torch.tensor([1.0 / math.log2(i + 2) for i in range(len(p))], dtype=torch.float64)
        ideal = (gain.sort(descending=True).values * disc).sum()
        if ideal <= 0:
            continue
        order = p.argsort(descending=True)
        ps, gs = p[order], gain[order]
        dcg, start = 0.0, 0
        for i in range(1, len(ps) + 1):  # close a tie block at i
            if i == len(ps) or ps[i - 1] - ps[i] > atol:
                dcg += float(gs[start:i].mean() * disc[start:i].sum())
                start = i
        out[r] = dcg / float(ideal)
    return out
