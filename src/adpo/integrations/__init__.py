"""Thin adapters to other training frameworks (each an optional extra).

``adpo.integrations.trl``: ADPO/OPO trainers on TRL; ``adpo.integrations.verl``: ADPO/OPO
policy losses for verl. Import the submodule you need (``from adpo.integrations.trl import
ADPOTrainer``); this package imports nothing heavy on its own.
"""
