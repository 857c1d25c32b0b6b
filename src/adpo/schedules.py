"""Temperature schedules of ADPO and the confidence they read.

Small objects driven by numbers the trainer already has; they hold no model and compute
no loss. Shapes: ``B`` prompts, ``T`` tokens.

* :func:`policy_entropy_norm` — the normalised entropy ``H̄ ∈ [0, 1]`` of the policy that
  both schedules read: its mean token entropy relative to its first reading.
* :class:`GuardedTemperature` — one τ per update (ADPO paper §5.1, eq. 12).
* :class:`EntropyRewardTemperature` — one τ per prompt (the authors' earlier trainer, the
  ADPO paper's LLM runs, §6.3).

How ``H̄`` is read, and why. §5.1 calls it "the normalized entropy of the policy over the
candidate set" and asks it to read ≈ 1 for a policy that has not sharpened and ≈ 0 for
one that "has converged to a mode". We read it as the policy's **mean token entropy on its
own samples, divided by its first reading** (the policy before any update)::

    H̄_t = clip(H_t / H_0, 0, 1),   H_t = Σ_{rows, tokens} entropy / Σ mask

(the per-token entropies TRL computes in every forward pass anyway, of the distribution
generation samples from). It reads 1 at the start and for a policy that never changes,
falls toward 0 as the policy sharpens and sits near 0 once it has collapsed, and it is a
per-token mean, so 3-token and 500-token completions read alike. The alternatives we
tried and dropped, with what they read on a tiny model (``docs/guides/targets-anchors-
temperatures.md`` has the numbers):

* a softmax over the ``G`` candidates' token-*mean* log-probs: those all approach 0 as
  the policy sharpens, so ``H̄ ≈ 1`` for every policy (τ moved 1.5 → 1.27 at best);
* the same over *summed* log-probs: long completions differ by many nats whatever the
  policy, so ``H̄ ≈ 0`` for any policy (the guard follows reward alone);
* both invert at collapse: the ``G`` candidates become identical, the softmax over them
  uniform, ``H̄ = 1``, and τ returns to τ_max exactly when the policy is most confident;
* entropy divided by ``log V``: a pretrained model's token entropy is a small fraction of
  ``log V``, so it reads "confident" before any training.

The mean token negative log-likelihood of the sampled tokens estimates the same ``H_t``
(its expectation under the sampling policy) with more noise; the exact per-position
entropy is free where the trainer has logits, so we use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

__all__ = [
    "EntropyRewardTemperature",
    "GuardedTemperature",
    "policy_entropy_norm",
]


def policy_entropy_norm(entropy: Tensor | float, reference: float) -> Tensor | float:
    """``H̄ = clip(entropy / reference, 0, 1)``: the policy's entropy relative to a first reading.

    Args:
        entropy: mean token entropy of the policy on its samples, a float or a ``[B]``
            tensor (one per group, for the per-prompt schedule).
        reference: the same quantity for the initial policy (its first reading), ``≥ 0``.
            A reference of 0 (an initial policy that is already deterministic) reads 0.

    Returns:
        ``H̄`` in [0, 1], of the type of ``entropy`` (detached).
    """
    if not (math.isfinite(reference) and reference >= 0):
        raise ValueError(
            f"policy_entropy_norm: `reference` must be finite and >= 0, got {reference!r}"
        )
    if isinstance(entropy, Tensor):
        if reference == 0:
            return entropy.detach().float() * 0.0
        return (entropy.detach().float() / reference).clamp(0.0, 1.0)
    if not math.isfinite(entropy):
        raise ValueError(f"policy_entropy_norm: `entropy` must be finite, got {entropy!r}")
    return 0.0 if reference == 0 else min(max(entropy / reference, 0.0), 1.0)


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
    * ``H̄_t`` is the normalised entropy of the *policy* (:func:`policy_entropy_norm`),
      never of the anchored distribution ``softmax(u)``: with an on-policy anchor that is
      uniform at the start of every round, ``c_t`` would be 0 and τ would never leave
      τ_max.
    * The online trainers step the schedule once per optimizer step, at its start, from
      the *previous* optimizer step's whole batch (every micro-batch, every process):
      ``R̄`` its mean reward over scored completions, ``H̄`` its mean token entropy. Both
      are exact over the batch and cost no extra forward pass; the price is a lag of one
      update, which a schedule meant to follow a trend over many updates does not feel.
      A batch with no scored completion leaves τ and ``b`` as they are.

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
    τ). ``R̄_b`` is how right the group is, in [0, 1]: the online trainers pass the group's
    *accuracy* (the fraction of its scored completions whose ``accuracy_reward`` reaches
    ``accuracy_threshold``), which for a 0/1 correctness reward, as in the paper, is its
    mean reward, and which stays in [0, 1] whatever the scale of the other rewards. ``H̄_b``
    is :func:`policy_entropy_norm` of the group's mean token entropy. Values outside [0, 1]
    are refused. Pass the result as ``tau=`` (a ``[B]`` tensor) to ``adpo_loss``. The ADPO
    paper's LLM runs (§6.3: "τ_base = 0.8, adaptive temperature (α = 0.2, β = 0.5)") use
    ``τ_base = 0.8, a = 0.2, b = 0.5``: τ runs from 0.8·1.2 = 0.96 for an unsharpened
    policy to 0.8 for a confident, right group and 0.8·1.5 = 1.2 for a confident, wrong one.
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
        h = entropy_norm.detach()
        r = reward_mean.detach()
        for name, x in (("entropy_norm", h), ("reward_mean", r)):
            if not bool(((x >= 0) & (x <= 1)).all()):
                raise ValueError(
                    f"EntropyRewardTemperature: `{name}` must lie in [0, 1], got values from "
                    f"{float(x.min()):.4g} to {float(x.max()):.4g}"
                )
        tau = self.tau_base * (1 + self.a * h + self.b * (1 - h) * (1 - r))
        return tau.clamp(self.tau_min, self.tau_max)
