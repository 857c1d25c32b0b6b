"""Console, progress bars, timers and result files: the helpers every long job shares.

A layer below the trainers (it imports nothing from ``adpo``), so trainers, experiments
and the CLI draw progress and write results one way.
"""

from __future__ import annotations

import csv
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console(stderr=True)


def progress_bar(
    label: str = "[bold]{task.description}",
    *,
    info: bool = False,
    enabled: bool = True,
    transient: bool = False,
):
    """The progress bar of every long job: label, bar, n/N, elapsed, remaining.

    ``label`` is a rich format string of the task; ``info=True`` adds a column showing the
    task's ``info`` field (e.g. the latest reward). Returns a ``rich.progress.Progress``.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console, disable=not enabled, transient=transient)


def prepare_out(out: str | Path) -> Path:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def command_line() -> str:
    """The command that is running, for the provenance field of result files."""
    argv = sys.argv[:]
    if argv and argv[0].endswith(("adpo", "cli.py", "__main__.py")):
        argv[0] = "adpo"
    return shlex.join(argv)


def environment() -> dict[str, str]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": str(torch.get_num_threads()),
    }


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Rows to CSV; the columns are every key in first-seen order, a missing one left empty."""
    rows = list(rows)
    if not rows:
        raise ValueError(f"write_csv: no rows for {path}")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV :func:`write_csv` wrote: numbers back to numbers, empty cells dropped."""

    def num(v: str) -> Any:
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f

    with path.open(newline="") as f:
        return [{k: num(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def timer() -> Callable[[], float]:
    """``elapsed = timer(); …; elapsed()`` seconds (``time.perf_counter``)."""
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
