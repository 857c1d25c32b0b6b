"""The `adpo` command and the public surface of the package."""

import importlib
import subprocess
import sys

import pytest

from adpo import cli

from ._public import declared_all, public_modules

PUBLIC = public_modules()


def test_every_public_module_declares_all():
    missing = [m for m, path in PUBLIC.items() if declared_all(path) is None]
    assert not missing, f"public modules without `__all__`: {missing}"


@pytest.mark.parametrize("name", list(PUBLIC))
def test_every_public_symbol_imports(name):
    if name.startswith("adpo.integrations.verl"):
        pytest.importorskip("verl", reason="adpo.integrations.verl needs the verl extra")
    module = importlib.import_module(name)
    is_package = PUBLIC[name].name == "__init__.py"
    assert module.__all__ or is_package, f"{name}: empty `__all__`"
    for symbol in module.__all__:
        assert getattr(module, symbol) is not None, f"{name}.{symbol}"


def test_old_import_paths_still_work():
    import warnings

    from adpo.integrations.trl import ADPOConfig, ADPOTrainer, OPOConfig, OPOTrainer, shuffle_groups
    from adpo.tiny import ArithmeticTask, char_tokenizer, tiny_qwen3  # noqa: F401
    from adpo.trainers import ADPOTrainer as new_adpo
    from adpo.trainers import ListwiseTrainer  # noqa: F401
    from adpo.trainers import OPOTrainer as new_opo

    assert ADPOTrainer is new_adpo and OPOTrainer is new_opo
    assert ADPOConfig and OPOConfig and shuffle_groups
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from adpo.trainers.online import loss_config
    from adpo.trainers.presets import loss_config as new_loss_config

    assert loss_config is new_loss_config
    assert any("moved to adpo.trainers.presets" in str(w.message) for w in caught)


def test_trainers_package_imports_without_loading_trl():
    code = (
        "import sys, adpo.trainers as t; assert 'trl' not in sys.modules; "
        "t.ListwiseTrainer; assert 'trl' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


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
