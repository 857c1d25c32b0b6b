"""Group-relative advantages and the target distributions built from rewards.

Shapes: ``B`` prompts, ``G`` candidates per prompt (see ``adpo.losses._common``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from adpo.losses._common import (
    check_choice,
    check_finite,
    check_group,
    check_positive,
    check_tensor,
    compute_dtype,
    fail,
    masked_log_softmax,
)

__all__ = ["group_advantages", "softmax_targets", "top1_targets", "zero_signal_groups"]


def _rewards(fn: str, rewards: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Check ``rewards [B, G]``; return them in the compute dtype (0 outside ``valid``)."""
    check_tensor(fn, "rewards", rewards)
    if rewards.dim() != 2:
        raise fail(fn, f"`rewards` must be [B, G], got shape {tuple(rewards.shape)}")
    v = check_group(fn, rewards.shape, valid, rewards.device)
    check_finite(fn, "rewards", rewards, v)
    r = rewards.detach().to(compute_dtype(rewards))
    return torch.where(v, r, torch.zeros((), dtype=r.dtype, device=r.device)), v


def zero_signal_groups(rewards: Tensor, valid: Tensor | None = None) -> Tensor:
    """Prompts whose counted rewards are all equal (no learning signal). ``[B, G] → [B]`` bool."""
    r, v = _rewards("zero_signal_groups", rewards, valid)
    inf = torch.full((), float("inf"), dtype=r.dtype, device=r.device)
    hi = torch.where(v, r, -inf).amax(-1)
    lo = torch.where(v, r, inf).amin(-1)
    return hi == lo


def group_advantages(rewards: Tensor, eps: float = 1e-6, *, valid: Tensor | None = None) -> Tensor:
    """Group-normalised advantages ``(r − mean_g) / (std_g + eps)`` (GRPO, DeepSeekMath §4.1.2).

    ``std`` is the sample standard deviation (``torch.std``, Bessel-corrected), as in
    TRL's and verl's GRPO. A group whose counted rewards are all equal gets exactly 0
    (not a rounding residue), and so does a group with a single counted candidate.

    Args:
        rewards: ``[B, G]`` scalar reward per candidate; must be finite where counted.
        eps: added to the standard deviation.
        valid: optional ``[B, G]`` bool mask of candidates that exist (variable group
            size); statistics use counted candidates only, the rest get advantage 0.

    Returns:
        ``[B, G]`` detached advantages in float32 (float64 if ``rewards`` is float64).
    """
    fn = "group_advantages"
    r, v = _rewards(fn, rewards, valid)
    if not eps >= 0:
        raise fail(fn, f"`eps` must be >= 0, got {eps!r}")
    n = v.sum(-1, keepdim=True).to(r.dtype)  # (B, 1)
    mean = r.sum(-1, keepdim=True) / n  # (B, 1)
    dev = torch.where(v, r - mean, torch.zeros((), dtype=r.dtype, device=r.device))  # (B, G)
    var = dev.pow(2).sum(-1, keepdim=True) / (n - 1).clamp_min(1)  # (B, 1) sample variance
    adv = dev / (var.sqrt() + eps)  # (B, G)
    flat = zero_signal_groups(r, v)[:, None] | (n < 2)  # (B, 1)
    return torch.where(flat | ~v, torch.zeros_like(adv), adv)


def softmax_targets(
    rewards: Tensor,
    *,
    beta: float = 1.0,
    valid: Tensor | None = None,
    eps: float = 1e-6,
    standardize: bool = True,
) -> Tensor:
    """Boltzmann target ``q = softmax(group_advantages(r) / beta)`` (ADPO alg. 1, line 12).

    Args:
        rewards: ``[B, G]``.
        beta: target temperature β_r (> 0); small β sharpens ``q`` toward the top-1 set.
        valid: optional ``[B, G]`` mask; missing candidates get ``q = 0``.
        standardize: True (default, alg. 1): z-score the rewards within the group first,
            so β is scale-free. False: ``q = softmax(r / beta)`` on the raw scores (§4.4's
            ``Q ∝ exp(R/τ)``, for calibrated teacher or reward-model scores).

    Returns:
        ``[B, G]`` rows summing to 1 over counted candidates.
    """
    check_positive("softmax_targets", "beta", beta)
    if standardize:
        x = group_advantages(rewards, eps, valid=valid)
    else:
        x, _ = _rewards("softmax_targets", rewards, valid)
    v = torch.ones_like(x, dtype=torch.bool) if valid is None else valid.bool()
    return masked_log_softmax(x / beta, v).exp() * v


def top1_targets(rewards: Tensor, *, valid: Tensor | None = None) -> Tensor:
    """``q`` uniform over the arg-max set of the counted rewards. ``[B, G] → [B, G]``."""
    r, v = _rewards("top1_targets", rewards, valid)
    neg_inf = torch.full((), float("-inf"), dtype=r.dtype, device=r.device)
    best = torch.where(v, r, neg_inf).amax(-1, keepdim=True)  # (B, 1)
    top = (r == best) & v  # (B, G)
    return top.to(r.dtype) / top.sum(-1, keepdim=True).to(r.dtype)


def check_targets(fn: str, targets: Tensor, valid: Tensor, dtype: torch.dtype) -> Tensor:
    """Check an explicit target distribution ``[B, G]`` and return it detached."""
    check_tensor(fn, "targets", targets)
    if targets.shape != valid.shape:
        raise fail(
            fn, f"`targets` must have shape {tuple(valid.shape)}, got {tuple(targets.shape)}"
        )
    check_finite(fn, "targets", targets, valid)
    q = torch.where(
        valid, targets.detach().to(dtype), torch.zeros((), dtype=dtype, device=valid.device)
    )
    if (q < 0).any():
        raise fail(fn, "`targets` must be non-negative")
    sums = q.sum(-1)
    # A distribution stored in a coarser dtype than the loss computes in (a bf16 teacher's
    # softmax, float32 targets for a float64 loss) sums to 1 only within its own rounding:
    # accept that rounding and renormalise, so the loss sees an exact distribution.
    in_eps = torch.finfo(targets.dtype).eps if targets.is_floating_point() else 0.0
    coarser = in_eps > torch.finfo(dtype).eps
    tol = max(1e-4 if dtype == torch.float32 else 1e-8, 2 * in_eps)
    if ((sums - 1).abs() > tol).any():
        b = int(((sums - 1).abs() > tol).nonzero()[0])
        raise fail(
            fn,
            f"`targets` rows must sum to 1 over counted candidates; row {b} sums to "
            f"{float(sums[b]):.6g}",
        )
    return q / sums[..., None] if coarser else q


def target_choice(fn: str, target: str) -> None:
    check_choice(fn, "target", target, ("softmax", "plackett_luce", "top1"))
