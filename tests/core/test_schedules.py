"""Guarded adaptive temperature (ADPO §5.1), the per-prompt variant and adaptive KL."""

import math

import pytest
import torch

from adpo.schedules import EntropyRewardTemperature, GuardedTemperature, policy_entropy_norm


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


# Pinned where mutation testing found the schedules loose (docs/development/mutation-testing.md).


def test_policy_entropy_norm_float_and_tensor():
    """H̄ = clip(H / H_0, 0, 1); a deterministic first reading (H_0 = 0) reads 0."""
    assert policy_entropy_norm(0.6, 2.4) == pytest.approx(0.25, abs=1e-15)
    assert policy_entropy_norm(3.0, 2.0) == 1.0  # sharper start than now: clipped at 1
    assert policy_entropy_norm(-0.5, 2.0) == 0.0
    assert policy_entropy_norm(0.7, 0.0) == 0.0
    assert policy_entropy_norm(0.0, 0.0) == 0.0
    h = torch.tensor([0.6, 3.0, -0.5, 1.2], dtype=torch.float64, requires_grad=True)
    got = policy_entropy_norm(h, 2.4)
    assert got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(got, torch.tensor([0.25, 1.0, 0.0, 0.5]), rtol=0, atol=1e-7)
    zero = policy_entropy_norm(h, 0.0)
    assert zero.dtype == torch.float32 and not zero.requires_grad
    assert torch.equal(zero, torch.zeros(4))


@pytest.mark.parametrize("reference", [-0.1, math.nan, math.inf])
def test_policy_entropy_norm_refuses_a_bad_reference(reference):
    for entropy in (0.5, torch.tensor([0.5])):
        with pytest.raises(ValueError, match=r"policy_entropy_norm: `reference` must be finite"):
            policy_entropy_norm(entropy, reference)


@pytest.mark.parametrize("entropy", [math.nan, math.inf, -math.inf])
def test_policy_entropy_norm_refuses_a_non_finite_entropy(entropy):
    with pytest.raises(ValueError, match=r"policy_entropy_norm: `entropy` must be finite"):
        policy_entropy_norm(entropy, 1.0)


def test_guarded_temperature_defaults():
    """τ ∈ [0.2, 1.5] (the OPO paper's runs), σ_R = 0.1, m = 0.9; τ is τ_max before any step."""
    s = GuardedTemperature()
    assert s.tau == 1.5 and s.baseline is None
    s.step(0.4, 0.5)
    assert s.baseline == pytest.approx(0.5, abs=1e-15)
    c, p = 0.7, math.tanh(0.1 / 0.1)
    assert s.step(0.3, 0.6) == pytest.approx(1.5 - 1.3 * c * p, abs=1e-12)
    assert s.baseline == pytest.approx(0.9 * 0.5 + 0.1 * 0.6, abs=1e-12)


def test_guarded_temperature_given_baseline():
    """A baseline given at construction (a resumed run) is used from the first step."""
    s = GuardedTemperature(tau_min=0.5, tau_max=1.0, sigma_r=0.2, momentum=0.5, baseline=0.1)
    expected = 1.0 - 0.5 * 0.8 * math.tanh((0.3 - 0.1) / 0.2)
    assert s.step(0.2, 0.3) == pytest.approx(expected, abs=1e-12)
    assert s.baseline == pytest.approx(0.2, abs=1e-15)


def test_guarded_temperature_entropy_tolerance_and_clip():
    """``H̄`` within 1e-6 outside [0, 1] (float rounding) is accepted and clipped; beyond, refused."""
    s = GuardedTemperature(sigma_r=0.1, momentum=0.0, baseline=0.0)
    assert s.step(1 + 5e-7, 1.0) == 1.5  # clipped to 1: c = 0 exactly, τ = τ_max
    s = GuardedTemperature(sigma_r=0.1, momentum=0.0, baseline=0.0)
    assert s.step(-5e-7, 1.0) == pytest.approx(1.5 - 1.3 * math.tanh(10.0), abs=1e-15)  # c = 1
    s.step(-1e-6, 0.5)  # the tolerance's ends are inside it
    s.step(1 + 1e-6, 0.5)
    for bad in (1 + 2e-6, -2e-6, math.nan):
        with pytest.raises(ValueError, match=r"GuardedTemperature: `entropy_norm` must lie in"):
            s.step(bad, 0.5)
    for bad in (math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"GuardedTemperature: `reward_mean` must be finite"):
            s.step(0.5, bad)


