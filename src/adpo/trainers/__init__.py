"""``adpo.trainers``: training loops on Hugging Face models.

Offline listwise (ADPO algorithm 1, OFFLINE): :class:`ListwiseConfig`, :class:`ListwiseTrainer`.
Online group RL glue (loss presets, warm start, evaluation, datasets, ``adpo train``):
``adpo.trainers.online``. Needs the ``hf`` extra.
"""

from adpo.trainers.listwise import ListwiseCollator, ListwiseConfig, ListwiseTrainer

__all__ = ["ListwiseCollator", "ListwiseConfig", "ListwiseTrainer"]
