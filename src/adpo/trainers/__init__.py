"""``adpo.trainers``: every trainer with its config beside it, on Hugging Face models.

* Online group RL on TRL (the ``rl`` extra): :class:`ADPOTrainer` / :class:`ADPOConfig`,
  :class:`OPOTrainer` / :class:`OPOConfig` (subclasses of TRL's ``GRPOTrainer`` /
  ``GRPOConfig``; :mod:`adpo.trainers.online`), :func:`shuffle_groups`.
* Offline listwise ADPO (algorithm 1, OFFLINE; the ``hf`` extra): :class:`ListwiseTrainer`,
  :class:`ListwiseConfig`, :class:`ListwiseCollator` (:mod:`adpo.trainers.listwise`).
* :func:`loss_config` / :func:`make_trainer` (:mod:`adpo.trainers.presets`): one name per
  objective (adpo-pl, adpo, opo, grpo, gspo, dapo), GRPO/GSPO/DAPO on TRL's own trainer.
* :func:`supervised_warm_start`, :func:`greedy_accuracy` (:mod:`adpo.trainers.warm_start`),
  :func:`RichProgress` (:mod:`adpo.trainers.callbacks`).

Everything is imported on first use, so ``import adpo.trainers`` works without TRL and
``from adpo.trainers import ADPOTrainer`` without it says which extra to install.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "ADPOConfig": "online",
    "ADPOTrainer": "online",
    "AnchoredGroupConfig": "online",
    "OPOConfig": "online",
    "OPOTrainer": "online",
    "shuffle_groups": "online",
    "ListwiseCollator": "listwise",
    "ListwiseConfig": "listwise",
    "ListwiseTrainer": "listwise",
    "LOSSES": "presets",
    "loss_config": "presets",
    "make_trainer": "presets",
    "greedy_accuracy": "warm_start",
    "supervised_warm_start": "warm_start",
    "RichProgress": "callbacks",
}
_EXTRA = {"online": "rl", "presets": "rl"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ImportError as e:
        extra = _EXTRA.get(module, "hf")
        raise ImportError(
            f"adpo.trainers.{name} needs the `{extra}` extra: pip install 'adpo[{extra}]' ({e})"
        ) from e
    value = getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
