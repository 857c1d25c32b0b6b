"""``adpo bench reasoning-long``: collapse detector, advantage range, config checks, and a tiny
end-to-end run of every objective through both experiments, the sweep and ``--replot``."""

import csv
import json
import math

import pytest

from adpo.experiments.reasoning_long import (
    QUICK,
    ReasoningLongConfig,
    RoundRecorder,
    detect_collapse,
    moving_mean,
)
from adpo.trainers.presets import LOSSES

# ---------------------------------------------------------------- collapse detector


def test_collapse_detected_when_reward_falls_below_half_its_peak_and_stays():
    curve = [0.2] * 10 + [0.8] * 20 + [0.1] * 20  # rise, then collapse at point 30
    out = detect_collapse(curve, window=3, patience=5)
    assert out["collapsed"] and out["peak"] == pytest.approx(0.8)
    # the trailing mean of 3 first drops below 0.4 at point 31 ((0.8+0.1+0.1)/3 = 0.333)
    assert out["index"] == 31 and out["final"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "curve",
    [
        [0.2] * 10 + [0.8] * 30,  # rises and stays
        [0.2] * 10 + [0.8] * 20 + [0.1] * 10 + [0.7] * 10,  # dips, then recovers
        [0.2] * 10 + [0.8] * 20 + [0.5] * 20,  # falls, but not below half its peak
        [0.0] * 20 + [0.03] * 10 + [0.0] * 20,  # never learnt anything: nothing to lose
        [0.8] * 40 + [0.1] * 2,  # a dip shorter than the patience at the very end
    ],
)
def test_no_collapse_on_stable_recovering_shallow_or_flat_curves(curve):
    assert not detect_collapse(curve, window=3, patience=5)["collapsed"]


def test_collapse_detector_smooths_single_bad_rounds_and_drops_nans():
    curve = [0.6, 0.7, 0.0, 0.7, 0.7, 0.7, 0.0, 0.7, 0.7, 0.7] * 3
    assert not detect_collapse(curve, window=5, patience=3)["collapsed"]
    with_nans = [0.2, math.nan, 0.9, 0.9, math.nan, 0.9, 0.05, 0.05, 0.05, 0.05, 0.05]
    out = detect_collapse(with_nans, window=1, patience=3)
    assert out["collapsed"] and out["index"] == 4  # index into the NaN-free curve
    assert not detect_collapse([])["collapsed"]
    with pytest.raises(ValueError, match="fraction"):
        detect_collapse([0.1, 0.2], fraction=1.0)


def test_moving_mean():
    assert moving_mean([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    with pytest.raises(ValueError, match="window"):
        moving_mean([1.0], 0)


# ---------------------------------------------------------------- advantage range (GRE)


def test_round_recorder_scores_and_measures_the_advantage_range():
    rec = RoundRecorder(num_generations=4)
    prompts = ["1+1=?\n"] * 4 + ["2+2=?\n"] * 4
    completions = ["\\boxed{2}", "x", "x", "x"] + ["\\boxed{4}"] * 4
    answers = ["2"] * 4 + ["4"] * 4
    assert rec(prompts=prompts, completions=completions, answer=answers) == [1, 0, 0, 0, 1, 1, 1, 1]
    # group 1: rewards (1,0,0,0), mean 1/4, sample std 1/2 → advantages 3/2 and −1/2;
    # group 2 is constant → advantages 0. Range over the round: 3/2 − (−1/2) = 2
    assert rec.adv_range(0) == pytest.approx(2.0, rel=1e-5)
    assert math.isnan(rec.adv_range(1))  # no such round
    # a round whose groups are not consecutive runs of G is not measured (no wrong number)
    rec(prompts=["a", "b"] * 4, completions=["x"] * 8, answer=["1"] * 8)
    assert math.isnan(rec.adv_range(1))


# ---------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"seeds": ()}, "seeds"),
        ({"losses": ("ppo",)}, "losses"),
        ({"experiments": ("short",)}, "experiments"),
        ({"train_tier": 7}, "train_tier"),
        ({"ood_tier": 3}, "ood_tier"),  # one of the warm-start tiers: not OOD
        ({"warmup_tiers": (1, 9)}, "warmup_tiers"),
        ({"num_generations": 1}, "num_generations"),
        ({"long_steps": 0}, "long_steps"),
        ({"eval_every": 0}, "eval_every"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"lr_grid": ()}, "lr_grid"),
        ({"lr_grid": (1e-3, -1.0)}, "lr_grid"),
        ({"lr_grid": (math.nan,)}, "lr_grid"),
        ({"ood_fraction": 0.0}, "ood_fraction"),
        ({"ood_fraction": 0.001}, "ood_fraction"),  # fewer prompts than one step needs
        ({"late_fraction": 1.5}, "late_fraction"),
        ({"collapse_fraction": 0.0}, "collapse_fraction"),
        ({"collapse_min_peak": 1.0}, "collapse_min_peak"),
        ({"temperature": 0.0}, "temperature"),
        ({"sweep_seed": 0}, "sweep_seed"),  # the sweep must not pick on a reported seed
        ({"fixed_lrs": ("grpo:3e-4",)}, "fixed_lrs"),
        ({"fixed_lrs": ("ppo=3e-4",)}, "fixed_lrs"),
        ({"fixed_lrs": ("grpo=-1",)}, "fixed_lrs"),
    ],
)
def test_bad_config_values_are_rejected_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        ReasoningLongConfig(**kwargs)


