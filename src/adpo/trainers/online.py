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

* **Whole groups.** TRL shuffles the completions of a generation round one by one before
  splitting them into micro-batches, which scatters a prompt's ``G`` completions over
  several micro-batches. A listwise loss is only correct on whole groups, so the round
  is shuffled and split *by group* (:func:`shuffle_groups`), and the config requires
  ``per_device_train_batch_size % num_generations == 0``. Every row carries a
  ``group_index``; each micro-batch checks that rows ``b·G … b·G+G−1`` share one index.
  TRL's ``RepeatSampler`` lays prompts out as consecutive runs of ``G`` and hands each
  process a contiguous slice of ``per_device_train_batch_size·steps_per_generation``
  rows, so with the divisibility rule every process holds whole groups too.
* **Anchors** (``π_ref`` in ``Δ = log πθ − log π_ref``), computed once per generation round
  and stored with the round's completions:

  - ``"on_policy"`` (default): π_ref ← π_old, the policy that generated the round (OPO
    §8 "mini-batch anchoring"). Every mini-batch of the round shares it, however many
    optimizer steps the round feeds (``steps_per_generation``, ``num_iterations``). It
    costs no model copy: the generating policy's log-probs are taken before the first
    update of the round (TRL's ``old_per_token_logps``), or, when the round is a single
    optimizer step, the detached current log-probs, which are the same numbers.
  - ``"fixed"``: the initial policy (or ``ref_model`` when given; with PEFT, the base
    model with adapters disabled).
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
from adpo.losses import LossOutput, adpo_loss, opo_loss
from adpo.rewards.guard import guard_reward_funcs
from adpo.schedules import EntropyRewardTemperature, GuardedTemperature, candidate_entropy
from adpo.trainers import _model_card
from adpo.trainers.grpo_fields import refusal_message, refused_fields

__all__ = [
    "ADPOConfig",
    "ADPOTrainer",
    "AnchoredGroupConfig",
    "OPOConfig",
    "OPOTrainer",
    "aggregate_rewards",
    "shuffle_groups",
]

TESTED_TRL = seam.TESTED_TRL  # kept: it was importable from here
_ANCHORS = ("on_policy", "fixed", "self", "ema")  # online: every kind but "precomputed"
_TAU_SCHEDULES = ("constant", "guarded", "entropy_reward")
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
            ``"fixed"``, ``"self"`` and ``"ema"`` hold one frozen model copy (none under
            PEFT for ``fixed``/``self``: adapters off). ``"precomputed"`` does not apply
            (rounds are generated fresh); ``"dynamic"`` is a deprecated ``"on_policy"``.
        anchor_ema_decay (`float`, defaults to `0.99`):
            Decay ``d`` of the EMA anchor, ``θ_a ← d·θ_a + (1−d)·θ`` per round.
        log_kl_to_init (`bool`, defaults to `False`):
            Log ``kl_to_init``, the per-token k3 estimate of KL(πθ ‖ π_init) on the
            round's completions. It costs one extra forward pass per round and, unless
            the anchor is ``"fixed"`` or the model is a PEFT model (adapters disabled), a
            frozen copy of the initial model: off by default, so a default run holds what
            ``GRPOTrainer`` with ``beta=0`` holds (no reference model). The ``"fixed"``
            and ``"ema"`` anchors need their own model copy; that is their cost.
        accuracy_reward (`str` or `None`, defaults to `None`):
            Name of the reward function whose value defines ``accuracy`` (the fraction of
            completions with that reward ``>= accuracy_threshold``). `None`: the first.
        accuracy_threshold (`float`, defaults to `1.0`):
            See ``accuracy_reward``.
        guard_rewards (`bool`, defaults to `True`):
            Wrap callable reward functions in :func:`adpo.rewards.guard_reward`, so a
            sample whose reward raises or is NaN gets no reward (counted and logged)
            instead of stopping the run.
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
        metadata={"help": "Turn a reward that raises or is NaN for one sample into None."},
    )

    def __post_init__(self) -> None:
        name = type(self).__name__
        # before GRPOConfig's own checks, whose message would not say why
        if self.num_generations and self.per_device_train_batch_size % self.num_generations != 0:
            raise ValueError(
                f"{name}: `per_device_train_batch_size` ({self.per_device_train_batch_size}) must be "
                f"a multiple of `num_generations` ({self.num_generations}): the listwise loss needs "
                "all completions of a prompt in one micro-batch (whole groups)"
            )
        super().__post_init__()
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

    Defaults are the paper's LLM settings (τ 0.8, β_r 0.5, G 8, lr 1.5e-5, Plackett–Luce).

    Parameters:
        target (`str`, defaults to `"plackett_luce"`):
            ``"plackett_luce"`` (ranking of the group by reward; the paper's LLM runs),
            ``"softmax"`` (Boltzmann target ``softmax(A/target_beta)``) or ``"top1"``.
        tau (`float`, defaults to `0.8`):
            Anchoring temperature τ in ``u = (log πθ − log π_ref)/τ`` (with
            ``tau_schedule="guarded"``, the value before the first update is ``tau_max``).
        target_beta (`float`, defaults to `0.5`):
            Softmax-target temperature β_r.
        ties (`str`, defaults to `"breslow"`):
            Plackett–Luce tie handling (``"breslow"`` or ``"efron"``).
        tau_schedule (`str`, defaults to `"constant"`):
            ``"constant"``; ``"guarded"`` (:class:`adpo.schedules.GuardedTemperature`,
            the paper's §5.1: one τ per update, moving toward ``tau_min`` only while the
            policy is confident and its batch reward improves on an EMA baseline); or
            ``"entropy_reward"`` (:class:`adpo.schedules.EntropyRewardTemperature`, the
            authors' earlier trainer: one τ per prompt,
            ``clip(tau·(1 + a·H̄ + b·(1 − H̄)·(1 − R̄)), tau_min, tau_max)`` with the group's
            policy entropy H̄ and mean reward R̄, which it expects in [0, 1]).
        tau_min (`float`, defaults to `0.2`):
            Guarded schedule: the lowest τ (also the lower bound of the entropy-reward
            schedule).
        tau_max (`float`, defaults to `1.5`):
            Guarded schedule: the highest τ (also the upper bound of the entropy-reward
            schedule).
        tau_sigma_r (`float`, defaults to `0.1`):
            Guarded schedule: the reward scale σ_R in ``tanh((R̄ − b)/σ_R)``.
        tau_momentum (`float`, defaults to `0.9`):
            Guarded schedule: momentum of the EMA reward baseline ``b``.
        tau_entropy_coef (`float`, defaults to `0.2`):
            ``a`` of the entropy-reward schedule (the authors' 0.2).
        tau_wrong_coef (`float`, defaults to `0.5`):
            ``b`` of the entropy-reward schedule (the authors' 0.5).
        tau_length_norm (`str`, defaults to `"mean"`):
            How the schedules' policy entropy over a group scores a candidate: its token-mean
            log-prob (``"mean"``) or its sequence log-prob (``"sum"``); see
            :func:`adpo.schedules.candidate_entropy`.
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
        default="constant",
        metadata={
            "help": "'constant', 'guarded' (adaptive τ per update) or 'entropy_reward' (per prompt).",
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
    tau_length_norm: str = field(
        default="mean",
        metadata={
            "help": "Schedules' policy entropy: token-mean ('mean') or summed ('sum') log-probs.",
            "choices": ["mean", "sum"],
        },
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
        if self.tau_length_norm not in ("mean", "sum"):
            raise ValueError(
                f"ADPOConfig: `tau_length_norm` must be 'mean' or 'sum', got {self.tau_length_norm!r}"
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
        default=6, metadata={"help": "Completions per micro-batch (a multiple of G)."}
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

        # the initial policy: the fixed anchor and/or the KL-to-init reference
        self._init_anchor: FixedAnchor | None = None
        if ref_model is not None and args.anchor == "self":
            raise ValueError(
                f"{cls}: anchor='self' is the initial policy; pass `ref_model` with anchor='fixed'"
            )
        if ref_model is not None:
            ref = self._prepare_frozen(ref_model, copy_=False)
            ref.to(self.accelerator.device)
            self._init_anchor = FixedAnchor(ref)
        elif (args.anchor in ("fixed", "self") or args.log_kl_to_init) and not self._is_peft:
            self._init_anchor = FixedAnchor(self._prepare_frozen(self.model))
        self._ema_anchor: EMAAnchor | None = None
        if args.anchor == "ema":
            self._ema_anchor = EMAAnchor(self.model, args.anchor_ema_decay)
            self._prepare_frozen(self._ema_anchor.module, copy_=False)

        self._round = 0  # generation rounds so far (this process)
        self._round_rewards = seam.RewardHandOff()
        self._round_reward_mean = math.nan  # mean reward of the last training round
        self._tau_schedule = self._make_tau_schedule()

    # ---- models ---------------------------------------------------------------------

    def _prepare_frozen(self, module: nn.Module, *, copy_: bool = True) -> nn.Module:
        """A frozen, eval-mode (copy of a) model whose forward has TRL's fused LM head."""
        snap = copy.deepcopy(module) if copy_ else module
        seam.patch_frozen_forward(self, snap)
        snap.requires_grad_(False)
        snap.eval()
        return snap

    def _token_logps(self, module: nn.Module, batch: dict[str, Any]) -> Tensor:
        """Per-token log-probs ``[N, T]`` of the round's completions under ``module`` (no grad)."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        with torch.no_grad():
            logps, _, _ = seam.token_logps_and_entropies(
                self,
                module,
                input_ids,
                attention_mask,
                batch["completion_ids"].size(1),
                batch=batch,
                batch_size=self.args.per_device_train_batch_size,
            )
        return logps.detach()

    def _init_logps(self, batch: dict[str, Any]) -> Tensor:
        """Log-probs under the initial policy (or ``ref_model``): ``[N, T]``."""
        if self._init_anchor is not None:
            return self._init_anchor.anchor_logps(self._token_logps, batch)
        model = self.accelerator.unwrap_model(self.model)  # PEFT: adapters off = base model
        with seam.reference_adapter(model):
            return self._token_logps(self.model, batch)

    # ---- rounds ---------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._round_rewards.put(rewards_per_func)  # (N·P, F), gathered over processes
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        mode = "train" if self.model.training else "eval"
        G = self.num_generations if mode == "train" else self.num_generations_eval
        n = len(inputs)
        if n % G:
            raise RuntimeError(
                f"{type(self).__name__}: this process got {n} rows for a round, not a whole "
                f"number of groups of {G}"
            )
        for g in range(n // G):  # TRL's RepeatSampler must have laid prompts out as runs of G
            first = inputs[g * G].get("prompt")
            if any(inputs[g * G + j].get("prompt") != first for j in range(1, G)):
                raise RuntimeError(
                    f"{type(self).__name__}: rows {g * G}..{g * G + G - 1} of this round do not "
                    "share one prompt; the sampler broke the group layout"
                )
        out = super()._generate_and_score_completions(inputs)
        device = out["completion_ids"].device

        # raw rewards of this process's completions; unscorable ones leave their group
        rpf = self._round_rewards.take()  # (N·P, F)
        weights = self.reward_weights.to(rpf.device)
        raw = (rpf * weights[None, :]).nansum(1)  # (N·P,)
        rewards = aggregate_rewards(rpf, weights, G, self.args.multi_objective_aggregation)
        unscorable = torch.isnan(rpf).all(1)  # (N·P,)
        proc = self.accelerator.process_index
        local = slice(proc * n, (proc + 1) * n)
        out["rewards"] = torch.where(unscorable, 0.0, rewards)[local].to(device)
        out["reward_valid"] = (~unscorable)[local].to(device)
        correct = rpf[:, self._accuracy_index] >= self.args.accuracy_threshold  # NaN → False
        self._metrics[mode]["accuracy"].append(correct.float().mean().item())
        self._metrics[mode]["reward_unscorable_frac"].append(unscorable.float().mean().item())
        if mode == "train":  # the guarded schedule reads training rounds only
            self._round_reward_mean = float(torch.where(unscorable, 0.0, raw).sum()) / max(
                int((~unscorable).sum()), 1
            )

        # a unique id per group: rounds × processes × local groups
        n_groups = n // G
        offset = (self._round * self.accelerator.num_processes + proc) * n_groups
        out["group_index"] = (
            torch.arange(n_groups, device=device).repeat_interleave(G) + offset
        )  # (N,)

        if mode == "train":
            anchor = self.args.anchor
            if anchor == "on_policy":
                # None → the loss uses the detached current log-probs: the round is a single
                # optimizer step, so they equal the generating policy's.
                if out.get("old_per_token_logps") is not None:
                    out["anchor_per_token_logps"] = out["old_per_token_logps"]
            elif anchor in ("fixed", "self"):
                out["anchor_per_token_logps"] = self._init_logps(out)
            else:  # "ema": built in __init__
                out["anchor_per_token_logps"] = self._ema_anchor.anchor_logps(
                    self._token_logps, out
                )
            if self.args.log_kl_to_init:
                out["init_per_token_logps"] = (
                    out["anchor_per_token_logps"]
                    if anchor in ("fixed", "self")
                    else self._init_logps(out)
                )
        return out

    def _prepare_inputs(self, generation_batch: Any) -> dict[str, Any]:
        # TRL's `_prepare_inputs`, with the round shuffled and split by whole groups.
        if not self.model.training:
            return self._generate_and_score_completions(generation_batch)
        spg = self.args.steps_per_generation
        generate_every = spg * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            if self._ema_anchor is not None:  # fold the current policy in, once per round
                self._ema_anchor.refresh(self.accelerator.unwrap_model(self.model))
            batch = self._generate_and_score_completions(generation_batch)
            batch = shuffle_groups(seam.split_images(batch), self.num_generations)
            self._buffered_inputs = seam.split_round(batch, spg)
            self._round += 1
        return self._buffered_inputs[self._step % spg]

    # ---- loss -----------------------------------------------------------------------

    def _group_loss(
        self, logps: Tensor, anchor_logps: Tensor, rewards: Tensor, mask: Tensor, valid: Tensor
    ) -> LossOutput:
        """The loss on whole groups: ``[B, G, T]`` log-probs/anchor/mask, ``[B, G]`` rewards/valid."""
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
        if N % G:
            raise RuntimeError(
                f"{type(self).__name__}: micro-batch of {N} rows is not whole groups of {G}"
            )
        B = N // G
        gid = inputs["group_index"].view(B, G)
        if not (gid == gid[:, :1]).all() or gid[:, 0].unique().numel() != B:
            raise RuntimeError(
                f"{type(self).__name__}: a micro-batch holds a partial group (group ids "
                f"{gid.tolist()}); the listwise loss needs whole groups"
            )

        anchor = inputs.get("anchor_per_token_logps")
        if anchor is None:
            anchor = per_token_logps.detach()
        mask_b = mask.bool()
        valid = inputs["reward_valid"].view(B, G) & mask_b.any(-1).view(B, G)  # (B, G)
        is_ratio = inputs.get("importance_sampling_ratio")
        if is_ratio is not None:
            # vLLM's sequence_mask correction: TRL zeroes the sequence ratio of completions
            # vLLM drew too far from π_old; those leave their group (the config refuses the
            # token-level and truncated modes, see AnchoredGroupConfig)
            if is_ratio.shape != (N, 1):
                raise ValueError(
                    f"{type(self).__name__}: `importance_sampling_ratio` must be [N, 1] "
                    f"(vllm_importance_sampling_mode='sequence_mask'), got {tuple(is_ratio.shape)}"
                )
            off = (is_ratio.view(B, G) == 0) & valid
            valid = valid & ~off
            self._metrics[mode]["sampling/is_masked_frac"].append(off.float().mean().item())
        keep = valid.any(-1)  # (B,) groups with at least one scored completion

        if (
            self._tau_schedule is not None
            and mode == "train"
            and self._step % self.current_gradient_accumulation_steps == 0
        ):
            # first micro-batch of an optimizer step: τ_t from the policy's own confidence
            # over the candidate sets (§5.1; not softmax(u), uniform under an on-policy anchor)
            self._step_tau_schedule(per_token_logps.view(B, G, T), mask_b.view(B, G, T), valid)

        metrics: dict[str, Tensor] = {}
        if G < 2:  # evaluation with num_generations_eval=1: no list to rank, no loss
            loss = torch.full((), float("nan"), device=per_token_logps.device)
        elif keep.any():
            out = self._group_loss(
                per_token_logps.view(B, G, T)[keep],
                anchor.view(B, G, T)[keep],
                inputs["rewards"].view(B, G)[keep],
                mask_b.view(B, G, T)[keep],
                valid[keep],
            )
            loss, metrics = out.loss, out.metrics
        else:  # nothing to learn from; stay connected to the graph (DDP needs every grad)
            loss = per_token_logps.sum() * 0.0
        policy_loss = loss.detach()

        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
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
            self._metrics[mode][name].append(v)
        sums = allv[:, k:].sum(0).tolist()
        self._metrics[mode]["entropy"].append(sums[0] / max(sums[1], 1.0))
        if init is not None:
            self._metrics[mode]["kl_to_init"].append(sums[2] / max(sums[3], 1.0))
        self._metrics[mode]["policy_loss"].append(sums[4] / allv.shape[0])

    # ---- schedules and checkpoints ----------------------------------------------------

    def _step_tau_schedule(self, logps: Tensor, mask: Tensor, valid: Tensor) -> None:
        """Advance the guarded schedule once per optimizer step (training only).

        ``H̄_t``: :func:`adpo.schedules.candidate_entropy` of the current policy over each
        group with a scored completion, averaged over the groups of every process;
        ``R̄_t``: the mean reward of the training round. Both are logged
        (``tau_policy_entropy``, ``tau_reward_mean``) with the resulting ``tau``.
        """
        keep = valid.any(-1)  # (B,)
        h = candidate_entropy(logps, mask, valid, length_norm=self.args.tau_length_norm)  # (B,)
        local = torch.stack([h[keep].sum().float(), keep.sum().float()])
        total = self.accelerator.gather(local[None]).sum(0)  # (2,)
        h_bar = float(total[0] / total[1]) if total[1] > 0 else 1.0  # no signal: unconfident
        self._tau_schedule.step(h_bar, self._round_reward_mean)
        self._metrics["train"]["tau_policy_entropy"].append(h_bar)
        self._metrics["train"]["tau_reward_mean"].append(self._round_reward_mean)

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
            "round_reward_mean": self._round_reward_mean,
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
            warnings.warn(
                f"{type(self).__name__}: {path} is missing; resuming without the round buffer "
                "(the next round is generated afresh)",
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
        self._round_reward_mean = state["round_reward_mean"]


class ADPOTrainer(_AnchoredGroupTrainer):
    """ADPO on TRL: the anchored listwise loss :func:`adpo.losses.adpo_loss` on whole groups.

    Usage mirrors ``GRPOTrainer``::

        from adpo.trainers import ADPOConfig, ADPOTrainer
        from adpo.rewards import math_reward

        args = ADPOConfig(output_dir="out", target="plackett_luce", num_generations=8,
                          per_device_train_batch_size=16)
        trainer = ADPOTrainer(model="Qwen/Qwen3-1.7B", reward_funcs=math_reward,
                              args=args, train_dataset=dataset)
        trainer.train()

    Extra keyword argument ``ref_model``: a model to anchor to when ``anchor="fixed"``
    (default: a frozen copy of the initial policy) and to measure ``kl_to_init`` against.
    """

    _config_class = ADPOConfig
    _tag_names = ["trl", "adpo"]  # noqa: RUF012
    _name = "ADPO"
    _paper = _model_card.ADPO_PAPER
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
        """τ used by the next update (constant, or the guarded schedule's current value)."""
        return self.args.tau if self._tau_schedule is None else float(self._tau_schedule.tau)

    def _group_tau(self, logps: Tensor, rewards: Tensor, mask: Tensor, valid: Tensor):
        """τ of this micro-batch's groups: a float, or ``[B]`` for the entropy-reward schedule."""
        a = self.args
        if a.tau_schedule != "entropy_reward":
            return self.current_tau
        h = candidate_entropy(logps, mask, valid, length_norm=a.tau_length_norm)  # (B,)
        v = valid.to(rewards.dtype)
        r = (rewards * v).sum(-1) / v.sum(-1).clamp_min(1.0)  # (B,) group mean reward
        return self._per_prompt_tau(h, r)

    def _group_loss(self, logps, anchor_logps, rewards, mask, valid):
        a = self.args
        return adpo_loss(
            logps,
            anchor_logps,
            rewards,
            target=a.target,
            tau=self._group_tau(logps, rewards, mask, valid),
            beta=a.target_beta,
            mask=mask,
            valid=valid,
            ties=a.ties,
        )


class OPOTrainer(_AnchoredGroupTrainer):
    """OPO on TRL: :func:`adpo.losses.opo_loss` (escort-weighted work + χ² penalty) on whole groups.

    Same interface as :class:`ADPOTrainer`, configured by :class:`OPOConfig`.
    """

    _config_class = OPOConfig
    _tag_names = ["trl", "opo"]  # noqa: RUF012
    _name = "OPO"
    _paper = _model_card.OPO_PAPER
    _metric_names = (
        "anchored_entropy",
        "anchored_entropy_norm",
        "target_entropy",
        "delta_abs_mean",
        "delta_abs_max",
        "omega_abs_max",
        "chi2",
        "zero_signal_frac",
    )

    def _group_loss(self, logps, anchor_logps, rewards, mask, valid):
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
        )


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
