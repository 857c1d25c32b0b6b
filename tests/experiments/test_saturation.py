"""The saturation benchmark against closed-form gradients of the binary-logit toy."""

import csv
import json
import math

import pytest

from adpo.experiments.saturation import SaturationConfig, grad_at, methods, run

# z-scored advantages of rewards (1, 0): ±(r − mean)/(std + eps) with the sample std √½, eps 1e-6
A = 0.5 / (math.sqrt(0.5) + 1e-6)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("p", [0.3, 0.6, 0.9, 0.99, 0.999])
def test_gradients_match_closed_forms(p):
    cfg = SaturationConfig(dpo_beta=0.5)
    fns = methods(cfg)
    z = math.log(p / (1 - p))
    g = {name: grad_at(fn, p)[1] for name, fn in fns.items()}
    assert g["SFT"] == pytest.approx(-(1 - p), rel=1e-9)  # d/dz −log σ(z)
    assert g["DPO"] == pytest.approx(-0.5 * (1 - sigmoid(0.5 * z)), rel=1e-9)
    q_plus = math.exp(A) / (math.exp(A) + math.exp(-A))  # softmax(A / β_r), β_r = 1
    assert g["ADPO"] == pytest.approx(p - q_plus, rel=1e-9, abs=1e-12)
    assert g["ADPO-PL"] == pytest.approx(-(1 - p), rel=1e-9)  # G = 2: PL is top-1
    # OPO (log ratio, α = 0.4, μ = 1): ω = e^{0.6·(±A)}, normalised to mean 1, then z-scored
    w_plus, w_minus = math.exp(0.6 * A), math.exp(-0.6 * A)
    d = 2 * (w_plus - w_minus) / (w_plus + w_minus)
    w_hat = (d / 2) / (d / math.sqrt(2) + 1e-6)
    d_plus, d_minus = math.log(2 * p), math.log(2 * (1 - p))
    opo = 0.5 * ((-w_hat + d_plus) * (1 - p) + (w_hat + d_minus) * (-p))
    assert g["OPO"] == pytest.approx(opo, rel=1e-9)
    # clipped objectives: exactly zero once the ratio of y+ (2p) leaves the clip window
    if 2 * p > 1.28 and 2 * (1 - p) < 0.8:
        assert g["GRPO"] == g["DAPO"] == g["GSPO"] == 0.0
    if p < 0.5:
        # below 0.5 nothing is clipped for GRPO: −½ A (σ(z)(1−σ(z))/0.5)·2 = −A·2p(1−p)
        assert g["GRPO"] == pytest.approx(-A * 2 * p * (1 - p), rel=1e-9)


def test_run_writes_outputs(tmp_path):
    summary = run(SaturationConfig(out=str(tmp_path), points=12))
    for name in ("saturation.csv", "saturation.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "saturation.csv").open()))
    assert {r["method"] for r in rows} == set(summary["methods"])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert set(on_disk["methods"]["OPO"]["grad_abs"]) == {"0.6", "0.9", "0.99", "0.999"}
    # the paper's qualitative claims on this toy: OPO does not saturate, clipped losses cliff
    at = {m: v["grad_abs"]["0.999"] for m, v in on_disk["methods"].items()}
    assert at["OPO"] > 1.0 and at["GRPO"] == at["DAPO"] == at["GSPO"] == 0.0
    assert at["SFT"] == pytest.approx(1e-3, rel=1e-6)
    eff = on_disk["methods"]["OPO"]["efficiency"]["0.999"]
    assert eff == pytest.approx(at["OPO"] / on_disk["half_advantage_range"])


def test_fixed_points_are_where_the_gradient_changes_sign():
    """ADPO's softmax target pulls back past p = q+; OPO past its minimiser Δ* = ω̂/μ (the
    root of the closed form above); SFT and the clipped objectives never turn back."""
    from adpo.experiments.saturation import fixed_point, p_grid

    fns = methods(SaturationConfig())
    grid = p_grid(50)
    at = {name: fixed_point(fn, [(p, grad_at(fn, p)[1]) for p in grid]) for name, fn in fns.items()}
    q_plus = math.exp(A) / (math.exp(A) + math.exp(-A))
    assert at["ADPO"] == pytest.approx(q_plus, abs=1e-12)
    w_plus, w_minus = math.exp(0.6 * A), math.exp(-0.6 * A)
    d = 2 * (w_plus - w_minus) / (w_plus + w_minus)
    w_hat = (d / 2) / (d / math.sqrt(2) + 1e-6)

    def opo(p):  # the closed-form ∂L/∂z of OPO (log ratio), as in the test above
        return 0.5 * ((-w_hat + math.log(2 * p)) * (1 - p) - (w_hat + math.log(2 * (1 - p))) * p)

    p_star = at["OPO"]
    assert abs(opo(p_star)) < 1e-12 and opo(p_star - 1e-6) < 0 < opo(p_star + 1e-6)
    assert 0.77 < p_star < 0.78
    for name in ("SFT", "DPO", "ADPO-PL", "GRPO", "DAPO", "GSPO"):
        assert at[name] is None, name
