"""``adpo bench trainer``: a quick run measures every phase, forces the lengths, writes the files."""

from __future__ import annotations

import json
import math

import pytest

from adpo.experiments.trainer_bench import TrainerBenchConfig, run


def test_quick_bench_writes_ratios_against_grpo_measured_in_the_same_run(tmp_path):
    cfg = TrainerBenchConfig(out=str(tmp_path), losses=("adpo-pl",), quick=True)
    assert cfg.losses == ("grpo", "adpo-pl")  # the baseline always runs
    summary = run(cfg)
    rows = {r["loss"]: r for r in summary["rows"]}
    assert set(rows) == {"grpo", "adpo-pl"}
    for r in rows.values():
        assert r["mean_completion_length"] == 16  # forced: every trainer does the same work
        assert r["generation_s"] > 0 and r["update_s"] > 0 and r["peak_memory_mb"] > 0
        parts = r["generation_s"] + r["rewards_s"] + r["logprob_passes_s"] + r["update_s"]
        assert math.isfinite(parts)
    assert rows["grpo"]["time_vs_grpo"] == 1.0
    assert rows["adpo-pl"]["time_vs_grpo"] == pytest.approx(
        rows["adpo-pl"]["total_s"] / rows["grpo"]["total_s"]
    )
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["rows"][0]["loss"] == "grpo" and (tmp_path / "trainer_bench.png").exists()
    assert (tmp_path / "results.csv").read_text().startswith("loss,")


def test_bad_bench_config_is_refused():
    with pytest.raises(ValueError, match=r"unknown losses \['ppo'\]"):
        TrainerBenchConfig(losses=("ppo",))
    with pytest.raises(ValueError, match="warmup < steps"):
        TrainerBenchConfig(steps=2, warmup=2)
