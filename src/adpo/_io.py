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


def bench_command(name: str, argv: Iterable[str] | None) -> str:
    """The command of ``adpo bench NAME`` given ``argv`` (a benchmark's ``main(argv)``), or
    this process's command line when ``argv`` is None (called from the shell)."""
    return command_line() if argv is None else shlex.join(["adpo", "bench", name, *argv])


def code_version() -> dict[str, Any]:
    """adpo's version and, when it runs from a git checkout, the commit and whether it was dirty.

    ``{"adpo": "0.1.0", "commit": "<40 hex>" | None, "dirty": bool | None}``. ``commit`` is
    None for an installed wheel (no checkout around the package) or where ``git`` is
    missing; ``dirty`` says whether a *tracked* file outside ``results/`` differed from that
    commit (untracked files, and the committed results a run is rewriting, do not count).
    """
    import subprocess

    from adpo import __version__

    root = Path(__file__).resolve().parents[2]  # src/adpo/_io.py → the checkout
    commit: str | None = None
    dirty: bool | None = None
    if (root / ".git").exists() and _is_adpo_project(root / "pyproject.toml"):
        try:
            git = ["git", "-C", str(root)]
            commit = subprocess.run(
                [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            status = subprocess.run(
                [*git, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout
            dirty = bool(status.strip())
        except (OSError, subprocess.SubprocessError):
            commit, dirty = None, None
    return {"adpo": __version__, "commit": commit, "dirty": dirty}


def describe_commit(code: Mapping[str, Any]) -> str:
    """:func:`code_version`'s commit in words, as ``adpo env`` and the benchmark scripts print it.

    ``"<40 hex>"``, ``"<40 hex> (dirty: tracked files differ from it)"`` or
    ``"none (an installed package, not a git checkout)"``.
    """
    if code["commit"] is None:
        return "none (an installed package, not a git checkout)"
    return code["commit"] + (" (dirty: tracked files differ from it)" if code["dirty"] else "")


def _is_adpo_project(pyproject: Path) -> bool:
    """Whether ``pyproject`` is adpo's own: an installed copy of the package can sit two
    folders below another git project's root (``pip install --target DIR``), whose commit is
    not adpo's."""
    import tomllib

    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return project.get("name") == "adpo"


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` of installed packages; "not installed" for the others."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_name() -> str:
    """The CPU model and the instruction set torch's CPU kernels use, e.g. ``"AMD EPYC
    (AVX2)"``: sampled runs that are bit-exact on one CPU can differ on another (a kernel
    rounding differently flips a sample, and the runs diverge), so results record it."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model
            )
    except OSError:
        pass
    return f"{model} ({torch.backends.cpu.get_cpu_capability()})"


def environment(libraries: Iterable[str] = ()) -> dict[str, Any]:
    """Provenance of a result: code version, Python, torch, ``libraries``, machine, CPU, threads.

    Every benchmark summary records this under ``"environment"``, so a reader knows which
    code (adpo version, git commit, dirty tree) and which versions of the libraries the
    benchmark drives (``libraries``: distribution names, e.g. ``("transformers", "trl")``)
    produced the numbers. ``adpo env`` prints the same version string and commit.
    """
    import torch

    return {
        **code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **library_versions(libraries),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "threads": str(torch.get_num_threads()),
    }


#: The Hugging Face libraries the trainer benchmarks drive (TRL's GRPOTrainer and what it runs on).
HF_TRAINING = ("trl", "transformers", "accelerate")
#: What the MuJoCo distillation benchmarks drive (environments, physics, the SAC teacher).
MUJOCO = ("gymnasium", "mujoco", "stable-baselines3")

#: The fields of a summary that say which run produced its numbers; ``--replot`` keeps them.
PROVENANCE = ("command", "environment")


def device_name(device: Any) -> str:
    """``"cpu"``, or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``: a device and, on CUDA, its model."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return str(dev)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def provenance(
    libraries: Iterable[str] = (),
    *,
    device: Any = "cpu",
    command: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The provenance fields every benchmark summary records: ``command`` and ``environment``.

    ``environment`` is :func:`environment` for ``libraries`` plus ``device`` (see
    :func:`device_name`); ``threads`` overrides the recorded torch thread count where the
    work ran in other processes with their own (``adpo bench trainer``'s workers).
    ``command`` defaults to this process's command line.
    """
    env = {**environment(libraries), "device": device_name(device)}
    if threads is not None:
        env["threads"] = str(threads)
    return {"command": command or command_line(), "environment": env}


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def replot_provenance(
    previous: Mapping[str, Any] | None,
    *,
    keep: Iterable[str] = (),
    command: str | None = None,
) -> dict[str, Any]:
    """The provenance a ``--replot`` writes: the recorded run's, never this process's.

    A replot rebuilds tables and plots from a run's CSVs without training, so the command,
    the environment (code version, libraries, threads, device) and the run-time fields in
    ``keep`` (wall time, load averages, …) are copied from the summary it replaces
    (``previous``), and so is ``provenance_recovered`` where an old summary has one (what
    was added after the fact, from git history). What is new is ``replot_command`` and
    ``replot_code`` (:func:`code_version` of the code that rebuilt the tables). Without a
    previous summary the run's provenance is unknown and recorded as None, not invented.
    """
    prev = dict(previous or {})
    out: dict[str, Any] = {k: prev.get(k) for k in PROVENANCE}
    out.update({k: prev[k] for k in ("provenance_recovered", *keep) if k in prev})
    out["replot_command"] = command or command_line()
    out["replot_code"] = code_version()
    return out


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
