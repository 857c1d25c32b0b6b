"""``adpo bench reasoning``: a tiny run writes the table, curves and plots it promises."""

import csv
import json

import pytest


def _tiny_argv(out) -> list[str]:
    return ["bench", "reasoning", "--out", str(out), "--losses", "adpo-pl", "grpo", "--seeds", "0", "1",
            "--task.steps", "2", "--task.eval-every", "1", "--task.warmup-steps", "2",
            "--task.warmup-examples", "32", "--task.n-train", "32", "--task.n-test", "8",
            "--task.prompts-per-step", "2", "--task.num-generations", "4"]  # fmt: skip


def test_reasoning_bench_tiny_run_writes_results(tmp_path):
    from adpo.cli import main

    out = tmp_path / "reasoning"
    assert main(_tiny_argv(out)) == 0
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted((r["loss"], r["seed"]) for r in runs) == [
        ("adpo-pl", "0"), ("adpo-pl", "1"), ("grpo", "0"), ("grpo", "1"),
    ]  # fmt: skip
    for r in runs:
        for key in ("accuracy_final", "entropy_final", "completion_length_mean",
                    "grad_norm_late", "step_time_s", "load_average", "threads"):  # fmt: skip
            assert r[key] != "", key
        assert 0.0 <= float(r["accuracy_final"]) <= 1.0
        assert float(r["step_time_s"]) > 0 and float(r["grad_norm_late"]) >= 0
    # the two objectives of one seed start from the same warm start
    before = {(r["loss"], r["seed"]): r["accuracy_before"] for r in runs}
    assert before[("adpo-pl", "0")] == before[("grpo", "0")]
    curves = list(csv.DictReader((out / "curves.csv").open()))
    acc = [c for c in curves if c["loss"] == "grpo" and c["seed"] == "0" and c["heldout_accuracy"]]
    assert [int(c["step"]) for c in acc] == [0, 1, 2]
    s = json.loads((out / "summary.json").read_text())
    assert set(s["per_loss"]) == {"adpo-pl", "grpo"}
    assert s["per_loss"]["grpo"]["n_seeds"] == 2
    assert s["claims"]["adpo_pl_vs_grpo_peak_reward_rel"] is not None or (
        s["per_loss"]["grpo"]["reward_peak"]["mean"] == 0
    )
    table = (out / "table.md").read_text()
    assert table.count("\n") == 10  # 2 tables (header, rule, rows) and the paired cells' key
    assert "95 % t-interval" in table
    env = s["environment"]  # provenance: code version, the libraries it drives, threads, device
    assert {"adpo", "commit", "dirty", "trl", "transformers", "accelerate"} <= set(env)
    assert env["threads"] == "1" and env["device"] == "cpu" and s["command"].startswith("adpo")
    for png in ("accuracy.png", "accuracy_gain.png", "paired.png", "reward.png", "grad_norm.png",
                "entropy.png"):  # fmt: skip
        assert (out / png).stat().st_size > 1000
    # paired differences: objective minus grpo on the same seed, checked by hand
    acc = {(r["loss"], r["seed"]): float(r["accuracy_final"]) for r in runs}
    diffs = [acc[("adpo-pl", sd)] - acc[("grpo", sd)] for sd in ("0", "1")]
    paired = s["paired_vs_grpo"]["adpo-pl"]
    assert paired["n_seeds"] == 2 and "grpo" not in s["paired_vs_grpo"]
    assert paired["accuracy_final"]["mean"] == pytest.approx(sum(diffs) / 2, abs=1e-12)

    # --replot rebuilds the same summary and plots from the CSVs alone
    for f in ("summary.json", "table.md", "accuracy.png"):
        (out / f).unlink()
    assert main(["bench", "reasoning", "--out", str(out), "--replot"]) == 0
    s2 = json.loads((out / "summary.json").read_text())
    same = [json.dumps(x[k], sort_keys=True) for x in (s, s2) for k in ("per_loss", "claims")]
    assert same[:2] == same[2:]  # (as text: NaN == NaN)
    assert (out / "accuracy.png").stat().st_size > 1000
    # without the run's summary its command and environment are unknown, not this process's
    assert s2["command"] is None and s2["environment"] is None
    # over a summary, a replot keeps the run's command, environment and wall time
    run_prov = {"command": "adpo bench reasoning --the-run", "environment": {"threads": "1"}}
    (out / "summary.json").write_text(json.dumps({**s, **run_prov, "wall_time_s": 7.0}))
    assert main(["bench", "reasoning", "--out", str(out), "--replot", "--no-plot"]) == 0
    s3 = json.loads((out / "summary.json").read_text())
    assert {k: s3[k] for k in run_prov} == run_prov and s3["wall_time_s"] == 7.0
    assert s3["replot_command"].endswith("--replot --no-plot")


def test_summary_claims_compare_opo_with_grpo():
    """The OPO − GRPO gradient claims, from made-up runs (the ratio of the objectives' means)."""
    from adpo.experiments.reasoning import METRICS, ReasoningConfig, _summarize

    def run(loss, seed, late, early):
        return {**dict.fromkeys(METRICS, 1.0), "loss": loss, "seed": seed, "load_average": 1.0,
                "accuracy_before": 0.5, "grad_norm_late": late, "grad_norm_early": early,
                "grad_norm_late_over_early": late / early}  # fmt: skip

    rows = [run("opo", 0, 6.0, 3.0), run("opo", 1, 8.0, 8.0), run("grpo", 0, 2.0, 2.0),
            run("grpo", 1, 2.0, 1.0)]  # fmt: skip
    s = _summarize(ReasoningConfig(losses=("opo", "grpo"), seeds=(0, 1)), rows, {})
    assert s["claims"]["opo_vs_grpo_late_grad_norm_ratio"] == pytest.approx(7.0 / 2.0)
    assert s["claims"]["opo_vs_grpo_late_over_early_grad_norm_ratio"] == pytest.approx(1.5 / 1.5)
    d = s["paired_vs_grpo"]["opo"]["reward_final"]
    assert (d["mean"], d["n_below"], d["n_above"]) == (0.0, 0, 0)


def test_reasoning_config_is_checked():
    from adpo.experiments.reasoning import ReasoningConfig

    with pytest.raises(ValueError, match="late_fraction"):
        ReasoningConfig(late_fraction=0.0)
    with pytest.raises(ValueError, match="seed"):
        ReasoningConfig(seeds=())
