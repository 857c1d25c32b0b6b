"""ADPO and OPO on TRL: ``ADPOTrainer``/``OPOTrainer`` subclass TRL's ``GRPOTrainer``.

Users keep everything TRL gives a GRPO run — generation (transformers or vLLM), the
reward-function interface, chat templates, PEFT, accelerate/DeepSpeed, logging,
checkpoints — and only the policy loss changes: the micro-batch is reshaped to
``[B, G, T]`` and handed to :func:`adpo.losses.adpo_loss` or :func:`adpo.losses.opo_loss`.
The math lives in ``adpo.losses``; this module moves tensors.

Shape glossary:

    N  completions on this process in one micro-batch (B·G), or in one generation round
    B  prompts (groups) in a micro-batch
    G  completions per prompt (``num_generations``)
    T  completion tokens (padded)
    F  reward functions
    P  processes

What changes relative to ``GRPOTrainer``, and why:

* **Exact groups at any micro-batch size.** A listwise loss couples a prompt's ``G``
  completions, but only through numbers: its gradient is ``Σ_i w_i ∇θ Δ_i`` with
  ``w_i = ∂L/∂Δ_i`` a function of the whole group's scores. Every row carries a global
  ``group_index`` (TRL's ``RepeatSampler`` lays prompts out as runs of ``G``, each process a
  contiguous slice, so a group may straddle two processes). At the start of each optimizer
  step (``_begin_step``) the step's groups and scored completions are counted over all
  its micro-batches and processes, and the loss is their mean however the step is cut.

  - ``per_device_train_batch_size`` a multiple of ``G``: the round is shuffled and split
    *by group* (:func:`shuffle_groups`), every micro-batch holds whole groups (checked) and
    computes the loss directly, as before.
  - Otherwise a micro-batch holds part of a group. OPO's terms are per completion once the
    escort weights ``ω̂`` are known, and those come from the rewards: they are computed over
    the whole round at generation (:func:`adpo.losses.opo_per_candidate`). ADPO's weights
    ``w`` come from :func:`adpo.losses.adpo_score_weights` over the step's whole groups
    (gathered as numbers from every process): right after generation with the on-policy
    anchor the policy *is* the anchor, ``Δ ≡ 0``, and ``w`` follows from the rewards
    alone; otherwise (a later step of the round, ``num_iterations`` > 1, a fixed/self/EMA
    anchor, or the per-prompt entropy-reward τ, which reads each group's entropy) one
    no-grad forward over the step's rows gives the current scores first. Each micro-batch
    then back-propagates ``Σ_i w_i Δ_i``; the update equals the whole-group update to float
    tolerance (tests under plain SGD, one and two processes). A round that feeds several
    optimizer steps must give each step whole groups on each process
    (``per_device_train_batch_size × gradient_accumulation_steps`` a multiple of ``G``).
* **Anchors** (``π_ref`` in ``Δ = log πθ − log π_ref``), computed once per generation round
  and stored with the round's completions:

  - ``"on_policy"`` (default): π_ref ← π_old, the policy that generated the round (OPO
    §8 "mini-batch anchoring"). Every mini-batch of the round shares it, however many
    optimizer steps the round feeds (``steps_per_generation``, ``num_iterations``). It
    costs no model copy: the generating policy's log-probs are taken before the first
    update of the round (TRL's ``old_per_token_logps``), or, when the round is a single
    optimizer step, the detached current log-probs, which are the same numbers.
  - ``"fixed"``: the initial policy (or ``ref_model`` when given; with PEFT, the model
    with a frozen copy of its adapter as it was at construction, TRL's ``"ref"`` adapter:
    a trained adapter is part of the initial policy).
  - ``"ema"``: an exponential moving average of the policy's weights, folded once per
    round before generation (:class:`adpo.anchors.EMAAnchor`).
* **Rewards** are the raw weighted reward sums (ADPO's targets and OPO's escort weights
  standardise within the group themselves); a completion without a reward (every
  reward function returned None, NaN or raised — see :func:`adpo.rewards.guard_reward`)
  leaves its group (``valid=False``) instead of counting as 0.
* **Logged every step** (besides TRL's reward, reward_std, frac_reward_zero_std,
  completions/mean_length, entropy, grad_norm): ``accuracy``, ``anchored_entropy``,
  ``anchored_entropy_norm``, ``tau``, ``zero_signal_frac``, ``kl_to_init``, the loss's own
  metrics (``delta_abs_mean``, ``omega_abs_max``, ``chi2`` …) and ``rewards/<f>/failures``.
* **Checkpoints** also store the round buffer, the micro-step counter, the EMA anchor
  and the temperature schedule per process, so a resumed run continues exactly, even
  from the middle of a generation round.

Every private TRL name this module uses goes through :mod:`adpo._compat.trl`, which lists
them and checks them against the installed TRL (tested with TRL 1.16).
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from trl import GRPOConfig, GRPOTrainer

from adpo._compat import trl as seam
from adpo.anchors import EMAAnchor, FixedAnchor, canonical_anchor
from adpo.losses import (
    LossOutput,
    adpo_loss,
    adpo_score_weights,
    escort_weights,
    group_advantages,
    opo_loss,
    opo_per_candidate,
)
from adpo.rewards.guard import guard_reward_funcs
from adpo.schedules import EntropyRewardTemperature, GuardedTemperature, policy_entropy_norm
from adpo.trainers import _model_card
from adpo.trainers._model import disable_dropout, has_dropout
from adpo.trainers.grpo_fields import refusal_message, refused_fields

__all__ = [
    "ADPOConfig",
    "ADPOTrainer",
    "AnchoredGroupConfig",
    "OPOConfig",
    "OPOTrainer",
    "aggregate_rewards",
    "shuffle_groups",
    "vllm_sequence_mask",
]

TESTED_TRL = seam.TESTED_TRL  # kept: it was importable from here
_ANCHORS = ("on_policy", "fixed", "self", "ema")  # online: every kind but "precomputed"
_TAU_SCHEDULES = ("entropy_reward", "guarded", "constant")
_STATE_FILE = "adpo_trainer_state_rank{rank}.pt"


# --------------------------------------------------------------------------- configs


@dataclass
class AnchoredGroupConfig(GRPOConfig):
    r"""Fields shared by :class:`ADPOConfig` and :class:`OPOConfig` (on top of ``GRPOConfig``).

    ``GRPOConfig`` fields keep their meaning for generation, batching, rewards, logging and
    checkpoints. The GRPO-loss fields (``beta``, ``loss_type``, ``epsilon``,
    ``epsilon_high``, ``delta``, ``importance_sampling_level``, ``scale_rewards``, the
    entropy bonuses, …) are refused unless left at TRL's defaults: the loss comes from
    ``adpo.losses`` and the anchor is the regulariser (``anchor="fixed"`` anchors to the
    initial model). :mod:`adpo.trainers.grpo_fields` says, field by field, what is kept,
    adapted or refused, and why.

    ``multi_objective_aggregation="normalize_then_sum"`` standardises each reward function
    within its group (TRL's ``(r − mean)/(std + 1e-4)``) before the weighted sum; the
    loss's targets then standardise that sum within the group, so TRL's second,
    batch-level standardisation has no counterpart. The guarded temperature's reward
    ``R̄_t`` stays the raw weighted sum either way (a standardised reward has mean 0).

    Evaluation with ``num_generations_eval=1`` logs rewards, accuracy and entropy; its
    loss is NaN (a listwise loss needs two candidates per prompt).

    With vLLM generation (``use_vllm=True``) TRL's mismatch correction is on by default
    (``vllm_importance_sampling_correction=True``, ``vllm_importance_sampling_mode=
    "sequence_mask"``). The anchor here is the trainer's own recomputed π_old, never vLLM's
    log-probs, so the mismatch only makes the samples slightly off-policy; what we apply is
    the sequence-level *mask*, as verl's sequence-level rejection sampling does: a
    completion whose ratio ``exp(Σ_t log π_old − log π_vLLM)`` leaves
    ``[vllm_importance_sampling_clip_min, vllm_importance_sampling_clip_max]`` leaves its
    group (logged as ``sampling/is_masked_frac``). In-bound ratios are not used as weights:
    a listwise loss has no per-candidate term to weight without reweighting the group's
    target. The token-level and truncated modes are refused.

    Parameters:
        anchor (`str`, defaults to `"on_policy"`):
            One name of the library's anchor vocabulary (:data:`adpo.anchors.ANCHOR_KINDS`):
            ``"on_policy"`` (π_ref ← π_old, shared by every mini-batch of a generation
            round; no model copy), ``"fixed"`` (the trainer's ``ref_model``; without one,
            the initial model), ``"self"`` (a frozen snapshot of the initial model) or
            ``"ema"`` (moving average of the policy's weights, updated once per round).
            ``"fixed"``, ``"self"`` and ``"ema"`` hold one frozen model copy (under PEFT,
            ``fixed``/``self`` hold a frozen copy of the adapter instead). ``"precomputed"`` does not apply
            (rounds are generated fresh); ``"dynamic"`` is a deprecated ``"on_policy"``.
        anchor_ema_decay (`float`, defaults to `0.99`):
            Decay ``d`` of the EMA anchor, ``θ_a ← d·θ_a + (1−d)·θ`` per round.
        log_kl_to_init (`bool`, defaults to `False`):
            Log ``kl_to_init``, the per-token k3 estimate of KL(πθ ‖ π_init) on the
            round's completions. It costs one extra forward pass per round and, unless
            the anchor is ``"fixed"``, a frozen copy of the initial model (of its adapter
            under PEFT): off by default, so a default run holds what
            ``GRPOTrainer`` with ``beta=0`` holds (no reference model). The ``"fixed"``
            and ``"ema"`` anchors need their own model copy; that is their cost.
        accuracy_reward (`str` or `None`, defaults to `None`):
            Name of the reward function whose value defines ``accuracy`` (the fraction of
            completions with that reward ``>= accuracy_threshold``). `None`: the first.
        accuracy_threshold (`float`, defaults to `1.0`):
            See ``accuracy_reward``.
        guard_rewards (`bool`, defaults to `True`):
            Wrap callable reward functions in :func:`adpo.rewards.guard_reward`, so a
            sample whose reward raises, is NaN or times out gets no reward (counted and
            logged) instead of stopping the run, and leaves its group: a completion that
            *any* guarded function failed to score takes no part in the loss. A function
            that returns ``None`` on purpose (TRL's "does not apply to this sample", for
            multi-task rewards) abstains instead; a completion every function abstains on
            leaves its group too. Unguarded functions: a NaN counts as an abstention.
        resume_without_adpo_state (`bool`, defaults to `False`):
            Resuming needs the trainer state adpo saves beside each checkpoint (the round
            buffer, the EMA anchor, the temperature schedule, step counters). Without it a
            resumed run would silently restart the EMA anchor at the current weights and
            τ at its start value, so a checkpoint without that file is refused; `True`
            resumes anyway (with a warning), generating the next round afresh.
        seq_reduction (`str`, defaults to `"sum"`):
            A completion's score ``Δ``: its summed log-ratio ``log πθ(y) − log π_ref(y)``
            (``"sum"``, the papers' formulas) or the token mean (``"mean"``, a length-normalised
            score, the default of the ADPO authors' public code); see
            :func:`adpo.losses.adpo_loss`.
    """

    anchor: str = field(
        default="on_policy",
        metadata={
            "help": "Anchor π_ref: 'on_policy', 'fixed' or 'ema'.",
            "choices": list(_ANCHORS),
        },
    )
    anchor_ema_decay: float = field(
        default=0.99, metadata={"help": "Decay of the EMA anchor (per generation round)."}
    )
    log_kl_to_init: bool = field(
        default=False, metadata={"help": "Log the k3 estimate of KL(policy || initial model)."}
    )
    accuracy_reward: str | None = field(
        default=None,
        metadata={"help": "Reward function that defines `accuracy` (default: the first)."},
    )
    accuracy_threshold: float = field(
        default=1.0, metadata={"help": "A completion is correct when that reward >= this."}
    )
    guard_rewards: bool = field(
        default=True,
        metadata={"help": "A reward that raises, is NaN or times out removes the sample."},
    )
    resume_without_adpo_state: bool = field(
        default=False,
        metadata={"help": "Resume from a checkpoint that lacks adpo's trainer state."},
    )
    seq_reduction: str = field(
        default="sum",
        metadata={
            "help": "A completion's score: summed ('sum') or token-mean ('mean') log-ratio.",
            "choices": ["sum", "mean"],
        },
    )

    def __post_init__(self) -> None:
        name = type(self).__name__
        super().__post_init__()
        if self.seq_reduction not in ("sum", "mean"):
            raise ValueError(
                f"{name}: `seq_reduction` must be 'sum' or 'mean', got {self.seq_reduction!r}"
            )
        G, ga = self.num_generations, self.gradient_accumulation_steps
        if G and self.steps_per_generation > ga and (self.per_device_train_batch_size * ga) % G:
            raise ValueError(
                f"{name}: with several optimizer steps per generation round (steps_per_generation "
                f"{self.steps_per_generation} > gradient_accumulation_steps {ga}) each step must hold "
                "whole groups on every process, so per_device_train_batch_size × "
                f"gradient_accumulation_steps ({self.per_device_train_batch_size * ga}) must be a "
                f"multiple of num_generations ({G}). With one optimizer step per round "
                "(steps_per_generation = gradient_accumulation_steps, TRL's default) any "
                "per_device_train_batch_size works"
            )
        self.anchor = canonical_anchor(self.anchor, owner=f"{name}: `anchor`")
        if self.anchor not in _ANCHORS:
            raise ValueError(
                f"{name}: `anchor` must be one of {_ANCHORS}, got {self.anchor!r} (online rounds "
                "are generated afresh, so no reference log-probs come with the data)"
            )
        if not 0.0 <= self.anchor_ema_decay < 1.0:
            raise ValueError(
                f"{name}: `anchor_ema_decay` must lie in [0, 1), got {self.anchor_ema_decay!r}"
            )
        if self.do_eval and self.eval_strategy != "no":
            g_eval = self.num_generations_eval or self.num_generations
            if self.per_device_eval_batch_size % g_eval != 0:
                raise ValueError(
                    f"{name}: `per_device_eval_batch_size` ({self.per_device_eval_batch_size}) must be "
                    f"a multiple of the evaluation group size ({g_eval})"
                )
        bad = refused_fields(self)  # after GRPOConfig's own normalisation (scale_rewards=True)
        if bad:
            raise ValueError(refusal_message(name, bad))
        if (
            self.use_vllm
            and self.vllm_importance_sampling_correction
            and self.vllm_importance_sampling_mode != "sequence_mask"
        ):
            raise ValueError(
                f"{name}: `vllm_importance_sampling_mode` {self.vllm_importance_sampling_mode!r} "
                "is not supported: the anchored losses are per sequence and listwise, so a per-token "
                "ratio has nothing to weight and a truncated sequence weight would reweight the "
                "group's target. Use 'sequence_mask' (TRL's default: a completion whose sequence "
                "ratio π_old/π_vLLM leaves [vllm_importance_sampling_clip_min, "
                "vllm_importance_sampling_clip_max] leaves its group) or set "
                "`vllm_importance_sampling_correction=False`"
            )


@dataclass
class ADPOConfig(AnchoredGroupConfig):
    r"""Configuration of :class:`ADPOTrainer`: the anchored listwise loss (ADPO paper).

    Defaults are the paper's LLM settings (§6.3): Plackett–Luce target, G 8, lr 1.5e-5, and
    "τ_base = 0.8, adaptive temperature (α = 0.2, β = 0.5)", which is the entropy-reward
    schedule with ``tau=0.8``, ``tau_entropy_coef=0.2``, ``tau_wrong_coef=0.5``. The paper's
    §5.1 guarded schedule is ``tau_schedule="guarded"``; a constant τ is
    ``tau_schedule="constant"``.

    Both schedules read the policy's normalised entropy ``H̄``: its mean token entropy on its
    own samples relative to the first reading (:func:`adpo.schedules.policy_entropy_norm`),
    1 for a policy that has not sharpened, → 0 as it collapses onto a mode, for short and
    long completions alike.

    Parameters:
        target (`str`, defaults to `"plackett_luce"`):
            ``"plackett_luce"`` (ranking of the group by reward; the paper's LLM runs),
            ``"softmax"`` (Boltzmann target ``softmax(A/target_beta)``) or ``"top1"``.
        tau (`float`, defaults to `0.8`):
            Anchoring temperature τ in ``u = (log πθ − log π_ref)/τ``: the constant τ, and
            ``τ_base`` of the entropy-reward schedule (unused by the guarded schedule).
        target_beta (`float`, defaults to `0.5`):
            Softmax-target temperature β_r.
        ties (`str`, defaults to `"breslow"`):
            Plackett–Luce tie handling (``"breslow"`` or ``"efron"``).
        tau_schedule (`str`, defaults to `"entropy_reward"`):
            ``"entropy_reward"`` (:class:`adpo.schedules.EntropyRewardTemperature`, the
            paper's LLM runs: one τ per prompt,
            ``clip(tau·(1 + a·H̄ + b·(1 − H̄)·(1 − R̄)), tau_min, tau_max)`` with the group's
            ``H̄`` and its accuracy ``R̄``, the fraction of its scored completions whose
            ``accuracy_reward`` reaches ``accuracy_threshold``); ``"guarded"``
            (:class:`adpo.schedules.GuardedTemperature`, the paper's §5.1: one τ per
            optimizer step, ``tau_max − (tau_max − tau_min)·(1 − H̄)·p`` with ``p`` the
            gated improvement of the batch's mean reward over an EMA baseline, read from the
            previous optimizer step's whole batch); or ``"constant"`` (``tau``).
        tau_min (`float`, defaults to `0.2`):
            Guarded schedule: the lowest τ (also the lower clip of the entropy-reward
            schedule; the OPO paper's range is [0.2, 1.5]).
        tau_max (`float`, defaults to `1.5`):
            Guarded schedule: the highest τ, and the first (also the upper clip of the
            entropy-reward schedule).
        tau_sigma_r (`float`, defaults to `0.1`):
            Guarded schedule: the reward scale σ_R in ``tanh((R̄ − b)/σ_R)``, in reward
            units (0.1 suits rewards in [0, 1]).
        tau_momentum (`float`, defaults to `0.9`):
            Guarded schedule: momentum of the EMA reward baseline ``b``.
        tau_entropy_coef (`float`, defaults to `0.2`):
            ``a`` of the entropy-reward schedule (the paper's α = 0.2).
        tau_wrong_coef (`float`, defaults to `0.5`):
            ``b`` of the entropy-reward schedule (the paper's β = 0.5).
    """

    learning_rate: float = field(default=1.5e-5, metadata={"help": "AdamW learning rate."})
    num_generations: int | None = field(default=8, metadata={"help": "Completions per prompt (G)."})
    target: str = field(
        default="plackett_luce",
        metadata={
            "help": "ADPO target: 'plackett_luce', 'softmax' or 'top1'.",
            "choices": ["plackett_luce", "softmax", "top1"],
        },
    )
    tau: float = field(default=0.8, metadata={"help": "Anchoring temperature τ."})
    target_beta: float = field(default=0.5, metadata={"help": "Softmax-target temperature β_r."})
    ties: str = field(
        default="breslow",
        metadata={
            "help": "Plackett–Luce ties: 'breslow' or 'efron'.",
            "choices": ["breslow", "efron"],
        },
    )
    tau_schedule: str = field(
        default="entropy_reward",
        metadata={
            "help": "'entropy_reward' (per prompt; the paper's LLM runs), 'guarded' (per update, "
            "§5.1) or 'constant'.",
            "choices": list(_TAU_SCHEDULES),
        },
    )
    tau_min: float = field(default=0.2, metadata={"help": "Guarded schedule: lowest τ."})
    tau_max: float = field(default=1.5, metadata={"help": "Guarded schedule: highest τ."})
    tau_sigma_r: float = field(default=0.1, metadata={"help": "Guarded schedule: reward scale."})
    tau_momentum: float = field(
        default=0.9, metadata={"help": "Guarded schedule: momentum of the reward baseline."}
    )
    tau_entropy_coef: float = field(
        default=0.2, metadata={"help": "Entropy-reward schedule: uncertainty coefficient a."}
    )
    tau_wrong_coef: float = field(
        default=0.5,
        metadata={"help": "Entropy-reward schedule: confident-but-wrong coefficient b."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target not in ("plackett_luce", "softmax", "top1"):
            raise ValueError(
                f"ADPOConfig: `target` must be 'plackett_luce', 'softmax' or 'top1', got {self.target!r}"
            )
        if self.ties not in ("breslow", "efron"):
            raise ValueError(f"ADPOConfig: `ties` must be 'breslow' or 'efron', got {self.ties!r}")
        if self.tau_schedule not in _TAU_SCHEDULES:
            raise ValueError(
                f"ADPOConfig: `tau_schedule` must be one of {_TAU_SCHEDULES}, got {self.tau_schedule!r}"
            )
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"ADPOConfig: `tau` must be finite and > 0, got {self.tau!r}")
        if not (math.isfinite(self.target_beta) and self.target_beta > 0):
            raise ValueError(
                f"ADPOConfig: `target_beta` must be finite and > 0, got {self.target_beta!r}"
            )
        if self.tau_schedule == "guarded":
            GuardedTemperature(  # validates the schedule's fields
                tau_min=self.tau_min,
                tau_max=self.tau_max,
                sigma_r=self.tau_sigma_r,
                momentum=self.tau_momentum,
            )
        elif self.tau_schedule == "entropy_reward":
            _entropy_reward_schedule(self)  # validates the schedule's fields


@dataclass
class OPOConfig(AnchoredGroupConfig):
    r"""Configuration of :class:`OPOTrainer`: escort-weighted work plus a χ² penalty (OPO paper).

    Defaults are the paper's LLM settings (α 0.4, μ 1.0, G 6, lr 2e-6). The default
    micro-batch is one group (``per_device_train_batch_size=6``).

    Parameters:
        alpha (`float`, defaults to `0.4`): escort exponent α ∈ [0, 1].
        mu (`float`, defaults to `1.0`): stiffness μ > 0 of the χ² penalty.
        ratio (`str`, defaults to `"log"`): ``"log"`` (Δ, the paper's LLM surrogate) or
            ``"exact"`` (``v = e^Δ − 1``).
        weight_norm (`str`, defaults to `"group"`): normalisation of the escort weights,
            ``"group" | "center" | "batch" | "none"`` (see :func:`adpo.losses.escort_weights`).
        ref_correction (`str`, defaults to `"none"`): the ``sg(π_ref^{−(1−α)})`` factor,
            ``"none" | "token_mean" | "sequence"``.
    """

    learning_rate: float = field(default=2e-6, metadata={"help": "AdamW learning rate."})
    num_generations: int | None = field(default=6, metadata={"help": "Completions per prompt (G)."})
    per_device_train_batch_size: int = field(
        default=6,
        metadata={"help": "Completions per micro-batch (any size; one group by default)."},
    )
    alpha: float = field(default=0.4, metadata={"help": "Escort exponent α in [0, 1]."})
    mu: float = field(default=1.0, metadata={"help": "Stiffness μ of the χ² penalty."})
    ratio: str = field(
        default="log",
        metadata={"help": "'log' (Δ) or 'exact' (e^Δ − 1).", "choices": ["log", "exact"]},
    )
    weight_norm: str = field(
        default="group",
        metadata={
            "help": "Escort-weight normalisation.",
            "choices": ["group", "center", "batch", "none"],
        },
    )
    ref_correction: str = field(
        default="none",
        metadata={
            "help": "Reference correction of the escort weight.",
            "choices": ["none", "token_mean", "sequence"],
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"OPOConfig: `alpha` must lie in [0, 1], got {self.alpha!r}")
        if not (math.isfinite(self.mu) and self.mu > 0):
            raise ValueError(f"OPOConfig: `mu` must be finite and > 0, got {self.mu!r}")
        for fname, choices in (
            ("ratio", ("log", "exact")),
            ("weight_norm", ("group", "center", "batch", "none")),
            ("ref_correction", ("none", "token_mean", "sequence")),
        ):
            if getattr(self, fname) not in choices:
                raise ValueError(
                    f"OPOConfig: `{fname}` must be one of {choices}, got {getattr(self, fname)!r}"
                )


# --------------------------------------------------------------------------- helpers


def _entropy_reward_schedule(a: ADPOConfig) -> EntropyRewardTemperature:
    return EntropyRewardTemperature(
        tau_base=a.tau,
        a=a.tau_entropy_coef,
        b=a.tau_wrong_coef,
        tau_min=a.tau_min,
        tau_max=a.tau_max,
    )


def shuffle_groups(
    batch: dict[str, Any], group_size: int, *, generator: torch.Generator | None = None
) -> dict[str, Any]:
    """Shuffle a round's rows *by group*: whole runs of ``group_size`` rows move together.

    The replacement for TRL's ``shuffle_sequence_dict``, which permutes rows one by one.
    Tensors with a leading ``N`` axis and lists of length ``N`` are permuted; 0-d tensors
    and None pass through.

    Args:
        batch: ``{key: [N, …] tensor | list of N | 0-d tensor | None}``, rows of one group
            consecutive.
        group_size: ``G``; ``N`` must be a multiple of it.
        generator: optional RNG (default: the global torch RNG, which the Trainer saves in
            checkpoints).
    """
    n = len(next(v for v in batch.values() if v is not None and not _is_scalar(v)))
    if n % group_size:
        raise ValueError(
            f"shuffle_groups: {n} rows are not a whole number of groups of {group_size}"
        )
    perm_g = torch.randperm(n // group_size, generator=generator)  # (N/G,)
    perm = (perm_g[:, None] * group_size + torch.arange(group_size)[None, :]).reshape(-1)  # (N,)

    def permute(v: Any) -> Any:
        if v is None or _is_scalar(v):
            return v
        if isinstance(v, Tensor):
            return v[perm.to(v.device)]
        return [v[i] for i in perm.tolist()]

    return {k: permute(v) for k, v in batch.items()}


def aggregate_rewards(
    rewards_per_func: Tensor, weights: Tensor, num_generations: int, how: str
) -> Tensor:
    """The reward each completion gets in its group: ``(N, F)`` per function → ``(N,)``.

    ``"sum_then_normalize"`` (TRL's default): the weighted sum of the raw rewards.
    ``"normalize_then_sum"``: each function's rewards are first standardised within the
    group, ``(r − mean)/(std + 1e-4)`` with NaN-aware mean and Bessel-corrected std as in
    TRL (std 0 when G = 1), so a function with a large scale cannot drown the others.
    The anchored losses standardise the sum within the group themselves, which is why
    neither mode ends with TRL's advantage normalisation. NaN rewards count as 0 in the
    sum (rows where every function is NaN are masked by the caller).
    """
    if how == "normalize_then_sum":
        N, F = rewards_per_func.shape
        g = rewards_per_func.view(N // num_generations, num_generations, F)
        mean = torch.nanmean(g, dim=1, keepdim=True)
        if num_generations > 1:
            count = (~torch.isnan(g)).sum(1, keepdim=True)
            var = torch.nanmean((g - mean) ** 2, dim=1, keepdim=True)
            std = (var * count / (count - 1)).sqrt()
        else:
            std = torch.zeros_like(mean)
        rewards_per_func = ((g - mean) / (std + 1e-4)).view(N, F)
    elif how != "sum_then_normalize":
        raise ValueError(
            "`multi_objective_aggregation` must be 'sum_then_normalize' or "
            f"'normalize_then_sum', got {how!r}"
        )
    return (rewards_per_func * weights[None, :]).nansum(1)


def vllm_sequence_mask(
    old_logps: Tensor,
    sampling_logps: Tensor,
    mask: Tensor,
    *,
    clip_min: float | None,
    clip_max: float | None,
) -> Tensor:
    """Which completions TRL's ``sequence_mask`` correction drops: ``[N, T]`` → ``[N]`` bool.

    TRL's rule: the sequence ratio ``exp(Σ_t (log π_old − log π_vLLM))`` (masked tokens and
    NaN sampling log-probs count 0) outside ``[clip_min, clip_max]`` (``None``: unbounded)
    zeroes the completion's ratio. TRL stores only the zeroed ratio, and reading the mask
    back from ``ratio == 0`` also catches ratios that merely underflow ``exp`` — long
    completions under top-p/top-k sampling, whose vLLM log-probs are of the truncated
    distribution — where TRL's own bound does not apply. So the same rule is applied here
    in log space, where nothing underflows.
    """
    diff = torch.nan_to_num((old_logps.double() - sampling_logps.double()) * mask, nan=0.0)
    log_ratio = diff.sum(-1)  # (N,)
    out = torch.zeros_like(log_ratio, dtype=torch.bool)
    if clip_min is not None:
        out |= log_ratio < (math.log(clip_min) if clip_min > 0 else -math.inf)
    if clip_max is not None:
        out |= log_ratio > (math.log(clip_max) if clip_max > 0 else -math.inf)
    return out


def _zero3(accelerator: Any) -> bool:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and plugin.zero_stage == 3


def _snapshot_adapter(model: nn.Module) -> None:
    """PEFT: keep the active adapter as it is now under the name ``"ref"``, frozen.

    TRL's reference adapter (``reference_adapter`` switches to it): "the initial policy"
    of a PEFT model is the base model *with its adapter as it was at construction*, not
    the bare base model, which differs as soon as the adapter was trained before. A model
    that already has a ``"ref"`` adapter keeps it (the user's own reference).
    """
    if "ref" in model.peft_config:
        return
    name = model.active_adapter
    model.add_adapter("ref", model.peft_config[name])
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if f".{name}." in pname:
                model.get_parameter(pname.replace(f".{name}.", ".ref.")).copy_(param)
    model.set_adapter(name)  # train the user's adapter, not the copy
    for pname, param in model.named_parameters():
        if ".ref." in pname:
            param.requires_grad_(False)


def _valid_rows(batch: dict[str, Any]) -> Tensor:
    """``[N]`` completions that take part in the loss: scored and with at least one token."""
    return batch["reward_valid"].bool() & _token_mask(batch).bool().any(-1)


def _token_mask(batch: dict[str, Any]) -> Tensor:
    """``[N, T]`` the tokens that count: the completion's, without tool output."""
    mask = batch["completion_mask"]
    return mask if batch.get("tool_mask") is None else mask * batch["tool_mask"]


def _scores(logps: Tensor, anchor: Tensor, mask: Tensor, how: str) -> Tensor:
    """``[N]`` sequence scores ``Δ``: log-ratios summed token by token, or their token mean."""
    m = mask.to(torch.float32)
    delta = ((logps.float() - anchor.float()) * m).sum(-1)  # (N,)
    return delta / m.sum(-1).clamp_min(1.0) if how == "mean" else delta


def _is_scalar(v: Any) -> bool:
    return isinstance(v, Tensor) and v.ndim == 0


def _masked_sum_count(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(Σ x·mask, Σ mask)`` as float32 0-d tensors (reduced across processes later)."""
    m = mask.to(torch.float32)
    return (x.detach().float() * m).sum(), m.sum()


# --------------------------------------------------------------------------- trainers


class _AnchoredGroupTrainer(GRPOTrainer):
    """Shared machinery of :class:`ADPOTrainer` and :class:`OPOTrainer` (see module doc)."""

    _config_class: type[AnchoredGroupConfig] = AnchoredGroupConfig
    _metric_names: tuple[str, ...] = ()

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: AnchoredGroupConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        reward_processing_classes: Any = None,
        callbacks: Any = None,
        optimizers: tuple = (None, None),
        peft_config: Any = None,
        *,
        ref_model: nn.Module | None = None,
        **kwargs: Any,
    ):
        seam.check_trl()
        cls = type(self).__name__
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path or "model"
            args = self._config_class(output_dir=f"{str(name).split('/')[-1]}-{cls}")
        if not isinstance(args, self._config_class):
            raise TypeError(
                f"{cls}: `args` must be a {self._config_class.__name__}, got {type(args).__name__}"
            )
        if ref_model is not None and args.anchor == "self":
            raise ValueError(
                f"{cls}: anchor='self' is the initial policy; pass `ref_model` with anchor='fixed'"
            )
        if ref_model is not None and args.anchor != "fixed" and not args.log_kl_to_init:
            raise ValueError(
                f"{cls}: `ref_model` would be ignored: it is the anchor of anchor='fixed' and the "
                f"reference of log_kl_to_init=True, and this run has anchor={args.anchor!r} and "
                "log_kl_to_init=False. Drop `ref_model`, or set one of those"
            )
        if args.guard_rewards and reward_funcs is not None:
            reward_funcs = guard_reward_funcs(reward_funcs)
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
            **kwargs,
        )
        if args.anchor == "ema" and (self.is_fsdp_enabled or _zero3(self.accelerator)):
            raise ValueError(
                f"{cls}: anchor='ema' is not supported with FSDP or DeepSpeed ZeRO-3: its refresh "
                "averages the policy's weights into the anchor's, which those shard differently "
                "on each process. Use anchor='on_policy' or 'fixed', or ZeRO-1/2"
            )
        self._is_peft = seam.is_peft(self.model)
        if args.accuracy_reward is not None and args.accuracy_reward not in self.reward_func_names:
            raise ValueError(
                f"{cls}: `accuracy_reward` {args.accuracy_reward!r} is not one of the reward "
                f"functions {self.reward_func_names}"
            )
        self._accuracy_index = (
            0
            if args.accuracy_reward is None
            else self.reward_func_names.index(args.accuracy_reward)
        )

        # the initial policy: the fixed/self anchor and/or the KL-to-init reference
        self._init_anchor: FixedAnchor | None = None
        if ref_model is not None:
            self._init_anchor = FixedAnchor(self._prepare_frozen(ref_model, copy_=False))
        elif args.anchor in ("fixed", "self") or args.log_kl_to_init:
            if self._is_peft:  # the adapter as it is now, kept as TRL's "ref" adapter
                _snapshot_adapter(self.accelerator.unwrap_model(self.model))
            else:
                self._init_anchor = FixedAnchor(self._prepare_frozen(self.model))
        self._ema_anchor: EMAAnchor | None = None
        if args.anchor == "ema":
            self._ema_anchor = EMAAnchor(self.model, args.anchor_ema_decay)
            self._ema_anchor.module = self._prepare_frozen(self._ema_anchor.module, copy_=False)

        self._round = 0  # generation rounds so far (this process)
        self._round_rewards = seam.RewardHandOff()
        # micro-batches may hold part of a group: the loss back-propagates per-row weights
        self._split = args.per_device_train_batch_size % self.num_generations != 0
        if args.disable_dropout:  # TRL's helper misses rates handed to kernels (Qwen3's SDPA)
            disable_dropout(self.model)
        if self._split and has_dropout(self.model):
            warnings.warn(
                f"{cls}: micro-batches split groups and the model has active dropout: the "
                "pass that computes each group's weights and the training forward then see "
                "different dropout masks, so the update is not the whole-group update. Set "
                "`disable_dropout=True` for exact groups",
                stacklevel=2,
            )
        self._pending_step_log: tuple[Tensor, dict[str, Tensor]] | None = None
        self._per_prompt_tau: EntropyRewardTemperature | None = None
        self._tau_schedule = self._make_tau_schedule()
        self._entropy_ref: float | None = None  # H_0: mean token entropy of the first step
        self._step_stats: Tensor | None = None  # Σ entropy, Σ tokens, Σ reward, Σ scored

    # ---- models ---------------------------------------------------------------------

    def _prepare_frozen(self, module: nn.Module, *, copy_: bool = True) -> nn.Module:
        """A frozen, eval-mode (copy of a) model with TRL's fused LM head, prepared for the
        accelerator the way TRL prepares its ``ref_model`` (DeepSpeed, FSDP or plain)."""
        snap = copy.deepcopy(module) if copy_ else module
        seam.patch_frozen_forward(self, snap)
        snap.requires_grad_(False)
        snap.eval()
        if self.is_deepspeed_enabled:
            from trl.models import prepare_deepspeed

            return prepare_deepspeed(snap, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models import prepare_fsdp

            return prepare_fsdp(snap, self.accelerator)
        return self.accelerator.prepare_model(snap, evaluation_mode=True)

    def _token_logps(self, module: nn.Module, batch: dict[str, Any]) -> Tensor:
        """Per-token log-probs ``[N, T]`` of the round's completions under ``module`` (no grad)."""
        return self._no_grad_forward(module, batch, entropy=False)[0]

    def _no_grad_forward(
        self, module: nn.Module, batch: dict[str, Any], *, entropy: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Per-token log-probs and (optionally) entropies ``[N, T]`` under ``module``, no grad."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        training = self.model.training
        with torch.no_grad():
            logps, entropies, _ = seam.token_logps_and_entropies(
                self,
                module,
                input_ids,
                attention_mask,
                batch["completion_ids"].size(1),
                batch=batch,
                batch_size=self.args.per_device_train_batch_size
                if training
                else self.args.per_device_eval_batch_size,
                compute_entropy=entropy,
            )
        return logps.detach(), None if entropies is None else entropies.detach()

    def _init_logps(self, batch: dict[str, Any]) -> Tensor:
        """Log-probs under the initial policy (or ``ref_model``): ``[N, T]``."""
        if self._init_anchor is not None:
            return self._init_anchor.anchor_logps(self._token_logps, batch)
        model = self.accelerator.unwrap_model(self.model)  # PEFT: the "ref" adapter snapshot
        with seam.reference_adapter(model):
            return self._token_logps(self.model, batch)

    # ---- rounds ---------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )  # (N·P, F), gathered over processes
        # which rewards *failed* (raised, not finite, timed out) rather than abstained (None)
        failed = torch.zeros(len(prompts), len(self.reward_funcs), device=rewards_per_func.device)
        for j, func in enumerate(self.reward_funcs):
            flags = getattr(func, "last_failed", None)  # adpo.rewards.GuardedReward
            if flags is not None and len(flags) == len(prompts):
                failed[:, j] = torch.tensor(flags, dtype=failed.dtype)
        failed = self.accelerator.gather(failed).bool()  # (N·P, F)
        self._round_rewards.put((rewards_per_func, failed))
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        n = len(inputs)
        P, proc = self.accelerator.num_processes, self.accelerator.process_index
        # TRL's RepeatSampler lays prompts out as runs of G over the whole round, and each
        # process gets a contiguous slice: check the runs (across processes when a group
        # straddles two of them)
        prompts = [x.get("prompt") for x in inputs]
        if n % G:
            from accelerate.utils import gather_object

            prompts = gather_object(prompts)
        if len(prompts) % G:
            raise RuntimeError(
                f"{type(self).__name__}: this round has {len(prompts)} rows, not a whole number "
                f"of groups of {G}"
            )
        for g in range(len(prompts) // G):
            if any(prompts[g * G + j] != prompts[g * G] for j in range(1, G)):
                raise RuntimeError(
                    f"{type(self).__name__}: rows {g * G}..{g * G + G - 1} of this round do not "
                    "share one prompt; the sampler broke the group layout"
                )
        out = super()._generate_and_score_completions(inputs)
        device = out["completion_ids"].device
        local = slice(proc * n, (proc + 1) * n)

        # rewards of the whole round (every process): a completion leaves its group when a
        # reward function failed on it, when every function abstained, when it has no
        # token, or when vLLM drew it too far from π_old (TRL's sequence mask)
        rpf, failed = self._round_rewards.take()  # (N·P, F) each
        weights = self.reward_weights.to(rpf.device)
        raw = (rpf * weights[None, :]).nansum(1)  # (N·P,)
        rewards = aggregate_rewards(rpf, weights, G, self.args.multi_objective_aggregation)
        unscorable = torch.isnan(rpf).all(1) | failed.any(1)  # (N·P,)
        empty = self.accelerator.gather(~out["completion_mask"].bool().any(-1)).to(rpf.device)
        off = self._vllm_masked(out)  # (N,) or None
        valid = ~unscorable & ~empty  # (N·P,)
        if off is not None:
            off = self.accelerator.gather(off).to(rpf.device)
            self._metrics[mode]["sampling/is_masked_frac"].append(
                (off & valid).float().mean().item()
            )
            valid = valid & ~off
        correct = (rpf[:, self._accuracy_index] >= self.args.accuracy_threshold) & valid
        out["rewards"] = torch.where(valid, rewards, 0.0)[local].to(device)
        out["raw_rewards"] = torch.where(valid, raw, 0.0)[local].to(device)
        out["reward_valid"] = valid[local].to(device)
        out["reward_correct"] = correct[local].to(device)
        n_valid = int(valid.sum())
        self._metrics[mode]["accuracy"].append(
            float(correct.sum()) / n_valid if n_valid else math.nan
        )
        self._metrics[mode]["reward_unscorable_frac"].append(unscorable.float().mean().item())
        if self.args.log_completions:  # the advantage our losses use, not TRL's GRPO one
            adv = group_advantages(rewards.view(-1, G), valid=valid.view(-1, G))
            seam.replace_logged_advantages(self, adv.reshape(-1).tolist())

        # a unique id per group: its place in the round (all processes), counted over rounds
        pos = proc * n + torch.arange(n, device=device)  # (N,) global row positions
        out["group_index"] = self._round * (P * n // G) + pos // G  # (N,)

        # the anchor, in training and evaluation alike
        anchor = self.args.anchor
        if anchor == "on_policy":
            # None → the loss uses the detached current log-probs: in training the round is
            # then a single optimizer step, so they equal the generating policy's; in
            # evaluation π_old is the current policy
            if mode == "train" and out.get("old_per_token_logps") is not None:
                out["anchor_per_token_logps"] = out["old_per_token_logps"]
        elif anchor in ("fixed", "self"):
            out["anchor_per_token_logps"] = self._init_logps(out)
        else:  # "ema": built in __init__
            out["anchor_per_token_logps"] = self._ema_anchor.anchor_logps(self._token_logps, out)
        if self.args.log_kl_to_init:
            out["init_per_token_logps"] = (
                out["anchor_per_token_logps"]
                if anchor in ("fixed", "self")
                else self._init_logps(out)
            )
        self._round_extras(out, G, rewards, valid, local)
        return out

    def _vllm_masked(self, out: dict[str, Any]) -> Tensor | None:
        """TRL's sequence mask of vLLM samples, ``[N]`` bool, or None without vLLM's correction."""
        a = self.args
        if not (self.use_vllm and a.vllm_importance_sampling_correction):
            return None
        old, sampling = out.get("old_per_token_logps"), out.get("sampling_per_token_logps")
        if old is None or sampling is None:
            return None
        mask = out["completion_mask"]
        if out.get("tool_mask") is not None:
            mask = mask * out["tool_mask"]
        return vllm_sequence_mask(
            old,
            sampling,
            mask,
            clip_min=a.vllm_importance_sampling_clip_min,
            clip_max=a.vllm_importance_sampling_clip_max,
        )

    def _round_extras(
        self, out: dict[str, Any], G: int, rewards: Tensor, valid: Tensor, local: slice
    ) -> None:
        """Per-row numbers a loss needs from the whole round (``rewards``/``valid``: ``[N·P]``)."""

    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        # TRL's `_prepare_inputs`, with the round shuffled by whole groups where it can be,
        # and each optimizer step prepared by _begin_step.
        if not self.model.training:
            return self._generate_and_score_completions(generation_batch)
        spg = self.args.steps_per_generation
        generate_every = spg * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            if self._ema_anchor is not None:  # fold the current policy in, once per round
                self._ema_anchor.refresh(self.accelerator.unwrap_model(self.model))
            batch = self._generate_and_score_completions(generation_batch)
            n = len(batch["completion_ids"])
            # whole groups move together when this process holds whole groups (always when a
            # round feeds several optimizer steps); otherwise row by row, as TRL does: the
            # round is then one optimizer step and the weights see whole groups anyway
            unit = self.num_generations if n % self.num_generations == 0 else 1
            batch = shuffle_groups(seam.split_images(batch), unit)
            self._buffered_inputs = seam.split_round(batch, spg)
            self._round += 1
        j = self._step % spg
        ga = self.args.gradient_accumulation_steps
        if j % ga == 0:  # the first micro-batch of an optimizer step
            self._begin_step(
                self._buffered_inputs[j : j + ga], fresh=self._step % generate_every == 0
            )
        return self._buffered_inputs[j]

    def _begin_step(self, micro_batches: list[dict[str, Any]], *, fresh: bool) -> None:
        """What an optimizer step needs before its first micro-batch (training only).

        Closes the previous step's schedule statistics; counts the step's groups with a
        scored completion and its scored completions over every micro-batch and process
        (``step_groups``, ``step_rows``: the loss is the mean over them, however the step is
        cut); and, when micro-batches split groups, each completion's weight (ADPO).
        ``fresh``: the policy is the one that generated the round (no update since).
        """
        if (self._tau_schedule is not None or self._per_prompt_tau is not None) and self._step:
            self._close_step_stats()
        gid = torch.cat([mb["group_index"] for mb in micro_batches])
        valid = torch.cat([_valid_rows(mb) for mb in micro_batches])
        all_gid, all_valid = self.accelerator.gather((gid, valid.to(torch.int64)))
        all_valid = all_valid.bool()
        groups = int(all_gid[all_valid].unique().numel())
        rows = int(all_valid.sum())
        for mb in micro_batches:
            mb["step_groups"], mb["step_rows"] = groups, rows
        if self._split:
            self._split_weights(micro_batches, fresh=fresh)

    def _split_weights(self, micro_batches: list[dict[str, Any]], *, fresh: bool) -> None:
        """Per-completion numbers the loss needs when a micro-batch holds part of a group."""

    # ---- loss -----------------------------------------------------------------------

    def _group_loss(
        self,
        logps: Tensor,
        anchor_logps: Tensor,
        rewards: Tensor,
        mask: Tensor,
        valid: Tensor,
        rows: dict[str, Tensor],
    ) -> LossOutput:
        """The loss on whole groups: ``[B, G, T]`` log-probs/anchor/mask, ``[B, G]`` rewards/valid.

        ``rows``: further ``[B, G]`` numbers per completion (``entropy_sum`` and
        ``token_count`` of the policy's token entropies, and, when the round carries them,
        ``reward_correct`` and ``omega_hat``).
        """
        raise NotImplementedError

    def _compute_loss(self, model: nn.Module, inputs: dict[str, Any]) -> Tensor:
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = (
            completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        )
        per_token_logps, entropies, aux_loss = seam.token_logps_and_entropies(
            self,
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            batch=inputs,
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
        )  # (N, T), (N, T)

        N, T = per_token_logps.shape
        anchor = inputs.get("anchor_per_token_logps")
        if anchor is None:
            anchor = per_token_logps.detach()
        mask_b = mask.bool()
        valid_rows = inputs["reward_valid"].bool() & mask_b.any(-1)  # (N,)
        m = mask_b.to(torch.float32)
        ent_rows = (entropies.detach().float() * m).sum(-1)  # (N,)
        tok_rows = m.sum(-1)  # (N,)
        if mode == "train" and (self._tau_schedule is not None or self._per_prompt_tau is not None):
            v = valid_rows.to(torch.float32)
            stats = torch.stack(
                [ent_rows.sum(), tok_rows.sum(), (inputs["raw_rewards"].float() * v).sum(), v.sum()]
            ).double()
            self._step_stats = stats if self._step_stats is None else self._step_stats + stats

        metrics: dict[str, Tensor] = {}
        if mode == "train" and self._split:  # rows of any groups: weights from _begin_step
            scores = _scores(per_token_logps, anchor, mask_b, self.args.seq_reduction)  # (N,)
            loss_sum, policy_loss, metrics = self._split_loss(scores, inputs, valid_rows)
            loss_mean = loss_sum  # (a batch given directly holds whole groups: not this path)
        else:
            self._check_whole_groups(inputs["group_index"], N, G)
            B = N // G
            valid = valid_rows.view(B, G)
            keep = valid.any(-1)  # (B,) groups with at least one scored completion
            if G < 2:  # evaluation with num_generations_eval=1: no list to rank, no loss
                loss_mean = torch.full((), float("nan"), device=per_token_logps.device)
                units = 0
            elif keep.any():
                rows = {
                    "entropy_sum": ent_rows.view(B, G)[keep],
                    "token_count": tok_rows.view(B, G)[keep],
                }
                for key in ("reward_correct", "omega_hat"):
                    if key in inputs:
                        rows[key] = inputs[key].view(B, G)[keep]
                out = self._group_loss(
                    per_token_logps.view(B, G, T)[keep],
                    anchor.view(B, G, T)[keep],
                    inputs["rewards"].view(B, G)[keep],
                    mask_b.view(B, G, T)[keep],
                    valid[keep],
                    rows,
                )
                loss_mean, metrics = out.loss, out.metrics
                units = int(keep.sum()) if self._unit == "groups" else int(valid.sum())
            else:  # nothing to learn from; stay connected to the graph (DDP needs every grad)
                loss_mean, units = per_token_logps.sum() * 0.0, 0
            loss_sum = loss_mean * units
            policy_loss = loss_mean.detach()

        loss = loss_mean
        if mode == "train":
            per_step = inputs.get(f"step_{self._unit}")
            if per_step is None:  # a batch handed in directly is its own optimizer step
                loss = loss_mean / self.current_gradient_accumulation_steps
            else:  # the mean over the step's groups (rows), however it is cut; DDP averages
                loss = loss_sum * (self.accelerator.num_processes / max(int(per_step), 1))
        if self.aux_loss_enabled:  # MoE router loss, added and logged as GRPOTrainer does
            normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer
            self._metrics[mode]["aux_loss"].append(
                self.accelerator.gather_for_metrics(aux_loss.detach()).mean().item()
            )

        self._log_step_metrics(
            mode, metrics, entropies, per_token_logps, mask_b, inputs, policy_loss
        )
        return loss

    def _check_whole_groups(self, group_index: Tensor, N: int, G: int) -> None:
        if N % G:
            raise RuntimeError(
                f"{type(self).__name__}: micro-batch of {N} rows is not whole groups of {G}"
            )
        gid = group_index.view(N // G, G)
        if not (gid == gid[:, :1]).all() or gid[:, 0].unique().numel() != N // G:
            raise RuntimeError(
                f"{type(self).__name__}: a micro-batch holds a partial group (group ids "
                f"{gid.tolist()}); the listwise loss needs whole groups"
            )

    def _split_loss(
        self, scores: Tensor, inputs: dict[str, Any], valid: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(loss summed over this micro-batch's rows, its value to log, metrics)`` when the
        micro-batch may hold part of a group; ``scores``/``valid``: ``[N]``."""
        raise NotImplementedError

    def _log_step_metrics(
        self,
        mode: str,
        metrics: dict[str, Tensor],
        entropies: Tensor,
        per_token_logps: Tensor,
        mask: Tensor,
        inputs: dict[str, Any],
        loss: Tensor,
    ) -> None:
        """One gather per micro-batch of a fixed-length vector (every process calls it alike)."""
        device = per_token_logps.device
        nan = torch.tensor(float("nan"), device=device)
        values = [metrics.get(k, nan).detach().float().reshape(()) for k in self._metric_names]
        ent_sum, ent_cnt = _masked_sum_count(entropies, mask)
        kl_sum, kl_cnt = nan * 0, nan * 0
        init = inputs.get("init_per_token_logps")
        if init is not None:
            d = init - per_token_logps.detach()  # log π_init − log πθ
            kl_sum, kl_cnt = _masked_sum_count(d.exp() - d - 1, mask)  # k3 ≥ 0
        local = torch.stack([*values, ent_sum, ent_cnt, kl_sum, kl_cnt, loss.float()])
        allv = self.accelerator.gather(local[None]).view(-1, local.numel())  # (P, K)
        k = len(self._metric_names)
        means = allv[:, :k].nanmean(0)
        for name, v in zip(self._metric_names, means.tolist(), strict=True):
            if not math.isnan(v):  # a metric this micro-batch does not carry (split groups)
                self._metrics[mode][name].append(v)
        sums = allv[:, k:-1].sum(0).tolist()
        self._metrics[mode]["entropy"].append(sums[0] / max(sums[1], 1.0))
        if init is not None:
            self._metrics[mode]["kl_to_init"].append(sums[2] / max(sums[3], 1.0))
        policy = allv[:, -1].nanmean().item()
        if not math.isnan(policy):
            self._metrics[mode]["policy_loss"].append(policy)

    # ---- schedules and checkpoints ----------------------------------------------------

    @property
    def entropy_reference(self) -> float | None:
        """``H_0``: the policy's mean token entropy over the first optimizer step's batch.

        Read from every micro-batch and process of the first step, so it does not depend on
        how the step is cut into micro-batches; None until that step is over.
        """
        return self._entropy_ref

    def _close_step_stats(self) -> None:
        """At the start of an optimizer step, close the previous step's statistics.

        From that step's whole batch (every micro-batch and process): its mean token
        entropy ``H`` becomes the reference ``H_0`` after the first step, and the guarded
        schedule steps on ``H̄ = policy_entropy_norm(H, H_0)`` and ``R̄``, the batch's mean
        raw reward over scored completions (logged as ``tau_policy_entropy`` and
        ``tau_reward_mean`` beside ``tau``). A batch without a scored completion leaves the
        guarded schedule as it is.
        """
        stats = self._step_stats
        if stats is None:  # a process with no micro-batch yet (cannot happen in lock-step)
            stats = torch.zeros(4, dtype=torch.float64, device=self.accelerator.device)
        total = self.accelerator.gather(stats[None]).sum(0).tolist()  # (4,)
        self._step_stats = None
        ent, tok, reward, scored = total
        if tok <= 0:
            return
        if self._entropy_ref is None:
            self._entropy_ref = ent / tok
        if self._tau_schedule is None or scored <= 0:
            return
        h_bar = policy_entropy_norm(ent / tok, self._entropy_ref)
        self._tau_schedule.step(h_bar, reward / scored)
        self._metrics["train"]["tau_policy_entropy"].append(h_bar)
        self._metrics["train"]["tau_reward_mean"].append(reward / scored)

    def _make_tau_schedule(self) -> GuardedTemperature | None:
        return None

    def _extra_state(self) -> dict[str, Any]:
        buf = self._buffered_inputs
        return {
            "step": self._step,
            "round": self._round,
            "buffered_inputs": None
            if buf is None
            else [
                {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in b.items()} for b in buf
            ],
            "ema_anchor": None if self._ema_anchor is None else self._ema_anchor.state_dict(),
            "tau_schedule": None if self._tau_schedule is None else self._tau_schedule.state_dict(),
            "entropy_ref": self._entropy_ref,
            "step_stats": None if self._step_stats is None else self._step_stats.cpu(),
        }

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = seam.checkpoint_folder(self, trial)
        rank = self.accelerator.process_index
        torch.save(self._extra_state(), os.path.join(folder, _STATE_FILE.format(rank=rank)))

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """TRL's model card, completed by :func:`adpo.trainers._model_card.complete`."""
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        _model_card.complete(self)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, _STATE_FILE.format(rank=self.accelerator.process_index))
        if not os.path.exists(path):
            what = (
                "the round buffer, step counters"
                + (", the EMA anchor" if self._ema_anchor is not None else "")
                + (", the temperature schedule" if self._tau_schedule is not None else "")
            )
            if not self.args.resume_without_adpo_state:
                raise ValueError(
                    f"{type(self).__name__}: {path} is missing, so resuming would silently "
                    f"restart {what}. Resume from a checkpoint this trainer saved, or set "
                    "`resume_without_adpo_state=True` to go on without them"
                )
            warnings.warn(
                f"{type(self).__name__}: {path} is missing; resuming without {what} "
                "(resume_without_adpo_state=True): the next round is generated afresh",
                stacklevel=2,
            )
            return
        state = torch.load(path, map_location="cpu", weights_only=False)
        device = self.accelerator.device
        self._step = state["step"]
        self._round = state["round"]
        buf = state["buffered_inputs"]
        self._buffered_inputs = (
            None
            if buf is None
            else [
                {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in b.items()}
                for b in buf
            ]
        )
        if self._ema_anchor is not None and state["ema_anchor"] is not None:
            self._ema_anchor.load_state_dict(state["ema_anchor"])
        if self._tau_schedule is not None and state["tau_schedule"] is not None:
            self._tau_schedule.load_state_dict(state["tau_schedule"])
        self._entropy_ref = state.get("entropy_ref")
        stats = state.get("step_stats")
        self._step_stats = None if stats is None else stats.to(device)


class ADPOTrainer(_AnchoredGroupTrainer):
    """ADPO on TRL: the anchored listwise loss :func:`adpo.losses.adpo_loss`, groups exact.

    Usage mirrors ``GRPOTrainer``::

        from adpo.trainers import ADPOConfig, ADPOTrainer
        from adpo.rewards import math_reward

        args = ADPOConfig(output_dir="out", target="plackett_luce", num_generations=8,
                          per_device_train_batch_size=16)
        trainer = ADPOTrainer(model="Qwen/Qwen3-1.7B", reward_funcs=math_reward,
                              args=args, train_dataset=dataset)
        trainer.train()

    Extra keyword argument ``ref_model``: a model to anchor to when ``anchor="fixed"``
    (default: a frozen copy of the initial policy) and to measure ``kl_to_init`` against
    (``log_kl_to_init=True``); refused where neither uses it.
    """

    _config_class = ADPOConfig
    _tag_names = ["trl", "adpo"]  # noqa: RUF012
    _name = "ADPO"
    _paper = _model_card.ADPO_PAPER
    _unit = "groups"  # the loss is a mean over prompts
    _metric_names = (
        "anchored_entropy",
        "anchored_entropy_norm",
        "target_entropy",
        "delta_abs_mean",
        "delta_abs_max",
        "tau",
        "zero_signal_frac",
    )

    def _make_tau_schedule(self) -> GuardedTemperature | None:
        a = self.args
        self._per_prompt_tau = (
            _entropy_reward_schedule(a) if a.tau_schedule == "entropy_reward" else None
        )
        if a.tau_schedule != "guarded":
            return None
        return GuardedTemperature(
            tau_min=a.tau_min, tau_max=a.tau_max, sigma_r=a.tau_sigma_r, momentum=a.tau_momentum
        )

    @property
    def current_tau(self) -> float:
        """τ of the next update: constant or guarded (the entropy-reward schedule's ``tau_base``)."""
        return self.args.tau if self._tau_schedule is None else float(self._tau_schedule.tau)

    def _group_tau(self, valid: Tensor, rows: dict[str, Tensor]) -> float | Tensor:
        """τ of this micro-batch's groups: a float, or ``[B]`` for the entropy-reward schedule.

        Per group: ``H̄`` from the mean token entropy of its scored completions under the
        current policy (this forward pass) relative to the first optimizer step's (1 during
        that step, and in an evaluation before any training), ``R̄`` its accuracy.
        """
        if self._per_prompt_tau is None:
            return self.current_tau
        if "reward_correct" not in rows:
            raise RuntimeError(
                f"{type(self).__name__}: tau_schedule='entropy_reward' needs the round's "
                "`reward_correct` (set by _generate_and_score_completions)"
            )
        v = valid.to(torch.float32)  # (B, G)
        ent = (rows["entropy_sum"] * v).sum(-1) / (rows["token_count"] * v).sum(-1).clamp_min(1.0)
        if self._entropy_ref is None:  # the first optimizer step: the policy is the initial one
            h = torch.ones_like(ent)
        else:
            h = policy_entropy_norm(ent, self._entropy_ref)  # (B,)
        acc = (rows["reward_correct"].to(torch.float32) * v).sum(-1) / v.sum(-1).clamp_min(1.0)
        return self._per_prompt_tau(h, acc)

    def _group_loss(self, logps, anchor_logps, rewards, mask, valid, rows):
        a = self.args
        return adpo_loss(
            logps,
            anchor_logps,
            rewards,
            target=a.target,
            tau=self._group_tau(valid, rows),
            beta=a.target_beta,
            mask=mask,
            valid=valid,
            ties=a.ties,
            seq_reduction=a.seq_reduction,
        )

    def _split_weights(self, micro_batches, *, fresh):
        """Each completion's weight ``w = ∂(Σ_b L_b)/∂Δ`` from its whole group's current scores.

        The groups of this optimizer step are whole over its micro-batches and processes;
        their scores ``Δ`` are gathered as numbers and :func:`adpo.losses.adpo_score_weights`
        gives ``w``. Right after generation with the on-policy anchor the policy *is* the
        anchor, ``Δ ≡ 0``, and the weights follow from the rewards alone; otherwise (a later
        step of the round, ``num_iterations`` > 1, a fixed/self/EMA anchor) or when τ is set
        per prompt (it reads each group's entropy), one no-grad forward over the step's rows
        gives the current scores (GradCache's trick).
        """
        a = self.args
        need_pass = not (fresh and a.anchor == "on_policy") or self._per_prompt_tau is not None
        cols = []
        for mb in micro_batches:
            mask = _token_mask(mb).bool()
            n = mask.shape[0]
            if need_pass:
                logps, ent = self._no_grad_forward(
                    self.model, mb, entropy=self._per_prompt_tau is not None
                )
                anchor = mb.get("anchor_per_token_logps")
                delta = _scores(logps, logps if anchor is None else anchor, mask, a.seq_reduction)
                m = mask.to(torch.float32)
                ent_rows = (
                    torch.zeros(n, device=m.device) if ent is None else (ent.float() * m).sum(-1)
                )
                tok_rows = m.sum(-1)
            else:
                delta = ent_rows = tok_rows = torch.zeros(n, device=mask.device)
            cols.append(
                torch.stack(
                    [
                        mb["group_index"].double(),
                        delta.double(),
                        _valid_rows(mb).double(),
                        mb["rewards"].double(),
                        mb["reward_correct"].double(),
                        ent_rows.double(),
                        tok_rows.double(),
                    ],
                    -1,
                )
            )  # (n, 7)
        local = torch.cat(cols)  # (N_step, 7)
        every = self.accelerator.gather(local)  # (N_step·P, 7), process by process
        G = self.num_generations
        order = torch.argsort(every[:, 0], stable=True)
        grouped = every[order].view(-1, G, 7)  # (B, G, 7)
        if not (grouped[:, :, 0] == grouped[:, :1, 0]).all():
            raise RuntimeError(
                f"{type(self).__name__}: an optimizer step holds part of a group (group ids "
                f"{grouped[:, :, 0].long().tolist()}); see AnchoredGroupConfig's batch rules"
            )
        valid = grouped[:, :, 2].bool()
        keep = valid.any(-1)  # (B,)
        w = torch.zeros(grouped.shape[:2], dtype=torch.float64, device=every.device)
        if keep.any():
            g = grouped[keep]
            tau = self._group_tau(
                valid[keep],
                {
                    "entropy_sum": g[:, :, 5],
                    "token_count": g[:, :, 6],
                    "reward_correct": g[:, :, 4],
                },
            )
            out, w_keep = adpo_score_weights(
                g[:, :, 1], g[:, :, 3], target=a.target, tau=tau, beta=a.target_beta,
                valid=valid[keep], ties=a.ties,
            )  # fmt: skip
            w[keep] = w_keep
            self._pending_step_log = (out.loss, out.metrics)
        else:
            self._pending_step_log = None
        flat = torch.empty(every.shape[0], dtype=torch.float64, device=every.device)
        flat[order] = w.reshape(-1)
        mine = flat.view(self.accelerator.num_processes, -1)[self.accelerator.process_index]
        for mb, part in zip(micro_batches, mine.split([len(c) for c in cols]), strict=True):
            mb["score_weight"] = part.to(mb["rewards"].device)

    def _split_loss(self, scores, inputs, valid):
        loss_sum = (inputs["score_weight"].to(scores.dtype) * scores).sum()
        if self._pending_step_log is None:  # logged once per step, by its first micro-batch
            return loss_sum, torch.full((), float("nan"), device=scores.device), {}
        loss, metrics = self._pending_step_log
        self._pending_step_log = None
        return loss_sum, loss.float(), {k: v.float() for k, v in metrics.items()}


class OPOTrainer(_AnchoredGroupTrainer):
    """OPO on TRL: :func:`adpo.losses.opo_loss` (escort-weighted work + χ² penalty), groups exact.

    Same interface as :class:`ADPOTrainer`, configured by :class:`OPOConfig`. With
    ``weight_norm="batch"`` the escort weights are z-scored over the whole generation round
    (every micro-batch and process: the batch the rewards came with, where verl computes
    advantages too), once per round, and each micro-batch gets its rows' weights.
    """

    _config_class = OPOConfig
    _tag_names = ["trl", "opo"]  # noqa: RUF012
    _name = "OPO"
    _paper = _model_card.OPO_PAPER
    _unit = "rows"  # the loss is a mean over completions
    _metric_names = (
        "anchored_entropy",
        "anchored_entropy_norm",
        "target_entropy",
        "delta_abs_mean",
        "delta_abs_max",
        "omega_abs_max",
        "chi2",
        "zero_signal_frac",
        "target_clip_frac",
    )

    def _round_extras(self, out, G, rewards, valid, local):
        a = self.args
        if a.weight_norm != "batch" and not (self._split and self.model.training):
            return
        ref_w = None
        if a.ref_correction != "none":
            anchor = out.get("anchor_per_token_logps")
            if anchor is None:  # on-policy, one optimizer step per round: π_old is the policy
                anchor = self._token_logps(self.model, out)
                out["anchor_per_token_logps"] = anchor
            mask = out["completion_mask"].to(anchor.dtype)
            if out.get("tool_mask") is not None:
                mask = mask * out["tool_mask"]
            seq = (anchor * mask).sum(-1)  # (N,)
            if a.ref_correction == "token_mean":
                seq = seq / mask.sum(-1).clamp_min(1.0)
            ref_w = self.accelerator.gather(seq).to(rewards.device).view(-1, G)
        r, v = rewards.view(-1, G), valid.view(-1, G)  # (N·P/G, G)
        adv = group_advantages(r, valid=v)
        w_hat, _ = escort_weights(
            adv, v, alpha=a.alpha, ref_log_weight=ref_w, weight_norm=a.weight_norm
        )
        out["omega_hat"] = w_hat.reshape(-1)[local].to(out["completion_ids"].device)

    def _group_loss(self, logps, anchor_logps, rewards, mask, valid, rows):
        a = self.args
        return opo_loss(
            logps,
            anchor_logps,
            rewards,
            alpha=a.alpha,
            mu=a.mu,
            mask=mask,
            valid=valid,
            ratio=a.ratio,
            weight_norm=a.weight_norm,
            ref_correction=a.ref_correction,
            omega=rows.get("omega_hat"),
            seq_reduction=a.seq_reduction,
        )

    def _split_loss(self, scores, inputs, valid):
        """OPO's terms are per completion given ω̂ (computed over the whole round)."""
        a = self.args
        per, x, clipped = opo_per_candidate(
            scores, inputs["omega_hat"].to(scores.dtype), mu=a.mu, ratio=a.ratio
        )  # (N,)
        zero = torch.zeros((), dtype=per.dtype, device=per.device)
        loss_sum = torch.where(valid, per, zero).sum()
        n = valid.sum().clamp_min(1)
        nan = torch.full((), float("nan"), device=per.device)
        if not bool(valid.any()):
            return loss_sum, nan, {}
        d, w, xv = scores.detach()[valid], inputs["omega_hat"][valid].float(), x.detach()[valid]
        v = xv if a.ratio == "exact" else torch.expm1(d.clamp_max(10.0))
        metrics = {
            "delta_abs_mean": d.abs().mean(),
            "delta_abs_max": d.abs().max(),
            "omega_abs_max": w.abs().max(),
            "chi2": (v * v).mean(),
            "target_clip_frac": clipped[valid].float().mean(),
        }
        return loss_sum, (loss_sum.detach() / n).float(), metrics


# Names this module held before the layout of 0.2 (presets, warm start, data, CLI); they
# moved to their own homes and stay importable from here, with a warning.
_MOVED = {
    "LOSSES": "adpo.trainers.presets",
    "loss_config": "adpo.trainers.presets",
    "make_trainer": "adpo.trainers.presets",
    "supervised_warm_start": "adpo.trainers.warm_start",
    "greedy_accuracy": "adpo.trainers.warm_start",
    "RichProgress": "adpo.trainers.callbacks",
    "load_rows": "adpo.data.rows",
    "validate_rows": "adpo.data.rows",
    "timer": "adpo._io",
    "TrainArgs": "adpo.cli.train",
    "parse_train_args": "adpo.cli.train",
    "prepare_dataset": "adpo.cli.train",
    "main": "adpo.cli.train",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        warnings.warn(
            f"adpo.trainers.online.{name} moved to {_MOVED[name]}.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
