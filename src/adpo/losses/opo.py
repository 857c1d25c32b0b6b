"""Orthogonalized Policy Optimization (OPO): escort-weighted work plus a χ² penalty.

Paper: "Orthogonalized Policy Optimization" (OPO). In ratio coordinates around the anchor
π_k (eq. 1), ``Δ = log π − log π_k`` and ``v = e^Δ − 1``; OPO minimises (eq. 14, 18)::

    L = E_{π_k}[ −ω̂_α · x + μ/2 · x² ],     x = Δ (log surrogate) or v (exact ratio)

whose minimiser is ``x* = ω̂_α / μ`` (theorem 3.4). The escort weight (eq. 7)
``ω_α ∝ exp((1−α)·A) · sg(π_k^{−(1−α)})`` sets *what* to learn (sampling geometry, α);
``μ`` sets the constant curvature (optimisation geometry).

Shapes: ``B`` prompts, ``G`` candidates, ``T`` tokens (see ``adpo.losses._common``).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor

from adpo.losses._common import (
    LossOutput,
    check_choice,
    check_positive,
    check_tensor,
    delta_metrics,
    entropy_from_logp,
    fail,
    masked_log_softmax,
    masked_mean,
    normalized_entropy,
    prepare_group,
)
from adpo.losses.advantages import group_advantages, zero_signal_groups

__all__ = ["escort_weights", "opo_loss", "opo_per_candidate"]

Ratio = Literal["log", "exact"]
WeightNorm = Literal["group", "center", "batch", "none"]
RefCorrection = Literal["none", "token_mean", "sequence"]


def escort_weights(
    advantages: Tensor,
    valid: Tensor,
    *,
    alpha: float,
    ref_log_weight: Tensor | None = None,
    weight_norm: WeightNorm = "group",
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Escort weights ω̂_α for a group layout (OPO eq. 7 and the batch normalisation, §3.1).

    ``log ω = (1−α)·A − (1−α)·ref_log_weight`` is computed in log space and normalised
    within each group so that its counted mean is 1, ``ω̃ = G·softmax_g(log ω)``. This is
    eq. 6 (``E_{π_k}[ω_α] = 1``) with the expectation estimated by the on-policy group,
    and it keeps ``π_ref^{−(1−α)}`` of a long sequence from overflowing. Then:

    * ``"group"``: z-score ω̃ over the group (the conservation-law projection ω − E[ω],
      rescaled; remark 3.6),
    * ``"center"``: ``ω̃ − mean_g ω̃`` (theorem 3.4's ``ω − E[ω]`` exactly),
    * ``"batch"``: z-score ω̃ over all counted candidates of the mini-batch (§3.1),
    * ``"none"``: ω̃ itself (the unconstrained target of prop. A.2, ``v* = ω/μ``).

    Args:
        advantages: ``[B, G]``.
        valid: ``[B, G]`` bool.
        alpha: escort exponent in [0, 1]; α → 1 gives uniform weights.
        ref_log_weight: ``[B, G]`` detached log π_ref used for the correction, or None.

    Returns:
        ``(ω̂, ω̃)``: the normalised weights used by the loss and the group-self-normalised
        escort weights (mean 1 per group), both ``[B, G]``, detached, 0 outside ``valid``.
    """
    log_w = (1.0 - alpha) * advantages.detach()  # (B, G)
    if ref_log_weight is not None:
        log_w = log_w - (1.0 - alpha) * ref_log_weight.detach()
    n = valid.sum(-1, keepdim=True).to(log_w.dtype)  # (B, 1)
    w_tilde = masked_log_softmax(log_w, valid).exp() * n * valid  # (B, G), group mean 1
    if weight_norm == "group":
        w_hat = group_advantages(w_tilde, eps, valid=valid)
    elif weight_norm == "batch":
        w_hat = group_advantages(w_tilde.reshape(1, -1), eps, valid=valid.reshape(1, -1))
        w_hat = w_hat.reshape(w_tilde.shape)
    elif weight_norm == "center":
        w_hat = (w_tilde - masked_mean(w_tilde, valid, dim=-1)[:, None]) * valid
    else:
        w_hat = w_tilde
    return w_hat, w_tilde


