"""Anchor strategies: where π_ref in ``u = (log πθ − log π_ref)/τ`` comes from.

ADPO paper §5.2 and OPO paper §8 ("mini-batch anchoring"):

* :class:`FixedAnchor` — a given reference model (the SFT model, or a teacher), never moves.
* :class:`SelfAnchor` — a frozen snapshot of the policy at construction (its initialisation).
* :class:`EMAAnchor` — an exponential moving average of the policy's weights.
* :class:`OnPolicyAnchor` — π_ref ← π_old: a snapshot taken by :meth:`refresh` before each
  outer iteration; every mini-batch of that iteration shares it. With ``every=N`` it is
  the offline "dynamic anchor" of ADPO algorithm 1, lines 27–28 (refresh every N steps).

One small interface for every trainer:

* ``anchor.refresh(model)`` — call once per outer iteration, before its first mini-batch
  (online RL), or once per optimiser step (offline). Fixed and self anchors ignore it;
  the EMA anchor folds the current weights in; the on-policy anchor re-snapshots (every
  ``every``-th call).
* ``anchor.anchor_logps(fn, *args, **kwargs)`` — evaluate ``fn(anchor_module, *args,
  **kwargs)`` without gradient, e.g. ``fn = lambda m, batch: sequence_logps(m, batch)``.

Snapshots live on the model's device and cost one model's memory; they are refreshed
in place (no re-allocation). With PEFT adapters, a fixed anchor can be a frozen copy of
the adapter as it was (TRL's ``"ref"`` adapter) instead of a copy of the model (the online
trainers do that: the bare base model is the initial policy only for an untrained adapter).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "ANCHOR_KINDS",
    "Anchor",
    "AnchorConfig",
    "EMAAnchor",
    "FixedAnchor",
    "OnPolicyAnchor",
    "SelfAnchor",
    "canonical_anchor",
    "make_anchor",
]

AnchorKind = Literal["fixed", "self", "ema", "on_policy", "precomputed"]
#: The one anchor vocabulary: ``fixed`` (a given reference, the teacher in distillation),
#: ``self`` (snapshot of the initial policy), ``ema``, ``on_policy`` (π_old, refreshed every
#: round or every N steps) and ``precomputed`` (reference log-probs given in the data).
ANCHOR_KINDS: tuple[str, ...] = ("fixed", "self", "ema", "on_policy", "precomputed")
# old spellings, accepted with a DeprecationWarning
_OLD_NAMES = {"dynamic": "on_policy", "teacher": "fixed"}


def canonical_anchor(name: str, *, owner: str = "anchor") -> str:
    """Return the canonical spelling of anchor kind ``name`` (one of :data:`ANCHOR_KINDS`).

    Old spellings still work with a ``DeprecationWarning``: ``"dynamic"`` → ``"on_policy"``,
    ``"teacher"`` → ``"fixed"``. Anything else raises ``ValueError`` naming ``owner``.
    """
    if name in _OLD_NAMES:
        new = _OLD_NAMES[name]
        warnings.warn(
            f"{owner}: anchor {name!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=3
        )
        return new
    if name not in ANCHOR_KINDS:
        raise ValueError(f"{owner} must be one of {ANCHOR_KINDS}, got {name!r}")
    return name


def _frozen_copy(model: nn.Module) -> nn.Module:
    snap = copy.deepcopy(model)
    snap.requires_grad_(False)
    snap.eval()
    return snap


@torch.no_grad()
def _copy_weights(dst: nn.Module, src: nn.Module) -> None:
    for d, s in zip(dst.parameters(), src.parameters(), strict=True):
        d.copy_(s)
    for d, s in zip(dst.buffers(), src.buffers(), strict=True):
        d.copy_(s)


class Anchor:
    """Base class: holds the anchor module and evaluates log-probs under it."""

    kind: str = "base"

    def __init__(self, module: nn.Module | None):
        self.module = module

    def refresh(self, model: nn.Module) -> None:
        """Advance the anchor given the current policy ``model`` (see module doc)."""

    @torch.no_grad()
    def anchor_logps(self, fn: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        """``fn(anchor_module, *args, **kwargs)`` under ``no_grad``, detached."""
        if self.module is None:
            raise RuntimeError(f"{type(self).__name__}: no anchor yet; call refresh(model) first")
        was_training = self.module.training
        self.module.eval()
        try:
            return fn(self.module, *args, **kwargs).detach()
        finally:
            self.module.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        """Anchor state for checkpoints (weights of moving anchors and counters)."""
        return {} if self.module is None else {"module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "module" in state and self.module is not None:
            self.module.load_state_dict(state["module"])


class FixedAnchor(Anchor):
    """A given reference (or teacher) model that never moves. ``refresh`` is a no-op."""

    kind = "fixed"

    def __init__(self, ref_model: nn.Module):
        ref_model.requires_grad_(False)
        ref_model.eval()
        super().__init__(ref_model)

    def state_dict(self) -> dict[str, Any]:
        return {}  # the reference is reloaded from where it came from, not checkpointed


class SelfAnchor(Anchor):
    """A frozen snapshot of the policy as it is at construction (its initialisation)."""

    kind = "self"

    def __init__(self, model: nn.Module):
        super().__init__(_frozen_copy(model))


class EMAAnchor(Anchor):
    """Exponential moving average of the policy: ``θ_a ← d·θ_a + (1−d)·θ`` on each refresh.

    Args:
        model: the policy; the average starts at its current weights.
        decay: ``d`` in [0, 1); 0 makes this an on-policy anchor, → 1 a self anchor.
    """

    kind = "ema"

    def __init__(self, model: nn.Module, decay: float = 0.99):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMAAnchor: `decay` must lie in [0, 1), got {decay!r}")
        super().__init__(_frozen_copy(model))
        self.decay = decay

    @torch.no_grad()
    def refresh(self, model: nn.Module) -> None:
        if self.module is None:  # only a subclass that drops the module gets here
            raise RuntimeError("EMAAnchor.refresh: the anchor module is gone")
        for a, p in zip(self.module.parameters(), model.parameters(), strict=True):
            a.lerp_(p.detach().to(a.dtype), 1.0 - self.decay)
        for a, b in zip(self.module.buffers(), model.buffers(), strict=True):
            a.copy_(b)


class OnPolicyAnchor(Anchor):
    """π_ref ← π_old: a snapshot of the policy re-taken on every ``every``-th refresh.

    The first ``refresh`` always snapshots. Online RL calls ``refresh`` once per
    generation round (``every=1``), so all mini-batches of the round share the anchor
    (OPO §8). Offline training calls it every optimiser step with ``every=N``: the
    dynamic anchor of ADPO algorithm 1, lines 27–28.
    """

    kind = "on_policy"

    def __init__(self, every: int = 1):
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"OnPolicyAnchor: `every` must be an int >= 1, got {every!r}")
        super().__init__(None)
        self.every = every
        self.calls = 0

    def refresh(self, model: nn.Module) -> None:
        if self.module is None:
            self.module = _frozen_copy(model)
        elif self.calls % self.every == 0:
            _copy_weights(self.module, model)
        self.calls += 1

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.calls = int(state.get("calls", self.calls))


@dataclass
class AnchorConfig:
    """Which anchor to build (see :data:`ANCHOR_KINDS`).

    Attributes:
        kind: ``"fixed"`` (needs a reference model), ``"self"``, ``"ema"``, ``"on_policy"``
            or ``"precomputed"`` (no module: the reference log-probs come with the data, and
            :func:`make_anchor` returns None). Old spellings ``"dynamic"``/``"teacher"``
            are mapped with a ``DeprecationWarning``.
        ema_decay: decay of the EMA anchor, in [0, 1).
        refresh_every: the on-policy anchor re-snapshots every this many refreshes.
    """

    kind: AnchorKind = "on_policy"
    ema_decay: float = 0.99
    refresh_every: int = 1

    def __post_init__(self) -> None:
        self.kind = canonical_anchor(self.kind, owner="AnchorConfig: `kind`")  # type: ignore[assignment]
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(
                f"AnchorConfig: `ema_decay` must lie in [0, 1), got {self.ema_decay!r}"
            )
        if isinstance(self.refresh_every, bool) or not (
            isinstance(self.refresh_every, int) and self.refresh_every >= 1
        ):
            raise ValueError(
                f"AnchorConfig: `refresh_every` must be an int >= 1, got {self.refresh_every!r}"
            )


def make_anchor(
    config: AnchorConfig | str, model: nn.Module, ref_model: nn.Module | None = None
) -> Anchor | None:
    """Build the anchor described by ``config`` for ``model`` (``ref_model`` for ``fixed``).

    The on-policy anchor is snapshotted at once (its first refresh). ``precomputed``
    returns None: there is no anchor module, the caller reads reference log-probs from
    its data.
    """
    cfg = AnchorConfig(kind=config) if isinstance(config, str) else config  # type: ignore[arg-type]
    if cfg.kind == "precomputed":
        return None
    if cfg.kind == "fixed":
        if ref_model is None:
            raise ValueError("make_anchor: kind='fixed' needs `ref_model`")
        return FixedAnchor(ref_model)
    if cfg.kind == "self":
        return SelfAnchor(model)
    if cfg.kind == "ema":
        return EMAAnchor(model, cfg.ema_decay)
    anchor = OnPolicyAnchor(cfg.refresh_every)
    anchor.refresh(model)
    return anchor
