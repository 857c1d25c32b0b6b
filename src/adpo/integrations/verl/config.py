"""``AdpoPolicyLossConfig``: the hyperparameters of ADPO/OPO as a verl policy-loss config.

verl builds ``actor_rollout_ref.actor`` with ``hydra.utils.instantiate`` and its config
dataclasses reject keys they do not declare, so ``tau``/``beta``/``alpha``/``mu`` cannot
simply be added under ``policy_loss``. This subclass of verl's ``PolicyLossConfig``
declares them; select it in YAML with::

    actor_rollout_ref:
      actor:
        policy_loss:
          _target_: adpo.integrations.verl.AdpoPolicyLossConfig
          loss_mode: adpo_pl
          tau: 0.8

Instantiating it imports this module, which imports :mod:`adpo.integrations.verl.losses`
and so registers the losses in every process that builds the actor config (the driver's
``validate_config`` and each Ray worker), whether or not ``external_lib`` is set.

Shapes: none here (see :mod:`adpo.integrations.verl.losses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from verl.workers.config import PolicyLossConfig

__all__ = [
    "ADPO_TARGETS",
    "LOSS_MODES",
    "OPO_LOSS_MODE",
    "TARGET_PATH",
    "WEIGHTS_ESTIMATOR",
    "AdpoPolicyLossConfig",
]

#: registered ADPO loss modes and the target geometry each fixes (None: read ``target``)
ADPO_TARGETS: dict[str, str | None] = {
    "adpo_listwise": None,  # softmax unless `target` says otherwise
    "adpo_pl": "plackett_luce",
    "adpo_top1": "top1",
}
#: the OPO loss mode (never "opo": verl's "opo" is an unrelated advantage estimator)
OPO_LOSS_MODE = "orthogonalized_po"
LOSS_MODES: tuple[str, ...] = (*ADPO_TARGETS, OPO_LOSS_MODE)
#: what ``policy_loss._target_`` must say for the fields below to reach the loss
TARGET_PATH = "adpo.integrations.verl.AdpoPolicyLossConfig"
#: our advantage estimator (``algorithm.adv_estimator``): each response's gradient weight,
#: computed from its whole group in the driver (:mod:`adpo.integrations.verl.estimator`)
WEIGHTS_ESTIMATOR = "adpo_group_weights"

_TARGETS = ("softmax", "plackett_luce", "top1")


@dataclass
class AdpoPolicyLossConfig(PolicyLossConfig):
    """verl ``policy_loss`` config for ``adpo_listwise | adpo_pl | adpo_top1 | orthogonalized_po``.

    Defaults are the papers' LLM settings (ADPO: τ 0.8, β_r 0.5; OPO: α 0.4, μ 1.0). Every
    field is a key under ``actor_rollout_ref.actor.policy_loss``. verl's own loss modes
    (``vanilla``, ``gspo``, …) still work with this class selected; they ignore the fields
    below, so a run can switch ``loss_mode`` on the command line without touching ``_target_``.

    Attributes:
        loss_mode: registered policy loss. Ours: ``adpo_listwise`` (target from ``target``,
            default the soft Boltzmann target), ``adpo_pl`` (Plackett–Luce ranking),
            ``adpo_top1`` (top-1 target), ``orthogonalized_po`` (OPO).
        tau: ADPO anchored temperature τ > 0 in ``u = (log πθ − log π_old)/τ``.
        beta: ADPO target temperature β_r > 0 of ``q = softmax(A/β_r)`` (softmax target only).
        target: ADPO target for ``adpo_listwise``: ``"softmax" | "plackett_luce" | "top1"``;
            None means ``"softmax"``. ``adpo_pl``/``adpo_top1`` fix it (a conflicting value
            is refused).
        ties: Plackett–Luce tie handling, ``"breslow"`` or ``"efron"``.
        alpha: OPO escort exponent α in [0, 1].
        mu: OPO stiffness μ > 0.
        ratio: OPO ratio coordinate, ``"log"`` (Δ) or ``"exact"`` (e^Δ − 1).
        weight_norm: OPO escort-weight normalisation, ``"group" | "center" | "batch" | "none"``
            (``"batch"`` z-scores over the *micro-batch* the loss sees).
        ref_correction: OPO ``π_k^{−(1−α)}`` factor, ``"none" | "token_mean" | "sequence"``.
        group_size: responses per prompt ``G``. None: ``actor_rollout_ref.rollout.n``; if
            set it must equal it (checked at start-up and in every loss call).
        check_groups: at run time, check that each block of ``G`` consecutive responses
            carries GRPO advantages of one group (they average to 0), so a batch whose
            groups were split or mixed is refused instead of trained on.
        group_tol: tolerance of that check and of the token-broadcast check, relative to
            ``max(1, |A|)``.
        eps: epsilon of OPO's group z-scores and positivity margin (``opo_loss``'s ``eps``).
        seq_reduction: a response's score ``Δ``: its summed log-ratio ``Σ_t (log πθ −
            log π_old)`` (``"sum"``, the papers' formulas) or the token mean (``"mean"``, a
            length-normalised score, the default of the ADPO authors' public code); see
            :func:`adpo.losses.adpo_loss`.
        adv_estimator: ``algorithm.adv_estimator`` as the loss sees it (verl shows a policy
            loss only the actor's config). ``"adpo_group_weights"`` (:data:`WEIGHTS_ESTIMATOR`):
            the advantages are per-response gradient weights computed from whole groups in
            the driver, and the loss is a sum over responses, exact however verl cuts,
            reorders or packs them. Anything else (``"grpo"``) or None: the advantages are
            GRPO's and each micro-batch must hold whole groups. The launcher copies it
            from ``algorithm.adv_estimator``; outside the launcher write
            ``adv_estimator: ${algorithm.adv_estimator}``, not a literal.
    """

    loss_mode: str = "adpo_pl"
    tau: float = 0.8
    beta: float = 0.5
    target: Optional[str] = None  # noqa: UP045 (OmegaConf reads the annotation at runtime)
    ties: str = "breslow"
    alpha: float = 0.4
    mu: float = 1.0
    ratio: str = "log"
    weight_norm: str = "group"
    ref_correction: str = "none"
    group_size: Optional[int] = None  # noqa: UP045
    check_groups: bool = True
    group_tol: float = 1e-4
    eps: float = 1e-6
    seq_reduction: str = "sum"
    adv_estimator: Optional[str] = None  # noqa: UP045

    def __post_init__(self) -> None:
        name = "AdpoPolicyLossConfig"
        if self.loss_mode == "opo":
            raise ValueError(
                f"{name}: `loss_mode='opo'` is not ours (verl's 'opo' is an advantage "
                f"estimator); the OPO policy loss is registered as {OPO_LOSS_MODE!r}"
            )
        for key in ("tau", "beta", "mu", "group_tol"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name}: `{key}` must be finite and > 0, got {value!r}")
        if not (isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"{name}: `alpha` must lie in [0, 1], got {self.alpha!r}")
        if not (isinstance(self.eps, (int, float)) and 0 <= self.eps < 1):
            raise ValueError(f"{name}: `eps` must lie in [0, 1), got {self.eps!r}")
        choices = {
            "ties": ("breslow", "efron"),
            "ratio": ("log", "exact"),
            "weight_norm": ("group", "center", "batch", "none"),
            "ref_correction": ("none", "token_mean", "sequence"),
            "seq_reduction": ("sum", "mean"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"{name}: `{key}` must be one of {allowed}, got {getattr(self, key)!r}"
                )
        if self.target is not None and self.target not in _TARGETS:
            raise ValueError(f"{name}: `target` must be one of {_TARGETS}, got {self.target!r}")
        fixed = ADPO_TARGETS.get(self.loss_mode)
        if fixed is not None and self.target not in (None, fixed):
            raise ValueError(
                f"{name}: loss_mode={self.loss_mode!r} fixes target={fixed!r}, but `target` "
                f"is {self.target!r}; use loss_mode='adpo_listwise' to choose the target"
            )
        if self.group_size is not None and (
            isinstance(self.group_size, bool)
            or not isinstance(self.group_size, int)
            or self.group_size < 2
        ):
            raise ValueError(
                f"{name}: `group_size` must be an int >= 2 (or None for rollout.n), "
                f"got {self.group_size!r}"
            )
        if self.adv_estimator is not None and not isinstance(self.adv_estimator, str):
            raise ValueError(
                f"{name}: `adv_estimator` must be None or algorithm.adv_estimator's name, got "
                f"{self.adv_estimator!r}"
            )

    @property
    def per_response(self) -> bool:
        """The advantages are per-response weights from :data:`WEIGHTS_ESTIMATOR`."""
        return self.adv_estimator == WEIGHTS_ESTIMATOR

    @property
    def resolved_target(self) -> str:
        """The ADPO target this config selects (``"softmax"`` for OPO, where it is unused)."""
        return ADPO_TARGETS.get(self.loss_mode) or self.target or "softmax"
