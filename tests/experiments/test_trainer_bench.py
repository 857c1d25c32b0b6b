"""``adpo bench trainer``: a quick run measures every phase, forces the lengths, writes the files."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
    assert (tmp_path / "results.csv").read_text().startswith("row,loss,micro_batch,")
    assert saved["goals"]["met"] == {}  # issue 24's goals are for split groups only


def test_bad_bench_config_is_refused():
    with pytest.raises(ValueError, match=r"unknown losses \['ppo'\]"):
        TrainerBenchConfig(losses=("ppo",))
    with pytest.raises(ValueError, match="warmup < steps"):
        TrainerBenchConfig(steps=2, warmup=2)
    with pytest.raises(ValueError, match="micro_batch must divide the step's 16 completions"):
        TrainerBenchConfig(num_generations=16, micro_batch=3)
    with pytest.raises(ValueError, match="micro_batch must divide the step's 8 completions"):
        TrainerBenchConfig(micro_batch=0)
    with pytest.raises(ValueError, match="whole_groups compares against a split step"):
        TrainerBenchConfig(whole_groups=("adpo-pl",))  # the step is one micro-batch already
    with pytest.raises(ValueError, match="whole_groups compares against a split step"):
        TrainerBenchConfig(micro_batch=8, whole_groups=("adpo-pl",))
    with pytest.raises(ValueError, match=r"unknown losses \['ppo'\]"):
        TrainerBenchConfig(micro_batch=2, whole_groups=("ppo",))
    with pytest.raises(ValueError, match=r"constant_tau is an ADPO setting; \['opo'\]"):
        TrainerBenchConfig(constant_tau=("opo",))
    with pytest.raises(ValueError, match="unknown row 'adpo-pl/fast'"):
        TrainerBenchConfig().settings("adpo-pl/fast")


def test_rows_and_their_micro_batches():
    cfg = TrainerBenchConfig(
        losses=("adpo-pl", "opo"), num_generations=16, micro_batch=2,
        whole_groups=("adpo-pl",), constant_tau=("adpo-pl",),
    )  # fmt: skip
    assert cfg.rows == ("grpo", "adpo-pl", "opo", "adpo-pl/constant-tau", "adpo-pl/whole")
    assert cfg.settings("grpo") == ("grpo", 2, 8, {})  # the baseline splits its step too
    assert cfg.settings("opo") == ("opo", 2, 8, {})
    assert cfg.settings("adpo-pl/constant-tau") == (
        "adpo-pl", 2, 8, {"tau_schedule": "constant"}
    )  # fmt: skip
    assert cfg.settings("adpo-pl/whole") == ("adpo-pl", 16, 1, {})
    two = TrainerBenchConfig(prompts_per_step=2, num_generations=4)
    assert two.settings("adpo") == ("adpo", 8, 1, {})  # default: the whole step at once


def test_rounds_alternate_the_order_and_pool_every_rounds_steps(monkeypatch, tmp_path):
    import adpo.experiments.trainer_bench as tb

    calls = []

    def fake_worker(cfg, loss):  # a row without a variant is its objective
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


def test_loss_side_time_counts_the_loss_and_not_the_model(tmp_path, monkeypatch):
    """On a fake clock that only the model's forward (1 s) and a slowed loss (50 ms per call)
    advance: the loss's own time is counted, the model's is not. No wall-clock timing, so
    the machine's load cannot decide it."""
    from types import SimpleNamespace

    import torch
    from datasets import Dataset

    import adpo.experiments.trainer_bench as tb
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
    clock = [0.0]
    monkeypatch.setattr(tb, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    forwards = []

    def forward_hook(*a):
        forwards.append(1)
        clock[0] += 1.0

    model.register_forward_hook(forward_hook)
    assert tb.loss_side_ms(trainer, reps=3) == 0.0  # the model's second of the first call
    assert len(forwards) == 1  # the model ran once, for the cache
    slow_loss = trainer._group_loss
    calls = []

    def slow(*a, **k):
        calls.append(1)
        clock[0] += 0.05
        return slow_loss(*a, **k)

    trainer._group_loss = slow
    ms = tb.loss_side_ms(trainer, reps=3)
    assert calls and len(calls) % 4 == 0  # the same number of loss calls in each of 1 + 3
    assert ms == pytest.approx(50.0 * len(calls) / 4)  # the loss's own time is counted
    assert torch.is_grad_enabled()


def test_split_step_measures_the_entropy_pass_and_its_constant_tau_row_has_none(tmp_path):
    """In this process (no worker): micro-batches of 2 out of G = 4, one step per round."""
    from adpo.experiments.trainer_bench import measure

    cfg = TrainerBenchConfig(
        out=str(tmp_path), num_generations=4, micro_batch=2, whole_groups=("adpo-pl",),
        constant_tau=("adpo-pl",), quick=True,
    )  # fmt: skip
    runs = {row: measure(cfg, row) for row in ("grpo", "adpo-pl", "adpo-pl/constant-tau")}
    assert {r["micro_batch"] for r in runs.values()} == {2}
    assert runs["adpo-pl"]["tau_schedule"] == "entropy_reward"
    assert runs["adpo-pl/constant-tau"]["tau_schedule"] == "constant"
    assert runs["grpo"]["tau_schedule"] is None
    for row, r in runs.items():
        assert r["mean_completion_length"] == 16 and len(r["steps"]) == 2, row
        assert len(r["load_1min"]) == 2
    # the entropy-reward schedule reads each split group's entropy: one no-grad pass per step
    assert runs["adpo-pl"]["steps"][0]["logprob_passes"] > 0
    assert runs["adpo-pl/constant-tau"]["steps"][0]["logprob_passes"] == 0
    assert runs["grpo"]["steps"][0]["logprob_passes"] == 0
    whole = measure(cfg, "adpo-pl/whole")
    assert whole["micro_batch"] == 4 and whole["steps"][0]["logprob_passes"] == 0


def test_ratios_against_grpo_and_the_whole_group_row():
    from adpo.experiments.trainer_bench import goals, table

    cfg = TrainerBenchConfig(micro_batch=2, whole_groups=("adpo-pl",), losses=("adpo-pl",))

    def rec(row, total, peak):
        step = {"generation": 1.0, "rewards": 0.0, "logprob_passes": 0.5, "update": total - 1.5}
        return {"row": row, "loss": row.split("/")[0], "micro_batch": 2, "tau_schedule": None,
                "steps": [{**step, "total": total}], "peak_memory_mb": peak,
                "loss_side_ms": 1.0, "mean_completion_length": 16.0, "parameters": 1,
                "load_1min": [3.0, 5.0]}  # fmt: skip

    runs = {
        "grpo": [rec("grpo", 10.0, 200.0), rec("grpo", 12.0, 210.0)],
        "adpo-pl": [rec("adpo-pl", 11.0, 205.0), rec("adpo-pl", 11.0, 207.0)],
        "adpo-pl/whole": [rec("adpo-pl/whole", 9.0, 1000.0), rec("adpo-pl/whole", 9.0, 990.0)],
    }
    rows = {r["row"]: r for r in table(cfg, runs)}
    assert rows["adpo-pl"]["time_vs_grpo"] == pytest.approx(11.0 / 11.0)  # median of 10, 12
    assert rows["adpo-pl"]["memory_vs_grpo"] == pytest.approx(207.0 / 210.0)  # peaks: max
    assert rows["adpo-pl"]["memory_vs_whole"] == pytest.approx(207.0 / 1000.0)
    assert rows["adpo-pl"]["peak_memory_mb_min"] == 205.0
    assert rows["adpo-pl/whole"]["memory_vs_whole"] == 1.0
    assert (rows["grpo"]["load_1min_min"], rows["grpo"]["load_1min_max"]) == (3.0, 5.0)
    assert goals(list(rows.values())) == {  # 207/210 ≤ 1.05, 11/11 ≤ 1.05, 207/1000 ≤ 0.5
        "adpo-pl": {"memory_vs_grpo": True, "time_vs_grpo": True, "memory_vs_whole": True}
    }
    rows["adpo-pl"]["time_vs_grpo"] = 1.06  # just past the bound
    assert goals([rows["adpo-pl"]])["adpo-pl"]["time_vs_grpo"] is False


def test_runs_are_logged_as_they_finish_and_the_goals_recorded(monkeypatch, tmp_path):
    import adpo.experiments.trainer_bench as tb

    cfg = TrainerBenchConfig(
        out=str(tmp_path), losses=("adpo-pl",), num_generations=4, micro_batch=2,
        whole_groups=("adpo-pl",),
    )  # fmt: skip
    totals = {"grpo": 10.0, "adpo-pl": 10.6, "adpo-pl/whole": 9.0}  # adpo-pl: 1.06× GRPO
    peaks = {"grpo": 100.0, "adpo-pl": 104.0, "adpo-pl/whole": 300.0}  # 1.04×, 0.35×
    fail = set()

    def fake_worker(cfg, row):
        if row in fail:
            raise RuntimeError(f"trainer bench: {row} failed")
        step = {"generation": 1.0, "rewards": 0.0, "logprob_passes": 0.0}
        return {"row": row, "loss": row.split("/")[0], "micro_batch": cfg.settings(row)[1],
                "steps": [{**step, "update": totals[row] - 1.0, "total": totals[row]}],
                "peak_memory_mb": peaks[row], "loss_side_ms": 1.0,
                "mean_completion_length": 16.0, "parameters": 1, "threads": 1}  # fmt: skip

    monkeypatch.setattr(tb, "_worker", fake_worker)
    monkeypatch.setattr(tb, "_plot", lambda *a: None)
    summary = tb.run(cfg)
    assert summary["goals"]["met"] == {
        "adpo-pl": {"memory_vs_grpo": True, "time_vs_grpo": False, "memory_vs_whole": True}
    }
    log = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [(r["round"], r["row"], r["micro_batch"]) for r in log] == [
        (0, "grpo", 2), (0, "adpo-pl", 2), (0, "adpo-pl/whole", 4)
    ]  # fmt: skip
    fail.add("adpo-pl/whole")  # the last row fails: the rows before it are on disk
    with pytest.raises(RuntimeError, match="adpo-pl/whole failed"):
        tb.run(cfg)
    rows = [json.loads(x)["row"] for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert rows == ["grpo", "adpo-pl"]


def test_worker_pins_the_openmp_pool_and_reports_a_failed_row(monkeypatch):
    import subprocess

    import adpo.experiments.trainer_bench as tb

    seen = []

    def fake_run(cmd, *, env, **kw):
        seen.append((cmd[-1], env.get("OMP_NUM_THREADS")))
        if cmd[-1] == "opo":
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="MemoryError\n")
        return subprocess.CompletedProcess(cmd, 0, stdout='ADPO_BENCH {"row": "grpo"}\n', stderr="")

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(tb.subprocess, "run", fake_run)
    assert tb._worker(TrainerBenchConfig(threads=1), "grpo") == {"row": "grpo"}
    assert tb._worker(TrainerBenchConfig(), "grpo") == {"row": "grpo"}
    with pytest.raises(RuntimeError, match=r"opo failed \(exit 1\):\nMemoryError"):
        tb._worker(TrainerBenchConfig(threads=2), "opo")
    assert seen == [("grpo", "1"), ("grpo", None), ("opo", "2")]  # threads 0: the default


COMMITTED = Path(__file__).resolve().parents[2] / "results" / "trainer_micro_batch"


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@pytest.mark.skipif(
    not (COMMITTED / "summary.json").exists(),
    reason="results/trainer_micro_batch not run yet (docs/reproducing/trainer.md has the command)",
)
def test_committed_micro_batch_table_is_what_its_runs_measured():
    """The committed micro-batch table, recomputed from the raw record of every run.

    Step times and peak memory are measurements (not re-run here: most of an hour of CPU
    and a noisy clock); every number of ``results.csv`` is derived from ``runs.jsonl`` by ``table``,
    and this recomputes all of them, with the shape the issue asked for and the provenance.
    """
    from adpo._io import read_csv
    from adpo.experiments.trainer_bench import goals, table

    summary = json.loads((COMMITTED / "summary.json").read_text())
    cfg = TrainerBenchConfig(**summary["config"])
    assert (cfg.vocab_size, cfg.num_generations, cfg.micro_batch) == (151_936, 16, 2)
    assert cfg.completion_length >= 512
    runs: dict[str, list[dict]] = {row: [] for row in cfg.rows}
    for line in (COMMITTED / "runs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        runs[rec["row"]].append(rec)
    assert {row: len(rs) for row, rs in runs.items()} == dict.fromkeys(cfg.rows, cfg.rounds)
    rows = table(cfg, runs)
    committed = read_csv(COMMITTED / "results.csv")
    assert [r["row"] for r in committed] == list(cfg.rows)
    for got, want in zip(rows, committed, strict=True):
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-12) if _num(value) else value), key
        assert got["mean_completion_length"] == cfg.completion_length  # forced, every row
    assert summary["rows"] == rows
    assert summary["goals"]["met"] == goals(rows)
    env = summary["environment"]
    assert len(env["commit"]) == 40 and not env["dirty"]
    assert {"transformers", "trl", "accelerate"} <= env.keys()
    assert (
        summary["command"].startswith("adpo bench trainer ")
        and "--micro-batch 2" in (summary["command"])
    )
