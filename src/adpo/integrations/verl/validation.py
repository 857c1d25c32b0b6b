"""Start-up validation: refuse a verl configuration that would feed a listwise loss wrong groups.

A listwise loss couples the ``rollout.n`` responses of a prompt. The integration keeps that
exact in one of two modes (:mod:`adpo.integrations.verl.losses`), chosen by
``algorithm.adv_estimator``:

**Per response** (``adpo_group_weights``, :mod:`adpo.integrations.verl.estimator`): the
weights come from whole groups in the driver, the loss is a sum over responses, so
``trainer.balance_batch``, ``actor.shuffle``, ``actor.use_dynamic_bsz`` and any
micro-batch size are allowed. Refused, each with its reason:

* ADPO with more than one optimizer step per batch (``actor.ppo_epochs`` > 1 or
  ``actor.ppo_mini_batch_size`` < ``data.train_batch_size``): after the first step the
  weights need the group's current scores, which sit on other ranks and micro-batches,
  and verl gives a policy loss no pass over them; use ``grpo`` (whole groups) there;
* ADPO with ``algorithm.rollout_correction.bypass_mode`` (the anchor is then the rollout's
  log-probs, so the scores are not 0 at the update);
* OPO with ``policy_loss.ref_correction`` (verl hands an estimator no log-probs);
* ``critic.enable`` (``returns`` carries the group loss for logging);
* without ``use_dynamic_bsz``, a micro-batch size that does not divide the per-GPU
  mini-batch (verl cuts it into equal micro-batches; any size is right for the loss);
* ``policy_loss.adv_estimator`` other than ``algorithm.adv_estimator`` (the loss would
  misread the advantages; the launcher copies it).

**Whole groups** (``grpo``, ``grpo_vectorized``): every micro-batch must hold complete,
contiguous groups. verl 0.9 keeps them contiguous from the rollout
(``repeat(interleave=True)``) to the actor update unless one of these reorders or cuts them:

* ``trainer.balance_batch`` reorders responses by length across data-parallel ranks;
* ``actor.shuffle`` shuffles responses inside the update's mini-batch loader;
* ``actor.use_dynamic_bsz`` packs micro-batches by token count (verl keeps forced groups
  atomic only for reward-model training, not in the PPO actor update);
* batch sizes that are not whole groups per GPU: the batch is dispatched to ``dp`` ranks
  in contiguous chunks of ``train_batch_size·n/dp`` responses, each rank cuts mini-batches
  of ``ppo_mini_batch_size·n/dp`` and micro-batches of ``ppo_micro_batch_size_per_gpu``
  responses; each must be a multiple of ``n``.

Both modes refuse ``trainer.use_v1`` (the transfer-queue trainer, which rebalances every
batch by length regardless of ``balance_batch``; not run with these losses),
``actor.use_prefix_grouper`` (untested), ``actor.entropy_coeff ≠ 0``,
``actor.use_kl_loss`` and ``algorithm.use_kl_in_reward`` (an entropy bonus or a KL term
on top of the loss, refused like TRL's ``beta``), rollout importance weights, and a
``policy_loss`` without our ``_target_``.

:func:`validate_verl_config` checks all of these and raises one :class:`VerlGroupConfigError`
naming every offending key. It only applies when ``policy_loss.loss_mode`` is one of ours;
verl's own losses are left alone. The estimator runs the same checks on the config it is
given, so a run started without the launcher is refused before its first update.

Shapes: none (configuration only).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config import ADPO_TARGETS, LOSS_MODES, TARGET_PATH, WEIGHTS_ESTIMATOR

__all__ = [
    "ADV_ESTIMATORS",
    "GROUP_ADV_ESTIMATORS",
    "VerlGroupConfigError",
    "data_parallel_size",
    "problems",
    "validate_verl_config",
]

#: advantage estimators whose output the whole-group mode takes (GRPO's, one per response)
GROUP_ADV_ESTIMATORS = ("grpo", "grpo_vectorized")
#: every ``algorithm.adv_estimator`` the losses take: GRPO's (whole groups) or ours (per response)
ADV_ESTIMATORS = (*GROUP_ADV_ESTIMATORS, WEIGHTS_ESTIMATOR)

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

    estimator = _get(cfg, "algorithm.adv_estimator")
    per_response = estimator == WEIGHTS_ESTIMATOR
    adpo = mode in ADPO_TARGETS
    target = _get(cfg, f"{_A}.policy_loss._target_")
    if target != TARGET_PATH:
        bad(
            f"{_A}.policy_loss._target_",
            f"must be {TARGET_PATH} so that tau/beta/alpha/mu/target reach the loss "
            "(verl's PolicyLossConfig rejects those keys)",
        )
    if estimator not in ADV_ESTIMATORS:
        bad(
            "algorithm.adv_estimator",
            f"must be {WEIGHTS_ESTIMATOR!r} (per-response weights from whole groups) or one "
            f"of {GROUP_ADV_ESTIMATORS} (GRPO advantages, whole groups per micro-batch)",
        )
    mirrored = _get(cfg, f"{_A}.policy_loss.adv_estimator")
    if target == TARGET_PATH and (per_response or mirrored is not None) and mirrored != estimator:
        bad(
            f"{_A}.policy_loss.adv_estimator",
            f"must equal algorithm.adv_estimator ({estimator!r}): the loss reads the "
            "advantages as per-response weights or as GRPO's by it (the launcher sets it; "
            "write `${algorithm.adv_estimator}`)",
        )
    if _get(cfg, "trainer.use_v1", False):
        bad(
            "trainer.use_v1",
            "must be false: verl's v1 (transfer-queue) trainer rebalances every batch by "
            "sequence length whatever trainer.balance_batch says, and is not run with these "
            "losses",
        )
    if per_response:
        _per_response_problems(cfg, adpo, bad)
    else:
        _whole_group_problems(cfg, bad)
    if _get(cfg, f"{_A}.use_prefix_grouper", False):
        bad(f"{_A}.use_prefix_grouper", "must be false (untested with these losses)")
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
    if not per_response:
        _whole_group_sizes(cfg, n, bad)
    return out


def _per_response_problems(cfg: DictConfig, adpo: bool, bad) -> None:
    """What ``adpo_group_weights`` cannot make exact (balance, shuffle, dynamic bsz are fine)."""
    why = (
        f"ADPO's weights from {WEIGHTS_ESTIMATOR} are exact only for one optimizer step per "
        "batch: after it the weights need the group's current scores, which sit on other "
        "ranks and micro-batches, and verl gives a policy loss no pass over them. Use "
        "algorithm.adv_estimator=grpo (whole groups per micro-batch) for several steps"
    )
    if adpo:
        epochs = _get(cfg, f"{_A}.ppo_epochs", 1)
        if epochs != 1:
            bad(f"{_A}.ppo_epochs", f"must be 1: {why}")
        mini, train_bs = _get(cfg, f"{_A}.ppo_mini_batch_size"), _get(cfg, "data.train_batch_size")
        if mini != train_bs:
            bad(
                f"{_A}.ppo_mini_batch_size",
                f"must equal data.train_batch_size ({train_bs!r}, one mini-batch): {why}",
            )
        if _get(cfg, "algorithm.rollout_correction.bypass_mode", False):
            bad(
                "algorithm.rollout_correction.bypass_mode",
                f"must be false with ADPO and {WEIGHTS_ESTIMATOR}: the anchor would be the "
                "rollout's log-probs, so the scores are not 0 at the update and the weights "
                "taken at 0 are not the gradient's",
            )
    elif _get(cfg, f"{_A}.policy_loss.ref_correction", "none") != "none":
        bad(
            f"{_A}.policy_loss.ref_correction",
            f"must be 'none' with {WEIGHTS_ESTIMATOR}: the escort weights would need the "
            "anchor's log-probs, which verl does not hand an advantage estimator (use "
            "algorithm.adv_estimator=grpo for the reference correction)",
        )
    micro = _get(cfg, f"{_A}.ppo_micro_batch_size_per_gpu")
    mini, n = _get(cfg, f"{_A}.ppo_mini_batch_size"), _get(cfg, "actor_rollout_ref.rollout.n")
    if (
        not _get(cfg, f"{_A}.use_dynamic_bsz", False)
        and isinstance(mini, int)
        and isinstance(n, int)
    ):
        per_gpu = mini * n // data_parallel_size(cfg)
        if not isinstance(micro, int) or micro < 1 or per_gpu % micro:
            bad(
                f"{_A}.ppo_micro_batch_size_per_gpu",
                f"must divide the per-GPU mini-batch of {per_gpu} responses: verl cuts it into "
                "equal micro-batches (any size works for the loss, and use_dynamic_bsz packs by "
                "tokens instead)",
            )
    if _get(cfg, "critic.enable", None):
        bad(
            "critic.enable",
            f"must not be true with {WEIGHTS_ESTIMATOR}: its `returns` carry the group loss "
            "for logging, not value targets",
        )


def _whole_group_problems(cfg: DictConfig, bad) -> None:
    """Settings that reorder or cut responses: refused when each micro-batch needs whole groups."""
    alt = f"; algorithm.adv_estimator={WEIGHTS_ESTIMATOR} allows it"
    if _get(cfg, "trainer.balance_batch", True):
        bad(
            "trainer.balance_batch",
            f"must be false: it reorders responses by length across ranks, splitting groups{alt}",
        )
    if _get(cfg, f"{_A}.shuffle", False):
        bad(f"{_A}.shuffle", f"must be false: it shuffles responses across groups{alt}")
    if _get(cfg, f"{_A}.use_dynamic_bsz", False):
        bad(
            f"{_A}.use_dynamic_bsz",
            "must be false: dynamic batching packs micro-batches by token count and does "
            f"not keep groups atomic in the actor update{alt}",
        )


def _whole_group_sizes(cfg: DictConfig, n: int, bad) -> None:
    """Batch sizes in whole groups per GPU (the whole-group mode)."""
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
            f"must be a positive multiple of rollout.n={n} (responses per micro-batch); "
            f"algorithm.adv_estimator={WEIGHTS_ESTIMATOR} allows any size",
        )
    elif mini_per_gpu is not None and mini_per_gpu % micro:
        bad(
            f"{_A}.ppo_micro_batch_size_per_gpu",
            f"must divide the per-GPU mini-batch of {mini_per_gpu} responses ({per_gpu})",
        )


def validate_verl_config(cfg: DictConfig) -> None:
    """Raise :class:`VerlGroupConfigError` naming every key that would break groups.

    Args:
        cfg: the composed verl PPO config (``verl/trainer/config/ppo_trainer.yaml`` plus
            overrides), e.g. from :func:`adpo.integrations.verl.launcher.compose_config`.
    """
    found = problems(cfg)
    if found:
        raise VerlGroupConfigError(found)