def test_config_accepts_defaults_and_parses_fixed_lrs():
    cfg = ReasoningLongConfig(fixed_lrs=("grpo=3e-4", "opo=1e-3"))
    assert cfg.fixed_lr_map() == {"grpo": 3e-4, "opo": 1e-3}
    assert set(QUICK) <= {f for f in ReasoningLongConfig.__dataclass_fields__}


# ---------------------------------------------------------------- tiny end-to-end run


ARMS_RUN = (*LOSSES, "adpo-adaptive-tau")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from adpo.cli import main

    out = tmp_path_factory.mktemp("reasoning_long")
    # every objective and the adaptive-τ arm; the sweep runs for adpo-pl only (the others
    # have fixed lrs), so the test stays small while still exercising sweep → choice → seeds
    fixed = [f"{x}=3e-4" for x in ARMS_RUN if x != "adpo-pl"]
    argv = ["bench", "reasoning-long", "--quick", "--out", str(out), "--fixed-lrs", *fixed,
            "--losses", *ARMS_RUN]  # fmt: skip
    assert main(argv) == 0
    return out


def test_tiny_run_writes_every_objective_and_experiment(tiny_run):
    out = tiny_run
    runs = list(csv.DictReader((out / "runs.csv").open()))
    main_runs = [r for r in runs if r["phase"] == "main"]
    assert sorted((r["experiment"], r["loss"]) for r in main_runs) == sorted(
        (e, x) for e in ("long", "ood") for x in ARMS_RUN
    )
    sweep = [r for r in runs if r["phase"] == "sweep"]
    assert [(r["loss"], float(r["lr"])) for r in sweep] == [("adpo-pl", 3e-4), ("adpo-pl", 1e-3)]
    assert all(r["seed"] == str(ReasoningLongConfig.sweep_seed) for r in sweep)
    for r in main_runs:
        assert 0.0 <= float(r["accuracy_final"]) <= 1.0
        assert float(r["step_time_s"]) > 0 and r["collapsed"] in ("0", "1")
        assert float(r["lr"]) == (3e-4 if r["loss"] != "adpo-pl" else float(r["lr"]))
        assert r["threads"] == "1"
    # every objective of one seed starts from the same warm start
    assert len({r["accuracy_before_tier3"] for r in main_runs}) == 1
    curves = list(csv.DictReader((out / "curves.csv").open()))
    keys = set(curves[0])
    for k in ("reward", "length", "entropy", "grad_norm", "adv_range", "grad_efficiency",
              "clip_frac", "heldout_accuracy"):  # fmt: skip
        assert k in keys, k
    grpo = [
        c
        for c in curves
        if c["phase"] == "main" and c["loss"] == "grpo" and c["experiment"] == "ood"
    ]
    assert [int(c["step"]) for c in grpo if c["heldout_accuracy"]] == [0, 2, 4]
    # τ per step: 0.8 for ADPO at the constant schedule; the adaptive arm's first step reads
    # every group at H̄ = 1 (its entropy is the reference), τ = 0.8·(1 + 0.2·1) = 0.96
    tau = {
        loss: [float(c["tau"]) for c in curves if c["phase"] == "main" and c["loss"] == loss
               and c["experiment"] == "long" and not c["heldout_accuracy"]]
        for loss in ("adpo", "adpo-adaptive-tau", "grpo")
    }  # fmt: skip
    assert tau["adpo"] == pytest.approx([0.8] * 4, rel=1e-6)
    assert tau["adpo-adaptive-tau"][0] == pytest.approx(0.8 * 1.2, rel=1e-6)
    assert all(0.2 <= x <= 1.5 for x in tau["adpo-adaptive-tau"])
    assert all(math.isnan(x) for x in tau["grpo"])  # GRPO has no τ
    assert all(c["grad_norm"] not in ("", "nan") for c in grpo if not c["heldout_accuracy"])
    # results only: TRL's scratch output_dir is not left beside them
    assert not [p.name for p in out.iterdir() if p.is_dir()]
    s = json.loads((out / "summary.json").read_text())
    assert set(s["per_objective"]) == {"long", "ood"}
    assert set(s["per_objective"]["long"]) == set(ARMS_RUN)
    assert "grpo" not in s["paired_vs_grpo"]["long"] and "opo" in s["paired_vs_grpo"]["ood"]
    # the adaptive arm pairs with GRPO and with ADPO at the constant τ, the others with GRPO only
    assert set(s["paired_vs_objective"]["long"]) == {"adpo-adaptive-tau"}
    assert s["paired_vs_objective"]["long"]["adpo-adaptive-tau"]["base"] == "adpo"
    assert s["chosen_lr"]["grpo"] == 3e-4 and s["chosen_lr"]["adpo-pl"] in (3e-4, 1e-3)
    assert s["command"].startswith("adpo bench reasoning-long --quick")
    env = s["environment"]
    assert env["threads"] == "1" and env["device"] == "cpu" and env["adpo"]
    assert {"trl", "transformers", "accelerate", "commit", "dirty"} <= set(env)
    assert (out / "command.txt").read_text().strip() == s["command"]
    table = (out / "table.md").read_text()
    assert "### Long horizon" in table and "### Out of distribution" in table
    assert "Learning-rate sweep" in table
    for exp in ("long", "ood"):
        for png in ("accuracy", "reward", "length", "entropy", "grad_norm", "grad_efficiency",
                    "grad_vs_reward"):  # fmt: skip
            assert (out / f"{exp}_{png}.png").stat().st_size > 1000


