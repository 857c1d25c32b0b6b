"""Guarded adaptive temperature (ADPO §5.1), the per-prompt variant and adaptive KL."""

import math

import pytest
import torch

from adpo.schedules import EntropyRewardTemperature, GuardedTemperature


def test_guarded_temperature_formula():
    s = GuardedTemperature(tau_min=0.2, tau_max=1.5, sigma_r=0.1, momentum=0.9)
    assert s.step(0.5, 0.3) == 1.5  # first call: baseline = reward → p = 0 → τ_max
    b = 0.3
    for h, r in [(0.2, 0.5), (0.9, 0.6), (0.1, 0.1), (0.0, 0.9)]:
        c, p = 1 - h, max(0.0, math.tanh((r - b) / 0.1))
        expected = 1.5 - 1.3 * c * p
        assert s.step(h, r) == pytest.approx(expected, abs=1e-12)
        b = 0.9 * b + 0.1 * r


def test_guard_cases():
    # confident and improving → τ near τ_min
    s = GuardedTemperature(sigma_r=0.01)
    s.step(0.0, 0.0)
    assert s.step(0.0, 1.0) == pytest.approx(s.tau_min, abs=1e-6)
    # confident but not improving → τ_max
    s = GuardedTemperature()
    s.step(0.0, 0.5)
    assert s.step(0.0, 0.2) == s.tau_max
    # improving but unconfident → τ_max
    s = GuardedTemperature()
    s.step(1.0, 0.0)
    assert s.step(1.0, 1.0) == s.tau_max


def test_guarded_temperature_checks_and_state():
    with pytest.raises(ValueError, match="tau_min"):
        GuardedTemperature(tau_min=2.0, tau_max=1.0)
    with pytest.raises(ValueError, match="sigma_r"):
        GuardedTemperature(sigma_r=0)
    s = GuardedTemperature()
    with pytest.raises(ValueError, match="entropy_norm"):
        s.step(1.5, 0.0)
    with pytest.raises(ValueError, match="reward_mean"):
        s.step(0.5, float("nan"))
    s.step(0.1, 0.2)
    s.step(0.1, 0.8)
    t = GuardedTemperature()
    t.load_state_dict(s.state_dict())
    assert t.step(0.3, 0.9) == s.step(0.3, 0.9)


def test_entropy_reward_temperature():
    sched = EntropyRewardTemperature(tau_base=0.8, a=0.2, b=0.5, tau_min=0.2, tau_max=1.5)
    h = torch.tensor([0.0, 1.0, 0.5, 0.0])
    r = torch.tensor([0.0, 0.0, 0.5, 1.0])
    expected = (0.8 * (1 + 0.2 * h + 0.5 * (1 - h) * (1 - r))).clamp(0.2, 1.5)
    torch.testing.assert_close(sched(h, r), expected)
    assert (
        sched(h, r)[0] > sched(h, r)[3]
    )  # confident and wrong → larger τ than confident and right
    with pytest.raises(ValueError, match="reward_mean"):
        sched(h, r[:2])
