"""``adpo bench trainer``: ADPOTrainer/OPOTrainer against TRL's GRPOTrainer, same work, one run.

Every objective of :data:`adpo.trainers.LOSSES` trains the same randomly initialised
Qwen3-shaped model (default: Qwen3's vocabulary of 151,936, 2 layers, hidden 512) on the
same prompts, with the same generation settings (completions forced to the full length,
so every step generates and trains on exactly the same number of tokens), group size,
batch and optimizer. GRPO, DAPO and GSPO run on TRL's own ``GRPOTrainer``
(:func:`adpo.trainers.loss_config` presets); ADPO (Plackett–Luce and softmax targets)
and OPO on ours, at their default settings. Each trainer runs in a fresh process, so its
peak memory is its own:

* time per optimizer step, split into generation, reward scoring, the no-grad log-prob
  passes (π_old / anchors) and the rest (forward + backward + optimizer step); the median
  over steps after ``warmup`` steps;
* peak memory: the process's peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA;
* the trainer's own cost beside the model, measured exactly in the same process after
  training: ``compute_loss`` + backward on the last round's batch with the model's forward
  replaced by its cached output (``loss_side_ms``: the loss, the group bookkeeping, the
  metrics). On a shared machine the step times move by several per cent from one process
  to the next (GSPO and DAPO run GRPOTrainer's own code and show the spread); this column
  does not.

``rounds`` repeats the whole sequence of trainers, in reverse order every other round, so
a slow spell of the machine does not fall on one trainer; the medians pool all rounds.
Ratios are against GRPO measured in the same run. Writes ``results.csv``,
``summary.json`` (with the command, load average and the environment: code version,
TRL/transformers/accelerate versions, the workers' torch threads, device) and
``trainer_bench.png``.

    adpo bench trainer --out results/trainer            # CPU: 256-token completions
    adpo bench trainer --device cuda --out results/trainer_cuda   # 1,024 tokens
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import tyro

from adpo._io import (
    HF_TRAINING,
    console,
    prepare_out,
    progress_bar,
    provenance,
    write_csv,
    write_json,
)
from adpo.trainers.presets import LOSSES, Loss

__all__ = ["TrainerBenchConfig", "main", "measure", "run"]

PHASES = ("generation", "rewards", "logprob_passes", "update")


@dataclass
class TrainerBenchConfig:
    """Trainer time and memory per objective. Every field is a CLI flag."""

    out: str = "runs/trainer"
    """output folder"""
    losses: tuple[Loss, ...] = LOSSES
    """objectives to measure (GRPO is the baseline and always runs)"""
    device: Literal["cpu", "cuda"] = "cpu"
    """where to train"""
    vocab_size: int = 151_936
    """vocabulary (Qwen3's); the LM head dominates memory and time"""
    hidden_size: int = 512
    """model width"""
    num_layers: int = 2
    """model depth"""
    num_heads: int = 8
    """attention heads"""
    completion_length: int | None = None
    """tokens per completion, forced (default: 256 on CPU, 1024 on CUDA)"""
    num_generations: int = 8
    """completions per prompt (G)"""
    prompts_per_step: int = 1
    """prompts per optimizer step (the micro-batch is prompts_per_step · G completions)"""
    steps: int = 6
    """optimizer steps per trainer, warm-up included"""
    warmup: int = 2
    """steps left out of the medians"""
    bf16: bool | None = None
    """bfloat16 (default: on CUDA)"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    seed: int = 0
    """model and sampling seed"""
    rounds: int = 1
    """passes over the trainers (alternating order); medians pool every round's steps"""
    overhead_reps: int = 50
    """repetitions of the cached-forward loss-side timing (``loss_side_ms``)"""
    quick: bool = False
    """a tiny shape and 3 steps (CI): vocabulary 512, hidden 64, 16 tokens"""

    def __post_init__(self) -> None:
        if self.quick:
            self.vocab_size, self.hidden_size, self.num_heads = 512, 64, 4
            self.completion_length, self.steps, self.warmup = 16, 3, 1
            self.overhead_reps = 5
        if self.completion_length is None:
            self.completion_length = 1024 if self.device == "cuda" else 256
        if self.steps <= self.warmup or self.warmup < 0:
            raise ValueError(
                f"TrainerBenchConfig: need 0 <= warmup < steps, got {self.warmup}, {self.steps}"
            )
        if self.num_generations < 2 or self.prompts_per_step < 1 or self.completion_length < 1:
            raise ValueError(
                "TrainerBenchConfig: need num_generations >= 2, prompts_per_step >= 1, "
                f"completion_length >= 1; got {self.num_generations}, {self.prompts_per_step}, "
                f"{self.completion_length}"
            )
        if self.rounds < 1 or self.overhead_reps < 1:
            raise ValueError(
                "TrainerBenchConfig: need rounds >= 1 and overhead_reps >= 1, got "
                f"{self.rounds}, {self.overhead_reps}"
            )
        bad = [x for x in self.losses if x not in LOSSES]
        if bad:
            raise ValueError(f"TrainerBenchConfig: unknown losses {bad}; choose from {LOSSES}")
        if "grpo" not in self.losses:
            self.losses = ("grpo", *self.losses)


class _Clock:
    """Seconds spent in each phase during the current optimizer step."""

    def __init__(self) -> None:
        self.now: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.t0 = 0.0  # start of the current step

    def wrap(self, obj: Any, name: str, phase: str, *, only_no_grad: bool = False) -> None:
        import torch

        inner = getattr(obj, name)

        def timed(*a: Any, **kw: Any) -> Any:
            if only_no_grad and torch.is_grad_enabled():
                return inner(*a, **kw)
            t0 = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                self.now[phase] += time.perf_counter() - t0

        setattr(obj, name, timed)


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(cfg: TrainerBenchConfig, loss: str) -> dict[str, Any]:
    """Train ``loss`` for ``cfg.steps`` steps in this process; per-step phase times and peak memory."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    from adpo.testing import char_tokenizer, tiny_qwen3
    from adpo.trainers.presets import loss_config, make_trainer

    hf_logging.set_verbosity_error()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok = char_tokenizer()
    model = tiny_qwen3(
        cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        num_kv_heads=max(cfg.num_heads // 2, 1),
        max_position_embeddings=cfg.completion_length + 64,
        seed=cfg.seed,
    )
    bf16 = cfg.device == "cuda" if cfg.bf16 is None else cfg.bf16
    if cfg.device == "cuda":
        model = model.to("cuda")
    G = cfg.num_generations
    prompts = [{"prompt": f"{i}+{i + 1}=", "answer": str(2 * i + 1)} for i in range(64)]

    def reward(completions: list[str], **kw: Any) -> list[float]:
        return [(sum(map(ord, c)) % 11) / 10 for c in completions]  # dense, deterministic

    scratch = tempfile.mkdtemp(prefix=f"adpo-bench-{loss}-")  # TRL's output_dir; nothing is saved
    args = loss_config(
        loss,
        output_dir=scratch,
        num_generations=G,
        per_device_train_batch_size=cfg.prompts_per_step * G,
        max_completion_length=cfg.completion_length,
        generation_kwargs={"min_new_tokens": cfg.completion_length},
        max_steps=cfg.steps,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=bf16,
        use_cpu=cfg.device == "cpu",
        disable_tqdm=True,
        seed=cfg.seed,
        gradient_checkpointing=False,
    )
    clock = _Clock()
    steps: list[dict[str, float]] = []

    class _Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            clock.now = dict.fromkeys(PHASES, 0.0)
            clock.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cfg.device == "cuda":
                torch.cuda.synchronize()
            total = time.perf_counter() - clock.t0
            row = dict(clock.now)
            row["update"] = total - row["generation"] - row["rewards"] - row["logprob_passes"]
            row["total"] = total
            steps.append(row)

    trainer = make_trainer(loss, model, reward, args, Dataset.from_list(prompts), tok)
    trainer.add_callback(_Steps())
    clock.wrap(trainer, "_generate", "generation")
    clock.wrap(trainer, "_calculate_rewards", "rewards")
    clock.wrap(trainer, "_get_per_token_logps_and_entropies", "logprob_passes", only_no_grad=True)
    if cfg.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lengths = [
        h["completions/mean_length"]
        for h in trainer.state.log_history
        if "completions/mean_length" in h
    ]
    peak = _peak_memory_mb(cfg.device)  # before the loss-side timing below
    return {
        "loss": loss,
        "steps": steps[cfg.warmup :],
        "peak_memory_mb": peak,
        "loss_side_ms": loss_side_ms(trainer, cfg.overhead_reps, cfg.device),
        "mean_completion_length": statistics.fmean(lengths) if lengths else float("nan"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),  # the worker's own (the summary records these)
    }


def loss_side_ms(trainer: Any, reps: int, device: str = "cpu") -> float:
    """Median milliseconds of ``compute_loss`` + backward with the model's forward cached.

    The forward of the last round's first micro-batch is run once for real; later calls of
    ``_get_per_token_logps_and_entropies`` return its output (as a fresh leaf that needs a
    gradient), so what is timed is all the trainer does beside the model: the loss, group
    checks, metrics. Exact to the millisecond on a busy machine, unlike step times.
    """
    import torch

    batch = trainer._buffered_inputs[0]
    model = trainer.model
    real = trainer._get_per_token_logps_and_entropies
    cache: list[Any] = []

    def cached(*a: Any, **kw: Any) -> Any:
        if not cache:
            with torch.no_grad():
                cache.append(real(*a, **kw))
        logps, ent, aux = cache[0]
        aux = None if aux is None else aux.detach().requires_grad_(True)
        return logps.detach().clone().requires_grad_(True), ent, aux

    trainer._get_per_token_logps_and_entropies = cached
    trainer.current_gradient_accumulation_steps = 1
    model.train()
    times = []
    try:
        for _ in range(reps + 1):  # the first call runs the real forward
            t0 = time.perf_counter()
            trainer.compute_loss(model, batch).backward()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    finally:
        trainer._get_per_token_logps_and_entropies = real
    return 1e3 * statistics.median(times[1:])


def _worker(cfg: TrainerBenchConfig, loss: str) -> dict[str, Any]:
    """``measure`` in a fresh Python process (its own peak memory, no shared caches)."""
    code = (
        "import json, sys\n"
        "from adpo.experiments.trainer_bench import TrainerBenchConfig, measure\n"
        "cfg = TrainerBenchConfig(**json.loads(sys.argv[1]))\n"
        "print('ADPO_BENCH ' + json.dumps(measure(cfg, sys.argv[2])))\n"
    )
    fields = {**asdict(cfg), "quick": False}  # already applied
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(fields), loss],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("ADPO_BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"trainer bench: {loss} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1].removeprefix("ADPO_BENCH "))


def _summarise(loss: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per trainer: medians pooled over every round's measured steps."""
    steps = [s for r in runs for s in r["steps"]]
    per_round = [statistics.median(s["total"] for s in r["steps"]) for r in runs]
    return {
        "loss": loss,
        **{f"{p}_s": statistics.median(s[p] for s in steps) for p in (*PHASES, "total")},
        "total_s_round_min": min(per_round),
        "total_s_round_max": max(per_round),
        "loss_side_ms": statistics.median(r["loss_side_ms"] for r in runs),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
        "mean_completion_length": statistics.fmean(r["mean_completion_length"] for r in runs),
        "steps_measured": len(steps),
        "parameters": runs[0]["parameters"],
    }


def run(cfg: TrainerBenchConfig) -> dict[str, Any]:
    out = prepare_out(cfg.out)
    runs: dict[str, list[dict[str, Any]]] = {loss: [] for loss in cfg.losses}
    t0 = time.perf_counter()
    with progress_bar() as bar:
        job = bar.add_task("trainer bench", total=len(cfg.losses) * cfg.rounds)
        for k in range(cfg.rounds):
            order = cfg.losses if k % 2 == 0 else tuple(reversed(cfg.losses))
            for loss in order:
                bar.update(job, description=f"trainer bench: round {k + 1}, {loss}")
                runs[loss].append(_worker(cfg, loss))
                bar.advance(job)
    rows = [_summarise(loss, runs[loss]) for loss in cfg.losses]
    base = next(r for r in rows if r["loss"] == "grpo")
    for r in rows:
        r["time_vs_grpo"] = r["total_s"] / base["total_s"]
        r["memory_vs_grpo"] = r["peak_memory_mb"] / base["peak_memory_mb"]
        r["loss_side_share"] = r["loss_side_ms"] / (1e3 * r["total_s"])
    threads = {r["threads"] for rs in runs.values() for r in rs}  # the workers', not this process's
    summary = {
        "rows": rows,
        "steps": {loss: [r["steps"] for r in rs] for loss, rs in runs.items()},
        "config": asdict(cfg),
        **provenance(
            HF_TRAINING,
            device=cfg.device,
            threads=threads.pop() if len(threads) == 1 else None,
        ),
        "load_average": os.getloadavg(),
        "wall_s": time.perf_counter() - t0,
    }
    write_csv(out / "results.csv", rows)
    write_json(out / "summary.json", summary)
    _print(rows)
    _plot(rows, out / "trainer_bench.png", cfg)
    console.print(
        f"wrote {out / 'results.csv'}, {out / 'summary.json'}, {out / 'trainer_bench.png'}"
    )
    return summary


def _print(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    t = Table(title="time per optimizer step (median) and peak memory, vs TRL's GRPOTrainer")
    heads = (
        "objective",
        "total s",
        *PHASES,
        "× GRPO time",
        "loss-side ms",
        "peak MB",
        "× GRPO memory",
    )
    for h in heads:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(
            r["loss"],
            f"{r['total_s']:.2f}",
            *(f"{r[p + '_s']:.2f}" for p in PHASES),
            f"{r['time_vs_grpo']:.3f}",
            f"{r['loss_side_ms']:.1f}",
            f"{r['peak_memory_mb']:.0f}",
            f"{r['memory_vs_grpo']:.3f}",
        )
    console.print(t)


def _plot(rows: list[dict[str, Any]], path: Path, cfg: TrainerBenchConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [r["loss"] for r in rows]
    bottom = [0.0] * len(rows)
    for i, p in enumerate(PHASES):
        vals = [r[p + "_s"] for r in rows]
        axes[0].bar(names, vals, bottom=bottom, label=p, color=f"C{i}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    if any("total_s_round_min" in r for r in rows):  # the spread of one trainer over rounds
        lo = [r["total_s"] - r.get("total_s_round_min", r["total_s"]) for r in rows]
        hi = [r.get("total_s_round_max", r["total_s"]) - r["total_s"] for r in rows]
        axes[0].errorbar(names, bottom, yerr=[lo, hi], fmt="none", ecolor="k", capsize=3, lw=0.8)
    axes[0].set_ylabel("s per step (median; bars: rounds)")
    axes[0].set_title(f"{cfg.device}: G={cfg.num_generations}, {cfg.completion_length} tokens")
    axes[0].legend(frameon=False, fontsize=8)
    axes[1].bar(names, [r["memory_vs_grpo"] for r in rows], color="0.5")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set_ylabel("peak memory / GRPOTrainer's")
    axes[1].set_title("peak RSS" if cfg.device == "cpu" else "CUDA max allocated")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        TrainerBenchConfig,
        args=argv,
        prog="adpo bench trainer",
        description=__doc__.split("\n\n")[0],
    )
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
