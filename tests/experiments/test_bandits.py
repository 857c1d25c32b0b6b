"""Noisy contextual bandits (ADPO paper §6.1): scenario generators, metrics, batched-seed
training, end-to-end learning per method, config validation and the command's outputs."""

import csv
import json
import math

import pytest
import torch

from adpo.cli import BENCHMARKS
from adpo.experiments import bandits as bd
from adpo.experiments.bandits import (
    METHODS,
    SCENARIOS,
    BanditsConfig,
    Batch,
    Scenario,
    draw_noise,
    make_scenario,
    method_loss,
    ndcg,
    observe,
    win_mass,
)

N_DRAWS = (400, 250, 4)  # 400k observations: binomial/quantile tolerances below are ≥ 4σ


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _tiny(**kw) -> BanditsConfig:
    base = dict(
        hidden=32,
        rounds=30,
        batch=32,
        eval_contexts=512,
        ref_batch=64,
        scaling_hidden=(),
        progress=False,
        plot=False,
        seeds=2,
    )
    return BanditsConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- scenarios


def test_twelve_scenarios_four_kinds_three_levels():
    assert len(SCENARIOS) == 12
    kinds = {make_scenario(s).kind for s in SCENARIOS}
    assert kinds == {"heavy_noise", "dist_shift", "adv_flip", "heavy_tail"}
    # each kind gets strictly harder with the level on its defining parameter
    for kind, param in (
        ("heavy_noise", "outlier_prob"),
        ("dist_shift", "shift"),
        ("adv_flip", "flip_prob"),
        ("heavy_tail", "cauchy_scale"),
    ):
        vals = [getattr(make_scenario(f"{kind}-{lv}"), param) for lv in ("low", "medium", "high")]
        assert vals[0] < vals[1] < vals[2], (kind, vals)
    assert make_scenario("heavy_noise-medium").name == "heavy_noise-medium"


def test_gaussian_outliers_rate_and_scales():
    sc = make_scenario("heavy_noise-medium")
    noise, sign, outlier = draw_noise(sc, N_DRAWS, _gen())
    n = outlier.numel()
    p = outlier.float().mean().item()
    assert abs(p - sc.outlier_prob) < 4 * math.sqrt(sc.outlier_prob * (1 - sc.outlier_prob) / n)
    inlier_std = noise[~outlier].std().item()
    assert inlier_std == pytest.approx(sc.noise_std, rel=0.01)
    out_std = noise[outlier].std().item()
    assert out_std == pytest.approx(math.hypot(sc.noise_std, sc.outlier_std), rel=0.02)
    assert (sign == 1).all()  # no flips in this scenario


def test_adversarial_flip_rate_is_observed_in_the_preferences():
    # a noise-free variant: every preference of a flipped group is inverted, none elsewhere
    sc = Scenario("adv_flip", "test", flip_prob=0.25)
    noise, sign, _ = draw_noise(sc, N_DRAWS, _gen(1))
    assert (noise == 0).all()
    util = torch.randn(N_DRAWS, generator=_gen(2))
    r = observe(util, noise, sign)
    i, j = torch.triu_indices(4, 4, offset=1)
    inverted = (r[..., i] > r[..., j]) != (util[..., i] > util[..., j])  # (…, P)
    n_groups = sign.numel()
    rate = inverted.float().mean().item()
    assert abs(rate - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n_groups)
    # inversions happen exactly in the flipped groups, all of their pairs
    flipped = sign[..., 0] < 0
    assert inverted.all(-1).eq(flipped).all()
    # the benchmark's own levels: the sign flips at the configured rate
    for level in ("low", "medium", "high"):
        real = make_scenario(f"adv_flip-{level}")
        _, s, _ = draw_noise(real, N_DRAWS, _gen(3))
        q = (s < 0).float().mean().item()
        assert abs(q - real.flip_prob) < 4 * math.sqrt(real.flip_prob / n_groups), level


