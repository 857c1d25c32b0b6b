"""The papers' experiments as reproducible commands (``adpo bench …``)."""

__all__ = []  # each benchmark is a module of its own
