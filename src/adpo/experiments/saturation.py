"""Gradient saturation on a binary-logit toy (OPO paper, §6.3, figure 4).

One logit ``z`` decides between a good response ``y+`` (reward 1) and a bad one ``y−``
(reward 0): ``πθ(y+) = σ(z)``, ``πθ(y−) = σ(−z)``, with confidence ``p = σ(z)``. The
reference/old policy is ``z_ref = 0`` (both at 0.5). For each objective we build its
loss with the library's own function on this two-candidate group and take
``|∂L/∂z|`` with autograd; nothing here writes a derivative by hand.

Run::

    adpo bench saturation --out runs/sat

Outputs ``saturation.csv`` (method, p, z, loss, grad), ``saturation.png`` (linear panel
and log-scale zoom on p ≥ 0.5) and ``summary.json`` (|∂L/∂z| and the gradient response
efficiency ‖∇‖ / (½·advantage range) at p = 0.6, 0.9, 0.99, 0.999).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import tyro
from torch import Tensor

from adpo._io import (
    console,
    prepare_out,
    provenance,
    write_csv,
    write_json,
)
from adpo.losses import (
    adpo_loss,
    dapo_loss,
    dpo_loss,
    group_advantages,
    grpo_loss,
    gspo_loss,
    opo_loss,
    sft_loss,
)

__all__ = ["SaturationConfig", "main", "run"]

REPORT_P = (0.6, 0.9, 0.99, 0.999)


@dataclass
class SaturationConfig:
    """Binary-logit saturation toy. Every field is a CLI flag (``--dpo-beta 0.1`` …)."""

    out: str = "runs/saturation"
    """output folder"""
    points: int = 400
    """grid points on each of the two p ranges"""
    dpo_beta: float = 1.0
    """DPO β (β = 1 makes DPO's curve comparable with the τ = 1 anchored losses)"""
    adpo_tau: float = 1.0
    """ADPO anchoring temperature τ"""
    adpo_beta: float = 1.0
    """ADPO softmax-target temperature β_r"""
    opo_alpha: float = 0.4
    """OPO escort exponent α (paper: 0.4)"""
    opo_mu: float = 1.0
    """OPO stiffness μ (paper: 1.0)"""
    plot: bool = True
    """write saturation.png"""


def _toy(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Group of two candidates for logit ``z`` (0-d): ``(logps [1,2], ref [1,2], rewards, adv)``."""
    logps = torch.stack([F.logsigmoid(z), F.logsigmoid(-z)])[None]  # (1, 2): y+, y−
    ref = torch.full_like(logps, math.log(0.5)).detach()  # z_ref = 0
    rewards = torch.tensor([[1.0, 0.0]], dtype=z.dtype)
    return logps, ref, rewards, group_advantages(rewards)


def methods(cfg: SaturationConfig) -> dict[str, Callable[[Tensor], Tensor]]:
    """Each objective on the toy group, as a function of the logit ``z``."""

    def sft(z):
        logps, *_ = _toy(z)
        return sft_loss(logps[:, :1]).loss  # NLL of y+, one "token"

    def dpo(z):
        logps, ref, *_ = _toy(z)
        return dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta=cfg.dpo_beta).loss

    def token_pg(fn, **kw):  # sampling policy = reference (z_ref = 0), one token per response
        def loss(z):
            logps, ref, _, adv = _toy(z)
            return fn(logps[..., None], ref[..., None], adv, **kw).loss

        return loss

    def adpo(target):
        def loss(z):
            logps, ref, rewards, _ = _toy(z)
            return adpo_loss(
                logps, ref, rewards, target=target, tau=cfg.adpo_tau, beta=cfg.adpo_beta
            ).loss

        return loss

    def opo(ratio):
        def loss(z):
            logps, ref, rewards, _ = _toy(z)
            return opo_loss(
                logps, ref, rewards, alpha=cfg.opo_alpha, mu=cfg.opo_mu, ratio=ratio
            ).loss

        return loss

    return {
        "SFT": sft,
        "DPO": dpo,
        "GRPO": token_pg(grpo_loss),
        "DAPO": token_pg(dapo_loss),
        "GSPO": token_pg(gspo_loss),
        "ADPO": adpo("softmax"),
        "ADPO-PL": adpo("plackett_luce"),
        "OPO": opo("log"),
        "OPO-exact": opo("exact"),
    }


def grad_at(loss_fn: Callable[[Tensor], Tensor], p: float) -> tuple[float, float]:
    """``(L, ∂L/∂z)`` at confidence ``p`` (float64 autograd)."""
    z = torch.tensor(math.log(p) - math.log1p(-p), dtype=torch.float64, requires_grad=True)
    loss = loss_fn(z)
    (g,) = torch.autograd.grad(loss, z)
    return float(loss.detach()), float(g)


def p_grid(points: int) -> list[float]:
    """Linear grid on (0.01, 0.99) plus a log-spaced approach to 1 (1 − p from 0.5 to 1e-4)."""
    lin = [0.01 + 0.98 * i / (points - 1) for i in range(points)]
    tail = [
        1 - 10 ** (math.log10(0.5) + (-4 - math.log10(0.5)) * i / (points - 1))
        for i in range(points)
    ]
    return sorted(set(lin + tail + list(REPORT_P)))


def run(cfg: SaturationConfig) -> dict:
    out = prepare_out(cfg.out)
    t0 = time.perf_counter()
    fns = methods(cfg)
    grid = p_grid(cfg.points)
    half_range = float(group_advantages(torch.tensor([[1.0, 0.0]])).max())  # ½ (A_max − A_min)
    rows = []
    for name, fn in fns.items():
        for p in grid:
            loss, g = grad_at(fn, p)
            rows.append(
                {
                    "method": name,
                    "p": p,
                    "z": math.log(p / (1 - p)),
                    "loss": loss,
                    "grad": g,
                    "grad_abs": abs(g),
                }
            )
    write_csv(out / "saturation.csv", rows)

    summary: dict = {
        "experiment": "gradient saturation, binary-logit toy (OPO paper fig. 4), z_ref = 0",
        "config": asdict(cfg),
        "half_advantage_range": half_range,
        "methods": {},
    }
    for name, fn in fns.items():
        at = {str(p): abs(grad_at(fn, p)[1]) for p in REPORT_P}
        summary["methods"][name] = {
            "grad_abs": at,
            "efficiency": {k: v / half_range for k, v in at.items()},
        }
    summary["runtime_s"] = round(time.perf_counter() - t0, 3)
    summary.update(provenance())
    write_json(out / "summary.json", summary)
    if cfg.plot:
        plot(rows, list(fns), out / "saturation.png")
    console.print(
        f"[bold]saturation[/]: wrote {out / 'saturation.csv'}, {out / 'summary.json'}"
        + (f", {out / 'saturation.png'}" if cfg.plot else "")
        + f" in {summary['runtime_s']:.1f}s"
    )
    _print_table(summary)
    return summary


def _print_table(summary: dict) -> None:
    from rich.table import Table

    table = Table(title="|∂L/∂z| at confidence p (efficiency = |∇| / ½ adv. range)")
    table.add_column("method")
    for p in REPORT_P:
        table.add_column(f"p={p}", justify="right")
    for name, m in summary["methods"].items():
        table.add_row(name, *[f"{m['grad_abs'][str(p)]:.3g}" for p in REPORT_P])
    console.print(table)


def plot(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-16
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {  # one colour per family; anchored/χ² methods drawn thicker
        "SFT": dict(color="tab:gray"),
        "DPO": dict(color="tab:orange"),
        "GRPO": dict(color="tab:blue"),
        "DAPO": dict(color="tab:purple"),
        "GSPO": dict(color="tab:brown"),
        "ADPO": dict(lw=2.2, color="tab:red"),
        "ADPO-PL": dict(lw=1.5, ls="--", color="tab:red"),
        "OPO": dict(lw=2.5, color="tab:green"),
        "OPO-exact": dict(lw=1.5, ls="--", color="tab:green"),
    }
    for name in names:
        pts = [(r["p"], r["grad_abs"]) for r in rows if r["method"] == name]
        ps, gs = zip(*pts, strict=True)
        kw = {"lw": 1.3, **styles.get(name, {})}
        lin = [(p, g) for p, g in pts if p <= 0.99]
        ax_a.plot([p for p, _ in lin], [g for _, g in lin], label=name, **kw)
        hi = [(p, max(g, floor)) for p, g in zip(ps, gs, strict=True) if p >= 0.5]
        ax_b.plot([p for p, _ in hi], [g for _, g in hi], label=name, **kw)
    ax_a.set(
        xlabel="confidence p = σ(z)", ylabel="|∂L/∂z|", title="(a) gradient magnitude vs confidence"
    )
    ax_b.set(
        xlabel="confidence p = σ(z)",
        ylabel="|∂L/∂z| (log)",
        yscale="log",
        title=f"(b) zoom p ≥ 0.5 (exact zeros drawn at {floor:g})",
    )
    ax_b.set_xscale("logit")
    for ax in (ax_a, ax_b):
        ax.grid(alpha=0.3)
    ax_a.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        SaturationConfig,
        args=argv,
        prog="adpo bench saturation",
        description=__doc__.split("\n\n")[0],
    )
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