def test_guarded_temperature_range_ends():
    GuardedTemperature(tau_min=0.7, tau_max=0.7)  # a constant τ is a valid range
    GuardedTemperature(momentum=0.0)
    for kwargs, name in (
        ({"tau_min": 0.0}, "tau_min"),
        ({"tau_min": -0.1}, "tau_min"),
        ({"tau_min": 1.0, "tau_max": 0.9}, "tau_min"),
        ({"sigma_r": -0.1}, "sigma_r"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
    ):
        with pytest.raises(ValueError, match=rf"GuardedTemperature: .*{name}"):
            GuardedTemperature(**kwargs)


def test_guarded_temperature_state_round_trip():
    """A resumed schedule carries τ and the baseline (a fresh one's baseline is None)."""
    s = GuardedTemperature(momentum=0.5)
    assert s.state_dict() == {"baseline": None, "tau": 1.5}
    s.step(0.1, 0.2)
    tau = s.step(0.1, 0.8)
    assert tau < 1.5
    state = s.state_dict()
    assert state == {"baseline": pytest.approx(0.5, abs=1e-15), "tau": tau}
    t = GuardedTemperature(momentum=0.5)
    t.load_state_dict(state)
    assert t.tau == tau and t.baseline == state["baseline"]
    assert t.step(0.3, 0.9) == s.step(0.3, 0.9)


def test_entropy_reward_temperature_paper_defaults():
    """ADPO §6.3: τ_base 0.8, a 0.2, b 0.5 → 0.96 unsharpened, 0.8 confident and right,
    1.2 confident and wrong; clipped to [0.2, 1.5]."""
    sched = EntropyRewardTemperature()
    got = sched(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.3, 1.0, 0.0]))
    torch.testing.assert_close(got, torch.tensor([0.96, 0.8, 1.2]), rtol=0, atol=1e-6)
    high = EntropyRewardTemperature(tau_base=1.4)(torch.tensor([1.0]), torch.tensor([0.0]))
    assert high.item() == pytest.approx(1.5, abs=1e-7)  # 1.4·1.2 = 1.68 → τ_max
    low = EntropyRewardTemperature(tau_base=0.1)(torch.tensor([0.0]), torch.tensor([1.0]))
    assert low.item() == pytest.approx(0.2, abs=1e-7)  # 0.1 → τ_min


def test_entropy_reward_temperature_checks():
    EntropyRewardTemperature(tau_min=0.9, tau_max=0.9)
    for kwargs in ({"tau_base": 0.0}, {"tau_min": 0.0}, {"tau_min": 1.6}):
        with pytest.raises(ValueError, match=r"^EntropyRewardTemperature: need tau_base > 0"):
            EntropyRewardTemperature(**kwargs)
    sched = EntropyRewardTemperature()
    h = torch.tensor([0.5, 0.5], requires_grad=True)
    r = torch.tensor([0.0, 1.0], requires_grad=True)
    assert not sched(h, r).requires_grad
    with pytest.raises(ValueError, match=r"both be \[B\], got \(2, 1\) and \(2, 1\)"):
        sched(h.detach()[:, None], r.detach()[:, None])
    with pytest.raises(
        ValueError, match=r"`reward_mean` must lie in \[0, 1\], got values from 0 to 1\.5"
    ):
        sched(h, torch.tensor([0.0, 1.5]))
    with pytest.raises(
        ValueError, match=r"`entropy_norm` must lie in \[0, 1\], got values from -0\.1"
    ):
        sched(torch.tensor([-0.1, 0.5]), r)
    with pytest.raises(ValueError, match="`entropy_norm` must lie in"):
        sched(torch.tensor([math.nan, 0.5]), r)
