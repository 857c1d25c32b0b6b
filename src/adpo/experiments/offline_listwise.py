"""Offline listwise ADPO on the generated arithmetic task: targets × anchors × seeds.

Each run is ``adpo train-offline`` on its embedded default (a tiny Qwen3 warm-started with
SFT, then ADPO on 3000 generated rows with 3–5 scored candidates each) with one target
or anchor changed; the held-out metrics come from each run's ``summary.json``.

Run::

    adpo bench listwise --out results/offline_listwise

    adpo bench listwise --out results/offline_listwise --replot   # plot from summary.json

Outputs ``runs.csv`` (one line per run), ``summary.json`` (mean ± std over seeds per
variant, the command, the environment), ``offline_listwise.png`` and each run's folder.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro

from adpo._io import (
    console,
    prepare_out,
    provenance,
    read_json,
    write_csv,
    write_json,
)
from adpo.experiments.train_offline import LIBRARIES
from adpo.metrics import mean_std

__all__ = ["OfflineListwiseConfig", "main", "replot", "run"]


#: name -> (target, anchor)
VARIANTS: dict[str, tuple[str, str]] = {
    "softmax / fixed": ("softmax", "fixed"),
    "plackett_luce / fixed": ("plackett_luce", "fixed"),
    "top1 / fixed": ("top1", "fixed"),
    "softmax / precomputed": ("softmax", "precomputed"),
    "softmax / ema": ("softmax", "ema"),
    "softmax / dynamic": ("softmax", "dynamic"),
}
METRICS = (
    "top1_accuracy_before",
    "top1_accuracy_after",
    "ndcg_before",
    "ndcg_after",
    "logp_top1_accuracy_before",
    "logp_top1_accuracy_after",
    "kl_to_reference",
    "total_seconds",
    "cpu_seconds",
)


@dataclass
class OfflineListwiseConfig:
    """Sweep of targets and anchors. Every field is a flag."""

    out: str = "results/offline_listwise"
    """output folder"""
    seeds: int = 3
    """seeds per variant (each seed: its own warm start, data and split)"""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """which variants to run (names of VARIANTS)"""
    plot: bool = True
    """write offline_listwise.png"""
    replot: bool = False
    """train nothing: redraw offline_listwise.png from the summary.json in `out`"""


def run(cfg: OfflineListwiseConfig) -> dict:
    from adpo.experiments.train_offline import TrainOfflineArgs
    from adpo.experiments.train_offline import run as train_offline

    unknown = set(cfg.variants) - set(VARIANTS)
    if unknown:
        raise ValueError(
            f"listwise: unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}"
        )
    out = prepare_out(cfg.out)
    t0 = time.time()
    rows = []
    for name in cfg.variants:
        target, anchor = VARIANTS[name]
        for seed in range(cfg.seeds):
            folder = out / name.replace(" / ", "_") / f"seed{seed}"
            console.rule(f"{name}, seed {seed}")
            s = train_offline(
                TrainOfflineArgs(
                    out=str(folder), target=target, anchor=anchor, seed=seed, overwrite=True
                )
            )
            rows.append({"variant": name, "seed": seed, **{k: s[k] for k in METRICS}})
    write_csv(out / "runs.csv", rows)
    table = {}
    for name in cfg.variants:
        mine = [r for r in rows if r["variant"] == name]
        table[name] = {
            k: dict(
                zip(
                    ("mean", "std"), mean_std([r[k] for r in mine], arithmetic="exact"), strict=True
                )
            )
            for k in METRICS
        }
    summary = {
        "variants": table,
        "seeds": cfg.seeds,
        "wall_seconds": round(time.time() - t0, 1),
        "loadavg": list(os.getloadavg()),
        "torch_threads": torch.get_num_threads(),
        **provenance(LIBRARIES),
    }
    write_json(out / "summary.json", summary)
    if cfg.plot:
        _plot(table, out / "offline_listwise.png", cfg.seeds)
    console.print(
        f"wrote {out}/runs.csv, summary.json" + (", offline_listwise.png" if cfg.plot else "")
    )
    return summary


def replot(cfg: OfflineListwiseConfig) -> Path:
    """Redraw ``offline_listwise.png`` from ``summary.json`` in ``cfg.out`` (nothing else changes)."""
    path = Path(cfg.out) / "summary.json"
    summary = read_json(path)
    if summary is None:
        raise ValueError(f"adpo bench listwise --replot: no {path}")
    _plot(summary["variants"], Path(cfg.out) / "offline_listwise.png", summary.get("seeds"))
    return Path(cfg.out) / "offline_listwise.png"


def _plot(table: dict, path: Path, seeds: int | None = None) -> None:
    """Before/after bars of the held-out anchored top-1 and NDCG, and the policy's own
    log-prob top-1; error bars: std over seeds. The legend sits above the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    x = range(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    for ax, metric, label in (
        (axes[0], "top1_accuracy", "top-1 accuracy, anchored score"),
        (axes[1], "ndcg", "NDCG, anchored score"),
        (axes[2], "logp_top1_accuracy", "top-1 accuracy, policy log-prob"),
    ):
        for i, (when, offset) in enumerate((("before", -0.2), ("after", 0.2))):
            m = [table[n][f"{metric}_{when}"]["mean"] for n in names]
            e = [table[n][f"{metric}_{when}"]["std"] for n in names]
            ax.bar([j + offset for j in x], m, 0.4, yerr=e, capsize=2, color=f"C{i}",
                   label=f"{when} training")  # fmt: skip
        ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"held-out {label}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0].get_legend_handles_labels()
    n = f"mean ± std over {seeds} seeds" if seeds else "mean ± std over seeds"
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False, fontsize=9,
               title=f"offline listwise ADPO, target / anchor ({n})", title_fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        OfflineListwiseConfig, args=argv, prog="adpo bench listwise", description=__doc__
    )
    replot(cfg) if cfg.replot else run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
