"""``adpo_group_weights``: ADPO/OPO's per-response gradient weights as a verl advantage estimator.

A listwise loss ``L_b(s_1 … s_G)`` couples the responses of a prompt only through numbers:
its gradient is ``Σ_i (∂L_b/∂s_i)·∇θ s_i``. verl computes advantages in the driver, on the
whole batch with every group's ``uid`` (:func:`verl.trainer.ppo.ray_trainer.compute_advantage`),
so that is where the weights are computed; then the policy loss is a sum over responses
and any micro-batch, dynamic batch, rank or order of rows gives the whole-group gradient
(:mod:`adpo.integrations.verl.losses`). Select it with::

    algorithm.adv_estimator=adpo_group_weights

Per response ``i`` of prompt ``b`` (``G`` responses, rewards ``r``, ``A`` = GRPO's
advantages of ``r`` as verl computes them, the numbers the whole-group mode ranks by, in
float64):

* ADPO (``adpo_listwise``/``adpo_pl``/``adpo_top1``): ``a_i = −∂L_b/∂s_i`` at ``s = 0``
  (:func:`adpo.losses.adpo_score_weights`, autograd through :func:`adpo.losses.adpo_loss`).
  With the anchor ``old_log_prob`` recomputed by the actor and one optimizer step per batch
  (``ppo_epochs=1``, ``ppo_mini_batch_size = data.train_batch_size``) the scores are 0 at
  the update, so these are the exact weights; at a later step the group's *current* scores
  would be needed, which sit on other ranks and micro-batches, and verl offers a policy
  loss no pass over them: the start-up check refuses that combination (use ``grpo``).
  For the softmax target ``a_i = (q_i − 1/G)/τ``: a genuine advantage.
* OPO (``orthogonalized_po``): ``a_i = ω̂_i``, the normalised escort weight
  (:func:`adpo.losses.escort_weights` of the group-standardised ``A``). OPO's terms are
  per response given ``ω̂``, so this is exact at every step; ``weight_norm="batch"``
  z-scores over the whole batch. ``ref_correction`` needs reference log-probs, which verl
  does not hand an estimator: refused.

Returns ``(advantages, returns)``, both ``[bs, T]``: ``a_i`` broadcast over response
``i``'s tokens, and the group loss at the update point (the mean over prompts of ``L_b`` at
``s = 0``; 0 for OPO) on every response token, which verl logs as ``critic/returns/mean``
(an estimator has no other way into verl's step metrics; with no critic, verl uses
``returns`` for nothing else, and a critic is refused).

The loss settings (``tau``, ``target``, ``alpha``, …) are read from
``actor_rollout_ref.actor.policy_loss`` of the config that ``algorithm`` belongs to (verl
passes the ``algorithm`` node of its resolved config); the estimator runs
:func:`adpo.integrations.verl.validation.problems` on that config and refuses to compute
weights the loss would misread, whether or not the run came through our launcher.

Shapes: ``bs`` responses, ``T`` response tokens, ``B`` prompts, ``G`` responses per prompt
(the largest group; smaller groups are padded and masked with ``valid``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from verl.trainer.ppo.core_algos import register_adv_est

from adpo.losses import adpo_score_weights, escort_weights, group_advantages
from adpo.losses._common import masked_mean

from .config import ADPO_TARGETS, WEIGHTS_ESTIMATOR, AdpoPolicyLossConfig
from .losses import loss_config
from .validation import VerlGroupConfigError, problems

__all__ = ["compute_adpo_group_weights", "group_weights"]

_POLICY_LOSS = "actor_rollout_ref.actor.policy_loss"


def group_weights(
    rewards: Tensor, index: np.ndarray, lc: AdpoPolicyLossConfig, *, norm_by_std: bool = True
) -> tuple[Tensor, float]:
    """Each response's weight from its whole group, and the group loss at ``s = 0``.

    Args:
        rewards: ``[bs]`` one scalar reward per response.
        index: ``[bs]`` the group (``uid``) of each response, in any order.
        lc: the loss settings.
        norm_by_std: ``algorithm.norm_adv_by_std_in_grpo``: GRPO's advantages ``(r −
            mean)/(std + 1e-6)`` or Dr.GRPO's ``r − mean``, the numbers the whole-group mode
            ranks by (the losses re-standardise them, so only ``eps`` differs).

    Returns:
        ``(a, loss)``: ``[bs]`` float64 weights (``−∂L_b/∂s_i`` for ADPO, ``ω̂_i`` for
        OPO) and the mean over prompts of the group loss at ``s = 0``.
    """
    _, group = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
    group = torch.as_tensor(group.reshape(-1), dtype=torch.long)  # (bs,)
    bs, B = len(group), int(group.max()) + 1
    order = torch.argsort(group, stable=True)
    sizes = torch.bincount(group, minlength=B)  # (B,)
    G = int(sizes.max())
    first = torch.cumsum(sizes, 0) - sizes  # (B,) where each group starts in `order`
    slot = torch.empty(bs, dtype=torch.long)
    slot[order] = torch.arange(bs) - first[group[order]]  # (bs,) place within the group
    valid = torch.zeros(B, G, dtype=torch.bool)
    valid[group, slot] = True
    R = torch.zeros(B, G, dtype=torch.float64)
    R[group, slot] = rewards.detach().double()
    # GRPO's advantages (verl's formula, float64: verl's own is float32, and its rounding
    # would depend on the order balance_batch left the rows in)
    if norm_by_std:
        A = group_advantages(R, 1e-6, valid=valid)
    else:
        A = (R - masked_mean(R, valid, dim=-1)[:, None]) * valid
    if lc.loss_mode in ADPO_TARGETS:
        out, w = adpo_score_weights(
            torch.zeros(B, G, dtype=torch.float64), A, target=lc.resolved_target, tau=lc.tau,
            beta=lc.beta, valid=valid, ties=lc.ties,
        )  # fmt: skip
        return -w[group, slot], float(out.loss)
    w_hat, _ = escort_weights(
        group_advantages(A, lc.eps, valid=valid), valid, alpha=lc.alpha,
        weight_norm=lc.weight_norm, eps=lc.eps,
    )  # fmt: skip
    return w_hat[group, slot], 0.0


def _run_config(fn: str, config: Any) -> DictConfig:
    """The whole run config that verl's ``algorithm`` node belongs to."""
    root = config._get_root() if isinstance(config, DictConfig) else None
    if root is None or OmegaConf.select(root, _POLICY_LOSS) is None:
        raise ValueError(
            f"{fn}: needs the run's config to find {_POLICY_LOSS} (tau, target, alpha, ...), "
            f"but verl passed {type(config).__name__} without it; this estimator is called "
            "by verl 0.9's compute_advantage with the `algorithm` node of the run config"
        )
    return root


