"""``adpo demo``: a few-step run writes the promised summary and plot."""

import json

import pytest


def test_demo_short_run_writes_summary_and_plot(tmp_path, capsys):
    from adpo.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--steps", "2", "--warmup-steps", "3", "--warmup-examples", "50",
            "--n-train", "64", "--n-test", "16", "--prompts-per-step", "2", "--num-generations", "4",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "details.json",
        "reward_curve.png",
        "summary.json",
    ]
    s = json.loads((out / "summary.json").read_text())
    keys = {"loss", "accuracy_before", "accuracy_after", "reward_curve", "steps", "train_time_s"}
    assert set(s) == keys  # exactly the documented keys; the rest goes to details.json
    d = json.loads((out / "details.json").read_text())
    assert d["accuracy_curve"][0] == {"step": 0, "accuracy": s["accuracy_before"]}
    assert d["accuracy_curve"][-1] == {"step": 2, "accuracy": s["accuracy_after"]}
    assert d["threads"] >= 1 and len(d["load_average"]) == 3
    assert s["loss"] == "adpo-pl" and s["steps"] == 2
    assert 0.0 <= s["accuracy_before"] <= 1.0 and 0.0 <= s["accuracy_after"] <= 1.0
    assert len(s["reward_curve"]) == 1  # 2 optimizer steps = 1 generation round
    assert s["train_time_s"] > 0
    assert (out / "reward_curve.png").stat().st_size > 1000
    # the result names its code as `adpo env` does: one version string, one commit
    capsys.readouterr()
    assert main(["env"]) == 0
    env = dict(x[2:].split(": ", 1) for x in capsys.readouterr().out.splitlines() if x[:2] == "- ")
    recorded = d["environment"]
    assert env["adpo"] == recorded["adpo"] == __import__("adpo").__version__
    assert env["adpo commit"].split()[0] == (recorded["commit"] or "none")
    assert ("dirty" in env["adpo commit"]) == bool(recorded["dirty"])


def test_demo_split_is_disjoint_and_config_is_checked():
    from adpo.experiments.arithmetic_rl import ArithmeticRLConfig as DemoConfig
    from adpo.experiments.arithmetic_rl import _split

    warm, rl, test = _split(DemoConfig(n_train=300, n_test=100, warmup_examples=100))
    prompts = [{r["prompt"] for r in part} for part in (warm, rl, test)]
    assert [len(p) for p in prompts] == [100, 300, 100]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    with pytest.raises(ValueError, match="steps"):
        DemoConfig(steps=0)
    with pytest.raises(ValueError, match="threads"):
        DemoConfig(threads=-1)
    with pytest.raises(ValueError, match="distinct"):
        _split(DemoConfig(digits=1, n_train=300, n_test=10))


@pytest.mark.slow
def test_demo_rl_raises_heldout_accuracy_over_the_warm_start(tmp_path):
    """A shortened default (the full warm start, a third of the RL steps) must already help."""
    from adpo.experiments.demo import DemoConfig, run

    s = run(DemoConfig(steps=400, eval_every=0, n_test=300, progress=False, plot=False))
    assert s["accuracy_after"] >= s["accuracy_before"] + 0.03, s["accuracy_curve"]
