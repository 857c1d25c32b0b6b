"""``adpo train-offline``: flags (:class:`~adpo.experiments.train_offline.TrainOfflineArgs`) → run."""

from __future__ import annotations

import tyro

from adpo.experiments.train_offline import TrainOfflineArgs, run
from adpo.experiments.train_offline import __doc__ as _doc

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(TrainOfflineArgs, args=argv, prog="adpo train-offline", description=_doc)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
