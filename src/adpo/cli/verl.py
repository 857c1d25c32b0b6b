"""``adpo verl …``: the verl launcher behind the ``adpo`` command, importable without verl.

The launcher itself is :mod:`adpo.integrations.verl.launcher` (``python -m
adpo.integrations.verl``); this shim only defers the import, so that ``adpo --help`` and
the rest of the CLI work in an environment without the ``verl`` extra.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    try:
        from adpo.integrations.verl.launcher import main as launch
    except ImportError as e:
        print(f"adpo verl: {e}", file=sys.stderr)
        return 2
    return launch(argv)
