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
``summary.json`` (with the command, the load average before and after each trainer,
and the environment: code version, TRL/transformers/accelerate versions, the workers'
torch threads, device) and ``trainer_bench.png``.

Micro-batches smaller than a group (``micro_batch``): every trainer, GRPO included,
accumulates ``prompts_per_step · G / micro_batch`` micro-batches per optimizer step, one
generation round per step; ADPO/OPO then weight each completion from its whole group's
numbers (:class:`~adpo.trainers.ADPOTrainer`). Two kinds of extra rows measure what that
buys and costs: ``whole_groups`` runs an objective once more with the whole step in one
micro-batch (row ``<loss>/whole``: the memory the split saves, ``memory_vs_whole``), and
``constant_tau`` runs an ADPO objective once more at ``tau_schedule="constant"`` (row
``<loss>/constant-tau``): without the no-grad forward pass per step that the default
entropy-reward schedule needs to read each group's entropy when groups are split (timed
in ``logprob_passes``).

    adpo bench trainer --out results/trainer            # CPU: 256-token completions
    adpo bench trainer --device cuda --out results/trainer_cuda   # 1,024 tokens
    adpo bench trainer --losses grpo adpo-pl opo --micro-batch 2 --num-generations 16 \
        --whole-groups adpo-pl --constant-tau adpo-pl --hidden-size 64 --num-heads 4 \
        --completion-length 512 --threads 1 --out results/trainer_micro_batch   # groups split
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

__all__ = ["GOALS", "TrainerBenchConfig", "goals", "main", "measure", "run", "table"]

PHASES = ("generation", "rewards", "logprob_passes", "update")
#: extra rows: ``<loss>/<variant>`` (see the module docstring)
VARIANTS = ("whole", "constant-tau")
#: issue 24's goals for ADPO/OPO with split groups: each ratio at most this
GOALS = {"memory_vs_grpo": 1.05, "time_vs_grpo": 1.05, "memory_vs_whole": 0.5}


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
    """prompts per optimizer step: prompts_per_step · G completions"""
    micro_batch: int | None = None
    """completions per micro-batch (TRL's per_device_train_batch_size), a divisor of
    prompts_per_step · G; the step accumulates the rest (None: the whole step at once)"""
    whole_groups: tuple[Loss, ...] = ()
    """objectives rerun with whole steps as micro-batches (rows loss/whole; need micro_batch)"""
    constant_tau: tuple[Literal["adpo-pl", "adpo"], ...] = ()
    """ADPO objectives rerun at tau_schedule constant (rows loss/constant-tau: no entropy pass)"""
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
    """repetitions of the cached-forward loss-side timing (loss_side_ms)"""
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
        bad = [x for x in (*self.losses, *self.whole_groups) if x not in LOSSES]
        if bad:
            raise ValueError(f"TrainerBenchConfig: unknown losses {bad}; choose from {LOSSES}")
        step = self.prompts_per_step * self.num_generations
        if self.micro_batch is not None and not (
            1 <= self.micro_batch <= step and step % self.micro_batch == 0
        ):
            raise ValueError(
                f"TrainerBenchConfig: micro_batch must divide the step's {step} completions "
                f"(prompts_per_step · num_generations), got {self.micro_batch}"
            )
        if self.whole_groups and self.micro_batch in (None, step):
            raise ValueError(
                "TrainerBenchConfig: whole_groups compares against a split step; set "
                f"micro_batch below the step's {step} completions"
            )
        not_adpo = [x for x in self.constant_tau if x not in ("adpo-pl", "adpo")]
        if not_adpo:
            raise ValueError(
                f"TrainerBenchConfig: constant_tau is an ADPO setting; {not_adpo} are not "
                "ADPO objectives (choose from ('adpo-pl', 'adpo'))"
            )
        if "grpo" not in self.losses:
            self.losses = ("grpo", *self.losses)

    @property
    def rows(self) -> tuple[str, ...]:
        """Every measured row: the objectives, then ``<loss>/constant-tau``, ``<loss>/whole``."""
        return (
            *self.losses,
            *(f"{x}/constant-tau" for x in self.constant_tau),
            *(f"{x}/whole" for x in self.whole_groups),
        )

    def settings(self, row: str) -> tuple[str, int, int, dict[str, Any]]:
        """``row`` → (objective, micro-batch, gradient-accumulation steps, config overrides)."""
        loss, _, variant = row.partition("/")
        if loss not in LOSSES or variant not in ("", *VARIANTS):
            raise ValueError(f"TrainerBenchConfig: unknown row {row!r}")
        step = self.prompts_per_step * self.num_generations
        mb = step if variant == "whole" or self.micro_batch is None else self.micro_batch
        extra = {"tau_schedule": "constant"} if variant == "constant-tau" else {}
        return loss, mb, step // mb, extra


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


