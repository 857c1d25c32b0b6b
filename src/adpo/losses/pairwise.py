"""Pairwise preference losses: DPO (hard and soft) and IPO.

Inputs are sequence log-probs of the chosen and rejected responses, any shape (usually
``[N]`` pairs), all four the same shape. The implicit margin is::

    z = (log πθ(y_w) − log π_ref(y_w)) − (log πθ(y_l) − log π_ref(y_l))

DPO (Rafailov et al., 2023, eq. 7) is the ``G = 2`` top-1 case of ADPO with
``tau = 1/β`` (ADPO paper, app. D); the test suite checks that identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from adpo.losses._common import (
    LossOutput,
    check_finite,
    check_positive,
    check_same_shape,
    check_tensor,
    compute_dtype,
    fail,
)

__all__ = ["dpo_loss", "ipo_loss"]

_NAMES = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _pair_log_ratios(fn: str, *tensors: Tensor) -> tuple[Tensor, Tensor]:
    """Validate the four inputs; return ``(Δ_w, Δ_l)`` in the compute dtype, refs detached."""
    for name, t in zip(_NAMES, tensors, strict=True):
        check_tensor(fn, name, t)
    for name, t in zip(_NAMES[1:], tensors[1:], strict=True):
        check_same_shape(fn, (_NAMES[0], name), tensors[0], t)
    if tensors[0].numel() == 0:
        raise fail(fn, "got no pairs (empty inputs)")
    for name, t in zip(_NAMES, tensors, strict=True):
        check_finite(fn, name, t)
    dtype = compute_dtype(*tensors)
    cw, rl, ref_w, ref_l = (t.to(dtype) for t in tensors)
    return cw - ref_w.detach(), rl - ref_l.detach()


def _pair_metrics(dw: Tensor, dl: Tensor, beta: float, z: Tensor) -> dict[str, Tensor]:
    dw, dl, z = dw.detach(), dl.detach(), z.detach()
    d = torch.cat([dw.reshape(-1), dl.reshape(-1)]).abs()
    p = torch.sigmoid(beta * z)  # anchored probability of the chosen response (G = 2)
    ent = -(p * F.logsigmoid(beta * z) + (1 - p) * F.logsigmoid(-beta * z))
    return {
        "reward_accuracy": (z > 0).to(z.dtype).mean(),
        "margin": (beta * z).mean(),
        "chosen_reward": (beta * dw).mean(),
        "rejected_reward": (beta * dl).mean(),
        "anchored_entropy": ent.mean(),
        "delta_abs_mean": d.mean(),
        "delta_abs_max": d.max(),
    }


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """DPO: ``−(1−ε)·log σ(β z) − ε·log σ(−β z)``, averaged over pairs.

    ``label_smoothing = ε`` > 0 gives the soft (conservative) DPO of Mitchell (2023), the
    cross-entropy against the soft label ``(1−ε, ε)``: the paper's "DPO-soft".

    Args:
        chosen_logps: sequence log-probs of the chosen completions under the policy.
        rejected_logps: the same for the rejected completions (same shape).
        ref_chosen_logps: ``chosen_logps`` under the reference (detached).
        ref_rejected_logps: ``rejected_logps`` under the reference (detached).
        beta: inverse temperature β > 0.
        label_smoothing: ε in [0, 0.5).

    Returns:
        ``LossOutput``; metrics ``reward_accuracy``, ``margin``, ``chosen_reward``,
        ``rejected_reward`` (β·Δ), ``anchored_entropy`` (of the pair's anchored
        distribution), ``target_entropy`` (of the label), ``delta_abs_mean``/``_max``.
    """
    fn = "dpo_loss"
    check_positive(fn, "beta", beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise fail(fn, f"`label_smoothing` must lie in [0, 0.5), got {label_smoothing!r}")
    dw, dl = _pair_log_ratios(
        fn, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    z = dw - dl
    eps = label_smoothing
    losses = -(1 - eps) * F.logsigmoid(beta * z) - eps * F.logsigmoid(-beta * z)
    metrics = _pair_metrics(dw, dl, beta, z)
    h = 0.0 if eps == 0 else -(eps * math.log(eps) + (1 - eps) * math.log(1 - eps))
    metrics["target_entropy"] = torch.tensor(h, dtype=z.dtype, device=z.device)
    return LossOutput(losses.mean(), metrics)


def ipo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float = 0.1,
) -> LossOutput:
    """IPO (Azar et al., 2024, eq. 17): ``(z − 1/(2β))²``, averaged over pairs.

    IPO regresses the margin onto a finite value instead of pushing it to infinity; β
    here is the paper's τ (as in TRL's ``loss_type="ipo"``). The IPO paper uses
    length-averaged log-probs; pass those if you want that variant.

    Args/returns as in :func:`dpo_loss` (no label smoothing, no target entropy).
    """
    fn = "ipo_loss"
    check_positive(fn, "beta", beta)
    dw, dl = _pair_log_ratios(
        fn, chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    z = dw - dl
    losses = (z - 1.0 / (2.0 * beta)) ** 2
    return LossOutput(losses.mean(), _pair_metrics(dw, dl, beta, z))
