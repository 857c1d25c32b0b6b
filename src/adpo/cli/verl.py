"""``adpo verl …``: the verl launcher behind the ``adpo`` command; its parser needs no verl.

The launcher itself is :mod:`adpo.integrations.verl.launcher` (``python -m
adpo.integrations.verl``, the same flags, :mod:`adpo.integrations._verl_args`), so
``adpo verl --help`` works in an environment without the ``verl`` extra; running it there
says which extra to install (exit status 2).
"""

from __future__ import annotations

import sys

from adpo.cli._args import ArgumentParser, UsageError, run_command
from adpo.integrations._verl_args import DESCRIPTION, add_launcher_arguments

__all__ = ["main"]


def _verl(argv: list[str]) -> int:
    parser = ArgumentParser(prog="adpo verl", description=DESCRIPTION)
    args = add_launcher_arguments(parser).parse_args(argv)
    try:
        from adpo.integrations.verl.launcher import run
    except ImportError as e:
        raise UsageError(str(e)) from e
    return run(args)


def main(argv: list[str] | None = None) -> int:
    """``adpo verl`` (see the module doc); returns the exit status."""
    return run_command("adpo verl", _verl, sys.argv[1:] if argv is None else argv)
