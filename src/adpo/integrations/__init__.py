"""Thin adapters where another engine drives the training (each an optional extra).

``adpo.integrations.verl``: ADPO/OPO policy losses registered in verl. The TRL trainers
are :mod:`adpo.trainers` (``adpo.integrations.trl`` re-exports them for old imports).
This package imports nothing heavy on its own.
"""

__all__ = []  # each integration is a subpackage, imported on its own
