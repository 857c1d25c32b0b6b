"""``adpo bench trainer``: a quick run measures every phase, forces the lengths, writes the files."""

from __future__ import annotations

import json
import math

import pytest

from adpo.experiments.trainer_bench import TrainerBenchConfig, run


def test_quick_bench_writes_ratios_against_grpo_measured_in_the_same_run(tmp_path):
    import torch

    # the trainers run in worker processes with `threads`; the summary records theirs
    assert torch.get_num_threads() == 1  # this process (the suite's one-thread fixture)
    cfg = TrainerBenchConfig(out=str(tmp_path), losses=("adpo-pl",), quick=True, threads=2)
    assert cfg.losses == ("grpo", "adpo-pl")  # the baseline always runs
    summary = run(cfg)
    env = summary["environment"]
    assert env["threads"] == "2" and env["device"] == "cpu"
    assert {"adpo", "commit", "trl", "transformers", "accelerate"} <= set(env)
    rows = {r["loss"]: r for r in summary["rows"]}
    assert set(rows) == {"grpo", "adpo-pl"}
    assert not [p.name for p in tmp_path.iterdir() if p.is_dir()]  # no TRL output_dir left
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


def test_rounds_alternate_the_order_and_pool_every_rounds_steps(monkeypatch, tmp_path):
    import adpo.experiments.trainer_bench as tb

    calls = []

    def fake_worker(cfg, loss):
        calls.append(loss)
        k = calls.count(loss)  # round of this trainer
        total = {"grpo": 10.0, "opo": 11.0}[loss] * k
        step = {"generation": 1.0, "rewards": 0.0, "logprob_passes": 0.0}
        return {
            "loss": loss,
            "steps": [{**step, "update": total - 1.0, "total": total}] * 2,
            "peak_memory_mb": 100.0 * k,
            "loss_side_ms": 2.0 * k,
            "mean_completion_length": 16.0,
            "parameters": 1,
            "threads": 1,
        }

    monkeypatch.setattr(tb, "_worker", fake_worker)
    monkeypatch.setattr(tb, "_plot", lambda *a: None)
    summary = tb.run(TrainerBenchConfig(out=str(tmp_path), losses=("grpo", "opo"), rounds=3))
    assert calls == ["grpo", "opo", "opo", "grpo", "grpo", "opo"]
    opo = next(r for r in summary["rows"] if r["loss"] == "opo")
    assert opo["total_s"] == 22.0 and opo["steps_measured"] == 6  # median of 11, 22, 33 ×2
    assert (opo["total_s_round_min"], opo["total_s_round_max"]) == (11.0, 33.0)
    assert opo["peak_memory_mb"] == 300.0 and opo["loss_side_ms"] == 4.0
    assert opo["time_vs_grpo"] == pytest.approx(1.1)
    assert len(summary["steps"]["opo"]) == 3
    assert summary["environment"]["threads"] == "1"  # the workers' threads


def test_loss_side_time_counts_the_loss_and_not_the_model(tmp_path):
    import time

    import torch
    from datasets import Dataset

    from adpo.experiments.trainer_bench import loss_side_ms
    from adpo.testing import char_tokenizer, tiny_qwen3
    from adpo.trainers.presets import loss_config, make_trainer

    tok = char_tokenizer()
    model = tiny_qwen3(64, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1)
    args = loss_config(
        "opo", output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=4,
        max_completion_length=4, max_steps=1, report_to=[], use_cpu=True, save_strategy="no",
    )  # fmt: skip
    rows = Dataset.from_list([{"prompt": f"{i}+1="} for i in range(8)])
    trainer = make_trainer("opo", model, lambda completions, **k: [0.1] * len(completions),
                           args, rows, tok)  # fmt: skip
    trainer.train()
    forwards = []
    model.register_forward_hook(lambda *a: forwards.append(1))
    fast = loss_side_ms(trainer, reps=3)
    assert len(forwards) == 1  # the model ran once, for the cache
    slow_loss = trainer._group_loss

    def slow(*a, **k):
        time.sleep(0.05)
        return slow_loss(*a, **k)

    trainer._group_loss = slow
    assert loss_side_ms(trainer, reps=3) >= fast + 45.0  # the loss's own time is counted
    assert torch.is_grad_enabled()
