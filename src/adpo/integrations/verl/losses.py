"""ADPO and OPO as verl policy losses: ``adpo_listwise``, ``adpo_pl``, ``adpo_top1``,
``orthogonalized_po``, registered with ``verl.trainer.ppo.core_algos.register_policy_loss``.

verl calls a policy loss with flat per-token tensors and no prompt ids::

    loss_fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
            rollout_is_weights) -> (loss, metrics)

Shape glossary:

    bs  responses in the micro-batch the loss sees (= B·G when groups are whole)
    T   response tokens (padded)
    B   prompts in the micro-batch (bs / G)
    G   responses per prompt (``actor_rollout_ref.rollout.n``)

What each loss does:

1. Checks the layout: ``bs`` is a multiple of ``G``, the advantages are the token-broadcast
   outcome advantages of verl's GRPO estimator (one value per response), and, unless
   ``policy_loss.check_groups=false``, each block of ``G`` consecutive rows is one GRPO group
   (its advantages average to 0). verl hands no group ids to a policy loss, so this is the
   run-time check that the start-up validation (:mod:`adpo.integrations.verl.validation`)
   kept groups whole. A failed check raises; a passed one reports how many groups it
   verified as ``actor/<adpo|opo>/groups_checked`` in verl's step metrics.
2. Reshapes ``[bs, T] → [B, G, T]`` and calls :func:`adpo.losses.adpo_loss` /
   :func:`adpo.losses.opo_loss`, which sum the token log-ratios under ``response_mask``
   first (early reduction) and then apply the listwise loss over ``[B, G]``. The anchor is
   ``old_log_prob`` (π_old, the policy that sampled the batch: the on-policy anchor of the
   papers' LLM runs); the "rewards" are the per-response GRPO advantages (ADPO's targets and
   OPO's escort weights re-standardise them per group, and rankings are unchanged).
3. Rescales the per-prompt mean to verl's global normalisation: verl sums micro-batch losses
   without dividing and averages gradients over data-parallel ranks, so each micro-batch
   returns ``Σ_{its prompts} loss_b · dp_size / (prompts in the global mini-batch)``, and the
   mini-batch gradient is that of the mean over all its prompts.

``loss_agg_mode`` is ignored: the listwise losses aggregate per prompt by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from verl.trainer.ppo.core_algos import register_policy_loss

from adpo.losses import adpo_loss, opo_loss
from adpo.losses._common import LossOutput

from .config import OPO_LOSS_MODE, TARGET_PATH, AdpoPolicyLossConfig

__all__ = [
    "compute_adpo_listwise_loss",
    "compute_adpo_pl_loss",
    "compute_adpo_top1_loss",
    "compute_orthogonalized_po_loss",
    "group_layout",
    "loss_config",
]

_KEY = "actor_rollout_ref.actor"


def loss_config(fn: str, config: Any) -> AdpoPolicyLossConfig:
    """The :class:`AdpoPolicyLossConfig` inside verl's actor ``config``.

    Accepts the dataclass (what verl's engine workers build) or a mapping whose
    ``_target_`` names our class (legacy callers pass an OmegaConf ``DictConfig``). A plain
    ``PolicyLossConfig`` is refused: its loss would silently run on default
    hyperparameters, whatever the YAML said.
    """
    if config is None:
        raise ValueError(f"{fn}: verl passed no actor `config`; the loss needs its policy_loss")
    policy_loss = config.get("policy_loss") if isinstance(config, Mapping) else None
    if policy_loss is None:
        policy_loss = getattr(config, "policy_loss", None)
    if isinstance(policy_loss, AdpoPolicyLossConfig):
        return policy_loss
    target = policy_loss.get("_target_") if isinstance(policy_loss, Mapping) else None
    if isinstance(policy_loss, Mapping) and target == TARGET_PATH:
        names = AdpoPolicyLossConfig.__dataclass_fields__
        kwargs = {k: policy_loss[k] for k in policy_loss if k in names and k != "_target_"}
        if "rollout_correction" in kwargs:  # a nested config verl may hand over as a mapping
            kwargs.pop("rollout_correction")
        return AdpoPolicyLossConfig(**kwargs)
    raise ValueError(
        f"{fn}: `{_KEY}.policy_loss` is a {type(policy_loss).__name__} (target "
        f"{target!r}), so tau/beta/alpha/mu from your config cannot reach this loss; set "
        f"`{_KEY}.policy_loss._target_={TARGET_PATH}`"
    )


def _cfg(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def group_layout(
    fn: str,
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    config: Any,
    lc: AdpoPolicyLossConfig,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check verl's flat batch and reshape it into whole groups.

    Args:
        old_log_prob: ``[bs, T]`` token log-probs under π_old (the anchor).
        log_prob: ``[bs, T]`` token log-probs under πθ (carries the gradient).
        advantages: ``[bs, T]`` token-broadcast outcome advantages (GRPO).
        response_mask: ``[bs, T]`` 1/True on response tokens.
        config: verl's actor config (``rollout_n``, ``shuffle``, ``use_dynamic_bsz``).
        lc: the loss config.

    Returns:
        ``(logps, old_logps, adv, mask)``: ``[B, G, T]``, ``[B, G, T]``, ``[B, G]`` (one
        advantage per response), ``[B, G, T]`` bool.
    """
    for name, t in (
        ("old_log_prob", old_log_prob),
        ("log_prob", log_prob),
        ("advantages", advantages),
        ("response_mask", response_mask),
    ):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2 or t.shape != log_prob.shape:
            raise ValueError(
                f"{fn}: `{name}` must be [bs, T] like log_prob {tuple(log_prob.shape)}, got "
                f"{tuple(t.shape)}"
            )
    # the actor-side settings a policy loss can see (the trainer-side ones are checked at
    # start-up): anything that reorders sequences inside the update breaks groups
    offending = [
        f"{_KEY}.{key}={_cfg(config, key)}"
        for key in ("shuffle", "use_dynamic_bsz")
        if _cfg(config, key, False)
    ]
    if offending:
        raise ValueError(
            f"{fn}: {', '.join(offending)} reorders responses inside the actor update and "
            "splits the groups a listwise loss needs; set them to false"
        )
    rollout_n = _cfg(config, "rollout_n")
    if isinstance(rollout_n, int) and not isinstance(rollout_n, bool):
        if lc.group_size is not None and lc.group_size != rollout_n:
            raise ValueError(
                f"{fn}: {_KEY}.policy_loss.group_size={lc.group_size} differs from "
                f"actor_rollout_ref.rollout.n={rollout_n}"
            )
        G = rollout_n
    elif lc.group_size is not None:
        G = lc.group_size
    else:
        raise ValueError(
            f"{fn}: group size unknown: the actor config has no integer `rollout_n` and "
            f"{_KEY}.policy_loss.group_size is not set"
        )
    if G < 2:
        raise ValueError(
            f"{fn}: actor_rollout_ref.rollout.n={G}; a listwise loss needs groups of >= 2 "
            "responses per prompt"
        )
    bs, T = log_prob.shape
    if bs == 0 or bs % G:
        raise ValueError(
            f"{fn}: the micro-batch holds {bs} responses, not a positive multiple of the "
            f"group size {G}; {_KEY}.ppo_micro_batch_size_per_gpu must be a multiple of "
            "rollout.n (see adpo.integrations.verl.validate_verl_config)"
        )
    B = bs // G
    mask = response_mask.bool()
    adv = advantages.detach().to(torch.promote_types(advantages.dtype, torch.float32))
    zero = torch.zeros((), dtype=adv.dtype, device=adv.device)
    count = mask.sum(-1)  # (bs,)
    adv_seq = torch.where(mask, adv, zero).sum(-1) / count.clamp_min(1)  # (bs,)
    scale = adv_seq.abs().clamp_min(1.0)  # (bs,)
    spread = torch.where(mask, (adv - adv_seq[:, None]).abs(), zero).amax(-1)  # (bs,)
    bad = spread > lc.group_tol * scale
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"{fn}: advantages vary along response {i} (spread {float(spread[i]):.3g}); these "
            "losses take one outcome advantage per response, token-broadcast as verl's "
            "GRPO estimator makes them: set algorithm.adv_estimator=grpo"
        )
    adv_g = adv_seq.view(B, G)  # (B, G)
    if lc.check_groups:
        mean = adv_g.mean(-1)  # (B,)
        tol = lc.group_tol * adv_g.abs().amax(-1).clamp_min(1.0)  # (B,)
        off = mean.abs() > tol
        if off.any():
            b = int(off.nonzero()[0])
            raise ValueError(
                f"{fn}: responses {b * G}..{b * G + G - 1} of this micro-batch are not one "
                f"GRPO group (their advantages average to {float(mean[b]):.4g}, not 0): "
                "groups were split or mixed before the loss. Keep trainer.balance_batch=false, "
                f"trainer.use_v1=false, {_KEY}.shuffle=false, {_KEY}.use_dynamic_bsz=false and "
                "batch sizes in whole groups (adpo.integrations.verl.validate_verl_config); set "
                f"{_KEY}.policy_loss.check_groups=false only for an estimator whose group "
                "advantages do not sum to 0"
            )
    return (
        log_prob.view(B, G, T),
        old_log_prob.view(B, G, T),
        adv_g,
        mask.view(B, G, T),
    )