@register_adv_est(WEIGHTS_ESTIMATOR)
def compute_adpo_group_weights(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """verl advantage estimator ``adpo_group_weights`` (see the module doc).

    Args:
        token_level_rewards: ``[bs, T]`` (the outcome reward sits on one token).
        response_mask: ``[bs, T]``.
        index: ``[bs]`` verl's ``uid`` of each response's prompt.
        config: the ``algorithm`` node of verl's run config.

    Returns:
        ``(advantages, returns)``, ``[bs, T]`` each: the weights broadcast over each
        response's tokens, and the group loss at the update point on every response token.
    """
    fn = WEIGHTS_ESTIMATOR
    root = _run_config(fn, config)
    found = problems(root)
    if found:
        raise VerlGroupConfigError(found)
    if OmegaConf.select(root, "algorithm.adv_estimator") != fn:
        raise ValueError(f"{fn}: called, but algorithm.adv_estimator is not {fn!r}")
    if index is None:
        raise ValueError(f"{fn}: verl passed no `index` (uid); the groups are unknown")
    lc = loss_config(fn, OmegaConf.select(root, "actor_rollout_ref.actor"))
    mask = response_mask.to(token_level_rewards.dtype)
    a, loss = group_weights(
        token_level_rewards.sum(-1),
        index,
        lc,
        norm_by_std=bool(config.get("norm_adv_by_std_in_grpo", True)),
    )
    advantages = a.to(token_level_rewards.dtype)[:, None] * mask  # (bs, T)
    return advantages, torch.full_like(mask, loss) * mask
