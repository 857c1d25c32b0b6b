"""Seams to other libraries' private code, each listed and tested in one module.

:mod:`adpo._compat.trl` — what the online trainers use of TRL's ``GRPOTrainer`` internals.
"""
