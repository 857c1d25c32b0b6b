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

Each loss works in one of two modes, chosen by ``algorithm.adv_estimator`` (which the loss
reads as ``policy_loss.adv_estimator``; see :class:`~adpo.integrations.verl.AdpoPolicyLossConfig`).

**Per response** (``algorithm.adv_estimator=adpo_group_weights``). A group loss
``L_b(s_1 … s_G)`` of the responses' scores ``s_i = Δ_i`` (summed or token-mean
log-ratios against ``old_log_prob``) has gradient ``Σ_i (∂L_b/∂s_i)·∇θ s_i``. The
estimator (:mod:`adpo.integrations.verl.estimator`) sees the whole batch in the driver and
hands each response ``a_i = −∂L_b/∂s_i`` at ``Δ = 0`` (ADPO; exact while the policy is the
one that sampled the batch, i.e. one optimizer step per batch) or OPO's escort weight
``ω̂_i`` (exact at any step: OPO's terms are per response given ``ω̂``), token-broadcast as
its advantage. The loss is then a sum over whatever rows the micro-batch holds:

* ADPO: ``−Σ_i a_i·Δ_i``, times ``dp_size / (prompts in the global mini-batch)``;
* OPO: ``Σ_i (−ω̂_i·x_i + μ/2·x_i²)`` (:func:`adpo.losses.opo_per_candidate`), times
  ``dp_size / (responses in the global mini-batch)``;

so verl's sum over micro-batches and mean over data-parallel ranks give the whole-group
gradient of the mean over prompts (ADPO) or responses (OPO), however ``use_dynamic_bsz``,
``trainer.balance_batch`` or ``actor.shuffle`` cut, move and reorder the rows. The loss
checks only that the advantages are one value per response. Metrics ``actor/<adpo|opo>/``
``delta_abs_mean``/``delta_abs_max`` (≈ 0 at an ADPO update: the evidence that the weights
were taken at the right point), ``weight_abs_max`` (ADPO) or ``omega_abs_max``/``chi2``/
``target_clip_frac`` (OPO) and ``responses`` (rows in the micro-batch). The group loss
itself is computed in the estimator, and verl logs it as ``critic/returns/mean``.

**Whole groups** (``algorithm.adv_estimator=grpo``):

1. Checks the layout: ``bs`` is a multiple of ``G``, the advantages are the token-broadcast
   outcome advantages of verl's GRPO estimator (one value per response), and, unless
   ``policy_loss.check_groups=false``, each block of ``G`` consecutive rows is one GRPO group
   (its advantages average to 0). verl hands no group ids to a policy loss, so this is the
   run-time check that the start-up validation (:mod:`adpo.integrations.verl.validation`)
   kept groups whole. A failed check raises; a passed one reports how many groups it
   verified as ``actor/<adpo|opo>/groups_checked`` in verl's step metrics.
2. Reshapes ``[bs, T] → [B, G, T]`` and calls :func:`adpo.losses.adpo_loss` /
   :func:`adpo.losses.opo_loss`, which reduce the token log-ratios under ``response_mask``
   first (early reduction, ``policy_loss.seq_reduction``) and then apply the listwise loss
   over ``[B, G]``. The anchor is ``old_log_prob`` (π_old, the policy that sampled the
   batch: the on-policy anchor of the papers' LLM runs); the "rewards" are the
   per-response GRPO advantages (ADPO's targets and OPO's escort weights re-standardise
   them per group, and rankings are unchanged).
3. Rescales the per-prompt mean to verl's global normalisation: verl sums micro-batch losses
   without dividing and averages gradients over data-parallel ranks, so each micro-batch
   returns ``Σ_{its prompts} loss_b · dp_size / (prompts in the global mini-batch)``, and the
   mini-batch gradient is that of the mean over all its prompts.

This mode needs the current scores of every group member in one micro-batch, so it is the
one for several optimizer steps per batch (``ppo_epochs`` > 1 or several mini-batches) with
ADPO; it refuses anything that splits groups.

``loss_agg_mode`` is ignored: the listwise losses aggregate per prompt by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from verl.trainer.ppo.core_algos import register_policy_loss

from adpo.losses import adpo_loss, opo_loss, opo_per_candidate
from adpo.losses._common import LossOutput, prepare_group

from .config import OPO_LOSS_MODE, TARGET_PATH, WEIGHTS_ESTIMATOR, AdpoPolicyLossConfig

__all__ = [
    "compute_adpo_listwise_loss",
    "compute_adpo_pl_loss",
    "compute_adpo_top1_loss",
    "compute_orthogonalized_po_loss",
    "group_layout",
    "loss_config",
    "response_layout",
    "response_scores",
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


def _check_inputs(
    fn: str, old_log_prob: Tensor, log_prob: Tensor, advantages: Tensor, response_mask: Tensor
) -> None:
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


def _group_size(fn: str, config: Any, lc: AdpoPolicyLossConfig) -> int:
    """``G``: ``rollout_n`` of the actor config (``policy_loss.group_size`` must agree)."""
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
    return G


def _response_advantages(
    fn: str, advantages: Tensor, mask: Tensor, lc: AdpoPolicyLossConfig, what: str
) -> Tensor:
    """``[bs]`` one advantage per response, refusing advantages that vary along one.

    The value is read at the response's first token, not averaged over its tokens: a mean
    of ``n`` copies of ``x`` may differ from ``x`` in the last bit, which would break the
    exact ties the top-1 and Plackett–Luce targets depend on.
    """
    adv = advantages.detach().to(torch.promote_types(advantages.dtype, torch.float32))
    zero = torch.zeros((), dtype=adv.dtype, device=adv.device)
    first = mask.to(torch.uint8).argmax(-1, keepdim=True)  # (bs, 1) first response token
    adv_seq = torch.where(mask.any(-1), adv.gather(-1, first)[:, 0], zero)  # (bs,)
    scale = adv_seq.abs().clamp_min(1.0)  # (bs,)
    spread = torch.where(mask, (adv - adv_seq[:, None]).abs(), zero).amax(-1)  # (bs,)
    bad = spread > lc.group_tol * scale
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"{fn}: advantages vary along response {i} (spread {float(spread[i]):.3g}); these "
            f"losses take one value per response, token-broadcast as {what} makes them"
        )
    return adv_seq


def group_layout(
    fn: str,
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    config: Any,
    lc: AdpoPolicyLossConfig,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check verl's flat batch and reshape it into whole groups (whole-group mode).

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
    _check_inputs(fn, old_log_prob, log_prob, advantages, response_mask)
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
            "splits the groups a listwise loss needs on GRPO advantages; set them to false, "
            f"or use algorithm.adv_estimator={WEIGHTS_ESTIMATOR} (weights per response)"
        )
    G = _group_size(fn, config, lc)
    bs, T = log_prob.shape
    if bs == 0 or bs % G:
        raise ValueError(
            f"{fn}: the micro-batch holds {bs} responses, not a positive multiple of the "
            f"group size {G}; {_KEY}.ppo_micro_batch_size_per_gpu must be a multiple of "
            "rollout.n (see adpo.integrations.verl.validate_verl_config)"
        )
    B = bs // G
    mask = response_mask.bool()
    adv_seq = _response_advantages(
        fn, advantages, mask, lc, "verl's GRPO estimator (set algorithm.adv_estimator=grpo)"
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
                "batch sizes in whole groups (adpo.integrations.verl.validate_verl_config), or "
                f"use algorithm.adv_estimator={WEIGHTS_ESTIMATOR}; set "
                f"{_KEY}.policy_loss.check_groups=false only for an estimator whose group "
                "advantages do not sum to 0"
            )
    return (
        log_prob.view(B, G, T),
        old_log_prob.view(B, G, T),
        adv_g,
        mask.view(B, G, T),
    )


def response_layout(
    fn: str,
    old_log_prob: Tensor,
    log_prob: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    lc: AdpoPolicyLossConfig,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check verl's flat batch for the per-response mode: rows of any groups, in any order.

    Args: as in :func:`group_layout`, with ``advantages`` the token-broadcast weights of
    :data:`~adpo.integrations.verl.WEIGHTS_ESTIMATOR`.

    Returns:
        ``(log_prob, old_log_prob, a, mask)``: ``[bs, T]``, ``[bs, T]``, ``[bs]`` (one
        weight per response), ``[bs, T]`` bool.
    """
    _check_inputs(fn, old_log_prob, log_prob, advantages, response_mask)
    mask = response_mask.bool()
    a = _response_advantages(fn, advantages, mask, lc, f"the {WEIGHTS_ESTIMATOR} estimator")
    return log_prob, old_log_prob, a, mask


def response_scores(
    fn: str, log_prob: Tensor, old_log_prob: Tensor, mask: Tensor, seq_reduction: str
) -> Tensor:
    """``[bs]`` scores ``Δ_i``: masked token log-ratios against the anchor, summed token by
    token (or their mean), in float32 or wider: the early reduction of :mod:`adpo.losses`."""
    if log_prob.shape[0] == 0:  # an empty micro-batch (dynamic batching can pad with one)
        return log_prob.sum(-1)
    *_, delta = prepare_group(
        fn, log_prob[None], old_log_prob[None], mask[None], None, min_group=1,
        seq_reduction=seq_reduction,
    )  # fmt: skip
    return delta[0]  # (bs,)


def _global_scale(config: Any, rows: int, per: int) -> float:
    """Factor turning a sum over this micro-batch's rows into verl's global share of the
    mean over prompts (``per = G``) or responses (``per = 1``): ``dp_size · per /
    global_batch_size`` (verl sums micro-batch losses without dividing and averages
    gradients over data-parallel ranks). Outside verl's trainer: the mean over this
    micro-batch."""
    info = _cfg(config, "global_batch_info") or {}
    gbs = info.get("global_batch_size") if isinstance(info, Mapping) else None
    if gbs is None:
        return per / max(rows, 1)
    dp = info.get("dp_size", 1) or 1
    return float(dp) * per / float(gbs)


def _finish(out: LossOutput, config: Any, lc: AdpoPolicyLossConfig, B: int, G: int, prefix: str):
    """Scale the loss to verl's global mean; name the metrics ``actor/<prefix>/*``.

    ``groups_checked`` is the number of groups :func:`group_layout` verified in this
    micro-batch (0 with ``check_groups=false``): a failed check raises before this point,
    so in verl's step metrics a positive value is the run-time evidence that every
    micro-batch held whole GRPO groups.
    """
    loss = out.loss * B * _global_scale(config, B * G, G)  # per-prompt mean → sum → share
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


def _config(fn: str, config: Any, rollout_is_weights: Tensor | None) -> AdpoPolicyLossConfig:
    """What every registered loss does first: refuse IS weights, read and check its config
    (``loss_mode`` must name ``fn``)."""
    _refuse_weights(fn, rollout_is_weights)
    lc = loss_config(fn, config)
    if lc.loss_mode != fn:
        raise ValueError(
            f"{fn}: called as {fn!r} but {_KEY}.policy_loss.loss_mode is {lc.loss_mode!r}"
        )
    if lc.per_response and (_cfg(config, "ppo_epochs", 1) or 1) > 1 and fn != OPO_LOSS_MODE:
        raise ValueError(
            f"{fn}: {_KEY}.ppo_epochs={_cfg(config, 'ppo_epochs')} with "
            f"algorithm.adv_estimator={WEIGHTS_ESTIMATOR}: ADPO's weights are taken at the "
            "policy that sampled the batch, so only one optimizer step per batch is exact; "
            "use algorithm.adv_estimator=grpo (whole groups) for several epochs"
        )
    return lc


def _response_metrics(prefix: str, delta: Tensor, weight: Tensor, name: str) -> dict[str, float]:
    d = delta.detach().abs()
    n = d.numel()
    return {
        f"actor/{prefix}/delta_abs_mean": float(d.mean()) if n else 0.0,
        f"actor/{prefix}/delta_abs_max": float(d.max()) if n else 0.0,
        f"actor/{prefix}/{name}": float(weight.abs().max()) if n else 0.0,
        f"actor/{prefix}/responses": float(n),
    }


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
    lc = _config(fn, config, rollout_is_weights)
    if lc.per_response:
        G = _group_size(fn, config, lc)
        lp, old, a, mask = response_layout(
            fn, old_log_prob, log_prob, advantages, response_mask, lc
        )
        delta = response_scores(fn, lp, old, mask, lc.seq_reduction)  # (bs,)
        loss = -(a.to(delta.dtype) * delta).sum() * _global_scale(config, len(delta), G)
        return loss, _response_metrics("adpo", delta, a, "weight_abs_max")
    lp, old, adv, mask = group_layout(
        fn, old_log_prob, log_prob, advantages, response_mask, config, lc
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
        seq_reduction=lc.seq_reduction,
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
    group (default target), loss ``−Σ_i q_i log softmax(u)_i`` averaged over prompts. With
    ``algorithm.adv_estimator=adpo_group_weights`` the advantages are the weights
    ``a_i = −∂L_b/∂s_i`` and the loss is ``−Σ_i a_i·Δ_i`` over the micro-batch's rows (the
    module doc).

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
    (see :func:`adpo.losses.opo_loss`), or, with
    ``algorithm.adv_estimator=adpo_group_weights``, ``ω̂`` itself as the advantage and the
    terms summed over the micro-batch's rows (:func:`adpo.losses.opo_per_candidate`).
    Args/returns as in :func:`compute_adpo_listwise_loss`; metrics ``actor/opo/*``.
    """
    fn = OPO_LOSS_MODE
    lc = _config(fn, config, rollout_is_weights)
    if lc.per_response:
        lp, old, omega, mask = response_layout(
            fn, old_log_prob, log_prob, advantages, response_mask, lc
        )
        delta = response_scores(fn, lp, old, mask, lc.seq_reduction)  # (bs,)
        per, x, clipped = opo_per_candidate(
            delta, omega.to(delta.dtype), mu=lc.mu, ratio=lc.ratio, eps=lc.eps
        )  # (bs,) each
        loss = per.sum() * _global_scale(config, len(delta), 1)
        metrics = _response_metrics("opo", delta, omega, "omega_abs_max")
        dev = x.detach() if lc.ratio == "exact" else torch.expm1(delta.detach().clamp_max(10.0))
        n = max(len(delta), 1)
        metrics["actor/opo/chi2"] = float(dev.pow(2).sum() / n)
        metrics["actor/opo/target_clip_frac"] = float(clipped.sum() / n)
        return loss, metrics
    lp, old, adv, mask = group_layout(
        fn, old_log_prob, log_prob, advantages, response_mask, config, lc
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
        seq_reduction=lc.seq_reduction,
    )
    return _finish(out, config, lc, *adv.shape, prefix="opo")
