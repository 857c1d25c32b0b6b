"""Token-level policy-gradient baselines: PPO-clip, TRPO-style KL penalty, GRPO, GSPO, DAPO.

All take ``logps, old_logps, advantages, mask`` where the *last axis is tokens*:
``[B, G, T]`` (groups) or ``[N, T]`` (flat sequences); a single-action bandit uses
``T = 1``. ``old_logps`` are the sampling policy's (π_old) log-probs and are detached;
``advantages`` has one value per sequence (shape ``logps.shape[:-1]``, broadcast over
tokens) or one per token (shape ``logps.shape``).

Aggregation (``loss_agg_mode``, the names verl uses):

* ``"token-mean"``: Σ over every counted token / number of counted tokens (DAPO, PPO).
* ``"seq-mean-token-mean"``: mean over sequences of each sequence's token mean (GRPO).
* ``"seq-mean-token-sum"``: mean over sequences of each sequence's token sum.
* ``"seq-mean-token-sum-norm"``: Σ over tokens / (number of sequences · T) (Dr. GRPO).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from adpo.losses._common import (
    LossOutput,
    as_bool_mask,
    check_choice,
    check_finite,
    check_positive,
    check_same_shape,
    check_tensor,
    compute_dtype,
    delta_metrics,
    entropy_from_logp,
    fail,
    masked_log_softmax,
    masked_mean,
)

__all__ = [
    "aggregate_tokens",
    "dapo_loss",
    "grpo_loss",
    "gspo_loss",
    "kl_penalty_loss",
    "ppo_loss",
]

AggMode = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate_tokens(per_token: Tensor, mask: Tensor, mode: AggMode) -> Tensor:
    """Reduce a per-token loss ``[..., T]`` to a scalar under ``mask`` (see module doc)."""
    zero = torch.zeros((), dtype=per_token.dtype, device=per_token.device)
    masked = torch.where(mask, per_token, zero)
    if mode == "token-mean":
        return masked.sum() / mask.sum().clamp_min(1)
    if mode not in _AGG_MODES:
        raise ValueError(
            f"aggregate_tokens: `mode` (loss_agg_mode) must be one of {_AGG_MODES}, got {mode!r}"
        )
    seq_sum = masked.sum(-1)  # (...,)
    if mode == "seq-mean-token-mean":
        return (seq_sum / mask.sum(-1).clamp_min(1)).mean()
    if mode == "seq-mean-token-sum":
        return seq_sum.mean()
    return seq_sum.sum() / (seq_sum.numel() * mask.shape[-1])


def _token_inputs(
    fn: str,
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate; return ``(logps, old_logps, adv_per_token, mask)`` with ``[..., T]`` shapes."""
    check_tensor(fn, "logps", logps)
    check_tensor(fn, "old_logps", old_logps)
    check_tensor(fn, "advantages", advantages)
    check_same_shape(fn, ("logps", "old_logps"), logps, old_logps)
    if logps.dim() < 2:
        raise fail(
            fn,
            f"`logps` must be [N, T] or [B, G, T] (last axis = tokens; use T = 1 for a single "
            f"action), got shape {tuple(logps.shape)}",
        )
    if logps.numel() == 0:
        raise fail(fn, f"`logps` is empty (shape {tuple(logps.shape)})")
    m = (
        torch.ones_like(logps, dtype=torch.bool)
        if mask is None
        else as_bool_mask(fn, "mask", mask, logps.shape)
    )
    empty = m.sum(-1) == 0
    if empty.any():
        idx = tuple(empty.nonzero()[0].tolist())
        raise fail(fn, f"`mask` empties sequence {idx}; every sequence needs at least one token")
    if advantages.shape == logps.shape[:-1]:
        adv = advantages[..., None].expand_as(logps)
    elif advantages.shape == logps.shape:
        adv = advantages
    else:
        raise fail(
            fn,
            f"`advantages` must have shape {tuple(logps.shape[:-1])} (one per sequence) or "
            f"{tuple(logps.shape)} (one per token), got {tuple(advantages.shape)}",
        )
    check_finite(fn, "logps", logps, m)
    check_finite(fn, "old_logps", old_logps, m)
    check_finite(fn, "advantages", adv, m)
    dtype = compute_dtype(logps, old_logps)
    zero = torch.zeros((), dtype=dtype, device=logps.device)
    lp = torch.where(m, logps.to(dtype), zero)
    old = torch.where(m, old_logps.detach().to(dtype), zero)
    adv = torch.where(m, adv.detach().to(dtype), zero)
    return lp, old, adv, m