def test_cauchy_noise_is_heavy_tailed_with_the_configured_scale():
    sc = make_scenario("heavy_tail-medium")
    noise, _, _ = draw_noise(sc, N_DRAWS, _gen(4))
    a = noise.abs().flatten().double()
    # |Cauchy(γ)|: median γ, P(|X| > 10γ) = 1 − (2/π)·atan(10) ≈ 0.0635
    assert a.median().item() == pytest.approx(sc.cauchy_scale, rel=0.02)
    tail = (a > 10 * sc.cauchy_scale).double().mean().item()
    assert tail == pytest.approx(1 - 2 / math.pi * math.atan(10), abs=0.003)
    gauss = make_scenario("heavy_noise-low")  # a Gaussian core has no such tail
    g, _, o = draw_noise(gauss, N_DRAWS, _gen(5))
    assert (g[~o].abs() > 10 * gauss.noise_std).sum() == 0


def test_distribution_shift_moves_training_contexts_only():
    cfg = _tiny(context_dim=6)
    task = bd.make_task([0, 1], cfg)
    for level in ("low", "high"):
        sc = make_scenario(f"dist_shift-{level}")
        gens = [_gen(10), _gen(11)]
        train = bd.contexts(task, sc, 50_000, gens, train=True)  # (S, n, d)
        ev = bd.contexts(task, sc, 50_000, gens, train=False)
        mean = train.mean(1)  # (S, d)
        torch.testing.assert_close(mean, sc.shift * task.shift_dir[:, 0], atol=0.02, rtol=0)
        assert mean.norm(dim=-1).tolist() == pytest.approx([sc.shift] * 2, abs=0.03)
        assert train.std(1).mean().item() == pytest.approx(sc.shift_scale, rel=0.02)
        assert ev.mean(1).abs().max().item() < 0.03
        assert ev.std(1).mean().item() == pytest.approx(1.0, rel=0.02)


def test_clean_scenario_is_noise_free():
    noise, sign, outlier = draw_noise(make_scenario("clean"), (10, 8, 4), _gen())
    assert (noise == 0).all() and (sign == 1).all() and not outlier.any()


def test_utilities_are_normalised_and_optimum_varies():
    cfg = _tiny()
    task = bd.make_task([0, 1, 2], cfg)
    x = torch.randn(3, 4000, cfg.context_dim, generator=_gen(7))
    u = task.utility(x)  # (S, N, K)
    assert u.std(-1).mean().item() == pytest.approx(1.0, rel=0.05)
    best = u.argmax(-1)
    for s in range(3):  # the optimal item depends on the context: no single winning arm
        share = torch.bincount(best[s], minlength=cfg.n_items).max().item() / best.shape[1]
        assert share < 0.5


def test_bad_scenario_values_are_rejected():
    with pytest.raises(ValueError, match="unknown scenario"):
        make_scenario("heavy_noise-extreme")
    with pytest.raises(ValueError, match="unknown scenario"):
        make_scenario("gaussian-low")
    with pytest.raises(ValueError, match="flip_prob"):
        Scenario("adv_flip", "x", flip_prob=0.5)
    with pytest.raises(ValueError, match="outlier_prob"):
        Scenario("heavy_noise", "x", outlier_prob=1.5)
    with pytest.raises(ValueError, match="noise_std"):
        Scenario("heavy_noise", "x", noise_std=float("nan"))
    with pytest.raises(ValueError, match="shift_scale"):
        Scenario("dist_shift", "x", shift_scale=0.0)
    with pytest.raises(ValueError, match="kind"):
        Scenario("typo", "x")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- metrics


def test_winmass_on_hand_made_policies():
    util = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])  # optimal items 0 and 1
    onehot_best = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    onehot_worst = torch.tensor([[0, 1.0, 0], [1.0, 0, 0]])
    uniform = torch.full((2, 3), 1 / 3)
    mixed = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.3, 0.6]])
    assert win_mass(onehot_best, util).item() == 1.0
    assert win_mass(onehot_worst, util).item() == 0.0
    assert win_mass(uniform, util).item() == pytest.approx(1 / 3)
    assert win_mass(mixed, util).item() == pytest.approx((0.5 + 0.3) / 2)
    # leading (seed) axes are kept: [S, N, K] → [S]
    assert win_mass(torch.stack([onehot_best, uniform]), torch.stack([util, util])).shape == (2,)


