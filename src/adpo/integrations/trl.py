"""Kept for old imports: the online trainers live in :mod:`adpo.trainers.online` now.

``from adpo.integrations.trl import ADPOTrainer, ADPOConfig, OPOTrainer, OPOConfig,
shuffle_groups`` keeps working; new code imports them from :mod:`adpo.trainers`.
"""

from adpo.trainers.online import (
    TESTED_TRL,
    ADPOConfig,
    ADPOTrainer,
    AnchoredGroupConfig,
    OPOConfig,
    OPOTrainer,
    shuffle_groups,
)

__all__ = [
    "TESTED_TRL",
    "ADPOConfig",
    "ADPOTrainer",
    "AnchoredGroupConfig",
    "OPOConfig",
    "OPOTrainer",
    "shuffle_groups",
]
