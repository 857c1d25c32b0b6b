"""Temperature schedules of ADPO and the confidence they read.

Small objects driven by numbers the trainer already has; they hold no model and compute
no loss. Shapes: ``B`` prompts, ``G`` candidates per prompt, ``T`` tokens.

* :func:`candidate_entropy` — the normalised entropy ``H̄`` of the *policy* over a group's
  candidates, the confidence both schedules read.
* :class:`GuardedTemperature` — one τ per update (ADPO paper §5.1, eq. 12).
* :class:`EntropyRewardTemperature` — one τ per prompt (the authors' earlier trainer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "EntropyRewardTemperature",
    "GuardedTemperature",
    "candidate_entropy",
]


def candidate_entropy(
    logps: Tensor,
    mask: Tensor | None = None,
    valid: Tensor | None = None,
    *,
    length_norm: Literal["mean", "sum"] = "mean",
) -> Tensor:
    """Normalised entropy ``H̄ ∈ [0, 1]`` of the policy over each group's candidates.

    The policy's distribution over the ``G`` candidates of a prompt is
    ``softmax_i(s_i)`` with ``s_i`` the candidate's log-prob: its token mean
    (``length_norm="mean"``, default) or its sum (``"sum"``, the sequence probability).
    Sums make long candidates look improbable whatever the policy's confidence, so a group
    of completions of different lengths reads as "confident" in whichever is shortest;
    token means compare per-token confidence and are what we default to. Divided by
    ``log(#valid)``; a group with fewer than two valid candidates reads 0 (nothing to be
    unsure about).

    Args:
        logps: ``[B, G]`` sequence log-probs, or ``[B, G, T]`` token log-probs with ``mask``.
        mask: ``[B, G, T]``, True for completion tokens (token-level input only).
        valid: ``[B, G]``, True for real candidates (default: all).
        length_norm: ``"mean"`` or ``"sum"`` of the token log-probs (token-level input).

    Returns:
        ``[B]`` detached, float32 or wider.
    """
    if length_norm not in ("mean", "sum"):
        raise ValueError(
            f"candidate_entropy: `length_norm` must be 'mean' or 'sum', got {length_norm!r}"
        )
    x = logps.detach()
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if x.dim() == 3:
        if mask is None or mask.shape != x.shape:
            raise ValueError(
                "candidate_entropy: token-level `logps` [B, G, T] need a `mask` of the same "
                f"shape, got {None if mask is None else tuple(mask.shape)} for {tuple(x.shape)}"
            )
        m = mask.to(x.dtype)
        s = (x * m).sum(-1)  # (B, G)
        if length_norm == "mean":
            s = s / m.sum(-1).clamp_min(1.0)
    elif x.dim() == 2:
        s = x
    else:
        raise ValueError(
            f"candidate_entropy: `logps` must be [B, G] or [B, G, T], got {tuple(x.shape)}"
        )
    v = torch.ones_like(s, dtype=torch.bool) if valid is None else valid.bool()
    if v.shape != s.shape:
        raise ValueError(
            f"candidate_entropy: `valid` must be {tuple(s.shape)}, got {tuple(v.shape)}"
        )
    logp = torch.log_softmax(s.masked_fill(~v, float("-inf")), dim=-1)  # (B, G)
    p = logp.exp()
    h = -(p * logp.masked_fill(~v, 0.0)).sum(-1)  # (B,)
    n = v.sum(-1)
    return torch.where(n > 1, h / n.clamp_min(2).to(h.dtype).log(), torch.zeros_like(h)).clamp(0, 1)


@dataclass
class GuardedTemperature:
    """Reward + confidence guarded anchoring temperature (ADPO paper §5.1, eq. 12).

    ::

        c_t = 1 − H̄_t                                  confidence (H̄ normalised entropy)
        p_t = max(0, tanh((R̄_t − b_t) / σ_R))         gated improvement over an EMA baseline
        τ_t = τ_max − (τ_max − τ_min) · c_t · p_t

    τ is only lowered toward τ_min when the policy is both confident and improving;
    "confident but wrong" keeps τ at τ_max. A note on reading it: the gradient of the
    anchored loss scales as 1/τ, so a lower τ takes larger first-order steps (§5.1's
    "relaxed constraint", aggressive exploitation), while the fixed point of one anchor,
    ``Δ* = τ·log q + c`` (app. C), moves less far (app. A.3's "tight" region). With an
    on-policy anchor refreshed every round the first effect dominates. We implement eq. 12
    as written.

    Choices the paper leaves open, made here:

    * ``b_t`` is the EMA of past batch rewards *before* this step's reward is folded in,
      ``b_{t+1} = m·b_t + (1−m)·R̄_t``; on the first call it starts at ``R̄_0`` (so
      ``p_0 = 0`` and the first τ is τ_max, the conservative end).
    * ``H̄_t`` is the normalised entropy of the *policy* over the candidate set, as §5.1
      says — :func:`candidate_entropy`, averaged over the batch's groups — never the
      anchored distribution ``softmax(u)``: with an on-policy anchor that is uniform at
      the start of every round, ``c_t`` would be 0 and τ would never leave τ_max. The
      online trainers pass it from the current policy at each optimizer step.

    Attributes:
        tau_min, tau_max: range of τ (OPO paper runs: [0.2, 1.5]).
        sigma_r: reward scale σ_R of the improvement gate.
        momentum: EMA momentum ``m`` of the reward baseline.
    """

    tau_min: float = 0.2
    tau_max: float = 1.5
    sigma_r: float = 0.1
    momentum: float = 0.9
    baseline: float | None = field(default=None)
    tau: float = field(default=float("nan"), init=False)

    def __post_init__(self) -> None:
        if not 0 < self.tau_min <= self.tau_max:
            raise ValueError(
                f"GuardedTemperature: need 0 < tau_min <= tau_max, got {self.tau_min}, {self.tau_max}"
            )
        if not self.sigma_r > 0:
            raise ValueError(f"GuardedTemperature: `sigma_r` must be > 0, got {self.sigma_r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(
                f"GuardedTemperature: `momentum` must lie in [0, 1), got {self.momentum}"
            )
        self.tau = self.tau_max

    def step(self, entropy_norm: float, reward_mean: float) -> float:
        """Return τ_t for this update from ``H̄_t`` (in [0, 1]) and the batch mean reward."""
        if not (math.isfinite(entropy_norm) and -1e-6 <= entropy_norm <= 1 + 1e-6):
            raise ValueError(
                f"GuardedTemperature: `entropy_norm` must lie in [0, 1], got {entropy_norm}"
            )
        if not math.isfinite(reward_mean):
            raise ValueError(f"GuardedTemperature: `reward_mean` must be finite, got {reward_mean}")
        if self.baseline is None:
            self.baseline = reward_mean
        c = 1.0 - min(max(entropy_norm, 0.0), 1.0)
        p = max(0.0, math.tanh((reward_mean - self.baseline) / self.sigma_r))
        self.tau = self.tau_max - (self.tau_max - self.tau_min) * c * p
        self.baseline = self.momentum * self.baseline + (1 - self.momentum) * reward_mean
        self.last_confidence, self.last_improvement = c, p
        return self.tau

    def state_dict(self) -> dict[str, float | None]:
        return {"baseline": self.baseline, "tau": self.tau}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.baseline = state["baseline"]
        self.tau = float(state["tau"])  # type: ignore[arg-type]


@dataclass
class EntropyRewardTemperature:
    """Per-prompt temperature of the authors' earlier public trainer (DESIGN.md)::

        τ_b = clip(τ_base · (1 + a·H̄_b + b·(1 − H̄_b)·(1 − R̄_b)), τ_min, τ_max)

    An uncertainty term (``a·H̄``: uncertain groups get a larger τ) plus a penalty for
    confident-but-wrong groups (``b·(1−H̄)(1−R̄)``: low entropy and low reward also raise
    τ). ``R̄_b`` is the group's mean reward, expected in [0, 1] (accuracy-style rewards).
    Pass the result as ``tau=`` (a ``[B]`` tensor) to ``adpo_loss``. The ADPO LLM runs use ``τ_base = 0.8, a = 0.2, b = 0.5``.
    """

    tau_base: float = 0.8
    a: float = 0.2
    b: float = 0.5
    tau_min: float = 0.2
    tau_max: float = 1.5

    def __post_init__(self) -> None:
        if not (self.tau_base > 0 and 0 < self.tau_min <= self.tau_max):
            raise ValueError(
                "EntropyRewardTemperature: need tau_base > 0 and 0 < tau_min <= tau_max, got "
                f"{self.tau_base}, {self.tau_min}, {self.tau_max}"
            )

    def __call__(self, entropy_norm: Tensor, reward_mean: Tensor) -> Tensor:
        """``[B]`` normalised entropies and ``[B]`` group mean rewards → ``[B]`` temperatures."""
        if entropy_norm.shape != reward_mean.shape or entropy_norm.dim() != 1:
            raise ValueError(
                "EntropyRewardTemperature: `entropy_norm` and `reward_mean` must both be [B], got "
                f"{tuple(entropy_norm.shape)} and {tuple(reward_mean.shape)}"
            )
        h = entropy_norm.detach().clamp(0, 1)
        r = reward_mean.detach()
        tau = self.tau_base * (1 + self.a * h + self.b * (1 - h) * (1 - r))
        return tau.clamp(self.tau_min, self.tau_max)