def test_ndcg_on_hand_made_rankings():
    util = torch.tensor([[3.0, 2.0, 1.0]])  # gains (min-max scaled): 1, 0.5, 0
    perfect = torch.tensor([[0.7, 0.2, 0.1]])
    reverse = torch.tensor([[0.1, 0.2, 0.7]])
    swap = torch.tensor([[0.2, 0.7, 0.1]])  # ranking 1, 0, 2
    idcg = 1 / math.log2(2) + 0.5 / math.log2(3)
    assert ndcg(perfect, util).item() == pytest.approx(1.0)
    assert ndcg(reverse, util).item() == pytest.approx(
        (0.5 / math.log2(3) + 1 / math.log2(4)) / idcg
    )
    assert ndcg(swap, util).item() == pytest.approx((0.5 + 1 / math.log2(3)) / idcg)
    # invariant to affine rescaling of the utilities and to monotone transforms of scores
    assert ndcg(swap.log(), 10 * util - 4).item() == pytest.approx(ndcg(swap, util).item())
    # ties in the scores are broken by item index: uniform = identity ranking here
    assert ndcg(torch.ones(1, 3), util).item() == pytest.approx(1.0)


def test_ndcg_matches_brute_force_on_random_policies():
    g = _gen(8)
    util = torch.randn(2, 50, 6, generator=g)
    scores = torch.randn(2, 50, 6, generator=g)
    got = ndcg(scores, util)
    for s in range(2):
        vals = []
        for n in range(50):
            u = util[s, n].tolist()
            lo, hi = min(u), max(u)
            rel = [(v - lo) / (hi - lo) for v in u]
            order = sorted(range(6), key=lambda i, n=n: -scores[s, n, i].item())
            dcg = sum(rel[i] / math.log2(k + 2) for k, i in enumerate(order))
            ideal = sum(v / math.log2(k + 2) for k, v in enumerate(sorted(rel, reverse=True)))
            vals.append(dcg / ideal)
        assert got[s].item() == pytest.approx(sum(vals) / 50, rel=1e-5)


# ----------------------------------------------------------------------------- batched seeds


def _random_batch(S, B, G, K, seed=0):
    g = _gen(seed)
    logits = torch.randn(S, B, K, generator=g)
    return Batch(
        items=torch.randint(0, K, (S, B, G), generator=g),
        rewards=torch.randn(S, B, G, generator=g),
        old_all=torch.log_softmax(logits + 0.1 * torch.randn(S, B, K, generator=g), -1),
        anchor_all=torch.log_softmax(logits + 0.3 * torch.randn(S, B, K, generator=g), -1),
        ref_all=torch.log_softmax(torch.randn(S, B, K, generator=g), -1),
    ), torch.log_softmax(logits, -1)


def _seed_slice(batch: Batch, s: int) -> Batch:
    return Batch(
        *(
            getattr(batch, f)[s : s + 1]
            for f in ("items", "rewards", "old_all", "anchor_all", "ref_all")
        )
    )


