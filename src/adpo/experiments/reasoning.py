"""``adpo bench reasoning``: the demo task at a fixed budget for every objective, ≥ 3 seeds.

The papers' main result is online RL on an LLM (Qwen3-1.7B on MATH) against GRPO, GSPO
and DAPO. This is its CPU-sized counterpart: the ``adpo demo`` task (generated addition,
a tiny Qwen3, a short SFT warm start as the reference policy) trained by each objective
with the *same* generation loop, batch, learning rate, group size and budget (TRL's
``GRPOTrainer`` for GRPO/GSPO/DAPO, :mod:`adpo.trainers.online` for ADPO/OPO). Per seed
the warm start is shared, so the objectives are compared on paired runs.

Measured per run: held-out greedy accuracy every ``eval_every`` steps, the training
reward of every generation round, policy entropy, completion length, gradient norm
(before clipping) and wall time per update step (with the load average, since other
jobs share the CPU).

Run::

    adpo bench reasoning --out results/reasoning
    adpo bench reasoning --out results/reasoning --replot   # summary and plots from the CSVs

Outputs: ``runs.csv`` (one row per objective × seed, written after every run),
``curves.csv`` (per step), ``summary.json`` (mean ± std per objective, paired differences
against GRPO with their 95 % intervals, the papers' comparisons, the command and the
environment: code version, TRL/transformers/accelerate versions, threads, device),
``table.md`` and ``accuracy.png``, ``accuracy_gain.png``, ``paired.png`` (each objective
minus GRPO on the same seed), ``reward.png``, ``grad_norm.png`` (log axis), ``entropy.png``.
``--replot`` rebuilds the summary, table and plots from the CSVs and keeps the recorded
command and environment.

Gradient norms are not comparable across objectives in absolute terms (each loss has its
own scale: ADPO's Plackett–Luce loss sums ``G − 1`` list positions of sequence-level
log-ratios, GRPO averages token ratios), so the summary also reports each objective's
late-over-early ratio, which is scale-free.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import tyro

from adpo._io import (
    HF_TRAINING,
    bench_command,
    console,
    prepare_out,
    progress_bar,
    provenance,
    read_csv,
    read_json,
    replot_provenance,
    write_csv,
    write_json,
)
from adpo.experiments._plots import paired_plot
from adpo.experiments._stats import (
    PAIRED_CELL_NOTE,
    nanmean,
    paired_cell,
    ratio,
    seed_band,
    seed_mean_std,
)
from adpo.experiments.arithmetic_rl import ArithmeticRLConfig
from adpo.metrics import paired_differences
from adpo.trainers.presets import LOSSES, Loss

__all__ = ["ReasoningConfig", "main", "markdown_table", "replot", "run"]

ALL_LOSSES: tuple[Loss, ...] = LOSSES


@dataclass
class ReasoningConfig:
    """Every objective on the demo task at one budget. Every field is a CLI flag."""

    out: str = "runs/reasoning"
    """output folder"""
    losses: tuple[Loss, ...] = ALL_LOSSES
    """objectives to run"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds (model init, data, sampling); ≥ 3 for mean ± std"""
    task: ArithmeticRLConfig = field(
        default_factory=lambda: ArithmeticRLConfig(
            steps=500, eval_every=100, n_test=300, progress=False, plot=False
        )
    )
    """the demo settings shared by every run (its `loss`, `seed` and `out` are set per run)"""
    late_fraction: float = 0.25
    """the last this fraction of steps counts as "late in training" (gradient norms)"""
    plot: bool = True
    """write the PNG plots"""
    replot: bool = False
    """train nothing: rebuild summary.json, table.md and the plots from the runs.csv and
    curves.csv already in `out` (e.g. the runs an interrupted bench finished)"""

    def __post_init__(self) -> None:
        if len(self.seeds) < 1 or not self.losses:
            raise ValueError("ReasoningConfig: need at least one seed and one loss")
        if not 0 < self.late_fraction <= 1:
            raise ValueError(
                f"ReasoningConfig: `late_fraction` must lie in (0, 1], got {self.late_fraction}"
            )