def bench_model(cfg: TrainerBenchConfig):
    """The Qwen3-shaped model every row trains (and the freshness test re-counts)."""
    from adpo.testing import tiny_qwen3

    return tiny_qwen3(
        cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        num_kv_heads=max(cfg.num_heads // 2, 1),
        max_position_embeddings=cfg.completion_length + 64,
        seed=cfg.seed,
    )


def measure(cfg: TrainerBenchConfig, row: str) -> dict[str, Any]:
    """Train ``row`` (an objective, or ``<loss>/<variant>``) for ``cfg.steps`` steps in this
    process; per-step phase times and peak memory."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging

    from adpo.testing import char_tokenizer
    from adpo.trainers.presets import loss_config, make_trainer

    hf_logging.set_verbosity_error()
    loss, micro_batch, accumulation, extra = cfg.settings(row)
    load_before = os.getloadavg()[0]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok = char_tokenizer()
    model = bench_model(cfg)
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
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=accumulation,  # one generation round per optimizer step
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
        **extra,
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
            rec = dict(clock.now)
            rec["update"] = total - rec["generation"] - rec["rewards"] - rec["logprob_passes"]
            rec["total"] = total
            steps.append(rec)

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
        "row": row,
        "loss": loss,
        "micro_batch": micro_batch,
        "tau_schedule": getattr(trainer.args, "tau_schedule", None),
        "steps": steps[cfg.warmup :],
        "peak_memory_mb": peak,
        "loss_side_ms": loss_side_ms(trainer, cfg.overhead_reps, cfg.device),
        "load_1min": [load_before, os.getloadavg()[0]],
        "mean_completion_length": statistics.fmean(lengths) if lengths else float("nan"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),  # the worker's own (the summary records these)
    }


def loss_side_ms(trainer: Any, reps: int, device: str = "cpu") -> float:
    """Median milliseconds of ``compute_loss`` + backward over an optimizer step, forward cached.

    The step is the last round's micro-batches (one round is one optimizer step here). The
    forward of each is run once for real; later calls of
    ``_get_per_token_logps_and_entropies`` for that micro-batch return its output (as a
    fresh leaf that needs a gradient), so what is timed is all the trainer does beside the
    model: the loss, group checks, metrics. Exact to the millisecond on a busy machine,
    unlike step times.
    """
    import torch

    batches = trainer._buffered_inputs[: trainer.args.gradient_accumulation_steps]
    model = trainer.model
    real = trainer._get_per_token_logps_and_entropies
    cache: dict[int, Any] = {}
    current = 0  # the micro-batch being timed

    def cached(*a: Any, **kw: Any) -> Any:
        if current not in cache:
            with torch.no_grad():
                cache[current] = real(*a, **kw)
        logps, ent, aux = cache[current]
        aux = None if aux is None else aux.detach().requires_grad_(True)
        return logps.detach().clone().requires_grad_(True), ent, aux

    trainer._get_per_token_logps_and_entropies = cached
    trainer.current_gradient_accumulation_steps = len(batches)
    model.train()
    times = []
    try:
        for _ in range(reps + 1):  # the first pass runs the real forwards
            t0 = time.perf_counter()
            for current, batch in enumerate(batches):  # noqa: B007 (read by `cached`)
                trainer.compute_loss(model, batch).backward()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    finally:
        trainer._get_per_token_logps_and_entropies = real
    return 1e3 * statistics.median(times[1:])


def _worker(cfg: TrainerBenchConfig, row: str) -> dict[str, Any]:
    """``measure`` in a fresh Python process (its own peak memory, no shared caches)."""
    code = (
        "import json, sys\n"
        "from adpo.experiments.trainer_bench import TrainerBenchConfig, measure\n"
        "cfg = TrainerBenchConfig(**json.loads(sys.argv[1]))\n"
        "print('ADPO_BENCH ' + json.dumps(measure(cfg, sys.argv[2])))\n"
    )
    fields = {**asdict(cfg), "quick": False}  # already applied
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if cfg.threads:  # the OpenMP pool too, not only torch's intra-op threads
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cfg.threads)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(fields), row],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("ADPO_BENCH ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"trainer bench: {row} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1].removeprefix("ADPO_BENCH "))


def _summarise(row: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per trainer: medians pooled over every round's measured steps."""
    steps = [s for r in runs for s in r["steps"]]
    per_round = [statistics.median(s["total"] for s in r["steps"]) for r in runs]
    loads = [x for r in runs for x in r.get("load_1min", ())]
    return {
        "row": row,
        "loss": runs[0].get("loss", row),
        "micro_batch": runs[0].get("micro_batch"),
        "tau_schedule": runs[0].get("tau_schedule"),
        **{f"{p}_s": statistics.median(s[p] for s in steps) for p in (*PHASES, "total")},
        "total_s_round_min": min(per_round),
        "total_s_round_max": max(per_round),
        "loss_side_ms": statistics.median(r["loss_side_ms"] for r in runs),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in runs),
        "peak_memory_mb_min": min(r["peak_memory_mb"] for r in runs),
        "mean_completion_length": statistics.fmean(r["mean_completion_length"] for r in runs),
        "steps_measured": len(steps),
        "parameters": runs[0]["parameters"],
        "load_1min_min": min(loads) if loads else None,
        "load_1min_max": max(loads) if loads else None,
    }