@pytest.mark.parametrize("name", list(METHODS))
def test_folded_seed_loss_is_the_sum_of_per_seed_losses(name):
    """Folding S seeds into the loss's batch axis (and multiplying by S) gives Σ_s L_s,
    so each seed's gradient is exactly its own: nothing is normalised across seeds."""
    cfg = _tiny()
    S, B, G, K = 3, 5, 4, 6
    batch, logp = _random_batch(S, B, G, K, seed=hash(name) % 1000)
    # make one seed's rewards 100x larger: a cross-seed normalisation would show
    batch.rewards[1] *= 100
    logp = logp.clone().requires_grad_(True)
    total = method_loss(METHODS[name], logp, batch, cfg)
    parts = [
        method_loss(METHODS[name], logp[s : s + 1], _seed_slice(batch, s), cfg) for s in range(S)
    ]
    torch.testing.assert_close(total, sum(parts), rtol=1e-5, atol=1e-6)
    (g_total,) = torch.autograd.grad(total, logp)
    for s in range(S):
        (g_s,) = torch.autograd.grad(parts[s], logp)
        torch.testing.assert_close(g_total[s], g_s[s], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ADPO-PL/dynamic", "OPO/fixed", "PPO", "TRPO", "DPO-soft"])
def test_stacked_training_equals_training_one_seed_alone(name):
    cfg = _tiny(rounds=6, seeds=None)
    out = {}
    for seeds in ([0, 1], [1]):
        task = bd.make_task(seeds, cfg)
        ref = bd.pretrain_reference(task, seeds, cfg.hidden, cfg)
        fb = bd.make_feedback(task, make_scenario("heavy_noise-high"), seeds, 2, cfg)
        ex = bd.contexts(
            task, make_scenario("clean"), 256, [_gen(100 + s) for s in seeds], train=False
        )
        out[len(seeds)] = bd.train_method(METHODS[name], task, fb, ref, ex, task.utility(ex), cfg)
    for key in ("winmass", "ndcg", "online_winmass"):
        assert out[2][key][1].item() == pytest.approx(out[1][key][0].item(), abs=1e-5), key


def test_dpo_pairs_follow_the_noisy_rewards():
    """DPO sees every pair of the group, the higher *observed* reward as chosen."""
    cfg = _tiny()
    batch, logp = _random_batch(1, 1, 3, 5, seed=3)
    batch.items[:] = torch.tensor([[[0, 1, 2]]])
    batch.rewards[:] = torch.tensor([[[0.0, 2.0, 1.0]]])  # preferences: 1 > 0, 2 > 0, 1 > 2
    got = method_loss(METHODS["DPO-hard"], logp, batch, cfg)
    lp, ref = logp[0, 0], batch.ref_all[0, 0]
    w, lo = torch.tensor([1, 2, 1]), torch.tensor([0, 0, 2])
    want = bd.dpo_loss(lp[w], lp[lo], ref[w], ref[lo], beta=cfg.dpo_beta).loss
    torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------- end to end


def test_every_method_improves_winmass_on_the_clean_scenario():
    cfg = _tiny()
    seeds = [0, 1]
    task = bd.make_task(seeds, cfg)
    ref = bd.pretrain_reference(task, seeds, cfg.hidden, cfg)
    ex = bd.contexts(
        task, make_scenario("clean"), cfg.eval_contexts, [_gen(50), _gen(51)], train=False
    )
    eu = task.utility(ex)
    with torch.no_grad():
        ref_wm = win_mass(ref(ex).softmax(-1), eu)
    fb = bd.make_feedback(task, make_scenario("clean"), seeds, 12, cfg)
    gains = {}
    for name, m in METHODS.items():
        out = bd.train_method(m, task, fb, ref, ex, eu, cfg)
        gains[name] = (out["winmass"] - ref_wm).tolist()
    assert all(min(g) > 0.02 for g in gains.values()), gains


# ----------------------------------------------------------------------------- config / CLI


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(group=1), "group"),
        (dict(seeds=0), "seeds"),
        (dict(n_items=1), "n_items"),
        (dict(rounds=0), "rounds"),
        (dict(hidden=-4), "hidden"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(adpo_tau=-1.0), "adpo_tau"),
        (dict(dpo_label_smoothing=0.5), "dpo_label_smoothing"),
        (dict(clip_eps=1.0), "clip_eps"),
        (dict(opo_alpha=1.5), "opo_alpha"),
        (dict(trpo_beta=-0.1), "trpo_beta"),
        (dict(scenarios=("heavy_noise-huge",)), "unknown scenario"),
        (dict(scenarios=()), "scenarios"),
        (dict(methods=("ADPO",)), "unknown methods"),
        (dict(methods=("PPO", "PPO")), "duplicates"),
        (dict(scaling_hidden=(64, 0)), "scaling_hidden"),
        (dict(scaling_scenario="nope-low"), "unknown scenario"),
    ],
)
def test_bad_config_values_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        BanditsConfig(**kw)


def test_quick_and_seed_defaults():
    assert BanditsConfig().n_seeds == 5
    assert BanditsConfig(quick=True).n_seeds == 2
    assert BanditsConfig(quick=True, seeds=3).n_seeds == 3
    assert BanditsConfig(quick=True).n_rounds == BanditsConfig().quick_rounds