def _clip_surrogate(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, clip_ratio_c: float | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """PPO's pessimistic clipped surrogate, negated, with verl's optional dual clip.

    Returns ``(loss, low_clip, high_clip, dual_clip)``; ``dual_clip`` is None without
    ``clip_ratio_c``.
    """
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    # the clip is active (gradient zero) where it binds in the direction the advantage pushes
    low = (ratio < 1.0 - eps_low) & (adv < 0)
    high = (ratio > 1.0 + eps_high) & (adv > 0)
    dual = None
    if clip_ratio_c is not None:
        # dual clip (Ye et al., 2020; verl's clip_ratio_c): a negative-advantage token's loss
        # is capped at c·|A|, so one huge ratio cannot dominate the batch
        cap = -adv * clip_ratio_c  # (…, T), > 0 where A < 0
        dual = (adv < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
    return loss, low, high, dual


def _pg_metrics(
    log_ratio: Tensor,
    mask: Tensor,
    low: Tensor | None = None,
    high: Tensor | None = None,
    dual: Tensor | None = None,
) -> dict[str, Tensor]:
    """Clip fractions, ratio statistics, KL(π_old‖πθ) estimate (k3) and |Δ| per sequence."""
    lr = log_ratio.detach()
    ratio = lr.exp()
    seq_delta = torch.where(mask, lr, torch.zeros((), dtype=lr.dtype, device=lr.device)).sum(-1)
    seq_valid = torch.ones_like(seq_delta, dtype=torch.bool)
    out = {
        "ratio_mean": masked_mean(ratio, mask),
        "approx_kl": masked_mean(ratio - 1 - lr, mask),
        **delta_metrics(seq_delta, seq_valid),
    }
    if low is not None:
        out["clip_frac_low"] = masked_mean(low.to(lr.dtype), mask)
        out["clip_frac_high"] = masked_mean(high.to(lr.dtype), mask)
        out["clip_frac"] = out["clip_frac_low"] + out["clip_frac_high"]
    if dual is not None:
        out["clip_frac_dual"] = masked_mean(dual.to(lr.dtype), mask)
    if seq_delta.dim() == 2 and seq_delta.shape[-1] > 1:  # [B, G]: anchored entropy of the group
        out["anchored_entropy"] = entropy_from_logp(
            masked_log_softmax(seq_delta, seq_valid), seq_valid
        ).mean()
    return out


def _check_dual_clip(fn: str, clip_ratio_c: float | None) -> None:
    if clip_ratio_c is not None and not (math.isfinite(clip_ratio_c) and clip_ratio_c > 1):
        raise fail(
            fn, f"`clip_ratio_c` must be a finite number > 1 (or None), got {clip_ratio_c!r}"
        )


def _k3(d: Tensor, clamp: float | None) -> Tensor:
    """k3 estimate ``e^d − d − 1`` of a KL from ``d = log(q/p)`` per token, optionally clamped
    to ``[−clamp, clamp]`` as verl does (its ``low_var_kl``: ±10)."""
    kl = d.exp() - d - 1
    return kl if clamp is None else kl.clamp(-clamp, clamp)


def _check_kl_clamp(fn: str, kl_clamp: float | None) -> None:
    if kl_clamp is not None and not kl_clamp > 0:
        raise fail(fn, f"`kl_clamp` must be > 0 (or None), got {kl_clamp!r}")


def _clip_args(
    fn: str, eps_low: float, eps_high: float | None, mode: str, low_name: str = "clip_eps"
) -> float:
    check_positive(fn, low_name, eps_low)
    if eps_low >= 1:
        raise fail(fn, f"`{low_name}` must be < 1 (ratios are positive), got {eps_low!r}")
    high = eps_low if eps_high is None else eps_high
    check_positive(fn, "clip_eps_high", high)
    check_choice(fn, "loss_agg_mode", mode, _AGG_MODES)
    return high


def ppo_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    clip_ratio_c: float | None = None,
    loss_agg_mode: AggMode = "token-mean",
) -> LossOutput:
    """PPO-clip (Schulman et al., 2017, eq. 7) on token ratios ``r = πθ/π_old``.

    ``−min(r·A, clip(r, 1−ε_low, 1+ε_high)·A)`` per token, aggregated by ``loss_agg_mode``.
    With ``clip_ratio_c = c`` (dual clip, Ye et al. 2020, as verl applies it by default with
    ``c = 3``; TRL does not) a token with ``A < 0`` contributes ``min(that, c·|A|)``.

    Args:
        logps: ``[N, T]`` or ``[B, G, T]`` token log-probs under πθ.
        old_logps: same shape, under the sampling policy (detached).
        advantages: ``logps.shape[:-1]`` or ``logps.shape``.
        mask: token mask, same shape as ``logps`` (None: all tokens count).
        clip_eps: ε (lower, and upper unless ``clip_eps_high`` is given).
        clip_eps_high: upper ε (clip-higher).
        clip_ratio_c: dual-clip constant ``c > 1``, or None (default: no dual clip, TRL's).
        loss_agg_mode: see module doc.

    Returns:
        ``LossOutput``; metrics ``clip_frac`` (+ ``_low``/``_high``; ``clip_frac_dual`` with
        ``clip_ratio_c``), ``ratio_mean``,
        ``approx_kl`` (k3 estimate of KL(π_old‖πθ)), ``delta_abs_mean``/``_max`` (per
        sequence log-ratio), ``anchored_entropy`` for grouped inputs.
    """
    fn = "ppo_loss"
    high = _clip_args(fn, clip_eps, clip_eps_high, loss_agg_mode)
    _check_dual_clip(fn, clip_ratio_c)
    lp, old, adv, m = _token_inputs(fn, logps, old_logps, advantages, mask)
    log_ratio = lp - old
    per_tok, low, hi, dual = _clip_surrogate(log_ratio.exp(), adv, clip_eps, high, clip_ratio_c)
    return LossOutput(
        aggregate_tokens(per_tok, m, loss_agg_mode), _pg_metrics(log_ratio, m, low, hi, dual)
    )


def grpo_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    clip_ratio_c: float | None = None,
    beta: float = 0.0,
    ref_logps: Tensor | None = None,
    kl_clamp: float | None = None,
    loss_agg_mode: AggMode = "seq-mean-token-mean",
) -> LossOutput:
    """GRPO (DeepSeekMath, eq. 3; ADPO paper eq. 27): PPO-clip with per-sequence token means.

    Optionally adds ``beta · KL(πθ‖π_ref)`` per token with the k3 estimator
    ``π_ref/πθ − log(π_ref/πθ) − 1`` (DeepSeekMath eq. 4). The papers' runs use
    ``beta = 0`` (the default, as in TRL).

    Args:
        ref_logps: ``[..., T]`` reference log-probs, required when ``beta > 0``.
        kl_clamp: clamp the per-token k3 KL to ``[−kl_clamp, kl_clamp]`` (verl clamps at
            10; None, the default, does not clamp, as TRL).
        clip_ratio_c: dual clip, see :func:`ppo_loss` (default None: TRL's GRPO).

    The other arguments are as in :func:`ppo_loss`.

    Returns:
        ``LossOutput`` with :func:`ppo_loss`'s metrics plus ``ref_kl`` when ``beta > 0``.
    """
    fn = "grpo_loss"
    high = _clip_args(fn, clip_eps, clip_eps_high, loss_agg_mode)
    if not beta >= 0:
        raise fail(fn, f"`beta` must be >= 0, got {beta!r}")
    _check_dual_clip(fn, clip_ratio_c)
    _check_kl_clamp(fn, kl_clamp)
    lp, old, adv, m = _token_inputs(fn, logps, old_logps, advantages, mask)
    log_ratio = lp - old
    per_tok, low, hi, dual = _clip_surrogate(log_ratio.exp(), adv, clip_eps, high, clip_ratio_c)
    metrics = _pg_metrics(log_ratio, m, low, hi, dual)
    if beta > 0:
        if ref_logps is None:
            raise fail(fn, "`beta` > 0 needs `ref_logps`")
        check_tensor(fn, "ref_logps", ref_logps)
        check_same_shape(fn, ("logps", "ref_logps"), logps, ref_logps)
        check_finite(fn, "ref_logps", ref_logps, m)
        ref = torch.where(
            m, ref_logps.detach().to(lp.dtype), torch.zeros((), dtype=lp.dtype, device=lp.device)
        )
        kl = _k3(ref - lp, kl_clamp)  # (…, T) k3, ≥ 0
        per_tok = per_tok + beta * kl
        metrics["ref_kl"] = masked_mean(kl.detach(), m)
    return LossOutput(aggregate_tokens(per_tok, m, loss_agg_mode), metrics)