def _global_scale(config: Any, n_prompts: int, G: int) -> float:
    """Factor turning a per-prompt mean over this micro-batch into verl's global share."""
    info = _cfg(config, "global_batch_info") or {}
    gbs = info.get("global_batch_size") if isinstance(info, Mapping) else None
    if gbs is None:  # called outside verl's trainer: the plain mean over this micro-batch
        return 1.0
    dp = info.get("dp_size", 1) or 1
    return float(dp) * n_prompts / (float(gbs) / G)


def _finish(out: LossOutput, config: Any, lc: AdpoPolicyLossConfig, B: int, G: int, prefix: str):
    """Scale the loss to verl's global mean; name the metrics ``actor/<prefix>/*``.

    ``groups_checked`` is the number of groups :func:`group_layout` verified in this
    micro-batch (0 with ``check_groups=false``): a failed check raises before this point,
    so in verl's step metrics a positive value is the run-time evidence that every
    micro-batch held whole GRPO groups.
    """
    loss = out.loss * _global_scale(config, B, G)
    metrics = {f"actor/{prefix}/{k}": float(v) for k, v in out.metrics.items()}
    metrics[f"actor/{prefix}/loss_prompt_mean"] = float(out.loss.detach())
    metrics[f"actor/{prefix}/groups_checked"] = float(B) if lc.check_groups else 0.0
    return loss, metrics


