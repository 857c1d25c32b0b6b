"""The paired-difference plot the reasoning benchmarks share: each objective minus a base
objective on the same seed, per seed and as mean with its 95 % t-interval."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adpo.metrics import mean_ci


def paired_plot(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[tuple[str, str]],
    path: Path,
    *,
    base: str = "grpo",
    by: str = "loss",
    pair: str = "seed",
    title: str = "",
    labels: Mapping[str, str] | None = None,
) -> None:
    """One panel per ``(metric, axis label)``: for every group but ``base``, its value minus
    ``base``'s on the same ``pair`` (dots, one per pair) and the mean with its 95 % t-interval
    (bar). A zero line marks "no difference"; an interval that misses it is a consistent sign.

    ``rows``: one mapping per run (``by``, ``pair`` and the metrics); ``labels``: the x tick
    label of each group (default: its name). The same numbers as
    :func:`adpo.metrics.paired_differences`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = {(r[by], r[pair]): r for r in rows}
    groups = [g for g in dict.fromkeys(r[by] for r in rows) if g != base]
    pairs = list(dict.fromkeys(r[pair] for r in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.9), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics, strict=True):
        for i, g in enumerate(groups):
            d = [
                float(at[(g, p)][key]) - float(at[(base, p)][key])
                for p in pairs
                if (g, p) in at and (base, p) in at
            ]
            d = [x for x in d if not math.isnan(x)]
            if not d:
                continue
            ax.plot([i] * len(d), d, "o", color=f"C{i}", alpha=0.45, ms=4, mew=0)
            mean, half = mean_ci(d)
            ax.errorbar(i, mean, yerr=0 if math.isnan(half) else half, fmt="D", color=f"C{i}",
                        ms=6, capsize=4, lw=1.6)  # fmt: skip
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(range(len(groups)), [(labels or {}).get(g, g) for g in groups],
                      rotation=35, ha="right", fontsize=8)  # fmt: skip
        ax.set_title(f"{label} − {(labels or {}).get(base, base)}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(f"difference from {base}, same {pair}")
    fig.suptitle(
        title
        + ("\n" if title else "")
        + f"dots: one per {pair}; ◆ and bar: mean and 95 % t-interval",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