def dapo_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float = 0.28,
    loss_agg_mode: AggMode = "token-mean",
) -> LossOutput:
    """DAPO's policy loss (Yu et al., 2025, eq. 8): clip-higher and token-level aggregation.

    Decoupled clip range ``[1−ε_low, 1+ε_high]`` (0.2 / 0.28) and the sum over every token
    of the batch divided by the total token count, so long responses are not diluted.
    DAPO's other two parts live outside the loss: dynamic sampling (drop groups with
    equal rewards, see ``adpo.losses.zero_signal_groups``) and overlong reward shaping.

    Args/returns as in :func:`ppo_loss`.
    """
    fn = "dapo_loss"
    _clip_args(fn, clip_eps_low, clip_eps_high, loss_agg_mode, low_name="clip_eps_low")
    lp, old, adv, m = _token_inputs(fn, logps, old_logps, advantages, mask)
    log_ratio = lp - old
    per_tok, low, hi, _ = _clip_surrogate(log_ratio.exp(), adv, clip_eps_low, clip_eps_high)
    return LossOutput(
        aggregate_tokens(per_tok, m, loss_agg_mode), _pg_metrics(log_ratio, m, low, hi)
    )


def gspo_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    clip_eps: float = 3e-4,
    clip_eps_high: float | None = 4e-4,
    loss_agg_mode: AggMode = "seq-mean-token-mean",
) -> LossOutput:
    """GSPO (Zheng et al., 2025; ADPO paper eqs. 28–29, 34): sequence-level ratio.

    ``s_i = exp(mean_t log(πθ/π_old))`` (the geometric-mean ratio) is clipped to
    ``[1−ε_low, 1+ε_high]``; GSPO's own ranges are tiny (3e-4 / 4e-4, the defaults).
    The GSPO-token form is used, ``s_{i,t} = sg(s_i) · πθ(y_t)/sg(πθ(y_t))``, which
    equals sequence-level GSPO for per-sequence advantages and also accepts per-token
    advantages.

    Args/returns as in :func:`ppo_loss`; ``clip_frac`` counts clipped *tokens*.
    """
    fn = "gspo_loss"
    high = _clip_args(fn, clip_eps, clip_eps_high, loss_agg_mode)
    lp, old, adv, m = _token_inputs(fn, logps, old_logps, advantages, mask)
    log_ratio = lp - old  # (…, T)
    seq_log_ratio = masked_mean(log_ratio, m, dim=-1)  # (…,)
    # straight-through: value s_i, gradient of log πθ(y_t) scaled by s_i
    tok_log_ratio = seq_log_ratio.detach()[..., None] + lp - lp.detach()
    per_tok, low, hi, _ = _clip_surrogate(tok_log_ratio.exp(), adv, clip_eps, high)
    metrics = _pg_metrics(log_ratio, m, low, hi)
    metrics["seq_ratio_mean"] = seq_log_ratio.detach().exp().mean()
    return LossOutput(aggregate_tokens(per_tok, m, loss_agg_mode), metrics)