def _refuse_weights(fn: str, rollout_is_weights: Tensor | None) -> None:
    if rollout_is_weights is not None:
        raise ValueError(
            f"{fn}: verl passed rollout importance weights (algorithm.rollout_correction."
            "rollout_is / rollout_rs); ADPO/OPO's listwise losses do not use per-token IS "
            "weights: set algorithm.rollout_correction.rollout_is=null and rollout_rs=null"
        )


def _prepare(
    fn: str,
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    config: Any,
    rollout_is_weights: Tensor | None,
):
    """What every registered loss does first: refuse IS weights, read and check its config
    (``loss_mode`` must name ``fn``), lay the micro-batch out as whole groups."""
    _refuse_weights(fn, rollout_is_weights)
    lc = loss_config(fn, config)
    if lc.loss_mode != fn:
        raise ValueError(
            f"{fn}: called as {fn!r} but {_KEY}.policy_loss.loss_mode is {lc.loss_mode!r}"
        )
    return lc, *group_layout(fn, old_log_prob, log_prob, advantages, response_mask, config, lc)


def _adpo(
    fn: str,
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    config: Any,
    rollout_is_weights: Tensor | None,
):
    """The three ADPO modes differ only in ``lc.resolved_target``."""
    lc, lp, old, adv, mask = _prepare(
        fn, old_log_prob, log_prob, advantages, response_mask, config, rollout_is_weights
    )
    out = adpo_loss(
        lp,
        old,
        adv,
        target=lc.resolved_target,
        tau=lc.tau,
        beta=lc.beta,
        mask=mask,
        ties=lc.ties,
    )
    return _finish(out, config, lc, *adv.shape, prefix="adpo")


