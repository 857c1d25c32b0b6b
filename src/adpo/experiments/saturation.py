"""Gradient saturation on a binary-logit toy (OPO paper, §6.3, figure 4).

One logit ``z`` decides between a good response ``y+`` (reward 1) and a bad one ``y−``
(reward 0): ``πθ(y+) = σ(z)``, ``πθ(y−) = σ(−z)``, with confidence ``p = σ(z)``. The
reference/old policy is ``z_ref = 0`` (both at 0.5). For each objective we build its
loss with the library's own function on this two-candidate group and take
``|∂L/∂z|`` with autograd; nothing here writes a derivative by hand.

Run::

    adpo bench saturation --out runs/sat

Outputs ``saturation.csv`` (method, p, z, loss, grad), ``saturation.png`` (linear panel
and log-scale zoom on p ≥ 0.5, each objective's fixed point marked) and ``summary.json``
(|∂L/∂z|, the signed ∂L/∂z and the gradient response efficiency ‖∇‖ / (½·advantage range)
at p = 0.6, 0.9, 0.99, 0.999, and ``fixed_point``: the confidence where ∂L/∂z changes
sign, or None).

Read the sign as well as the size: ``∂L/∂z < 0`` drives the policy toward ``y+`` (a descent
step raises ``p``); past a loss's fixed point (ADPO's softmax target at ``p = q+``, OPO's
``Δ* = ω̂/μ``) ``∂L/∂z > 0`` and the gradient pulls ``p`` back down, however large it is.
"""

from __future__ import annotations

import itertools
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


def fixed_point(
    loss_fn: Callable[[Tensor], Tensor], curve: list[tuple[float, float]]
) -> float | None:
    """The confidence ``p`` where ``∂L/∂z`` turns from negative (toward ``y+``) to positive
    (back toward lower ``p``): the first sign change along ``curve`` (``(p, ∂L/∂z)`` sorted
    by ``p``), refined by bisection to float64 precision; None where it never changes."""
    for (a, ga), (b, gb) in itertools.pairwise(curve):
        if ga < 0 < gb:
            for _ in range(60):
                m = 0.5 * (a + b)
                a, b = (m, b) if grad_at(loss_fn, m)[1] < 0 else (a, m)
            return 0.5 * (a + b)
    return None


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
        signed = {str(p): grad_at(fn, p)[1] for p in REPORT_P}
        at = {k: abs(v) for k, v in signed.items()}
        summary["methods"][name] = {
            "grad_abs": at,
            "grad": signed,  # < 0: toward y+; > 0: back toward lower confidence
            "efficiency": {k: v / half_range for k, v in at.items()},
            "fixed_point": fixed_point(
                fn, [(r["p"], r["grad"]) for r in rows if r["method"] == name]
            ),
        }
    summary["runtime_s"] = round(time.perf_counter() - t0, 3)
    summary.update(provenance())
    write_json(out / "summary.json", summary)
    if cfg.plot:
        fixed = {n: m["fixed_point"] for n, m in summary["methods"].items()}
        plot(rows, list(fns), out / "saturation.png", fixed)
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


def plot(
    rows: list[dict], names: list[str], path: Path, fixed: dict[str, float | None] | None = None
) -> None:
    """|∂L/∂z| against p: (a) linear, (b) log on p ≥ 0.5 (logit axis). Where the gradient
    pulls p back down (∂L/∂z > 0) the curve is dotted; ``fixed`` marks each objective's
    fixed point (the sign change) with a circle."""
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
        mine = [r for r in rows if r["method"] == name]
        kw = {"lw": 1.3, **styles.get(name, {})}
        for ax, keep in ((ax_a, lambda p: p <= 0.99), (ax_b, lambda p: p >= 0.5)):
            pts = [(r["p"], max(r["grad_abs"], floor), r["grad"] > 0) for r in mine if keep(r["p"])]
            toward = [(p, g) if not back else (p, math.nan) for p, g, back in pts]
            pulled = [(p, g) if back else (p, math.nan) for p, g, back in pts]
            ax.plot(*zip(*toward, strict=True), label=name, **kw)
            if any(back for *_, back in pts):
                ax.plot(*zip(*pulled, strict=True), **{**kw, "ls": ":"})
        p_star = (fixed or {}).get(name)
        if p_star is not None:
            for ax in (ax_a, ax_b):
                ax.plot([p_star], [floor if ax is ax_b else 0.0], "o", ms=7, mfc="none",
                        mec=kw.get("color", "k"), mew=1.5, clip_on=False)  # fmt: skip
    ax_a.set(
        xlabel="confidence p = σ(z)",
        ylabel="|∂L/∂z|",
        title="(a) gradient magnitude vs confidence\n(dotted: ∂L/∂z > 0, pulls p back; ○ fixed point)",
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