def kl_penalty_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    *,
    beta: float = 1.0,
    kl_estimator: Literal["k1", "k2", "k3"] = "k3",
    exact_kl: Tensor | None = None,
    kl_clamp: float | None = None,
    loss_agg_mode: AggMode = "token-mean",
) -> LossOutput:
    """TRPO-style penalty (PPO paper §4, eq. 8): ``−r·A + β·KL(π_old ‖ πθ)``.

    The KL to the sampling policy is estimated per token from samples of π_old, with
    ``r = πθ/π_old``: ``"k1"`` = ``−log r``, ``"k2"`` = ``½(log r)²``, ``"k3"`` =
    ``r − 1 − log r`` (unbiased and ≥ 0; Schulman, "Approximating KL divergence"). When
    the full distributions are available (bandits, small action spaces) pass the exact
    ``KL(π_old‖πθ)`` per sequence as ``exact_kl`` (shape ``logps.shape[:-1]``); it is then
    averaged over sequences instead of the token estimate.

    Args:
        beta: penalty coefficient β ≥ 0.
        kl_estimator: ``"k1" | "k2" | "k3"``.
        exact_kl: optional exact KL per sequence (must carry gradient to πθ).
        kl_clamp: clamp the per-token k3 estimate to ``[−kl_clamp, kl_clamp]`` (verl's
            ``low_var_kl`` uses 10); None (default) leaves it unclamped.

    The other arguments are as in :func:`ppo_loss`.

    Returns:
        ``LossOutput`` with :func:`ppo_loss`'s metrics (no clipping) plus ``kl``.
    """
    fn = "kl_penalty_loss"
    if not beta >= 0:
        raise fail(fn, f"`beta` must be >= 0, got {beta!r}")
    check_choice(fn, "kl_estimator", kl_estimator, ("k1", "k2", "k3"))
    check_choice(fn, "loss_agg_mode", loss_agg_mode, _AGG_MODES)
    _check_kl_clamp(fn, kl_clamp)
    lp, old, adv, m = _token_inputs(fn, logps, old_logps, advantages, mask)
    log_ratio = lp - old
    ratio = log_ratio.exp()
    surrogate = aggregate_tokens(-ratio * adv, m, loss_agg_mode)
    if exact_kl is not None:
        check_tensor(fn, "exact_kl", exact_kl)
        if exact_kl.shape != logps.shape[:-1]:
            raise fail(
                fn,
                f"`exact_kl` must have shape {tuple(logps.shape[:-1])}, got {tuple(exact_kl.shape)}",
            )
        check_finite(fn, "exact_kl", exact_kl)
        kl = exact_kl.to(lp.dtype).mean()
    else:
        if kl_estimator == "k1":
            kl_tok = -log_ratio
        elif kl_estimator == "k2":
            kl_tok = 0.5 * log_ratio.pow(2)
        else:  # k3 of KL(π_old‖πθ): d = log(πθ/π_old)
            kl_tok = _k3(log_ratio, kl_clamp)
        kl = aggregate_tokens(kl_tok, m, loss_agg_mode)
    metrics = _pg_metrics(log_ratio, m)
    metrics["kl"] = kl.detach()
    return LossOutput(surrogate + beta * kl, metrics)