def test_registered_in_cli():
    assert BENCHMARKS["bandits"][0] == "adpo.experiments.bandits"


def test_command_writes_results_summary_and_plots(tmp_path):
    out = tmp_path / "b"
    argv = [
        "--out", str(out), "--quick", "--seeds", "2", "--no-progress",
        "--scenarios", "heavy_noise-medium", "adv_flip-high",
        "--methods", "ADPO-raw/fixed", "ADPO-raw/dynamic", "TRPO",
        "--hidden", "32", "--scaling-hidden", "16", "32",
        "--eval-contexts", "256", "--batch", "16", "--quick-rounds", "4",
    ]  # fmt: skip
    assert bd.main(argv) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * 2  # scenario × method × seed
    assert {r["seed"] for r in rows} == {"0", "1"}
    s = json.loads((out / "summary.json").read_text())
    assert s["scenarios"] == ["heavy_noise-medium", "adv_flip-high"]
    assert s["methods"] == ["ADPO-raw/fixed", "ADPO-raw/dynamic", "TRPO"]
    for sc in s["scenarios"]:
        for m in s["methods"]:
            cell = s["winmass"][sc][m]
            assert set(cell) == {"mean", "std"} and 0 <= cell["mean"] <= 1
            vals = [float(r["winmass"]) for r in rows if r["scenario"] == sc and r["method"] == m]
            assert cell["mean"] == pytest.approx(sum(vals) / 2, abs=1e-4)
    assert set(s["scaling"]) == {"16", "32"} and set(s["scaling"]["16"]) == set(s["methods"])
    # the H = 32 point of the capacity sweep is the main sweep's run, reused
    assert s["scaling"]["32"]["TRPO"] == s["winmass"]["heavy_noise-medium"]["TRPO"]["mean"]
    assert set(s["anchors"]) == {"ADPO-raw"}
    assert set(s["anchors"]["ADPO-raw"]) >= {"fixed", "dynamic"}
    assert s["runtime_s"] > 0 and len(s["timing"]["loadavg_start"]) == 3
    for png in ("winmass_heatmap.png", "scaling.png", "anchors.png"):
        assert (out / png).stat().st_size > 1000
    with (out / "scaling.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * 3 * 2  # width × method × seed


@pytest.mark.slow
def test_full_quick_sweep_schema(tmp_path):
    out = tmp_path / "q"
    assert bd.main(["--out", str(out), "--quick", "--no-progress"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["scenarios"] == list(SCENARIOS) and s["methods"] == list(METHODS)
    assert set(s["scaling"]) == {"64", "128", "256"}
    assert set(s["anchors"]) == {"ADPO-softmax", "ADPO-PL", "ADPO-raw", "OPO"}
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 12 * 13 * 2


def test_paired_ties_use_per_seed_differences():
    rows = [
        {"scenario": "s", "method": m, "seed": k, "winmass": v}
        for m, vals in {
            "A": [0.50, 0.60, 0.70],
            "B": [0.49, 0.59, 0.69],  # always 0.01 behind: a consistent, significant deficit
            "C": [0.55, 0.50, 0.70],  # behind on average but noisy: within 2 SE
        }.items()
        for k, v in enumerate(vals)
    ]
    assert bd._paired_ties(rows, "s", "A", ["A", "B", "C"]) == ["A", "C"]


def test_method_anchor_vocabulary_keeps_result_labels():
    from adpo.experiments.bandits import METHODS as _M
    from adpo.experiments.bandits import Method as _Method

    dyn = _M["ADPO-softmax/dynamic"]
    assert dyn.anchor == "on_policy" and dyn.anchor_label == "dynamic"
    assert _M["ADPO-softmax/fixed"].anchor_label == "fixed"
    with pytest.warns(DeprecationWarning, match="'dynamic'.*'on_policy'"):
        old = _Method("x", "opo", "dynamic")
    assert old.anchor == "on_policy"
    with pytest.raises(ValueError, match="`anchor`"):
        _Method("x", "opo", "ema")