def table(cfg: TrainerBenchConfig, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The result rows from every run of every row (``runs[row]``: ``measure``'s records).

    Ratios are against the ``grpo`` row (GRPOTrainer at ``cfg.micro_batch``, the same run)
    and, for ``memory_vs_whole``, against the first ``whole_groups`` row.
    """
    rows = [_summarise(row, runs[row]) for row in cfg.rows]
    by_name = {r["row"]: r for r in rows}
    base = by_name["grpo"]
    whole = by_name[f"{cfg.whole_groups[0]}/whole"] if cfg.whole_groups else None
    for r in rows:
        r["time_vs_grpo"] = r["total_s"] / base["total_s"]
        r["memory_vs_grpo"] = r["peak_memory_mb"] / base["peak_memory_mb"]
        if whole is not None:
            r["memory_vs_whole"] = r["peak_memory_mb"] / whole["peak_memory_mb"]
        r["loss_side_share"] = r["loss_side_ms"] / (1e3 * r["total_s"])
    return rows


def goals(rows: list[dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """Per row of ours at the split micro-batch (not GRPO, not ``/whole``): is each ratio of
    :data:`GOALS` the row has within its bound?"""
    return {
        r["row"]: {k: r[k] <= bound for k, bound in GOALS.items() if k in r}
        for r in rows
        if r["loss"] != "grpo" and not r["row"].endswith("/whole")
    }


def run(cfg: TrainerBenchConfig) -> dict[str, Any]:
    out = prepare_out(cfg.out)
    names = cfg.rows
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in names}
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    log = out / "runs.jsonl"  # every finished run at once: a failure later loses nothing
    log.write_text("")
    with progress_bar() as bar:
        job = bar.add_task("trainer bench", total=len(names) * cfg.rounds)
        for k in range(cfg.rounds):
            order = names if k % 2 == 0 else tuple(reversed(names))
            for row in order:
                bar.update(job, description=f"trainer bench: round {k + 1}, {row}")
                runs[row].append(_worker(cfg, row))
                with log.open("a") as f:
                    f.write(json.dumps({"round": k, **runs[row][-1]}) + "\n")
                bar.advance(job)
    rows = table(cfg, runs)
    threads = {r["threads"] for rs in runs.values() for r in rs}  # the workers', not this process's
    summary = {
        "rows": rows,
        "steps": {row: [r["steps"] for r in rs] for row, rs in runs.items()},
        "peak_memory_mb": {row: [r["peak_memory_mb"] for r in rs] for row, rs in runs.items()},
        "goals": {"bounds": GOALS, "met": goals(rows) if cfg.micro_batch else {}},
        "config": asdict(cfg),
        **provenance(
            HF_TRAINING,
            device=cfg.device,
            threads=threads.pop() if len(threads) == 1 else None,
        ),
        "load_average_start": load_start,
        "load_average": os.getloadavg(),
        "wall_s": time.perf_counter() - t0,
    }
    write_csv(out / "results.csv", rows)
    write_json(out / "summary.json", summary)
    _print(rows)
    for row, met in summary["goals"]["met"].items():
        console.print(
            f"{row}: "
            + ", ".join(f"{k} ≤ {GOALS[k]} {'met' if ok else 'MISSED'}" for k, ok in met.items())
        )
    _plot(rows, out / "trainer_bench.png", cfg)
    console.print(
        f"wrote {out / 'results.csv'}, {out / 'summary.json'}, {out / 'runs.jsonl'}, "
        f"{out / 'trainer_bench.png'}"
    )
    return summary


def _print(rows: list[dict[str, Any]]) -> None:
    """The headline columns (every phase is in ``results.csv``); fits an 80-column terminal."""
    from rich import box
    from rich.table import Table

    t = Table(title="per step (median), peak memory: vs GRPOTrainer", box=box.SIMPLE_HEAD)
    whole = any("memory_vs_whole" in r for r in rows)
    t.add_column("row", no_wrap=True)
    for h in (
        "mb",
        "step s",
        "pass s",
        "×GRPO",
        "peak MB",
        "×GRPO",
        *(("×whole",) if whole else ()),
    ):
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(
            r["row"],
            str(r["micro_batch"]),
            f"{r['total_s']:.2f}",
            f"{r['logprob_passes_s']:.2f}",
            f"{r['time_vs_grpo']:.3f}",
            f"{r['peak_memory_mb']:.0f}",
            f"{r['memory_vs_grpo']:.3f}",
            *((f"{r['memory_vs_whole']:.3f}",) if whole else ()),
        )
    console.print(t)
    console.print("mb: micro-batch; pass s: the no-grad log-prob passes (in step s)")


def _plot(rows: list[dict[str, Any]], path: Path, cfg: TrainerBenchConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [r["row"] for r in rows]
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
    mb = "" if cfg.micro_batch is None else f", micro-batch {cfg.micro_batch}"
    axes[0].set_title(
        f"{cfg.device}: vocab {cfg.vocab_size:,}, hidden {cfg.hidden_size}, "
        f"G={cfg.num_generations}, {cfg.completion_length} tokens{mb}",
        fontsize=9,
    )
    axes[0].legend(frameon=False, fontsize=8)
    ratios = [r["memory_vs_grpo"] for r in rows]
    axes[1].bar(names, ratios, color="0.5")
    axes[1].axhline(1.0, color="k", lw=0.8)
    if cfg.micro_batch is not None:
        goal = GOALS["memory_vs_grpo"]
        axes[1].axhline(goal, color="C3", lw=0.8, ls="--", label=f"goal ≤ {goal}× GRPO")
        axes[1].legend(frameon=False, fontsize=8)
    if max(ratios) / min(ratios) > 3:  # whole-group rows next to split ones
        axes[1].set_yscale("log")
    axes[1].set_ylabel("peak memory / GRPOTrainer's")
    kind = "peak RSS" if cfg.device == "cpu" else "CUDA max allocated"
    axes[1].set_title(f"{kind}, against GRPOTrainer{mb}", fontsize=9)
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
