"""The ``adpo`` command: wires config dataclasses to the code, nothing else.

``adpo <command> [args]`` and ``adpo bench <benchmark> [args]``. Each command lives in
its own module, imported only when it runs (so ``adpo bench saturation`` never imports
transformers), and parses its own arguments: ``adpo <command> --help`` shows them.
``adpo train`` is :mod:`adpo.cli.train` (TRL's parser over the trainer configs),
``adpo train-offline`` :mod:`adpo.cli.train_offline`, ``adpo verl`` :mod:`adpo.cli.verl`,
``adpo env`` :mod:`adpo.cli.env`; each benchmark's config dataclass is its CLI (tyro), in
:mod:`adpo.experiments`.

Every command answers alike: an error is one to three lines on stderr with no traceback
(``--debug`` shows it), exit status 2 for a usage error, 1 for bad data or files, 130 after
Ctrl-C; ``--help`` shows no reST markup.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys

from adpo.cli._args import clean_help, run_command, tyro_errors

__all__ = ["BENCHMARKS", "COMMANDS", "main"]

# name -> (module, function, one-line help). Add a command by adding a line.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train-offline": (
        "adpo.cli.train_offline",
        "main",
        "offline listwise ADPO on K scored/ranked completions per prompt",
    ),
    "verl": (
        "adpo.cli.verl",
        "main",
        "train on verl (Ray) with ADPO/OPO policy losses, groups kept whole (adpo[verl])",
    ),
    "demo": (
        "adpo.experiments.demo",
        "main",
        "online RL with ADPO on a tiny model, CPU, minutes (no download)",
    ),
    "train": (
        "adpo.cli.train",
        "main",
        "online group RL (adpo, adpo-pl, opo, grpo, gspo, dapo) on any HF causal LM",
    ),
    "env": (
        "adpo.cli.env",
        "main",
        "versions of adpo and the libraries it drives, and the device, for bug reports",
    ),
}

BENCHMARKS: dict[str, tuple[str, str, str]] = {
    "bandits": (
        "adpo.experiments.bandits",
        "main",
        "noisy contextual bandits: 12 scenarios, anchors, capacity (ADPO paper §6.1)",
    ),
    "listwise": (
        "adpo.experiments.offline_listwise",
        "main",
        "offline listwise ADPO: targets × anchors × seeds on generated arithmetic",
    ),
    "saturation": (
        "adpo.experiments.saturation",
        "main",
        "gradient magnitude vs confidence on a binary-logit toy (OPO paper fig. 4)",
    ),
    "efficiency": (
        "adpo.experiments.efficiency",
        "main",
        "loss and actor-update time per method, log-prob memory (ADPO paper app. F)",
    ),
    "reasoning": (
        "adpo.experiments.reasoning",
        "main",
        "online RL on the demo task: adpo-pl, adpo, opo, grpo, gspo, dapo × seeds",
    ),
    "reasoning-long": (
        "adpo.experiments.reasoning_long",
        "main",
        "worked multi-step arithmetic: long-horizon and OOD RL, lr sweep, every objective × seeds",
    ),
    "trainer": (
        "adpo.experiments.trainer_bench",
        "main",
        "ADPOTrainer/OPOTrainer vs TRL's GRPOTrainer: time per step and peak memory",
    ),
    "distill": (
        "adpo.experiments.distill",
        "main",
        "MuJoCo policy distillation: KD vs anchored students (ADPO paper §6.2, table 2)",
    ),
    "distill-teacher": (
        "adpo.experiments.distill_teacher",
        "main",
        "train a SAC teacher (stable-baselines3) for `adpo bench distill`",
    ),
}


def _usage() -> str:
    lines = ["usage: adpo <command> [args]   |   adpo bench <benchmark> [args]", "", "commands:"]
    lines += [f"  {name:<16}{h}" for name, (_, _, h) in COMMANDS.items()]
    lines += ["  bench           run a benchmark (below)", "", "benchmarks (adpo bench …):"]
    lines += [f"  {name:<16}{h}" for name, (_, _, h) in BENCHMARKS.items()]
    lines += ["", "`adpo <command> --help` lists a command's options."]
    return "\n".join(lines)


def _run(prog: str, entry: tuple[str, str, str], argv: list[str]) -> int:
    module, func, _ = entry

    def command(args: list[str]) -> int:
        fn = getattr(importlib.import_module(module), func)
        if not any(a in ("-h", "--help") for a in args):
            with tyro_errors():
                return int(fn(args) or 0)
        out = io.StringIO()  # help: printed without reST markup
        try:
            with contextlib.redirect_stdout(out):
                code = int(fn(args) or 0)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
        sys.stdout.write(clean_help(out.getvalue()))
        return code

    return run_command(prog, command, argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from adpo import __version__

        print(f"adpo {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        if not rest or rest[0] in ("-h", "--help"):
            print(_usage())
            return 0 if rest else 2
        if rest[0] not in BENCHMARKS:
            print(
                f"adpo bench: unknown benchmark {rest[0]!r}; choose from {sorted(BENCHMARKS)}",
                file=sys.stderr,
            )
            return 2
        return _run(f"adpo bench {rest[0]}", BENCHMARKS[rest[0]], rest[1:])
    if cmd not in COMMANDS:
        print(f"adpo: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return _run(f"adpo {cmd}", COMMANDS[cmd], rest)


if __name__ == "__main__":
    raise SystemExit(main())
