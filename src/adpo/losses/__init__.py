"""``adpo.losses``: pure loss functions on tensors (no model, no trainer, no I/O).

Convention: ``B`` prompts, ``G`` candidates per prompt, ``T`` tokens. Sequence-level
inputs are ``[B, G]``; token-level inputs ``[B, G, T]`` with a ``mask`` are reduced to
sequence sums (or token means, ``seq_reduction="mean"``) first. Every loss returns a :class:`LossOutput` ``(loss, metrics)``.
"""

from adpo.losses._common import LossOutput
from adpo.losses.advantages import (
    group_advantages,
    softmax_targets,
    top1_targets,
    zero_signal_groups,
)
from adpo.losses.listwise import (
    adpo_loss,
    adpo_score_weights,
    kd_loss,
    plackett_luce_nll,
    reverse_adpo_loss,
)
from adpo.losses.opo import escort_weights, opo_loss, opo_per_candidate
from adpo.losses.pairwise import dpo_loss, ipo_loss
from adpo.losses.policy_gradient import (
    aggregate_tokens,
    dapo_loss,
    grpo_loss,
    gspo_loss,
    kl_penalty_loss,
    ppo_loss,
)
from adpo.losses.supervised import sft_loss

__all__ = [
    "LossOutput",
    "adpo_loss",
    "adpo_score_weights",
    "aggregate_tokens",
    "dapo_loss",
    "dpo_loss",
    "escort_weights",
    "group_advantages",
    "grpo_loss",
    "gspo_loss",
    "ipo_loss",
    "kd_loss",
    "kl_penalty_loss",
    "opo_loss",
    "opo_per_candidate",
    "plackett_luce_nll",
    "ppo_loss",
    "reverse_adpo_loss",
    "sft_loss",
    "softmax_targets",
    "top1_targets",
    "zero_signal_groups",
]