def run(cfg: ReasoningConfig, *, command: str | None = None) -> dict[str, Any]:
    """Every objective × seed; writes the CSVs after every run. ``command``: the command line
    recorded with the results (default: this process's)."""
    import torch

    from adpo.experiments.arithmetic_rl import reinforce, warm_start

    out = prepare_out(cfg.out)
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    total = len(cfg.seeds) * len(cfg.losses)
    t_start = time.perf_counter()
    with progress_bar() as bar:
        job = bar.add_task("reasoning bench", total=total)
        for seed in cfg.seeds:
            base = replace(cfg.task, seed=seed, out=None, progress=False, plot=False)
            warm = warm_start(base)
            # a fresh copy per objective: every run starts from the same weights, and no
            # trainer sees a model another trainer has patched (TRL patches `forward`)
            pristine = copy.deepcopy(warm.model)
            for loss in cfg.losses:
                bar.update(job, description=f"seed {seed}: {loss}")
                run_cfg = replace(base, loss=loss)
                load_before = os.getloadavg()[0]
                res = reinforce(run_cfg, replace(warm, model=copy.deepcopy(pristine)))
                load_after = os.getloadavg()[0]
                ps = res["per_step"]
                n = len(ps.get("loss", []))
                late = max(round(n * cfg.late_fraction), 1)
                gn = ps.get("grad_norm", [math.nan] * n)
                acc_curve = res["accuracy_curve"]
                rewards = [r for r in ps.get("reward", []) if not math.isnan(r)]
                k = max(len(rewards) // 10, 1)  # peak of a moving mean: robust to one lucky round
                smooth = [sum(rewards[i : i + k]) / k for i in range(len(rewards) - k + 1)]
                rows.append(
                    {
                        "loss": loss,
                        "seed": seed,
                        "accuracy_before": warm.accuracy,
                        "accuracy_final": res["accuracy_after"],
                        "accuracy_peak": max(p["accuracy"] for p in acc_curve),
                        "reward_peak": max(smooth) if smooth else math.nan,
                        "reward_final": nanmean(rewards[-k:]),
                        "entropy_final": nanmean(ps.get("entropy", [])[-late:]),
                        "completion_length_mean": nanmean(ps.get("completions/mean_length", [])),
                        "grad_norm_early": nanmean(gn[:late]),
                        "grad_norm_late": nanmean(gn[-late:]),
                        # scale-free: how much of its early gradient each objective keeps
                        "grad_norm_late_over_early": ratio(nanmean(gn[-late:]), nanmean(gn[:late])),
                        "step_time_s": res["train_time_s"] / max(n, 1),
                        "train_time_s": res["train_time_s"],
                        "load_average": 0.5 * (load_before + load_after),
                        "threads": torch.get_num_threads(),
                    }
                )
                for i in range(n):
                    curves.append(
                        {
                            "loss": loss,
                            "seed": seed,
                            "step": i + 1,
                            **{
                                key: ps[key][i]
                                for key in (
                                    "reward",
                                    "entropy",
                                    "grad_norm",
                                    "completions/mean_length",
                                    "step_time",
                                )
                                if key in ps
                            },
                        }
                    )
                for p in acc_curve:
                    curves.append(
                        {
                            "loss": loss,
                            "seed": seed,
                            "step": p["step"],
                            "heldout_accuracy": p["accuracy"],
                        }
                    )
                bar.advance(job)
                # written after every run, so an interrupted bench keeps what it measured
                write_csv(out / "runs.csv", rows)
                write_csv(out / "curves.csv", curves)
                console.print(
                    f"seed {seed} {loss:8s} accuracy {warm.accuracy:.3f} → {res['accuracy_after']:.3f} "
                    f"(peak {rows[-1]['accuracy_peak']:.3f}), {rows[-1]['step_time_s']:.2f} s/step, "
                    f"load {rows[-1]['load_average']:.1f}"
                )
    write_csv(out / "runs.csv", rows)
    write_csv(out / "curves.csv", curves)
    prov = {
        **provenance(HF_TRAINING, command=command),
        "wall_time_s": time.perf_counter() - t_start,
    }
    return _report(cfg, out, rows, curves, prov)


#: run-time fields of a summary that a replot keeps (with the command and the environment)
RUN_FIELDS = ("wall_time_s", "wall_time_s_parts", "commands")


def replot(cfg: ReasoningConfig, *, command: str | None = None) -> dict[str, Any]:
    """Summary, table and plots from the CSVs in ``cfg.out`` (no training); the recorded
    command, environment and wall time of the runs are kept (:func:`adpo._io.replot_provenance`)."""
    out = Path(cfg.out)
    rows, curves = read_csv(out / "runs.csv"), read_csv(out / "curves.csv")
    if not rows:
        raise ValueError(f"adpo bench reasoning --replot: {out / 'runs.csv'} has no runs")
    losses = tuple(dict.fromkeys(r["loss"] for r in rows))
    seeds = tuple(dict.fromkeys(r["seed"] for r in rows))
    cfg = replace(cfg, losses=losses, seeds=seeds)
    prov = replot_provenance(read_json(out / "summary.json"), keep=RUN_FIELDS, command=command)
    return _report(cfg, out, rows, curves, prov)


def _report(
    cfg: ReasoningConfig,
    out: Path,
    rows: list[dict[str, Any]],
    curves: list[dict[str, Any]],
    prov: dict[str, Any],
) -> dict[str, Any]:
    summary = _summarize(cfg, rows, prov)
    write_json(out / "summary.json", summary)
    if cfg.plot:
        _plots(cfg, curves, out)
        paired_plot(
            rows,
            [(k, h) for h, k, _ in _COLUMNS if k in PAIRED],
            out / "paired.png",
            title=f"reasoning bench: each objective − GRPO on the same seed ({len(cfg.seeds)} seeds)",
        )
    (out / "table.md").write_text(markdown_table(summary))
    _print_table(summary)
    console.print(
        f"wrote {out}/runs.csv, curves.csv, summary.json, table.md"
        + (" and plots" if cfg.plot else "")
    )
    return summary


METRICS = (
    "accuracy_final",
    "accuracy_peak",
    "reward_peak",
    "reward_final",
    "entropy_final",
    "completion_length_mean",
    "grad_norm_early",
    "grad_norm_late",
    "grad_norm_late_over_early",
    "step_time_s",
)


def _summarize(
    cfg: ReasoningConfig, rows: list[dict[str, Any]], prov: dict[str, Any]
) -> dict[str, Any]:
    per_loss: dict[str, Any] = {}
    for loss in cfg.losses:
        mine = [r for r in rows if r["loss"] == loss]
        per_loss[loss] = {
            m: dict(zip(("mean", "std"), seed_mean_std([r[m] for r in mine]), strict=True))
            for m in METRICS
        }
        per_loss[loss]["n_seeds"] = len(mine)

    def rel(a: str, b: str, metric: str) -> float | None:
        if a not in per_loss or b not in per_loss:
            return None
        x, y = per_loss[a][metric]["mean"], per_loss[b][metric]["mean"]
        return (x - y) / y if y else None

    def times(a: str, b: str, metric: str) -> float | None:
        if a not in per_loss or b not in per_loss:
            return None
        return ratio(per_loss[a][metric]["mean"], per_loss[b][metric]["mean"])

    claims = {
        # ADPO paper: +30.9 % peak reward over GRPO (Qwen3-1.7B, MATH)
        "adpo_pl_vs_grpo_peak_reward_rel": rel("adpo-pl", "grpo", "reward_peak"),
        "adpo_vs_grpo_peak_reward_rel": rel("adpo", "grpo", "reward_peak"),
        "adpo_pl_vs_grpo_final_accuracy_rel": rel("adpo-pl", "grpo", "accuracy_final"),
        # OPO paper: OPO keeps larger gradients late in training (raw, and late ÷ early)
        "opo_vs_grpo_late_grad_norm_ratio": times("opo", "grpo", "grad_norm_late"),
        "opo_vs_grpo_late_over_early_grad_norm_ratio": times(
            "opo", "grpo", "grad_norm_late_over_early"
        ),
    }
    return {
        "per_loss": per_loss,
        "paired_vs_grpo": paired_differences(rows, PAIRED, base="grpo", by="loss", pair="seed"),
        "claims": claims,
        "accuracy_before": dict(
            zip(
                ("mean", "std"),
                seed_mean_std([r["accuracy_before"] for r in rows if r["loss"] == cfg.losses[0]]),
                strict=True,
            )
        ),
        "config": asdict(cfg),
        **prov,
        "load_average_mean": nanmean([r["load_average"] for r in rows]),
    }


_COLUMNS = (  # (header, metric, decimals) of the printed and the markdown table
    ("final acc", "accuracy_final", 3),
    ("peak acc", "accuracy_peak", 3),
    ("peak reward", "reward_peak", 3),
    ("final reward", "reward_final", 3),
    ("entropy", "entropy_final", 3),
    ("length", "completion_length_mean", 2),
    ("grad early", "grad_norm_early", 2),
    ("grad late", "grad_norm_late", 2),
    ("late/early", "grad_norm_late_over_early", 2),
    ("s/step", "step_time_s", 3),
)


def _cells(m: dict[str, Any]) -> list[str]:
    return [f"{m[k]['mean']:.{d}f} ± {m[k]['std']:.{d}f}" for _, k, d in _COLUMNS]


PAIRED = ("accuracy_final", "accuracy_peak", "reward_peak", "reward_final")


def _print_table(summary: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title="reasoning bench (mean ± std over seeds)")
    for col in ("loss", *(h for h, _, _ in _COLUMNS)):
        t.add_column(col)
    for loss, m in summary["per_loss"].items():
        t.add_row(loss, *_cells(m))
    console.print(t)


def markdown_table(summary: dict[str, Any]) -> str:
    """The per-objective table (mean ± std over seeds) as GitHub markdown."""
    head = ["objective", *(h for h, _, _ in _COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for loss, m in summary["per_loss"].items():
        lines.append("| " + " | ".join([f"`{loss}`", *_cells(m)]) + " |")
    paired = summary.get("paired_vs_grpo") or {}
    if paired:
        head = [
            "objective − grpo, same seed",
            "final acc",
            "peak acc",
            "peak reward",
            "final reward",
        ]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for loss, m in paired.items():
            cells = [paired_cell(m[k]) for k in PAIRED]
            lines.append("| " + " | ".join([f"`{loss}` ({m['n_seeds']} seeds)", *cells]) + " |")
        lines += ["", PAIRED_CELL_NOTE]
    return "\n".join(lines) + "\n"


def _plots(cfg: ReasoningConfig, curves: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def panel(key: str, ylabel: str, path: Path, smooth: int = 1, log: bool = False) -> None:
        fig, ax = plt.subplots(figsize=(7.6, 4))
        for i, loss in enumerate(cfg.losses):
            per_seed = []
            for seed in cfg.seeds:
                pts = sorted(
                    (r["step"], r[key])
                    for r in curves
                    if r["loss"] == loss
                    and r["seed"] == seed
                    and key in r
                    and not math.isnan(r[key])
                )
                if pts:
                    per_seed.append(pts)
            if not per_seed:
                continue
            steps, mu, sd = seed_band(per_seed, smooth)
            ax.plot(steps, mu, label=loss, color=f"C{i}", lw=2 if loss.startswith("adpo") else 1.4)
            lo = np.maximum(mu - sd, mu / 10) if log else mu - sd  # log: a band above 0
            ax.fill_between(steps, lo, mu + sd, color=f"C{i}", alpha=0.12)
        ax.set_xlabel("RL optimizer step")
        ax.set_ylabel(ylabel + (" (log)" if log else ""))
        if log:
            ax.set_yscale("log")
        ax.legend(frameon=False, fontsize=8, title=f"lr {cfg.task.lr:g} ({cfg.task.lr_scheduler})",
                  title_fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))  # fmt: skip
        ax.set_title(f"{ylabel} (mean ± std, {len(cfg.seeds)} seeds)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    start = {
        (r["loss"], r["seed"]): r["heldout_accuracy"]
        for r in curves
        if r.get("step") == 0 and "heldout_accuracy" in r
    }
    curves = [
        {**r, "heldout_gain": r["heldout_accuracy"] - start[(r["loss"], r["seed"])]}
        if "heldout_accuracy" in r and (r["loss"], r["seed"]) in start
        else r
        for r in curves
    ]
    panel("heldout_accuracy", "held-out greedy accuracy", out / "accuracy.png")
    panel("heldout_gain", "held-out accuracy gain over the warm start", out / "accuracy_gain.png")
    panel("reward", "training reward", out / "reward.png", smooth=5)
    panel("grad_norm", "gradient norm (before clipping)", out / "grad_norm.png", smooth=9, log=True)
    panel("entropy", "policy entropy (nats/token)", out / "entropy.png", smooth=9)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        ReasoningConfig,
        args=argv,
        prog="adpo bench reasoning",
        description=__doc__.split("\n\n")[0],
    )
    command = bench_command("reasoning", argv)
    replot(cfg, command=command) if cfg.replot else run(cfg, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
