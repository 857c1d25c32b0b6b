"""``adpo.integrations.verl``: ADPO and OPO as verl policy losses, with group math exact.

Importing this package registers four policy losses in verl's registry
(``verl.trainer.ppo.core_algos``): ``adpo_listwise``, ``adpo_pl``, ``adpo_top1`` and
``orthogonalized_po`` (never ``opo``: verl's ``"opo"`` is an unrelated advantage estimator),
and one advantage estimator, ``adpo_group_weights``. Select a loss with::

    actor_rollout_ref.actor.policy_loss._target_=adpo.integrations.verl.AdpoPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=adpo_pl

and how groups stay exact with ``algorithm.adv_estimator``: ``adpo_group_weights`` computes
each response's gradient weight from its whole group in the driver, so micro-batches,
dynamic batches, balancing and shuffling may cut groups anywhere; ``grpo`` hands the loss
GRPO advantages and needs whole groups in every micro-batch (:mod:`.losses`).

Registration reaches verl's Ray workers three ways: hydra imports this package when it
instantiates ``AdpoPolicyLossConfig`` in each worker; ``actor_rollout_ref.model.external_lib``
(the launcher sets it to this package); and the launcher imports it in the driver.

Requires the ``verl`` extra (``pip install "adpo[verl]"``, verl 0.9.x); keep it in its own
virtual environment, since verl pins an older ``transformers`` than the ``hf`` extra's TRL.

* :mod:`.losses` — the registered loss functions,
* :mod:`.estimator` — the registered advantage estimator ``adpo_group_weights``,
* :mod:`.config` — :class:`AdpoPolicyLossConfig` (``tau``, ``beta``, ``alpha``, ``mu``, …),
* :mod:`.validation` — :func:`validate_verl_config`, the start-up check,
* :mod:`.launcher` — ``python -m adpo.integrations.verl --config FILE [overrides]``,
* :mod:`.tasks` — the generated arithmetic task as verl parquet data and a reward function.
"""

from __future__ import annotations

try:
    import verl  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "adpo.integrations.verl needs verl: pip install 'adpo[verl]' (in its own virtual "
        "environment: verl pins transformers<5.11, TRL in adpo[hf] wants newer)"
    ) from e

from .config import (
    ADPO_TARGETS,
    LOSS_MODES,
    OPO_LOSS_MODE,
    TARGET_PATH,
    WEIGHTS_ESTIMATOR,
    AdpoPolicyLossConfig,
)
from .estimator import compute_adpo_group_weights, group_weights
from .losses import (
    compute_adpo_listwise_loss,
    compute_adpo_pl_loss,
    compute_adpo_top1_loss,
    compute_orthogonalized_po_loss,
)
from .validation import VerlGroupConfigError, problems, validate_verl_config

__all__ = [
    "ADPO_TARGETS",
    "LOSS_MODES",
    "OPO_LOSS_MODE",
    "TARGET_PATH",
    "WEIGHTS_ESTIMATOR",
    "AdpoPolicyLossConfig",
    "VerlGroupConfigError",
    "compute_adpo_group_weights",
    "compute_adpo_listwise_loss",
    "compute_adpo_pl_loss",
    "compute_adpo_top1_loss",
    "compute_orthogonalized_po_loss",
    "group_weights",
    "problems",
    "validate_verl_config",
]
