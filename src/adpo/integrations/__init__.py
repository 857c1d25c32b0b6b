"""Thin adapters to other training frameworks (each an optional extra)."""
