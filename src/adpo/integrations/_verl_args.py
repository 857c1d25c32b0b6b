"""The verl launcher's flags, importable without verl (``adpo.integrations.verl`` needs it).

Shared by :func:`adpo.integrations.verl.launcher.main` (``python -m adpo.integrations.verl``)
and ``adpo verl`` (:mod:`adpo.cli.verl`), whose ``--help`` works without the ``verl`` extra.
"""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Run verl's PPO trainer with ADPO/OPO policy losses, groups kept whole (needs the verl "
    "extra: pip install 'adpo[verl]', in its own virtual environment)."
)


def add_launcher_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config FILE [--check] [--cpu] [key=value …]`` to ``parser``; return it."""
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