def test_tiny_run_paired_differences_and_replot(tiny_run):
    from adpo.cli import main

    out = tiny_run
    runs = [r for r in csv.DictReader((out / "runs.csv").open()) if r["phase"] == "main"]
    s = json.loads((out / "summary.json").read_text())
    by = {(r["experiment"], r["loss"]): float(r["entropy_late"]) for r in runs}
    d = s["paired_vs_grpo"]["long"]["opo"]["entropy_late"]["mean"]
    assert d == pytest.approx(by[("long", "opo")] - by[("long", "grpo")], abs=1e-12)
    for f in ("summary.json", "table.md", "long_reward.png", "lr_sweep.png"):
        (out / f).unlink()
    assert main(["bench", "reasoning-long", "--out", str(out), "--replot"]) == 0
    s2 = json.loads((out / "summary.json").read_text())
    same = [json.dumps(x[k], sort_keys=True) for x in (s, s2) for k in ("per_objective", "claims")]
    assert same[:2] == same[2:]
    assert (out / "long_reward.png").stat().st_size > 1000
    assert (out / "lr_sweep.png").stat().st_size > 1000  # the quick sweep tries two lrs
    assert (out / "long_paired.png").stat().st_size > 1000
    assert "95 % t-interval" in (out / "table.md").read_text()
    # without the run's summary its provenance is unknown: recorded as such, not invented
    assert s2["command"] is None and s2["environment"] is None
    assert s2["replot_command"].endswith("--replot") and s2["replot_code"]["adpo"]
    # a replot over a summary keeps the run's command and environment, not its own
    run_prov = {"command": "adpo bench reasoning-long --the-run", "environment": {"trl": "x"}}
    parts = {
        "commands": ["adpo bench reasoning-long --seeds 0", "… --seeds 1"],
        "wall_time_s_parts": {"seeds 0": 5.0, "seeds 1": 7.5},
    }  # a joined result's parts
    (out / "summary.json").write_text(json.dumps({**s, **run_prov, **parts, "wall_time_s": 12.5}))
    assert main(["bench", "reasoning-long", "--out", str(out), "--replot"]) == 0
    s3 = json.loads((out / "summary.json").read_text())
    assert {k: s3[k] for k in run_prov} == run_prov and s3["wall_time_s"] == 12.5
    assert {k: s3[k] for k in parts} == parts
    assert (out / "command.txt").read_text().strip() == run_prov["command"]