def opo_per_candidate(
    delta: Tensor,
    omega: Tensor,
    *,
    mu: float = 1.0,
    ratio: Ratio = "log",
    eps: float = 1e-6,
    max_log_ratio: float = 10.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """OPO's term of one candidate, ``−ω̂·x + μ/2·x²``, elementwise (OPO eq. 18).

    Given the normalised escort weights ``ω̂`` (numbers from the rewards; see
    :func:`escort_weights`), OPO's loss is a plain mean of these terms over candidates: no
    candidate's term depends on another's score. So a trainer may compute ``ω̂`` where the
    whole group is known and evaluate the terms over any split of the rows. ``x = Δ``
    (``ratio="log"``) or ``v = e^Δ − 1`` (``"exact"``, linear beyond ``max_log_ratio``,
    with the §6.5 positivity safeguard on the target; see :func:`opo_loss`).

    Args:
        delta: ``[...]`` sequence log-ratios Δ.
        omega: ``[...]`` normalised escort weights ω̂ (detached), same shape.
        mu: stiffness μ > 0, as in :func:`opo_loss`.
        ratio: ``"log"`` or ``"exact"``, as in :func:`opo_loss`.
        eps: the positivity margin of the exact ratio's target, as in :func:`opo_loss`.
        max_log_ratio: where the exact ratio turns linear, as in :func:`opo_loss`.

    Returns:
        ``(per, x, clipped)``: the terms, ``x`` and where the safeguard clipped the target,
        each of ``delta``'s shape.
    """
    w_hat = omega.detach().to(delta.dtype)
    clipped = torch.zeros_like(delta, dtype=torch.bool)
    if ratio == "log":
        x = delta
    else:
        c = torch.as_tensor(max_log_ratio, dtype=delta.dtype, device=delta.device)
        # v = e^Δ − 1 ≥ −1, continued linearly beyond Δ = max_log_ratio
        x = torch.where(delta <= c, torch.expm1(delta.clamp_max(c)), c.exp() * (1 + delta - c) - 1)
        floor = -mu * (1.0 - eps)  # §6.5 (ii): the target v* = ω̂/μ is kept ≥ −1 + ε
        clipped = w_hat < floor
        if bool(clipped.any()):
            warnings.warn(
                "opo_loss: with ratio='exact', some targets ω̂/μ lie below −1, which no ratio "
                "π/π_k ≥ 0 reaches; they are clipped to −1 + eps (OPO §6.5 (ii)). A stiffness "
                "μ ≥ max(−ω̂) avoids this (prop. 6.4); see the metric `target_clip_frac`",
                stacklevel=3,
            )
        w_hat = torch.where(clipped, torch.full_like(w_hat, floor), w_hat)
    return -w_hat * x + 0.5 * mu * x * x, x, clipped


def opo_loss(
    logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor,
    *,
    alpha: float = 0.4,
    mu: float = 1.0,
    mask: Tensor | None = None,
    valid: Tensor | None = None,
    ratio: Ratio = "log",
    weight_norm: WeightNorm = "group",
    ref_correction: RefCorrection = "none",
    eps: float = 1e-6,
    max_log_ratio: float = 10.0,
    omega: Tensor | None = None,
    seq_reduction: Literal["sum", "mean"] = "sum",
) -> LossOutput:
    """OPO loss ``mean_{b,g}[ −ω̂·x + μ/2·x² ]`` (OPO eq. 18, algorithm 1, line 8).

    ``A = group_advantages(rewards)``; ω̂ from :func:`escort_weights`. ``x`` is the
    sequence log-ratio ``Δ = logps − ref_logps`` (``ratio="log"``, the paper's LLM
    surrogate, §5.1) or the exact ratio deviation ``v = e^Δ − 1`` (``ratio="exact"``, eq.
    14). The minimiser in ``x`` is ``ω̂/μ`` (theorem 3.4). The expectation under π_k is the plain average over
    counted candidates: the samples come from the anchor (on-policy, §8).

    Positivity safeguard (§6.5 (ii), ``ratio="exact"`` only): ``v = π/π_k − 1`` cannot go
    below −1, so a target ``ω̂/μ < −1`` is unreachable and the loss would push ``Δ`` toward
    −∞ for ever. As §6.5 says, the *target* is clipped: ``ω̂`` is replaced by
    ``max(ω̂, −μ·(1 − eps))``, so the minimiser is ``v* = max(ω̂/μ, −1 + eps)`` and ``Δ``
    has a finite fixed point ``log(eps)``. Prop. 6.4's condition reads ``μ ≥ max(−ω̂)`` in
    these coordinates and avoids any clipping (the group z-score of a group of 6 with one
    wrong answer is ``ω̂ = −2.04``: μ = 1 clips it). The fraction of clipped targets is the
    metric ``target_clip_frac``, and a warning says so. The log surrogate needs no
    safeguard (``Δ`` is unbounded below).

    Deviations said plainly:

    * ``ref_correction`` adds eq. 7's ``sg(π_ref^{−(1−α)})`` factor: ``"sequence"`` uses the
      sequence log-prob, ``"token_mean"`` the length-normalised one (needs token-level
      inputs) so that it stays finite for long sequences; ``"none"`` (default) drops the
      factor, as the paper's app. A.3 does when "the correction is absorbed by the
      sampling measure".
    * With ``ratio="exact"``, ``e^Δ`` is continued linearly beyond ``Δ = max_log_ratio``
      (value and slope match there), so a runaway ratio gives a large finite loss with a
      restoring gradient instead of ``inf``.

    Args:
        logps: ``[B, G]`` or ``[B, G, T]`` (with ``mask``) policy log-probs.
        ref_logps: anchor log-probs, same shape.
        rewards: ``[B, G]``.
        alpha: escort exponent in [0, 1] (paper: 0.4).
        mu: stiffness μ > 0 (paper: 1.0).
        mask: ``[B, G, T]`` token mask.
        valid: ``[B, G]`` candidates that exist.
        ratio: ``"log"`` or ``"exact"``.
        weight_norm: ``"group" | "center" | "batch" | "none"`` (see :func:`escort_weights`).
        ref_correction: ``"none" | "token_mean" | "sequence"``.
        eps: z-score epsilon and positivity margin (the clipped target is ``−1 + eps``).
        max_log_ratio: where ``ratio="exact"`` switches to the linear continuation.
        omega: ``[B, G]`` normalised escort weights ω̂ computed elsewhere, used instead of
            :func:`escort_weights`' ω̂ (detached; 0 outside ``valid``). For weights
            normalised over more rows than this call sees: the online trainer computes
            ``weight_norm="batch"`` over a whole generation round, across micro-batches and
            processes, and passes each micro-batch its rows. ``rewards`` still give the
            metrics (and ω̃ for ``target_entropy``).
        seq_reduction: ``"sum"`` (default) or ``"mean"``: the sequence score ``Δ`` is the
            summed or the token-mean log-ratio (see :func:`adpo.losses.adpo_loss`); the
            reference correction keeps its own choice (``ref_correction``).

    Returns:
        ``LossOutput`` with metrics ``omega_mean``/``omega_abs_max`` (ω̂),
        ``target_entropy`` (entropy of the escort distribution ω̃/G over the group),
        ``anchored_entropy`` (of ``softmax(Δ)`` over the group), ``delta_abs_mean``/
        ``delta_abs_max``, ``chi2`` (``mean v²``, the Pearson χ² estimate),
        ``zero_signal_frac`` and ``target_clip_frac`` (candidates whose exact-ratio target
        the positivity safeguard clipped; 0 with ``ratio="log"``).
    """
    fn = "opo_loss"
    check_tensor(fn, "rewards", rewards)
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise fail(fn, f"`alpha` must lie in [0, 1], got {alpha!r}")
    check_positive(fn, "mu", mu)
    check_positive(fn, "max_log_ratio", max_log_ratio)
    check_choice(fn, "ratio", ratio, ("log", "exact"))
    check_choice(fn, "weight_norm", weight_norm, ("group", "center", "batch", "none"))
    check_choice(fn, "ref_correction", ref_correction, ("none", "token_mean", "sequence"))
    if not 0 <= eps < 1:
        raise fail(fn, f"`eps` must lie in [0, 1), got {eps!r}")
    check_choice(fn, "seq_reduction", seq_reduction, ("sum", "mean"))
    seq, ref_seq, v, mask_b, delta = prepare_group(fn, logps, ref_logps, mask, valid)
    if seq_reduction == "mean" and mask_b is not None:
        delta = delta / mask_b.sum(-1).clamp_min(1).to(delta.dtype)
    if rewards.shape != v.shape:
        raise fail(fn, f"`rewards` must have shape {tuple(v.shape)}, got {tuple(rewards.shape)}")
    adv = group_advantages(rewards, eps, valid=v).to(seq.dtype)  # (B, G)

    ref_w = None
    if ref_correction == "sequence":
        ref_w = ref_seq
    elif ref_correction == "token_mean":
        if mask_b is None:
            raise fail(
                fn,
                "ref_correction='token_mean' needs token-level [B, G, T] inputs (with "
                "`mask`) to know sequence lengths",
            )
        ref_w = ref_seq / mask_b.sum(-1).clamp_min(1).to(seq.dtype)
    w_hat, w_tilde = escort_weights(
        adv, v, alpha=alpha, ref_log_weight=ref_w, weight_norm=weight_norm, eps=eps
    )
    if omega is not None:
        check_tensor(fn, "omega", omega)
        if omega.shape != v.shape:
            raise fail(fn, f"`omega` must have shape {tuple(v.shape)}, got {tuple(omega.shape)}")
        if not bool(torch.isfinite(omega).all()):
            raise fail(fn, "`omega` must be finite")
        w_hat = torch.where(v, omega.detach().to(seq.dtype), torch.zeros((), dtype=seq.dtype))

    zero = torch.zeros((), dtype=delta.dtype, device=delta.device)
    per, x, clipped = opo_per_candidate(
        delta, w_hat, mu=mu, ratio=ratio, eps=eps, max_log_ratio=max_log_ratio
    )
    clipped = clipped & v
    per = torch.where(v, per, zero)  # (B, G)
    loss = per.sum() / v.sum()

    x_d = x.detach()
    ratio_dev = x_d if ratio == "exact" else torch.expm1(delta.detach().clamp_max(max_log_ratio))
    w_logp = torch.where(v, (w_tilde / v.sum(-1, keepdim=True)).clamp_min(1e-30).log(), zero)
    anchored = masked_log_softmax(delta.detach(), v)
    metrics = {
        "omega_mean": masked_mean(w_hat, v),
        "omega_abs_max": torch.where(v, w_hat.abs(), zero).max(),
        "target_entropy": entropy_from_logp(w_logp, v).mean(),
        "anchored_entropy": entropy_from_logp(anchored, v).mean(),
        "anchored_entropy_norm": normalized_entropy(anchored, v).mean(),
        **delta_metrics(delta, v),
        "chi2": masked_mean(ratio_dev.pow(2), v),
        "zero_signal_frac": zero_signal_groups(rewards, v).to(x.dtype).mean(),
        "target_clip_frac": clipped.sum().to(x.dtype) / v.sum(),
    }
    return LossOutput(loss, metrics)
