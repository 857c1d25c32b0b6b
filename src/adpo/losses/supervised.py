"""Supervised fine-tuning (SFT): negative log-likelihood in absolute coordinates.

The ADPO paper's taxonomy (table 1): zero anchor, Dirac target. Token log-probs with the
last axis as tokens, ``[N, T]`` or ``[B, G, T]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adpo.losses._common import LossOutput, check_finite, check_tensor, fail
from adpo.losses.policy_gradient import AggMode, _token_inputs, aggregate_tokens

__all__ = ["sft_loss"]


def sft_loss(
    logps: Tensor,
    mask: Tensor | None = None,
    *,
    weights: Tensor | None = None,
    loss_agg_mode: AggMode = "token-mean",
) -> LossOutput:
    """Negative log-likelihood ``−log πθ(y_t | x, y_<t)`` of target tokens.

    Args:
        logps: ``[N, T]`` or ``[B, G, T]`` log-probs of the target tokens (last axis =
            tokens; a single label per example is ``T = 1``).
        mask: same shape, True where a token counts (None: all count).
        weights: optional per-sequence weights ``logps.shape[:-1]`` (e.g. rewards for
            reward-filtered SFT / RAFT); detached.
        loss_agg_mode: ``"token-mean"`` (default, as in TRL's SFT) or another mode of
            ``adpo.losses.aggregate_tokens``.

    Returns:
        ``LossOutput``; metrics ``nll`` (token mean) and ``perplexity``.
    """
    fn = "sft_loss"
    check_tensor(fn, "logps", logps)
    if logps.dim() < 2:
        raise fail(fn, f"`logps` must be [N, T] or [B, G, T], got shape {tuple(logps.shape)}")
    w = torch.ones(logps.shape[:-1], dtype=logps.dtype, device=logps.device)
    if weights is not None:
        check_tensor(fn, "weights", weights)
        if weights.shape != logps.shape[:-1]:
            raise fail(
                fn,
                f"`weights` must have shape {tuple(logps.shape[:-1])}, got {tuple(weights.shape)}",
            )
        check_finite(fn, "weights", weights)
        w = weights
    lp, _, w_tok, m = _token_inputs(fn, logps, logps.detach(), w, mask)
    nll = -lp
    loss = aggregate_tokens(w_tok * nll, m, loss_agg_mode)
    mean_nll = aggregate_tokens(nll.detach(), m, "token-mean")
    return LossOutput(loss, {"nll": mean_nll, "perplexity": mean_nll.exp()})