def test_cuda_device_refused_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="`device`"):
        ReasoningLongConfig(device="cuda")


def test_seed_band_cuts_to_the_shortest_seed_and_smooths():
    from adpo.experiments._stats import seed_band

    a = [(1, 0.0), (2, 2.0), (3, 4.0), (4, 6.0)]
    b = [(1, 2.0), (2, 4.0), (3, 6.0)]  # one point fewer: the band stops at step 3
    steps, mu, sd = seed_band([a, b])
    assert steps.tolist() == [1, 2, 3] and mu.tolist() == [1.0, 3.0, 5.0]
    assert sd.tolist() == [1.0, 1.0, 1.0]  # population std over the two seeds
    steps, mu, _ = seed_band([a, b], smooth=2)  # 2-point moving mean, from the 2nd point
    assert steps.tolist() == [2, 3] and mu.tolist() == [2.0, 4.0]


def test_an_arm_is_an_objective_with_its_config_overrides(monkeypatch):
    """An entry of ARMS runs its objective's preset with the overrides (one line adds an arm)."""
    from adpo.experiments import reasoning_long as rl
    from adpo.trainers import presets

    assert all(rl.ARMS[x] == (x, {}) for x in LOSSES)  # the objectives at paper settings
    monkeypatch.setitem(rl.ARMS, "adpo-pl-tau05", ("adpo-pl", {"tau": 0.5}))
    cfg = ReasoningLongConfig(losses=("grpo", "adpo-pl-tau05"), fixed_lrs=("adpo-pl-tau05=1e-4",))
    assert cfg.fixed_lr_map() == {"adpo-pl-tau05": 1e-4}
    seen: dict = {}

    class Built(Exception):
        pass

    def config(loss, **kw):
        seen.update(kw, objective=loss)
        raise Built  # the config is all this test needs; nothing trains

    monkeypatch.setattr(presets, "loss_config", config)
    data = rl.SeedData(0, object(), None, [], [], {3: [], 4: []}, {3: 0.0, 4: 0.0}, 0.0)
    with pytest.raises(Built):
        rl.train_one(cfg, data, "long", "adpo-pl-tau05", 1e-4)
    assert seen["objective"] == "adpo-pl" and seen["tau"] == 0.5 and seen["learning_rate"] == 1e-4
    with pytest.raises(ValueError, match="`losses`"):
        ReasoningLongConfig(losses=("adpo-pl-tau09",))  # not an arm


