"""Shared pieces of the loss library: the output type, input checks and masked reductions.

Shape glossary (used in every module of ``adpo.losses``):

    B  prompts (contexts) in the batch
    G  candidates (completions) per prompt, "the last axis is the list"
    T  tokens per candidate
    N  flattened sequences (B·G) for token-level baselines

Mask convention everywhere: ``True``/``1`` means *counts*. Tensors are positional,
options keyword-only. Everything is computed in float32 or wider.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["LossOutput"]


@dataclass(frozen=True)
class LossOutput:
    """What every loss returns.

    Attributes:
        loss: scalar tensor to call ``.backward()`` on.
        metrics: detached 0-d tensors (anchored entropy, target entropy, mean/max |Δ|,
            clip fraction, ...). They stay tensors so that logging does not force a
            device synchronisation; call ``.item()`` when you need a float.
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


def fail(fn: str, msg: str) -> ValueError:
    return ValueError(f"{fn}: {msg}")


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32, or float64 when any input already is (so gradcheck runs in double)."""
    dtype = torch.float32
    for t in tensors:
        if t is not None and t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def check_tensor(fn: str, name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_positive(fn: str, name: str, value: float | Tensor) -> None:
    if isinstance(value, Tensor):
        if not torch.isfinite(value).all() or (value <= 0).any():
            raise fail(fn, f"`{name}` must be finite and > 0, got {value.detach().cpu()}")
    elif not (isinstance(value, (int, float)) and value > 0 and value < float("inf")):
        raise fail(fn, f"`{name}` must be finite and > 0, got {value!r}")


def check_choice(fn: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise fail(fn, f"`{name}` must be one of {choices}, got {value!r}")


def check_same_shape(fn: str, names: tuple[str, str], a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise fail(
            fn,
            f"`{names[0]}` and `{names[1]}` must have the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)} (nothing is broadcast)",
        )


def check_finite(fn: str, name: str, x: Tensor, where: Tensor | None = None) -> None:
    """Raise if ``x`` holds NaN/inf at any position where ``where`` is True (default: all)."""
    bad = ~torch.isfinite(x)
    if where is not None:
        bad = bad & where
    if bad.any():
        idx = bad.nonzero()[0].tolist()
        raise fail(fn, f"`{name}` holds non-finite values (first at index {tuple(idx)})")


def as_bool_mask(fn: str, name: str, mask: Tensor, shape: torch.Size) -> Tensor:
    check_tensor(fn, name, mask)
    if mask.shape != shape:
        raise fail(fn, f"`{name}` must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if not ((mask == 0) | (mask == 1)).all():
        raise fail(fn, f"`{name}` must be boolean or hold only 0/1 values")
    return mask.bool()


def check_group(
    fn: str, shape: torch.Size, valid: Tensor | None, device: torch.device, *, min_group: int = 2
) -> Tensor:
    """Validate a ``[B, G]`` group layout; return a bool ``valid`` mask of that shape."""
    B, G = shape
    if B == 0:
        raise fail(fn, "the batch is empty (B = 0)")
    if G < min_group:
        raise fail(
            fn,
            f"groups need at least {min_group} candidates per prompt, got G = {G} "
            f"(leading shape {tuple(shape)}); a listwise loss has no signal in a group of one",
        )
    if valid is None:
        return torch.ones(tuple(shape), dtype=torch.bool, device=device)
    v = as_bool_mask(fn, "valid", valid, shape)
    empty = ~v.any(-1)
    if empty.any():
        raise fail(fn, f"`valid` leaves prompt b={int(empty.nonzero()[0])} with no candidate")
    return v


def prepare_group(
    fn: str,
    logps: Tensor,
    ref_logps: Tensor,
    mask: Tensor | None,
    valid: Tensor | None,
    *,
    min_group: int = 2,
    seq_reduction: str = "sum",
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
    """Check inputs and apply the early reduction ``[B, G, T] → [B, G]``.

    Sequence-level ``[B, G]`` inputs pass through. Positions outside ``mask`` (and
    candidates outside ``valid``) may hold anything, padding or -inf: they are never read.
    Token-level inputs (bfloat16 included) are reduced in the compute dtype, float32 or
    wider, and the log-ratio is summed *token by token*, ``Σ_t (logps_t − ref_t)``: the
    difference of two sums of ~10⁴ log-probs in float32 would lose about 10⁻³ to
    cancellation, the sum of differences does not. ``seq_reduction="mean"`` divides each
    sequence's sums by its token count (a length-normalised score; sequence-level inputs
    are taken as they are).

    Returns:
        ``(seq, ref_seq, valid, mask, delta)``: sequence log-probs ``[B, G]`` in the
        compute dtype, the detached reference scores ``[B, G]``, the bool ``valid`` mask
        ``[B, G]``, the bool token mask ``[B, G, T]`` (None for sequence-level inputs) and
        the log-ratio ``delta = seq − ref_seq`` ``[B, G]`` summed token by token.
    """
    check_tensor(fn, "logps", logps)
    check_tensor(fn, "ref_logps", ref_logps)
    check_same_shape(fn, ("logps", "ref_logps"), logps, ref_logps)
    if logps.dim() not in (2, 3):
        raise fail(fn, f"`logps` must be [B, G] or [B, G, T], got shape {tuple(logps.shape)}")
    valid_b = check_group(fn, logps.shape[:2], valid, logps.device, min_group=min_group)
    dtype = compute_dtype(logps, ref_logps)
    zero = torch.zeros((), dtype=dtype, device=logps.device)
    if logps.dim() == 2:
        if mask is not None:
            raise fail(
                fn,
                "`mask` is only for token-level [B, G, T] inputs; got sequence-level "
                f"logps of shape {tuple(logps.shape)}",
            )
        check_finite(fn, "logps", logps, valid_b)
        check_finite(fn, "ref_logps", ref_logps, valid_b)
        seq = torch.where(valid_b, logps.to(dtype), zero)
        ref_seq = torch.where(valid_b, ref_logps.detach().to(dtype), zero)
        return seq, ref_seq, valid_b, None, seq - ref_seq
    if mask is None:
        mask_b = torch.ones_like(logps, dtype=torch.bool)
    else:
        mask_b = as_bool_mask(fn, "mask", mask, logps.shape)
    empty = (mask_b.sum(-1) == 0) & valid_b  # (B, G)
    if empty.any():
        b, g = empty.nonzero()[0].tolist()
        raise fail(
            fn,
            f"`mask` empties the sequence of candidate (b={b}, g={g}); every counted "
            "candidate needs at least one token (mark missing candidates with `valid`)",
        )
    live = mask_b & valid_b[..., None]  # (B, G, T)
    check_finite(fn, "logps", logps, live)
    check_finite(fn, "ref_logps", ref_logps, live)
    lp, ref = logps.to(dtype), ref_logps.detach().to(dtype)
    seq = torch.where(live, lp, zero).sum(-1)  # (B, G)
    ref_seq = torch.where(live, ref, zero).sum(-1)  # (B, G)
    delta = torch.where(live, lp - ref, zero).sum(-1)  # (B, G), no cancellation
    if seq_reduction == "mean":
        n = mask_b.sum(-1).clamp_min(1).to(dtype)  # (B, G)
        seq, ref_seq, delta = seq / n, ref_seq / n, delta / n
    return seq, ref_seq, valid_b, mask_b, delta


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    if dim is None:
        return torch.where(mask, x, zero).sum() / mask.sum().clamp_min(1)
    return torch.where(mask, x, zero).sum(dim) / mask.sum(dim).clamp_min(1)


def masked_log_softmax(u: Tensor, valid: Tensor) -> Tensor:
    """log softmax over the last axis restricted to ``valid``; 0 (not -inf) outside it."""
    neg_inf = torch.full((), float("-inf"), dtype=u.dtype, device=u.device)
    logp = torch.log_softmax(torch.where(valid, u, neg_inf), dim=-1)
    return torch.where(valid, logp, torch.zeros((), dtype=u.dtype, device=u.device))


def entropy_from_logp(logp: Tensor, valid: Tensor) -> Tensor:
    """Entropy ``-Σ p log p`` over the last axis, ``[B, G] → [B]``."""
    p = logp.exp()
    return -torch.where(valid, p * logp, torch.zeros((), dtype=logp.dtype, device=logp.device)).sum(
        -1
    )


def normalized_entropy(logp: Tensor, valid: Tensor) -> Tensor:
    """Entropy divided by ``log |valid|`` (in [0, 1]); 0 for single-candidate rows. ``[B]``."""
    n = valid.sum(-1).to(logp.dtype)
    h = entropy_from_logp(logp, valid)
    return torch.where(n > 1, h / n.clamp_min(2).log(), torch.zeros_like(h))


def delta_metrics(delta: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """Mean and max of |Δ| over counted candidates (detached)."""
    a = delta.detach().abs()
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    return {
        "delta_abs_mean": masked_mean(a, valid),
        "delta_abs_max": torch.where(valid, a, zero).max(),
    }
