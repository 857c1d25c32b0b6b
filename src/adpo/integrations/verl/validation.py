"""Start-up validation: refuse a verl configuration that would split groups.

A listwise loss is only right when every micro-batch it sees holds complete, contiguous
groups of ``rollout.n`` responses. verl 0.9 keeps them contiguous from the rollout
(``repeat(interleave=True)``) to the actor update unless one of these reorders or cuts them:

* ``trainer.balance_batch`` reorders responses by length across data-parallel ranks;
* ``trainer.use_v1`` selects the transfer-queue trainer, which rebalances every batch
  by length regardless of ``balance_batch``;
* ``actor.shuffle`` shuffles responses inside the update's mini-batch loader;
* ``actor.use_dynamic_bsz`` packs micro-batches by token count (verl keeps forced groups
  atomic only for reward-model training, not in the PPO actor update);
* ``actor.entropy_coeff ≠ 0``, ``actor.use_kl_loss`` and ``algorithm.use_kl_in_reward``
  would add an entropy bonus or a KL term on top of the loss (refused like TRL's ``beta``);
* batch sizes that are not whole groups per GPU: the batch is dispatched to ``dp`` ranks
  in contiguous chunks of ``train_batch_size·n/dp`` responses, each rank cuts mini-batches
  of ``ppo_mini_batch_size·n/dp`` and micro-batches of ``ppo_micro_batch_size_per_gpu``
  responses; each must be a multiple of ``n``.

:func:`validate_verl_config` checks all of these (and that the loss can get its
hyperparameters and one advantage per response) and raises one :class:`VerlGroupConfigError`
naming every offending key. It only applies when ``policy_loss.loss_mode`` is one of ours;
verl's own losses are left alone.

Shapes: none (configuration only).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import LOSS_MODES, TARGET_PATH

__all__ = [
    "GROUP_ADV_ESTIMATORS",
    "VerlGroupConfigError",
    "data_parallel_size",
    "problems",
    "validate_verl_config",
]

#: advantage estimators whose output the losses take (one group-normalised value per response)
GROUP_ADV_ESTIMATORS = ("grpo", "grpo_vectorized")

_A = "actor_rollout_ref.actor"


class VerlGroupConfigError(ValueError):
    """A verl configuration that would feed a listwise loss split or mixed groups.

    Attributes:
        problems: ``[(key, message), ...]``, one per offending key.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = "\n".join(f"  - {key}: {msg}" for key, msg in problems)
        super().__init__(
            f"refusing to start: {len(problems)} setting(s) would break the groups that "
            f"ADPO/OPO's listwise losses need, or keep their hyperparameters from the loss:\n"
            f"{lines}"
        )


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def data_parallel_size(cfg: DictConfig) -> int:
    """Data-parallel ranks of the actor: GPUs ÷ (sequence/model parallel sizes)."""
    world = int(_get(cfg, "trainer.n_gpus_per_node", 1)) * int(_get(cfg, "trainer.nnodes", 1))
    if _get(cfg, f"{_A}.strategy") == "megatron":
        split = 1
        for key in (
            "tensor_model_parallel_size",
            "pipeline_model_parallel_size",
            "context_parallel_size",
        ):
            split *= int(_get(cfg, f"{_A}.megatron.{key}", 1) or 1)
    else:
        split = int(
            _get(cfg, f"{_A}.ulysses_sequence_parallel_size", None)
            or _get(cfg, f"{_A}.fsdp_config.ulysses_sequence_parallel_size", 1)
            or 1
        )
    return max(world // max(split, 1), 1)


def problems(cfg: DictConfig) -> list[tuple[str, str]]:
    """Every setting of a composed verl config that breaks groups, as ``(key, why)``.

    Empty when the policy loss is not one of ours (verl's own losses are not checked).
    """
    mode = _get(cfg, f"{_A}.policy_loss.loss_mode", "vanilla")
    if mode not in LOSS_MODES:
        if mode == "opo":
            return [
                (
                    f"{_A}.policy_loss.loss_mode",
                    "'opo' is verl's advantage estimator, not a policy loss; the OPO loss is "
                    "'orthogonalized_po'",
                )
            ]
        return []
    out: list[tuple[str, str]] = []

    def bad(key: str, why: str) -> None:
        out.append((key, f"is {_get(cfg, key)!r}; {why}"))

    target = _get(cfg, f"{_A}.policy_loss._target_")
    if target != TARGET_PATH:
        bad(
            f"{_A}.policy_loss._target_",
            f"must be {TARGET_PATH} so that tau/beta/alpha/mu/target reach the loss "
            "(verl's PolicyLossConfig rejects those keys)",
        )
    if _get(cfg, "trainer.use_v1", False):
        bad(
            "trainer.use_v1",
            "must be false: verl's v1 trainer rebalances every batch by sequence length "
            "(whatever trainer.balance_batch says), which splits groups",
        )
    if _get(cfg, "trainer.balance_batch", True):
        bad(
            "trainer.balance_batch",
            "must be false: it reorders responses by length across ranks, splitting groups",
        )
    if _get(cfg, f"{_A}.shuffle", False):
        bad(f"{_A}.shuffle", "must be false: it shuffles responses across groups")
    if _get(cfg, f"{_A}.use_dynamic_bsz", False):
        bad(
            f"{_A}.use_dynamic_bsz",
            "must be false: dynamic batching packs micro-batches by token count and does "
            "not keep groups atomic in the actor update",
        )
    if _get(cfg, f"{_A}.use_prefix_grouper", False):
        bad(f"{_A}.use_prefix_grouper", "must be false (untested with these losses)")
    estimator = _get(cfg, "algorithm.adv_estimator")
    if estimator not in GROUP_ADV_ESTIMATORS:
        bad(
            "algorithm.adv_estimator",
            f"must be one of {GROUP_ADV_ESTIMATORS}: the losses take one group-normalised "
            "outcome advantage per response",
        )
    # verl adds these on top of the policy loss; the TRL trainers refuse their equivalents
    # (beta, the entropy bonus): the anchor is the regulariser, and an extra term would make
    # "ADPO" or "OPO" here a different objective from the same name on TRL
    entropy_coeff = _get(cfg, f"{_A}.entropy_coeff", 0) or 0
    if entropy_coeff != 0:
        bad(
            f"{_A}.entropy_coeff",
            "must be 0: verl would add an entropy bonus on top of the ADPO/OPO loss (the TRL "
            "trainers refuse it too)",
        )
    if _get(cfg, f"{_A}.use_kl_loss", False):
        bad(
            f"{_A}.use_kl_loss",
            "must be false: verl would add a KL-to-reference loss on top of ADPO/OPO, whose "
            "anchor already regularises (the TRL trainers refuse beta != 0 likewise)",
        )
    if _get(cfg, "algorithm.use_kl_in_reward", False):
        bad(
            "algorithm.use_kl_in_reward",
            "must be false: a KL penalty in the reward changes the advantages the losses "
            "rank by (the TRL trainers refuse beta != 0 likewise)",
        )
    for key in ("rollout_is", "rollout_rs"):
        full = f"algorithm.rollout_correction.{key}"
        if _get(cfg, full) is not None:
            bad(full, "must be null: the listwise losses take no per-token IS weights")

    n = _get(cfg, "actor_rollout_ref.rollout.n", 1)
    if not isinstance(n, int) or n < 2:
        bad("actor_rollout_ref.rollout.n", "must be an int >= 2 (a group per prompt)")
        return out
    group_size = _get(cfg, f"{_A}.policy_loss.group_size")
    if group_size is not None and group_size != n:
        bad(f"{_A}.policy_loss.group_size", f"must be null or equal rollout.n = {n}")

    dp = data_parallel_size(cfg)
    per_gpu = f"with {dp} data-parallel rank(s) and rollout.n={n}"
    train_bs = _get(cfg, "data.train_batch_size")
    if isinstance(train_bs, int) and train_bs % dp:
        bad(
            "data.train_batch_size",
            f"must be a multiple of the data-parallel size {dp}, so each rank receives "
            f"whole groups ({train_bs}·{n}/{dp} responses is not a multiple of {n})",
        )
    mini = _get(cfg, f"{_A}.ppo_mini_batch_size")
    mini_per_gpu = None
    if isinstance(mini, int):
        if mini % dp:
            bad(
                f"{_A}.ppo_mini_batch_size",
                f"must be a multiple of {dp} ({per_gpu}): each rank's mini-batch of "
                f"{mini}·{n}/{dp} responses must be whole groups",
            )
        else:
            mini_per_gpu = mini * n // dp
    if _get(cfg, f"{_A}.ppo_micro_batch_size") is not None:
        bad(
            f"{_A}.ppo_micro_batch_size",
            f"must be null (deprecated); set {_A}.ppo_micro_batch_size_per_gpu to a multiple "
            f"of rollout.n={n}",
        )
    micro = _get(cfg, f"{_A}.ppo_micro_batch_size_per_gpu")
    if not isinstance(micro, int) or micro < 1 or micro % n:
        bad(
            f"{_A}.ppo_micro_batch_size_per_gpu",
            f"must be a positive multiple of rollout.n={n} (responses per micro-batch)",
        )
    elif mini_per_gpu is not None and mini_per_gpu % micro:
        bad(
            f"{_A}.ppo_micro_batch_size_per_gpu",
            f"must divide the per-GPU mini-batch of {mini_per_gpu} responses ({per_gpu})",
        )
    return out


def validate_verl_config(cfg: DictConfig) -> None:
    """Raise :class:`VerlGroupConfigError` naming every key that would break groups.

    Args:
        cfg: the composed verl PPO config (``verl/trainer/config/ppo_trainer.yaml`` plus
            overrides), e.g. from :func:`adpo.integrations.verl.launcher.compose_config`.
    """
    found = problems(cfg)
    if found:
        raise VerlGroupConfigError(found)