def test_the_adaptive_tau_arm_is_adpo_with_the_papers_schedule(monkeypatch, tmp_path):
    """`adpo-adaptive-tau` builds ADPO with tau_schedule="entropy_reward" at its defaults (the
    paper's §6.3 values) whatever `adpo_tau_schedule` says; `adpo` follows that field."""
    from adpo.experiments import reasoning_long as rl
    from adpo.trainers import presets

    assert "adpo-adaptive-tau" not in ReasoningLongConfig().losses  # opt-in: --losses
    real = presets.loss_config
    seen: list[dict] = []

    class Built(Exception):
        pass

    def config(loss, **kw):
        seen.append({**kw, "objective": loss})
        raise Built

    monkeypatch.setattr(presets, "loss_config", config)
    data = rl.SeedData(0, object(), None, [], [], {3: [], 4: []}, {3: 0.0, 4: 0.0}, 0.0)
    for schedule in ("constant", "guarded"):
        cfg = ReasoningLongConfig(losses=("adpo", "adpo-adaptive-tau"), adpo_tau_schedule=schedule)
        for arm in cfg.losses:
            with pytest.raises(Built):
                rl.train_one(cfg, data, "long", arm, 3e-5)
    got = [(s["objective"], s["tau_schedule"]) for s in seen]
    assert got == [
        ("adpo", "constant"),
        ("adpo", "entropy_reward"),
        ("adpo", "guarded"),
        ("adpo", "entropy_reward"),
    ]
    defaults = real("adpo", output_dir=str(tmp_path), use_cpu=True, bf16=False)
    # nothing else is overridden: τ_base 0.8, α 0.2, β 0.5 are the config's defaults
    assert not {"tau", "tau_entropy_coef", "tau_wrong_coef"} & set(seen[1])
    assert defaults.tau_schedule == "entropy_reward"
    assert (defaults.tau, defaults.tau_entropy_coef, defaults.tau_wrong_coef) == (0.8, 0.2, 0.5)


def test_an_arm_pairs_with_its_objectives_arm_on_the_same_seeds():
    """``paired_vs_objective``: the arm minus its objective's arm per seed, with the interval
    (:func:`adpo.metrics.paired_differences`), and a table row for it."""
    from adpo.experiments.reasoning_long import _summarize, markdown_table

    cfg = ReasoningLongConfig(losses=("adpo", "adpo-adaptive-tau", "grpo"), experiments=("long",),
                              seeds=(0, 1, 2))  # fmt: skip
    final = {"adpo": [0.5, 0.6, 0.4], "adpo-adaptive-tau": [0.6, 0.6, 0.7], "grpo": [0.7] * 3}
    rows = [
        {"phase": "main", "experiment": "long", "loss": loss, "seed": seed, "lr": 3e-5,
         "collapsed": 0, "reward_final": final[loss][seed]}
        for loss in final for seed in cfg.seeds
    ]  # fmt: skip
    s = _summarize(cfg, rows, {"command": "adpo bench reasoning-long"})
    own = s["paired_vs_objective"]["long"]["adpo-adaptive-tau"]
    d = [0.1, 0.0, 0.3]  # adaptive − constant, per seed
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    assert own["base"] == "adpo" and own["n_seeds"] == 3
    assert own["reward_final"]["mean"] == pytest.approx(mean, abs=1e-12)
    # 95 % t-interval, 2 degrees of freedom: t = 4.302653
    assert own["reward_final"]["ci95"] == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-6)
    assert (own["reward_final"]["n_below"], own["reward_final"]["n_above"]) == (0, 2)
    vs_grpo = s["paired_vs_grpo"]["long"]["adpo-adaptive-tau"]["reward_final"]["mean"]
    assert vs_grpo == pytest.approx((0.6 + 0.6 + 0.7) / 3 - 0.7, abs=1e-12)
    assert "| `adpo-adaptive-tau` − `adpo` (3 seeds) | " in markdown_table(s)
    # without its objective's arm there is nothing to pair with
    rows = [r for r in rows if r["loss"] != "adpo"]
    cfg = ReasoningLongConfig(losses=("adpo-adaptive-tau", "grpo"), experiments=("long",),
                              seeds=(0, 1, 2))  # fmt: skip
    assert _summarize(cfg, rows, {"command": None})["paired_vs_objective"] == {}