@register_policy_loss("adpo_listwise")
def compute_adpo_listwise_loss(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """ADPO, listwise cross-entropy in anchored logits (ADPO eq. 9) with ``policy_loss.target``.

    ``u = (Σ_t log πθ − Σ_t log π_old)/τ`` per response, ``q = softmax(A/β_r)`` over the
    group (default target), loss ``−Σ_i q_i log softmax(u)_i`` averaged over prompts.

    Args:
        old_log_prob: ``[bs, T]`` token log-probs under π_old (the anchor).
        log_prob: ``[bs, T]`` token log-probs under πθ.
        advantages: ``[bs, T]`` GRPO advantages, constant along each response.
        response_mask: ``[bs, T]`` (1 = a response token).
        loss_agg_mode: ignored (the loss is per prompt).
        config: verl's actor config; ``config.policy_loss`` is an :class:`AdpoPolicyLossConfig`.
        rollout_is_weights: must be None.

    Returns:
        ``(loss, metrics)``: scalar loss (already scaled to verl's global mini-batch mean)
        and float metrics ``actor/adpo/*`` (anchored entropy, target entropy, |Δ|, τ, …,
        ``groups_checked``: groups whose layout passed the run-time check).
    """
    fn = "adpo_listwise"
    return _adpo(fn, old_log_prob, log_prob, advantages, response_mask, config, rollout_is_weights)


@register_policy_loss("adpo_pl")
def compute_adpo_pl_loss(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """ADPO with the Plackett–Luce ranking target (ADPO §4.4, the papers' LLM setting).

    The ranking is the one the advantages induce (the same as the rewards' within a
    group); ties follow ``policy_loss.ties``. Args/returns as in
    :func:`compute_adpo_listwise_loss`.
    """
    fn = "adpo_pl"
    return _adpo(fn, old_log_prob, log_prob, advantages, response_mask, config, rollout_is_weights)


@register_policy_loss("adpo_top1")
def compute_adpo_top1_loss(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """ADPO with the top-1 target (ADPO eq. 11): ``q`` uniform over the best responses.

    Args/returns as in :func:`compute_adpo_listwise_loss`.
    """
    fn = "adpo_top1"
    return _adpo(fn, old_log_prob, log_prob, advantages, response_mask, config, rollout_is_weights)


@register_policy_loss(OPO_LOSS_MODE)
def compute_orthogonalized_po_loss(
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """OPO (OPO eq. 18): ``mean_{b,g}[−ω̂_α·Δ + μ/2·Δ²]`` with ``Δ = Σ_t log πθ − Σ_t log π_old``.

    ``ω̂`` from the per-response GRPO advantages with ``policy_loss.alpha``/``weight_norm``
    (see :func:`adpo.losses.opo_loss`). Args/returns as in
    :func:`compute_adpo_listwise_loss`; metrics ``actor/opo/*``.
    """
    lc, lp, old, adv, mask = _prepare(
        OPO_LOSS_MODE,
        old_log_prob,
        log_prob,
        advantages,
        response_mask,
        config,
        rollout_is_weights,
    )
    out = opo_loss(
        lp,
        old,
        adv,
        alpha=lc.alpha,
        mu=lc.mu,
        mask=mask,
        ratio=lc.ratio,
        weight_norm=lc.weight_norm,
        ref_correction=lc.ref_correction,
        eps=lc.eps,
    )
    return _finish(out, config, lc, *adv.shape, prefix="opo")
