"""``adpo verl`` in an environment without verl: a clear message, exit status 2."""

import importlib.util

import pytest

from adpo import cli


@pytest.mark.skipif(importlib.util.find_spec("verl") is not None, reason="verl is installed")
def test_adpo_verl_without_the_extra_says_how_to_install(capsys):
    assert cli.main(["verl", "--config", "x.yaml"]) == 2
    assert "pip install 'adpo[verl]'" in capsys.readouterr().err
