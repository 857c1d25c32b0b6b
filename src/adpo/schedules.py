"""Schedules: the guarded adaptive temperature of ADPO and its per-prompt variant.

These are small stateful objects driven by numbers the trainer already logs; they hold
no model and compute no loss. Shapes: ``B`` prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["EntropyRewardTemperature", "GuardedTemperature"]


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
    * ``H̄_t`` is whatever normalised entropy the caller passes, in [0, 1]. Trainers pass
      the anchored entropy of the previous update (``anchored_entropy_norm``): with an
      on-policy anchor the anchored distribution is uniform at the first mini-batch of
      every round, so this step's value would always read "unconfident".

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
