"""The `adpo` command and the public surface of the package."""

import importlib
import subprocess
import sys

import pytest

from adpo import cli

PUBLIC_MODULES = ["adpo.losses", "adpo.anchors", "adpo.schedules", "adpo.logprobs", "adpo.metrics", "adpo.tiny"]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_symbol_imports(name):
    module = importlib.import_module(name)
    assert module.__all__, name
    for symbol in module.__all__:
        assert getattr(module, symbol) is not None, f"{name}.{symbol}"


def test_design_md_loss_names_exist():
    import adpo.losses as L

    for symbol in (
        "group_advantages",
        "adpo_loss",
        "opo_loss",
        "dpo_loss",
        "ipo_loss",
        "sft_loss",
        "kd_loss",
        "reverse_adpo_loss",
        "ppo_loss",
        "kl_penalty_loss",
        "grpo_loss",
        "gspo_loss",
        "dapo_loss",
        "LossOutput",
    ):
        assert hasattr(L, symbol), symbol


def test_cli_usage_and_unknown_commands(capsys):
    assert cli.main([]) == 0
    assert "bench" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["bench", "no-such-bench"]) == 2
    assert cli.main(["--version"]) == 0


def test_every_registered_command_module_imports():
    for module, func, _ in [*cli.COMMANDS.values(), *cli.BENCHMARKS.values()]:
        assert callable(getattr(importlib.import_module(module), func)), module


def test_console_script_runs_saturation(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "adpo.cli",
            "bench",
            "saturation",
            "--out",
            str(tmp_path),
            "--points",
            "8",
            "--no-plot",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "summary.json").exists() and not (tmp_path / "saturation.png").exists()
