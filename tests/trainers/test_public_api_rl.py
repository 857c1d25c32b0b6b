"""Every public symbol of the online-RL modules imports (issue 4's public surface)."""

import importlib

import pytest


@pytest.mark.parametrize("name", ["adpo.rewards", "adpo.integrations.trl", "adpo.trainers.online"])
def test_every_public_symbol_imports(name):
    module = importlib.import_module(name)
    assert module.__all__, name
    for symbol in module.__all__:
        assert getattr(module, symbol) is not None, f"{name}.{symbol}"


def test_trainers_subclass_trl_and_configs_subclass_grpo_config():
    from trl import GRPOConfig, GRPOTrainer

    from adpo.integrations.trl import ADPOConfig, ADPOTrainer, OPOConfig, OPOTrainer

    assert issubclass(ADPOTrainer, GRPOTrainer) and issubclass(OPOTrainer, GRPOTrainer)
    assert issubclass(ADPOConfig, GRPOConfig) and issubclass(OPOConfig, GRPOConfig)
