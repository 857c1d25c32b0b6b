"""``adpo verl …``: the verl launcher behind the ``adpo`` command; its parser needs no verl.

The launcher itself is :mod:`adpo.integrations.verl.launcher` (``python -m
adpo.integrations.verl``, the same flags). Its flags are defined here, so that
``adpo verl --help`` works in an environment without the ``verl`` extra; running it there
says which extra to install (exit status 2).
"""

from __future__ import annotations

import sys

from adpo.cli._args import ArgumentParser, UsageError, run_command

__all__ = ["main", "make_parser"]


def make_parser(prog: str = "adpo verl") -> ArgumentParser:
    """The launcher's flags: ``--config FILE [--check] [--cpu] [key=value …]``."""
    parser = ArgumentParser(
        prog=prog,
        description="Run verl's PPO trainer with ADPO/OPO policy losses, groups kept whole "
        "(needs the verl extra: pip install 'adpo[verl]', in its own virtual environment).",
    )
    parser.add_argument(
        "--config", required=True, help="Hydra config file extending verl's ppo_trainer"
    )
    parser.add_argument(
        "--check", action="store_true", help="validate and print the loss settings, then exit"
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="run on CPU: gloo, FSDP2, HF generate() rollout (adpo.integrations.verl.cpu)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, key=value")
    return parser


def _verl(argv: list[str]) -> int:
    args = make_parser().parse_args(argv)
    try:
        from adpo.integrations.verl.launcher import run
    except ImportError as e:
        raise UsageError(str(e)) from e
    return run(args)


def main(argv: list[str] | None = None) -> int:
    """``adpo verl`` (see the module doc); returns the exit status."""
    return run_command("adpo verl", _verl, sys.argv[1:] if argv is None else argv)
