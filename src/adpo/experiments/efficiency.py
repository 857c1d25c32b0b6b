"""Actor-update efficiency: early reduction and memory-bounded log-probs (ADPO paper, app. F).

The ADPO paper reports a 3.5× faster actor update than GSPO/GRPO (table 4) and credits
*early reduction*: the listwise loss sums token log-probs to ``[B, G]`` before anything
else, while token-level losses carry ``[B, G, T]`` through the clipped surrogate. This
benchmark measures what that is worth, in three parts, each as a ratio against a
baseline timed in the same run:

1. **loss only**: forward + backward of each loss on token log-probs ``[B, G, T]``;
2. **actor update**: model forward, log-prob gathering, loss and backward on a small Qwen3
   built from a config, for the same batch, per loss;
3. **log-prob memory**: bytes autograd saves for backward when gathering target-token
   log-probs from ``[N, T, V]`` logits — full float32 log-softmax vs
   ``adpo.logprobs.selective_log_softmax`` (chunked, checkpointed) vs
   ``adpo.logprobs.linear_logps`` (LM head applied per chunk).

Run::

    adpo bench efficiency --out runs/efficiency            # CUDA when available, else CPU
    adpo bench efficiency --device cuda --model-dtype bfloat16 --model-hidden 2048 …

On CUDA every timing is taken to ``torch.cuda.synchronize()`` and the memory part also
reports the peak allocation above the starting point (``peak_MB``).

Writes ``efficiency.json``, ``efficiency.csv`` and ``efficiency.png``; prints the tables.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import tyro
from torch import Tensor

from adpo._io import (
    console,
    device_name,
    prepare_out,
    provenance,
    read_json,
    write_csv,
    write_json,
)
from adpo.logprobs import linear_logps, selective_log_softmax
from adpo.losses import (
    adpo_loss,
    dapo_loss,
    group_advantages,
    grpo_loss,
    gspo_loss,
    opo_loss,
)

__all__ = ["METHODS", "EfficiencyConfig", "main", "replot", "run"]

METHODS = ("adpo-pl", "adpo", "opo", "grpo", "gspo", "dapo")


@dataclass
class EfficiencyConfig:
    """Sizes of the three measurements (every field is a CLI flag)."""

    out: str = "runs/efficiency"
    """output folder"""
    prompts: int = 8
    """B, prompts per update"""
    group: int = 8
    """G, completions per prompt (the ADPO paper's LLM setting)"""
    tokens: int = 1024
    """T, completion length for the loss-only measurement"""
    repeats: int = 20
    """timed repetitions (the median is reported) after 3 warm-up runs"""
    model_tokens: int = 64
    """T for the actor-update measurement"""
    model_hidden: int = 128
    """hidden size of the Qwen3 built for the actor-update measurement"""
    model_layers: int = 2
    """layers of that model"""
    model_vocab: int = 512
    """vocabulary of that model"""
    model_heads: int = 4
    """attention heads of that model (key/value heads: half as many)"""
    model_intermediate: int | None = None
    """MLP width of that model (None: 4 × hidden)"""
    vocab: int = 8192
    """V for the log-prob memory measurement"""
    logits_dtype: str = "bfloat16"
    """dtype of the logits in the memory measurement ("bfloat16" as LLMs emit them, or "float32")"""
    memory_rows: int = 2048
    """N·T rows of logits for the log-prob memory measurement"""
    chunk_size: int = 256
    """rows per chunk for the chunked log-prob functions"""
    seed: int = 0
    """seed of the synthetic batch"""
    device: str = "auto"
    """"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"; CUDA timings are
    taken after ``torch.cuda.synchronize()`` and the memory part also reports the peak"""
    model_dtype: str = "float32"
    """parameter dtype of the actor-update model ("bfloat16" is what GPU training uses)"""

    replot: bool = False
    """measure nothing: redraw efficiency.png from the efficiency.json in `out`"""

    def __post_init__(self) -> None:
        for name in (
            "prompts",
            "group",
            "tokens",
            "repeats",
            "model_tokens",
            "model_heads",
            "vocab",
            "memory_rows",
            "chunk_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"EfficiencyConfig: `{name}` must be >= 1, got {getattr(self, name)}"
                )
        for name in ("logits_dtype", "model_dtype"):
            if getattr(self, name) not in ("bfloat16", "float32"):
                raise ValueError(
                    f"EfficiencyConfig: `{name}` must be 'bfloat16' or 'float32', got {getattr(self, name)!r}"
                )
        if self.device != "auto":
            try:
                dev = torch.device(self.device)
            except RuntimeError as e:
                raise ValueError(f"EfficiencyConfig: bad `device` {self.device!r}: {e}") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(
                    f"EfficiencyConfig: `device` {self.device!r} asked for, but CUDA is not available"
                )
        if self.group < 2:
            raise ValueError(
                f"EfficiencyConfig: `group` must be >= 2 (listwise losses), got {self.group}"
            )


def loss_fn(method: str) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """``(logps [B,G,T], old [B,G,T], rewards [B,G], mask [B,G,T]) → loss`` for one method."""

    def f(lp: Tensor, old: Tensor, r: Tensor, mask: Tensor) -> Tensor:
        if method == "adpo-pl":
            return adpo_loss(lp, old, r, mask=mask, target="plackett_luce", tau=0.8).loss
        if method == "adpo":
            return adpo_loss(lp, old, r, mask=mask, tau=0.8, beta=0.5).loss
        if method == "opo":
            return opo_loss(lp, old, r, mask=mask).loss
        adv = group_advantages(r)
        fn = {"grpo": grpo_loss, "gspo": gspo_loss, "dapo": dapo_loss}[method]
        return fn(lp, old, adv, mask).loss

    return f


def resolve_device(cfg: EfficiencyConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: time them to completion
        torch.cuda.synchronize(device)


def _median_time(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def synthetic_batch(
    cfg: EfficiencyConfig, T: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """``old [B, G, T]``, right-padded ``mask [B, G, T]``, binary ``rewards [B, G]``."""
    g = torch.Generator().manual_seed(cfg.seed)  # drawn on the CPU: same batch on every device
    B, G = cfg.prompts, cfg.group
    old = -torch.rand(B, G, T, generator=g) * 3
    lengths = torch.randint(T // 4, T + 1, (B, G), generator=g)
    mask = torch.arange(T)[None, None, :] < lengths[..., None]
    rewards = torch.randint(0, 2, (B, G), generator=g).float()
    return old.to(device), mask.to(device), rewards.to(device)


def measure_losses(cfg: EfficiencyConfig) -> dict[str, float]:
    device = resolve_device(cfg)
    old, mask, rewards = synthetic_batch(cfg, cfg.tokens, device)
    out = {}
    for m in METHODS:
        f = loss_fn(m)
        lp = (old + 0.01 * torch.randn_like(old)).requires_grad_()

        def step(f=f, lp=lp):
            lp.grad = None
            f(lp, old, rewards, mask).backward()

        out[m] = _median_time(step, cfg.repeats, device)
    return out


def measure_actor_update(cfg: EfficiencyConfig) -> dict[str, float]:
    from adpo.logprobs import causal_lm_logps
    from adpo.testing import tiny_qwen3

    device = resolve_device(cfg)
    with device:  # initialise where it runs: a 1.7B-parameter init on the CPU takes minutes
        model = tiny_qwen3(
            cfg.model_vocab,
            hidden_size=cfg.model_hidden,
            num_layers=cfg.model_layers,
            num_heads=cfg.model_heads,
            num_kv_heads=max(1, cfg.model_heads // 2),
            intermediate_size=cfg.model_intermediate,
            max_position_embeddings=2 * cfg.model_tokens + 8,
            seed=cfg.seed,
        ).to(dtype=getattr(torch, cfg.model_dtype))
    g = torch.Generator().manual_seed(cfg.seed)
    N, P, T = cfg.prompts * cfg.group, 16, cfg.model_tokens
    ids = torch.randint(4, cfg.model_vocab, (N, P + T), generator=g).to(device)
    attn = torch.ones_like(ids)
    _, mask, rewards = synthetic_batch(cfg, T, device)
    with torch.no_grad():
        old = causal_lm_logps(model, ids, attn, logits_to_keep=T).reshape(cfg.prompts, cfg.group, T)
    out = {}
    for m in METHODS:
        f = loss_fn(m)

        def step(f=f):
            model.zero_grad(set_to_none=True)
            lp = causal_lm_logps(model, ids, attn, logits_to_keep=T, chunk_size=cfg.chunk_size)
            f(lp.reshape(cfg.prompts, cfg.group, T), old, rewards, mask).backward()

        out[m] = _median_time(step, max(3, cfg.repeats // 4), device)
    return out


def saved_bytes(fn: Callable[[], Tensor]) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.device.type != "meta":
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn().sum().backward()
    return sum(seen.values())


def peak_bytes(fn: Callable[[], Tensor], device: torch.device) -> int | None:
    """CUDA only: peak allocated bytes above the starting point during forward + backward."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn().sum().backward()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start


def logprob_functions(cfg: EfficiencyConfig) -> dict[str, Callable[[], Tensor]]:
    """The three ways to get target-token log-probs from hidden states, as closures."""
    g = torch.Generator().manual_seed(cfg.seed)
    R, H, V = cfg.memory_rows, 64, cfg.vocab
    device, dtype = resolve_device(cfg), getattr(torch, cfg.logits_dtype)
    hidden = torch.randn(R, H, generator=g).to(device, dtype).requires_grad_()
    W = (torch.randn(V, H, generator=g) * 0.05).to(device, dtype).requires_grad_()
    idx = torch.randint(0, V, (R,), generator=g).to(device)
    return {
        # what most trainers do: a float32 log-softmax over the whole [R, V]
        "full log_softmax": lambda: (
            torch.log_softmax((hidden @ W.T).float(), -1).gather(-1, idx[:, None]).squeeze(-1)
        ),
        "selective_log_softmax": lambda: selective_log_softmax(
            hidden @ W.T, idx, chunk_size=cfg.chunk_size
        ),
        "linear_logps": lambda: linear_logps(hidden, W, idx, chunk_size=cfg.chunk_size),
    }


def measure_logprob_memory(cfg: EfficiencyConfig) -> dict[str, dict[str, float]]:
    device = resolve_device(cfg)
    out = {}
    for name, fn in logprob_functions(cfg).items():
        nbytes = saved_bytes(fn)
        peak = peak_bytes(fn, device)
        secs = _median_time(lambda fn=fn: fn().sum().backward(), max(3, cfg.repeats // 4), device)
        out[name] = {"saved_MB": nbytes / 2**20, "seconds": secs}
        if peak is not None:
            out[name]["peak_MB"] = peak / 2**20
    return out


def run(cfg: EfficiencyConfig) -> dict:
    out = prepare_out(cfg.out)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg)
    console.print(f"[bold]efficiency[/]: on {device}; loss-only timings …")
    loss_t = measure_losses(cfg)
    console.print("[bold]efficiency[/]: actor-update timings …")
    actor_t = measure_actor_update(cfg)
    console.print("[bold]efficiency[/]: log-prob memory …")
    mem = measure_logprob_memory(cfg)
    base_loss, base_actor = loss_t["grpo"], actor_t["grpo"]
    rows = [
        {
            "method": m,
            "loss_ms": 1e3 * loss_t[m],
            "loss_vs_grpo": loss_t[m] / base_loss,
            "update_ms": 1e3 * actor_t[m],
            "update_vs_grpo": actor_t[m] / base_actor,
        }
        for m in METHODS
    ]
    base_mem = mem["full log_softmax"]
    mem_rows = {
        k: {
            **v,
            "saved_vs_full": v["saved_MB"] / base_mem["saved_MB"],
            "time_vs_full": v["seconds"] / base_mem["seconds"],
            **({"peak_vs_full": v["peak_MB"] / base_mem["peak_MB"]} if "peak_MB" in v else {}),
        }
        for k, v in mem.items()
    }
    prov = provenance(("transformers",), device=device)
    prov["environment"]["loadavg"] = list(os.getloadavg())
    summary = {
        "experiment": "actor-update efficiency (ADPO paper app. F) and log-prob memory",
        "config": asdict(cfg),
        "losses": rows,
        "logprob_memory": mem_rows,
        "device": device_name(device),
        **prov,
    }
    write_json(out / "efficiency.json", summary)
    write_csv(out / "efficiency.csv", rows)
    plot(summary, out / "efficiency.png")
    _print(summary)
    console.print(
        f"[bold]efficiency[/]: wrote efficiency.json, efficiency.csv, efficiency.png to {out}"
    )
    return summary


def replot(cfg: EfficiencyConfig) -> Path:
    """Redraw ``efficiency.png`` from ``efficiency.json`` in ``cfg.out`` (nothing is re-timed)."""
    path = Path(cfg.out) / "efficiency.json"
    summary = read_json(path)
    if summary is None:
        raise ValueError(f"adpo bench efficiency --replot: no {path}")
    plot(summary, Path(cfg.out) / "efficiency.png")
    return Path(cfg.out) / "efficiency.png"


def plot(summary: dict, path: Path) -> None:
    """Three bar panels: loss-only time, actor-update time (both × GRPO, with the absolute
    milliseconds on the bars), saved memory (× full, log axis). The titles give the device
    and the shapes; the figure title, the machine's torch threads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, mem = summary["losses"], summary["logprob_memory"]
    methods = [r["method"] for r in rows]
    colors = [
        "tab:red" if m.startswith("adpo") else "tab:green" if m == "opo" else "tab:blue"
        for m in methods
    ]
    c = {**asdict(EfficiencyConfig()), **summary["config"]}  # fields older runs did not record
    model = (
        f"{c['model_layers']}-layer Qwen3, hidden {c['model_hidden']}, vocab {c['model_vocab']}, "
        f"{c['model_dtype']}"
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, key, ms, title in (
        (axes[0], "loss_vs_grpo", "loss_ms",
         f"loss fwd+bwd, logps [B={c['prompts']}, G={c['group']}, T={c['tokens']}]"),
        (axes[1], "update_vs_grpo", "update_ms",
         f"actor update: {model},\nB={c['prompts']}, G={c['group']}, T={c['model_tokens']}"),
    ):  # fmt: skip
        bars = ax.bar(methods, [r[key] for r in rows], color=colors)
        ax.bar_label(bars, [f"{r[ms]:.3g} ms" for r in rows], fontsize=7, padding=2)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set(ylabel="time × GRPO (lower is faster; median)")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.15 * max(r[key] for r in rows))
        ax.tick_params(axis="x", rotation=30)
    names = list(mem)
    bars = axes[2].bar(names, [mem[k]["saved_vs_full"] for k in names], color="tab:gray")
    axes[2].bar_label(bars, [f"{mem[k]['saved_MB']:.3g} MB" for k in names], fontsize=7, padding=2)
    axes[2].set(yscale="log", ylabel="saved for backward × full (log)")
    axes[2].set_title(
        f"target-token log-probs, {c['memory_rows']} × {c['vocab']} {c['logits_dtype']} logits,"
        f"\nchunks of {c['chunk_size']} rows",
        fontsize=9,
    )
    axes[2].tick_params(axis="x", rotation=15)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    env = summary.get("environment") or {}
    fig.suptitle(
        f"{summary.get('device', 'cpu')}, torch {env.get('torch', '?')}, "
        f"{env.get('threads', '?')} threads",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print(summary: dict) -> None:
    from rich.table import Table

    c = summary["config"]
    t = Table(
        title=f"{summary.get('device', 'cpu')}, B={c['prompts']} G={c['group']}: loss (T={c['tokens']})"
        f" and actor update (T={c['model_tokens']}, {c['model_dtype']})"
    )
    for col in ("method", "loss ms", "× GRPO", "update ms", "× GRPO"):
        t.add_column(col, justify="right")
    for r in summary["losses"]:
        t.add_row(
            r["method"],
            f"{r['loss_ms']:.2f}",
            f"{r['loss_vs_grpo']:.2f}",
            f"{r['update_ms']:.1f}",
            f"{r['update_vs_grpo']:.2f}",
        )
    console.print(t)
    t = Table(
        title=f"target-token log-probs from {c['memory_rows']}×{c['vocab']} {c['logits_dtype']} logits"
    )
    mem = summary["logprob_memory"]
    has_peak = all("peak_MB" in v for v in mem.values())
    cols = ["method", "saved for backward (MB)", "× full", "fwd+bwd s", "× full"]
    for col in cols + (["peak MB (CUDA)", "× full"] if has_peak else []):
        t.add_column(col, justify="right")
    for k, v in mem.items():
        cells = [
            k,
            f"{v['saved_MB']:.1f}",
            f"{v['saved_vs_full']:.3f}",
            f"{v['seconds']:.3f}",
            f"{v['time_vs_full']:.2f}",
        ]
        if has_peak:
            cells += [f"{v['peak_MB']:.1f}", f"{v['peak_vs_full']:.3f}"]
        t.add_row(*cells)
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        EfficiencyConfig,
        args=argv,
        prog="adpo bench efficiency",
        description=__doc__.split("\n\n")[0],
    )
    replot(cfg) if cfg.replot else run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
