"""Noisy contextual bandits: 12 corruption scenarios, anchors and capacity (ADPO paper §6.1).

The controlled experiment of the ADPO paper (§6.1, figure 2) and the anchor finding of its
earlier abstract (v3: "a dynamic anchor that tracks the learning policy is superior for
online exploration in noisy environments"), as one command::

    adpo bench bandits --out runs/bandits            # full sweep, 5 seeds
    adpo bench bandits --out runs/bandits --quick    # CI-sized: fewer rounds, 2 seeds

Protocol (every number is a field of :class:`BanditsConfig`):

* A seed fixes a task: contexts ``x ∈ R^d``, ``K`` items and a hidden true utility
  ``r*(x, i) = e_i · tanh(U x) / c`` (random ``U``, ``e_i``; ``c`` scales the spread over
  items to about 1), so the optimal item ``i*(x)`` depends non-linearly on ``x``.
* Policies are MLPs ``x → logits over K``; all methods share architecture and optimiser
  (AdamW, lr 5e-4). The reference π_ref is pre-trained for 30 SFT steps on clean data (the
  optimal item of base-distribution contexts): the paper's "SFT initialisation". Every
  method starts from π_ref.
* Online rounds: draw ``B`` training contexts, sample ``G`` candidates per context from the
  current policy π_old (i.i.d.), observe *noisy* rewards (the scenario's corruption of
  ``r*``), then take ``inner_steps`` AdamW steps on that batch. The contexts, the uniforms
  that drive the sampling and the noise are drawn once per (scenario, seed) and shared by
  every method (common random numbers): methods differ only by what their policy samples.
  Pairwise methods get every pair of the group, ordered by the noisy rewards.
* Every loss comes from :mod:`adpo.losses`; the anchors are :mod:`adpo.anchors` objects
  (``FixedAnchor`` = π_ref, ``OnPolicyAnchor`` = π_old refreshed every round).
* Metrics on clean held-out base-distribution contexts: WinMass = mean π(i*(x)|x), and
  NDCG of the policy's ranking (gain = true utility min-max scaled to [0, 1] per context,
  discount ``1/log2(1 + rank)``, all K positions). Also ``online_winmass``: mean π_old(i*)
  over the training contexts of every round (how well the policy explored while learning).
* All seeds of a method train at once: the MLP weights are stacked ``[S, …]`` and the
  ``S·B`` groups are folded into the loss's batch axis (see :func:`method_loss`).

Outputs in ``--out``: ``results.csv`` (scenario × method × seed), ``scaling.csv``,
``summary.json`` (with the command and the environment), ``winmass_heatmap.png``,
``scaling.png``, ``anchors.png``. ``--replot`` redraws the plots from ``summary.json``
(nothing is trained and the summary is left as it is).

Shape glossary::

    S  seeds (stacked models)          B  contexts per round
    G  candidates per context          K  items (actions)
    d  context dimension               H  hidden width
    P  pairs per group, G(G−1)/2       N  evaluation contexts
    R  rounds (online iterations)      m  feature width of the true utility
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import tyro
from torch import Tensor, nn

from adpo import metrics
from adpo._io import (
    console,
    prepare_out,
    progress_bar,
    provenance,
    read_json,
    write_csv,
    write_json,
)
from adpo.anchors import AnchorConfig, canonical_anchor, make_anchor
from adpo.losses import (
    adpo_loss,
    dpo_loss,
    group_advantages,
    grpo_loss,
    kl_penalty_loss,
    opo_loss,
    ppo_loss,
    sft_loss,
)

__all__ = [
    "METHODS",
    "SCENARIOS",
    "BanditsConfig",
    "Scenario",
    "main",
    "make_scenario",
    "method_loss",
    "replot",
    "run",
    "win_mass",
]

# ----------------------------------------------------------------------------- scenarios

Kind = Literal["heavy_noise", "dist_shift", "adv_flip", "heavy_tail", "clean"]
KINDS: tuple[str, ...] = ("heavy_noise", "dist_shift", "adv_flip", "heavy_tail")
LEVELS: tuple[str, ...] = ("low", "medium", "high")


@dataclass(frozen=True)
class Scenario:
    """One corruption of the reward feedback (all noise is in utility units: the true
    utilities of a context have a spread of about 1 over the K items).

    Attributes:
        kind: ``"heavy_noise"`` (Gaussian noise with outliers), ``"dist_shift"`` (training
            contexts drawn from a shifted, narrower distribution than evaluation ones),
            ``"adv_flip"`` (a fraction of groups get their rewards negated, which inverts
            every preference of the group), ``"heavy_tail"`` (Cauchy noise) or ``"clean"``.
        level: ``"low" | "medium" | "high"`` (``"-"`` for clean).
        noise_std: σ of the additive Gaussian noise on every observed reward.
        outlier_prob: probability that an observation is an outlier (heavy_noise).
        outlier_std: σ of the extra Gaussian noise an outlier gets.
        shift: norm of the mean of training contexts (evaluation contexts have mean 0).
        shift_scale: std of training contexts (evaluation contexts: 1).
        flip_prob: probability that a group's rewards are negated (adv_flip).
        cauchy_scale: scale γ of the additive Cauchy noise (heavy_tail).
    """

    kind: Kind
    level: str
    noise_std: float = 0.0
    outlier_prob: float = 0.0
    outlier_std: float = 0.0
    shift: float = 0.0
    shift_scale: float = 1.0
    flip_prob: float = 0.0
    cauchy_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in (*KINDS, "clean"):
            raise ValueError(
                f"Scenario: `kind` must be one of {(*KINDS, 'clean')}, got {self.kind!r}"
            )
        for name in ("noise_std", "outlier_std", "shift", "cauchy_scale"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"Scenario: `{name}` must be finite and >= 0, got {v!r}")
        if not 0 <= self.outlier_prob <= 1:
            raise ValueError(
                f"Scenario: `outlier_prob` must lie in [0, 1], got {self.outlier_prob!r}"
            )
        if not 0 <= self.flip_prob < 0.5:
            raise ValueError(
                f"Scenario: `flip_prob` must lie in [0, 0.5) (at 0.5 no signal is left), "
                f"got {self.flip_prob!r}"
            )
        if not (math.isfinite(self.shift_scale) and self.shift_scale > 0):
            raise ValueError(f"Scenario: `shift_scale` must be > 0, got {self.shift_scale!r}")

    @property
    def name(self) -> str:
        return "clean" if self.kind == "clean" else f"{self.kind}-{self.level}"


# The concrete parameter sets. The paper names the four corruption types and three levels
# but gives no numbers; these are ours (see the README). A mild base noise (σ = 0.2) keeps
# the shift and flip scenarios noisy as well.
SCENARIO_PARAMS: dict[str, dict[str, dict[str, float]]] = {
    "heavy_noise": {
        "low": dict(noise_std=0.3, outlier_prob=0.05, outlier_std=3.0),
        "medium": dict(noise_std=0.6, outlier_prob=0.10, outlier_std=5.0),
        "high": dict(noise_std=1.0, outlier_prob=0.20, outlier_std=10.0),
    },
    "dist_shift": {
        "low": dict(noise_std=0.2, shift=0.5, shift_scale=1.0),
        "medium": dict(noise_std=0.2, shift=1.0, shift_scale=0.75),
        "high": dict(noise_std=0.2, shift=2.0, shift_scale=0.5),
    },
    "adv_flip": {
        "low": dict(noise_std=0.2, flip_prob=0.10),
        "medium": dict(noise_std=0.2, flip_prob=0.25),
        "high": dict(noise_std=0.2, flip_prob=0.40),
    },
    "heavy_tail": {
        "low": dict(cauchy_scale=0.2),
        "medium": dict(cauchy_scale=0.5),
        "high": dict(cauchy_scale=1.0),
    },
}

SCENARIOS: tuple[str, ...] = tuple(f"{k}-{lv}" for k in KINDS for lv in LEVELS)


def make_scenario(name: str) -> Scenario:
    """``"heavy_noise-medium"`` → its :class:`Scenario`; ``"clean"`` → no corruption."""
    if name == "clean":
        return Scenario("clean", "-")
    kind, _, level = name.partition("-")
    if kind not in SCENARIO_PARAMS or level not in LEVELS:
        raise ValueError(
            f"unknown scenario {name!r}; choose from {[*SCENARIOS, 'clean']} "
            "(kind-level, kinds " + ", ".join(KINDS) + ")"
        )
    return Scenario(kind, level, **SCENARIO_PARAMS[kind][level])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A training objective: ``family`` picks the loss, ``anchor`` the reference frame."""

    name: str
    family: Literal[
        "adpo_softmax", "adpo_pl", "adpo_raw", "dpo_hard", "dpo_soft", "ppo", "trpo", "grpo", "opo"
    ]
    anchor: Literal["fixed", "on_policy"] = "fixed"  # "dynamic": deprecated for on_policy
    base: str = ""  # name without the anchor suffix (for the anchor comparison)

    def __post_init__(self) -> None:
        kind = canonical_anchor(self.anchor, owner="Method: `anchor`")
        if kind not in ("fixed", "on_policy"):
            raise ValueError(
                f"Method: `anchor` must be 'fixed' or 'on_policy', got {self.anchor!r}"
            )
        object.__setattr__(self, "anchor", kind)  # frozen dataclass

    @property
    def anchor_label(self) -> str:
        """The anchor as the committed results tables spell it ("fixed" / "dynamic")."""
        return "dynamic" if self.anchor == "on_policy" else "fixed"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ADPO-softmax/fixed", "adpo_softmax", "fixed", "ADPO-softmax"),
        Method("ADPO-softmax/dynamic", "adpo_softmax", "on_policy", "ADPO-softmax"),
        Method("ADPO-PL/fixed", "adpo_pl", "fixed", "ADPO-PL"),
        Method("ADPO-PL/dynamic", "adpo_pl", "on_policy", "ADPO-PL"),
        Method("ADPO-raw/fixed", "adpo_raw", "fixed", "ADPO-raw"),
        Method("ADPO-raw/dynamic", "adpo_raw", "on_policy", "ADPO-raw"),
        Method("DPO-hard", "dpo_hard", "fixed", "DPO-hard"),
        Method("DPO-soft", "dpo_soft", "fixed", "DPO-soft"),
        Method("PPO", "ppo", "on_policy", "PPO"),
        Method("TRPO", "trpo", "on_policy", "TRPO"),
        Method("GRPO", "grpo", "on_policy", "GRPO"),
        Method("OPO/fixed", "opo", "fixed", "OPO"),
        Method("OPO/dynamic", "opo", "on_policy", "OPO"),
    )
}
"""PPO, TRPO and GRPO are anchored to π_old by construction (their ratio/KL is to the
sampling policy), DPO to π_ref; ADPO and OPO run with both anchors."""

ANCHORED = ("ADPO-softmax", "ADPO-PL", "ADPO-raw", "OPO")


# ----------------------------------------------------------------------------- config


@dataclass
class BanditsConfig:
    """Noisy contextual-bandit sweep. Every field is a CLI flag (``--rounds 100`` …)."""

    out: str = "runs/bandits"
    """output folder"""
    quick: bool = False
    """CI-sized run: ``quick_rounds`` rounds and 2 seeds (unless --seeds is given)"""
    seeds: int | None = None
    """number of seeds (default 5, or 2 with --quick); seed i is task/init/noise seed i"""
    scenarios: tuple[str, ...] = SCENARIOS
    """scenarios to run (kind-level; 'clean' is also accepted)"""
    methods: tuple[str, ...] = tuple(METHODS)
    """methods to run"""

    # task
    context_dim: int = 8
    """d: context dimension"""
    n_items: int = 10
    """K: items (actions) per context"""
    utility_features: int = 16
    """m: width of the hidden tanh feature map of the true utility"""

    # policy and optimiser (shared by every method)
    hidden: int = 128
    """H: MLP hidden width of the main sweep"""
    layers: int = 2
    """hidden layers of the MLP"""
    lr: float = 5e-4
    """AdamW learning rate (paper: 5e-4)"""
    weight_decay: float = 0.01
    """AdamW weight decay (torch's default)"""

    # reference (SFT) pre-training
    ref_steps: int = 30
    """SFT steps of the reference on clean data (paper: 30)"""
    ref_lr: float = 5e-4
    """SFT learning rate (the paper gives none; the shared 5e-4 leaves a weak reference)"""
    ref_batch: int = 256
    """contexts per SFT step"""

    # online rounds
    rounds: int = 100
    """R: online rounds (sample → observe → update) per run"""
    quick_rounds: int = 10
    """rounds with --quick"""
    batch: int = 64
    """B: contexts per round"""
    group: int = 4
    """G: candidates sampled per context (i.i.d. from π_old)"""
    inner_steps: int = 4
    """optimiser steps on each round's batch (PPO-style epochs; the same for every method)"""
    eval_contexts: int = 2048
    """N: clean held-out evaluation contexts per seed"""

    # method hyper-parameters (paper defaults where the papers give one)
    adpo_tau: float = 0.8
    """ADPO anchoring temperature τ (paper LLM default 0.8)"""
    adpo_beta: float = 0.5
    """ADPO softmax-target temperature β_r on z-scored advantages (paper: 0.5)"""
    raw_beta: float = 0.5
    """ADPO-raw: q = softmax(r / raw_beta) on the raw (un-normalised) rewards"""
    dpo_beta: float = 1.25
    """DPO β; 1/adpo_tau makes DPO the G = 2 top-1 case of ADPO (paper app. D)"""
    dpo_label_smoothing: float = 0.1
    """DPO-soft label smoothing ε (conservative DPO)"""
    clip_eps: float = 0.2
    """PPO / GRPO clip range ε (PPO paper: 0.2)"""
    trpo_beta: float = 1.0
    """TRPO-style penalty coefficient β on the exact KL(π_old‖πθ) (PPO paper §4)"""
    grpo_kl_beta: float = 0.0
    """GRPO's k3 KL to π_ref (0, as in TRL and the library default)"""
    opo_alpha: float = 0.4
    """OPO escort exponent α (paper: 0.4)"""
    opo_mu: float = 1.0
    """OPO stiffness μ (paper: 1.0)"""

    # capacity scaling
    scaling_hidden: tuple[int, ...] = (64, 128, 256)
    """hidden widths of the capacity sweep (empty: skip it)"""
    scaling_scenario: str = "heavy_noise-medium"
    """scenario of the capacity sweep (paper: heavy noise, medium)"""

    threads: int = 1
    """torch intra-op threads (tiny matrices: one thread is fastest and shares the CPU)"""
    plot: bool = True
    """write the PNG plots"""
    progress: bool = True
    """show a progress bar"""
    replot: bool = False
    """train nothing: redraw the plots from the summary.json in `out`"""

    n_seeds: int = field(init=False, default=0)
    n_rounds: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"BanditsConfig: `{name}` must be an int >= 1, got {v!r}")

        def positive(name: str) -> None:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"BanditsConfig: `{name}` must be finite and > 0, got {v!r}")

        if self.seeds is not None:
            positive_int("seeds")
        for name in (
            "context_dim", "utility_features", "hidden", "layers", "ref_batch", "rounds",
            "quick_rounds", "batch", "inner_steps", "eval_contexts", "threads",
        ):  # fmt: skip
            positive_int(name)
        if not (isinstance(self.ref_steps, int) and self.ref_steps >= 0):
            raise ValueError(
                f"BanditsConfig: `ref_steps` must be an int >= 0, got {self.ref_steps!r}"
            )
        if not (isinstance(self.n_items, int) and self.n_items >= 2):
            raise ValueError(f"BanditsConfig: `n_items` must be an int >= 2, got {self.n_items!r}")
        if not (isinstance(self.group, int) and self.group >= 2):
            raise ValueError(
                f"BanditsConfig: `group` must be an int >= 2 (listwise and pairwise losses "
                f"need two candidates), got {self.group!r}"
            )
        for name in (
            "lr", "ref_lr", "adpo_tau", "adpo_beta", "raw_beta", "dpo_beta", "opo_mu",
        ):  # fmt: skip
            positive(name)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"BanditsConfig: `weight_decay` must be >= 0, got {self.weight_decay!r}"
            )
        if not 0 < self.dpo_label_smoothing < 0.5:
            raise ValueError(
                "BanditsConfig: `dpo_label_smoothing` must lie in (0, 0.5) (DPO-soft), got "
                f"{self.dpo_label_smoothing!r}"
            )
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"BanditsConfig: `clip_eps` must lie in (0, 1), got {self.clip_eps!r}")
        for name in ("trpo_beta", "grpo_kl_beta"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"BanditsConfig: `{name}` must be finite and >= 0, got {v!r}")
        if not 0 <= self.opo_alpha <= 1:
            raise ValueError(
                f"BanditsConfig: `opo_alpha` must lie in [0, 1], got {self.opo_alpha!r}"
            )
        if not self.scenarios:
            raise ValueError("BanditsConfig: `scenarios` is empty")
        if not self.methods:
            raise ValueError("BanditsConfig: `methods` is empty")
        self.scenarios = tuple(self.scenarios)
        self.methods = tuple(self.methods)
        for name in (*self.scenarios, self.scaling_scenario):
            make_scenario(name)  # raises on an unknown name
        if len(set(self.scenarios)) != len(self.scenarios):
            raise ValueError(f"BanditsConfig: `scenarios` has duplicates: {self.scenarios}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(
                f"BanditsConfig: unknown methods {unknown}; choose from {list(METHODS)}"
            )
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"BanditsConfig: `methods` has duplicates: {self.methods}")
        self.scaling_hidden = tuple(self.scaling_hidden)
        for h in self.scaling_hidden:
            if not (isinstance(h, int) and h >= 1):
                raise ValueError(f"BanditsConfig: `scaling_hidden` must hold ints >= 1, got {h!r}")
        self.n_seeds = self.seeds if self.seeds is not None else (2 if self.quick else 5)
        self.n_rounds = self.quick_rounds if self.quick else self.rounds


# ----------------------------------------------------------------------------- task


def _generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (seed, stream, ...), independent of S."""
    g = torch.Generator()
    h = 0x9E3779B1
    for k in keys:
        h = (h * 1_000_003 + int(k) + 1) % (2**63 - 1)
    g.manual_seed(h)
    return g


@dataclass
class Task:
    """True utilities of ``S`` stacked seeds.

    Attributes:
        U: ``[S, m, d]`` feature map weights. E: ``[S, K, m]`` item embeddings.
        scale: ``[S, 1, 1]`` normaliser (spread of utilities over items ≈ 1).
        shift_dir: ``[S, 1, d]`` unit direction of the distribution-shift mean.
    """

    U: Tensor
    E: Tensor
    scale: Tensor
    shift_dir: Tensor

    def utility(self, x: Tensor) -> Tensor:
        """``x [S, N, d]`` → true utilities ``r*(x, ·)`` ``[S, N, K]``."""
        feats = torch.tanh(torch.bmm(x, self.U.transpose(1, 2)))  # (S, N, m)
        return torch.bmm(feats, self.E.transpose(1, 2)) / self.scale  # (S, N, K)


def make_task(seeds: list[int], cfg: BanditsConfig) -> Task:
    d, K, m = cfg.context_dim, cfg.n_items, cfg.utility_features
    Us, Es, dirs = [], [], []
    for s in seeds:
        g = _generator(s, 0)
        Us.append(torch.randn(m, d, generator=g) * (2.0 / math.sqrt(d)))
        Es.append(torch.randn(K, m, generator=g))
        v = torch.randn(d, generator=g)
        dirs.append(v / v.norm())
    U, E = torch.stack(Us), torch.stack(Es)
    raw = Task(U, E, torch.ones(len(seeds), 1, 1), torch.stack(dirs)[:, None, :])
    probe = torch.stack([torch.randn(4096, d, generator=_generator(s, 1)) for s in seeds])
    spread = raw.utility(probe).std(-1).mean(-1)  # (S,) mean over contexts of std over items
    raw.scale = spread[:, None, None]
    return raw


def contexts(
    task: Task, scenario: Scenario, n: int, gen: list[torch.Generator], *, train: bool
) -> Tensor:
    """``n`` contexts per seed, ``[S, n, d]``: N(0, I), or for training under ``dist_shift``
    ``N(shift·dir, shift_scale²·I)``. ``gen`` holds one generator per seed."""
    d = task.U.shape[-1]
    z = torch.stack([torch.randn(n, d, generator=g) for g in gen])  # (S, n, d)
    if train and scenario.kind == "dist_shift":
        return scenario.shift * task.shift_dir + scenario.shift_scale * z
    return z


@dataclass
class Feedback:
    """Pre-drawn randomness of ``R`` rounds for ``S`` seeds (shared by every method).

    Attributes:
        x: ``[R, S, B, d]`` training contexts.
        uniform: ``[R, S, B, G]`` uniforms that sample the candidates from π_old.
        noise: ``[R, S, B, G]`` additive reward noise.
        sign: ``[R, S, B, 1]`` −1 for flipped groups, else +1.
        outlier: ``[R, S, B, G]`` bool, which observations are outliers (heavy_noise).
    """

    x: Tensor
    uniform: Tensor
    noise: Tensor
    sign: Tensor
    outlier: Tensor


def draw_noise(
    scenario: Scenario, shape: tuple[int, ...], gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """One seed's corruption draws for a ``shape = (..., G)`` block of observations.

    Returns ``(noise, sign, outlier)``: additive noise ``shape``, group sign
    ``shape[:-1] + (1,)`` and the outlier mask ``shape``.
    """
    noise = scenario.noise_std * torch.randn(shape, generator=gen)
    outlier = torch.rand(shape, generator=gen) < scenario.outlier_prob
    noise = noise + outlier * (scenario.outlier_std * torch.randn(shape, generator=gen))
    if scenario.cauchy_scale > 0:  # inverse-CDF Cauchy draw
        u = torch.rand(shape, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        noise = noise + (scenario.cauchy_scale * torch.tan(math.pi * (u - 0.5))).float()
    flip = torch.rand((*shape[:-1], 1), generator=gen) < scenario.flip_prob
    sign = 1.0 - 2.0 * flip.float()
    return noise, sign, outlier


def observe(utility: Tensor, noise: Tensor, sign: Tensor) -> Tensor:
    """Noisy rewards the learner sees: ``sign · (r* + noise)``, all ``[..., G]``."""
    return sign * (utility + noise)


def make_feedback(
    task: Task, scenario: Scenario, seeds: list[int], scenario_id: int, cfg: BanditsConfig
) -> Feedback:
    R, B, G = cfg.n_rounds, cfg.batch, cfg.group
    gens = [_generator(s, 2, scenario_id) for s in seeds]
    x = torch.stack([contexts(task, scenario, B, gens, train=True) for _ in range(R)])
    uniform = torch.stack([torch.rand(R, B, G, generator=g) for g in gens], 1)
    parts = [draw_noise(scenario, (R, B, G), g) for g in gens]
    noise, sign, outlier = (torch.stack([p[i] for p in parts], 1) for i in range(3))
    return Feedback(x, uniform, noise, sign, outlier)


# ----------------------------------------------------------------------------- policy


class StackedMLP(nn.Module):
    """``S`` independent MLPs ``x [S, N, d] → logits [S, N, K]`` with stacked weights.

    Each seed's weights are initialised like ``nn.Linear`` (uniform ±1/√fan_in) from that
    seed's own generator, so seed ``s`` gets the same network whatever else is stacked.
    """

    def __init__(self, seeds: list[int], d: int, hidden: int, K: int, layers: int, key: int = 3):
        super().__init__()
        dims = [d] + [hidden] * layers + [K]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        gens = [_generator(s, key, hidden) for s in seeds]
        for fan_in, fan_out in itertools.pairwise(dims):
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.stack(
                [(torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound for g in gens]
            )
            b = torch.stack([(torch.rand(1, fan_out, generator=g) * 2 - 1) * bound for g in gens])
            self.weights.append(nn.Parameter(w))  # (S, in, out)
            self.biases.append(nn.Parameter(b))  # (S, 1, out)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)  # (S, N, out)
            if i < last:
                h = torch.relu(h)
        return h


def log_policy(model: nn.Module, x: Tensor) -> Tensor:
    """``log π(· | x)`` ``[S, N, K]``."""
    return torch.log_softmax(model(x), dim=-1)


# ----------------------------------------------------------------------------- metrics


def win_mass(probs: Tensor, utility: Tensor) -> Tensor:
    """WinMass: mean probability on the optimal item ``argmax r*``. ``[..., N, K] → [...]``."""
    best = utility.argmax(-1, keepdim=True)  # (..., N, 1)
    return probs.gather(-1, best).squeeze(-1).mean(-1)


def ndcg(scores: Tensor, utility: Tensor) -> Tensor:
    """NDCG@K of the ranking by ``scores`` (descending; ties broken by item index).

    Gain of item ``i`` = ``(r*_i − min r*) / (max r* − min r*)`` per context, discount
    ``1 / log2(1 + position)``; a context with constant utility scores 0 (as it always has).
    ``[..., N, K] → [...]`` (mean over contexts). See :func:`adpo.metrics.ndcg`.
    """
    return metrics.ndcg(scores, utility, gain="minmax", ties="index", degenerate=0.0).mean(-1)


# ----------------------------------------------------------------------------- training


def pretrain_reference(task: Task, seeds: list[int], hidden: int, cfg: BanditsConfig) -> StackedMLP:
    """π_ref: ``ref_steps`` SFT steps (``adpo.losses.sft_loss``) on the optimal item of clean
    base-distribution contexts, AdamW at ``ref_lr``."""
    model = StackedMLP(seeds, cfg.context_dim, hidden, cfg.n_items, cfg.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.ref_lr, weight_decay=cfg.weight_decay)
    gens = [_generator(s, 4) for s in seeds]
    clean = make_scenario("clean")
    S = len(seeds)
    for _ in range(cfg.ref_steps):
        x = contexts(task, clean, cfg.ref_batch, gens, train=True)  # (S, n, d)
        best = task.utility(x).argmax(-1, keepdim=True)  # (S, n, 1)
        lp = log_policy(model, x).gather(-1, best)  # (S, n, 1)
        loss = sft_loss(lp.reshape(-1, 1)).loss * S  # seeds folded into N: undo the 1/S
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.requires_grad_(False)
    return model


@dataclass
class Batch:
    """One round's data for ``S`` stacked seeds (all detached).

    Attributes:
        items: ``[S, B, G]`` sampled candidates (item indices).
        rewards: ``[S, B, G]`` their noisy rewards.
        old_all: ``[S, B, K]`` log π_old (the sampling policy) over all items.
        anchor_all: ``[S, B, K]`` log-probs of the method's anchor (π_ref or π_old).
        ref_all: ``[S, B, K]`` log π_ref.
    """

    items: Tensor
    rewards: Tensor
    old_all: Tensor
    anchor_all: Tensor
    ref_all: Tensor


def _pairs(G: int) -> tuple[Tensor, Tensor]:
    i, j = torch.triu_indices(G, G, offset=1)
    return i, j  # (P,), (P,)


def method_loss(method: Method, logp_all: Tensor, batch: Batch, cfg: BanditsConfig) -> Tensor:
    """The method's loss from :mod:`adpo.losses` for all seeds at once.

    Seeds are folded into the batch axis (``[S, B, G] → [S·B, G]``). Each loss averages
    over that axis, so seed ``s``'s gradient is ``1/S`` of its own loss's gradient: the
    loss is multiplied by ``S`` to undo that (seeds share no parameter, so the result is
    exactly ``Σ_s L_s``). Every loss here normalises within a group or per seed, never
    across the folded axis (OPO uses ``weight_norm="group"``; PPO's batch advantage
    normalisation is done per seed).

    Args:
        logp_all: ``[S, B, K]`` log πθ (with gradient).
    """
    S, B, G = batch.items.shape
    lp = logp_all.gather(-1, batch.items)  # (S, B, G)
    old = batch.old_all.gather(-1, batch.items)  # (S, B, G)
    anchor = batch.anchor_all.gather(-1, batch.items)  # (S, B, G)
    r = batch.rewards
    flat = (S * B, G)
    fam = method.family
    if fam in ("adpo_softmax", "adpo_pl", "adpo_raw"):
        args = (lp.reshape(flat), anchor.reshape(flat))
        if fam == "adpo_raw":  # Boltzmann target on the raw, un-normalised rewards
            q = torch.softmax(r.reshape(flat) / cfg.raw_beta, dim=-1)  # (S·B, G)
            out = adpo_loss(*args, targets=q, tau=cfg.adpo_tau)
        else:
            target = "softmax" if fam == "adpo_softmax" else "plackett_luce"
            out = adpo_loss(
                *args, r.reshape(flat), target=target, tau=cfg.adpo_tau, beta=cfg.adpo_beta
            )
        return out.loss * S
    if fam == "opo":
        out = opo_loss(
            lp.reshape(flat),
            anchor.reshape(flat),
            r.reshape(flat),
            alpha=cfg.opo_alpha,
            mu=cfg.opo_mu,
            weight_norm="group",  # never "batch" here: it would mix the folded seeds
        )
        return out.loss * S
    if fam in ("dpo_hard", "dpo_soft"):
        i, j = _pairs(G)
        first = r[..., i] >= r[..., j]  # (S, B, P) the noisy rewards decide the pair
        win = torch.where(first, batch.items[..., i], batch.items[..., j])
        lose = torch.where(first, batch.items[..., j], batch.items[..., i])
        ref_all = batch.ref_all
        eps = cfg.dpo_label_smoothing if fam == "dpo_soft" else 0.0
        out = dpo_loss(
            logp_all.gather(-1, win).reshape(-1),
            logp_all.gather(-1, lose).reshape(-1),
            ref_all.gather(-1, win).reshape(-1),
            ref_all.gather(-1, lose).reshape(-1),
            beta=cfg.dpo_beta,
            label_smoothing=eps,
        )
        return out.loss * S
    # token-level baselines on single actions: T = 1
    if fam == "grpo":
        adv = group_advantages(r.reshape(flat))  # (S·B, G) group z-score
        out = grpo_loss(
            lp.reshape(*flat, 1),
            old.reshape(*flat, 1),
            adv,
            clip_eps=cfg.clip_eps,
            beta=cfg.grpo_kl_beta,
            ref_logps=batch.ref_all.gather(-1, batch.items).reshape(*flat, 1)
            if cfg.grpo_kl_beta > 0
            else None,
        )
        return out.loss * S
    # PPO and TRPO: group-mean baseline, advantages normalised over each seed's batch
    # (CleanRL's norm_adv; per seed so that stacked seeds stay independent)
    centred = r - r.mean(-1, keepdim=True)  # (S, B, G)
    adv = group_advantages(centred.reshape(S, B * G)).reshape(flat)  # (S·B, G)
    if fam == "ppo":
        out = ppo_loss(lp.reshape(*flat, 1), old.reshape(*flat, 1), adv, clip_eps=cfg.clip_eps)
        return out.loss * S
    if fam == "trpo":
        p_old = batch.old_all.exp()
        kl = (p_old * (batch.old_all - logp_all)).sum(-1)  # (S, B) exact KL(π_old‖πθ)
        out = kl_penalty_loss(
            lp.reshape(*flat, 1),
            old.reshape(*flat, 1),
            adv,
            beta=cfg.trpo_beta,
            exact_kl=kl[..., None].expand(S, B, G).reshape(flat),
        )
        return out.loss * S
    raise ValueError(f"method_loss: unknown family {fam!r}")


def train_method(
    method: Method,
    task: Task,
    feedback: Feedback,
    ref_model: StackedMLP,
    eval_x: Tensor,
    eval_u: Tensor,
    cfg: BanditsConfig,
) -> dict[str, Tensor]:
    """Train one method for all stacked seeds; return per-seed metrics (each ``[S]``)."""
    policy = copy.deepcopy(ref_model).requires_grad_(True)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # on_policy: π_old, re-snapshotted every round (refresh_every=1)
    anchor = make_anchor(AnchorConfig(kind=method.anchor), policy, ref_model)
    R, S = feedback.uniform.shape[:2]
    online = torch.zeros(S)
    for t in range(R):
        x = feedback.x[t]  # (S, B, d)
        with torch.no_grad():
            old_all = log_policy(policy, x)  # (S, B, K)
            cdf = old_all.exp().cumsum(-1)  # (S, B, K)
            u = feedback.uniform[t] * cdf[..., -1:]  # (S, B, G)
            items = torch.searchsorted(cdf, u).clamp_max(cfg.n_items - 1)  # (S, B, G)
            util = task.utility(x)  # (S, B, K)
            rewards = observe(util.gather(-1, items), feedback.noise[t], feedback.sign[t])
            online += win_mass(old_all.exp(), util)
            ref_all = ref_model(x).log_softmax(-1)  # (S, B, K)
        anchor.refresh(policy)
        anchor_all = anchor.anchor_logps(log_policy, x)  # (S, B, K)
        batch = Batch(items, rewards, old_all, anchor_all, ref_all)
        for _ in range(cfg.inner_steps):
            loss = method_loss(method, log_policy(policy, x), batch, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits = policy(eval_x)
        probs = logits.softmax(-1)
        return {
            "winmass": win_mass(probs, eval_u),
            "ndcg": ndcg(logits, eval_u),
            "online_winmass": online / R,
        }


# ----------------------------------------------------------------------------- sweep


def _scenario_id(name: str) -> int:
    """A stable id per scenario (its noise stream), whichever subset of scenarios runs."""
    return (*SCENARIOS, "clean").index(name)


def _mean_std(values: list[float]) -> dict[str, float]:
    mean, std = metrics.mean_std(values, arithmetic="torch")  # sample std (ddof = 1) over seeds
    return {"mean": round(mean, 4), "std": round(std, 4)}


def _paired_ties(rows: list[dict], scenario: str, best: str, meths: list[str]) -> list[str]:
    """Methods whose WinMass is within noise of ``best``'s in ``scenario``: the best itself
    and every method whose paired per-seed deficit is under two standard errors."""

    def per_seed(m: str) -> list[float]:
        sel = [r for r in rows if r["scenario"] == scenario and r["method"] == m]
        return [r["winmass"] for r in sorted(sel, key=lambda r: r["seed"])]

    top = per_seed(best)
    tied = [best]
    for m in meths:
        d = [a - b for a, b in zip(top, per_seed(m), strict=True)]  # best − m, per seed
        if m == best or len(d) < 2:
            continue
        mean = sum(d) / len(d)
        se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))
        if mean < 2 * se:
            tied.append(m)
    return tied


class _Sweep:
    """Runs (scenario, method) jobs for one hidden width and collects per-seed rows."""

    def __init__(self, cfg: BanditsConfig, seeds: list[int]):
        self.cfg = cfg
        self.seeds = seeds
        self.task = make_task(seeds, cfg)
        gens = [_generator(s, 5) for s in seeds]
        self.eval_x = contexts(
            self.task, make_scenario("clean"), cfg.eval_contexts, gens, train=False
        )
        self.eval_u = self.task.utility(self.eval_x)  # (S, N, K)
        self.refs: dict[int, StackedMLP] = {}
        self.ref_metrics: dict[int, dict[str, Tensor]] = {}
        self.feedback: dict[str, Feedback] = {}

    def reference(self, hidden: int) -> StackedMLP:
        if hidden not in self.refs:
            ref = pretrain_reference(self.task, self.seeds, hidden, self.cfg)
            with torch.no_grad():
                logits = ref(self.eval_x)
            self.refs[hidden] = ref
            self.ref_metrics[hidden] = {
                "winmass": win_mass(logits.softmax(-1), self.eval_u),
                "ndcg": ndcg(logits, self.eval_u),
            }
        return self.refs[hidden]

    def run(self, scenario: str, method: str, hidden: int) -> list[dict]:
        if scenario not in self.feedback:
            self.feedback = {  # keep one scenario's draws at a time
                scenario: make_feedback(
                    self.task, make_scenario(scenario), self.seeds, _scenario_id(scenario), self.cfg
                )
            }
        ref = self.reference(hidden)
        m = METHODS[method]
        t0 = time.perf_counter()
        out = train_method(
            m, self.task, self.feedback[scenario], ref, self.eval_x, self.eval_u, self.cfg
        )
        dt = time.perf_counter() - t0
        rm = self.ref_metrics[hidden]
        return [
            {
                "scenario": scenario,
                "method": method,
                "family": m.family,
                "anchor": m.anchor_label,
                "seed": s,
                "hidden": hidden,
                "winmass": round(float(out["winmass"][k]), 5),
                "ndcg": round(float(out["ndcg"][k]), 5),
                "online_winmass": round(float(out["online_winmass"][k]), 5),
                "ref_winmass": round(float(rm["winmass"][k]), 5),
                "ref_ndcg": round(float(rm["ndcg"][k]), 5),
                "train_s_all_seeds": round(dt, 3),
            }
            for k, s in enumerate(self.seeds)
        ]


def summarize(rows: list[dict], scaling_rows: list[dict], cfg: BanditsConfig) -> dict:
    """The ``summary.json`` dictionary (everything but timing and provenance)."""

    def cell(sc: str, m: str, key: str, src: list[dict]) -> dict[str, float]:
        return _mean_std([r[key] for r in src if r["scenario"] == sc and r["method"] == m])

    scen, meths = list(cfg.scenarios), list(cfg.methods)
    summary: dict = {"scenarios": scen, "methods": meths}
    for key in ("winmass", "ndcg", "online_winmass"):
        summary[key] = {sc: {m: cell(sc, m, key, rows) for m in meths} for sc in scen}
    first = [r for r in rows if r["scenario"] == scen[0] and r["method"] == meths[0]]
    summary["reference"] = {
        "winmass": _mean_std([r["ref_winmass"] for r in first]),
        "ndcg": _mean_std([r["ref_ndcg"] for r in first]),
    }
    wm = summary["winmass"]
    best = {sc: max(meths, key=lambda m, sc=sc: wm[sc][m]["mean"]) for sc in scen}
    summary["best"] = best
    summary["wins"] = {m: sum(b == m for b in best.values()) for m in meths}
    # seeds share task, initialisation and noise across methods, so compare paired per seed
    ties = {sc: _paired_ties(rows, sc, best[sc], meths) for sc in scen}
    summary["tied_with_best"] = ties
    summary["top_group_count"] = {m: sum(m in t for t in ties.values()) for m in meths}
    summary["mean_winmass"] = {
        m: round(sum(wm[sc][m]["mean"] for sc in scen) / len(scen), 4) for m in meths
    }

    anchors, anchors_online, by_scenario = {}, {}, {}
    for base in ANCHORED:
        fixed, dyn = f"{base}/fixed", f"{base}/dynamic"
        if fixed not in meths or dyn not in meths:
            continue
        for key, dest in (("winmass", anchors), ("online_winmass", anchors_online)):
            f = sum(summary[key][sc][fixed]["mean"] for sc in scen) / len(scen)
            d = sum(summary[key][sc][dyn]["mean"] for sc in scen) / len(scen)
            dest[base] = {
                "fixed": round(f, 4),
                "dynamic": round(d, 4),
                "gain_pct": round(100 * (d - f) / f, 1),
            }
        by_scenario[base] = {
            sc: round(
                100 * (wm[sc][dyn]["mean"] - wm[sc][fixed]["mean"]) / wm[sc][fixed]["mean"], 1
            )
            for sc in scen
        }
    summary["anchors"] = anchors
    summary["anchors_online"] = anchors_online
    summary["anchors_gain_pct_by_scenario"] = by_scenario

    if scaling_rows:
        widths = sorted({r["hidden"] for r in scaling_rows})
        sc = cfg.scaling_scenario
        stats = {
            str(h): {
                m: cell(sc, m, "winmass", [r for r in scaling_rows if r["hidden"] == h])
                for m in meths
            }
            for h in widths
        }
        summary["scaling_scenario"] = sc
        summary["scaling"] = {h: {m: v["mean"] for m, v in d.items()} for h, d in stats.items()}
        summary["scaling_std"] = {h: {m: v["std"] for m, v in d.items()} for h, d in stats.items()}
        summary["scaling_reference"] = {
            str(h): _mean_std(
                [
                    r["ref_winmass"]
                    for r in scaling_rows
                    if r["hidden"] == h and r["method"] == meths[0]
                ]
            )["mean"]
            for h in widths
        }
    else:
        summary["scaling"] = {}
    return summary


def run(cfg: BanditsConfig) -> dict:
    out = prepare_out(cfg.out)
    torch.set_num_threads(cfg.threads)
    load_start = os.getloadavg()
    t_start, cpu_start = time.perf_counter(), time.process_time()
    seeds = list(range(cfg.n_seeds))
    sweep = _Sweep(cfg, seeds)

    # the main sweep, then the capacity sweep (its run at the main width is reused)
    reuse = cfg.scaling_scenario in cfg.scenarios
    widths = [h for h in cfg.scaling_hidden if not (reuse and h == cfg.hidden)]
    jobs = [(sc, m, cfg.hidden, True) for sc in cfg.scenarios for m in cfg.methods]
    jobs += [(cfg.scaling_scenario, m, h, False) for h in widths for m in cfg.methods]
    rows: list[dict] = []
    scaling_rows: list[dict] = []
    train_s = 0.0  # training time of all jobs (all seeds at once), excluding set-up
    with progress_bar("[bold]bandits[/] {task.description:<42}", enabled=cfg.progress) as bar:
        task = bar.add_task("", total=len(jobs))
        for sc, m, h, main_sweep in jobs:
            bar.update(task, description=f"{sc} · {m}" + ("" if main_sweep else f" · H={h}"))
            res = sweep.run(sc, m, h)
            train_s += res[0]["train_s_all_seeds"]
            (rows if main_sweep else scaling_rows).extend(res)
            bar.advance(task)
    if reuse and cfg.hidden in cfg.scaling_hidden:
        scaling_rows.extend(r for r in rows if r["scenario"] == cfg.scaling_scenario)
    scaling_rows.sort(key=lambda r: (r["hidden"], cfg.methods.index(r["method"]), r["seed"]))

    write_csv(out / "results.csv", rows)
    if scaling_rows:
        write_csv(out / "scaling.csv", scaling_rows)
    summary = summarize(rows, scaling_rows, cfg)
    runtime = time.perf_counter() - t_start
    summary["runtime_s"] = round(runtime, 1)
    summary["timing"] = {
        "wall_s": round(runtime, 1),
        "cpu_s": round(time.process_time() - cpu_start, 1),  # this process only
        "runs": len(jobs),
        "seeds_per_run": len(seeds),
        "train_s_total": round(train_s, 1),
        "train_s_per_run": round(train_s / max(len(jobs), 1), 3),
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    summary["config"] = {k: v for k, v in asdict(cfg).items() if k not in ("out",)}
    summary.update(provenance())
    write_json(out / "summary.json", summary)
    written = [out / "results.csv", out / "summary.json"]
    if scaling_rows:
        written.insert(1, out / "scaling.csv")
    if cfg.plot:
        written += plot(summary, out)
    console.print(
        "[bold]bandits[/]: wrote " + ", ".join(str(p) for p in written) + f" in {runtime:.1f}s"
    )
    _print_table(summary)
    return summary


# ----------------------------------------------------------------------------- report


def _short(name: str) -> str:
    return name.replace("/fixed", "/fix").replace("/dynamic", "/dyn").replace("ADPO-", "")


_KIND_ABBR = {
    "heavy_noise": "noise",
    "dist_shift": "shift",
    "adv_flip": "flip",
    "heavy_tail": "cauchy",
}


def _abbr(scenario: str) -> str:
    """``"heavy_noise-medium"`` → ``"noiseM"`` (column headers of the console table)."""
    kind, _, level = scenario.partition("-")
    return _KIND_ABBR.get(kind, kind) + level[:1].upper()


def _print_table(summary: dict) -> None:
    from rich import box
    from rich.table import Table

    scen = summary["scenarios"]
    table = Table(
        title="WinMass, mean over seeds (* best in the scenario, + within 2 paired SE of it)",
        box=box.SIMPLE,
        padding=(0, 1),
    )
    table.add_column("method", no_wrap=True)
    for sc in scen:
        table.add_column(_abbr(sc), justify="right", no_wrap=True)
    for m in summary["methods"]:
        cells = []
        for sc in scen:
            v = f"{summary['winmass'][sc][m]['mean']:.2f}"
            if summary["best"][sc] == m:
                cells.append(f"[bold]{v}*[/]")
            else:
                cells.append(v + ("+" if m in summary["tied_with_best"][sc] else " "))
        table.add_row(_short(m), *cells)
    # the table is wider than a default 80-column log: print it unwrapped
    from rich.console import Console

    Console(stderr=True, width=max(console.width, 24 + 9 * len(scen))).print(table)
    ref = summary["reference"]["winmass"]
    console.print(f"reference (SFT) WinMass {ref['mean']:.3f} ± {ref['std']:.3f}")
    for base, v in summary["anchors"].items():
        on = summary["anchors_online"][base]
        console.print(
            f"{base}: fixed {v['fixed']:.3f} → dynamic {v['dynamic']:.3f} ({v['gain_pct']:+.1f} %); "
            f"online {on['fixed']:.3f} → {on['dynamic']:.3f} ({on['gain_pct']:+.1f} %)"
        )


def plot(summary: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    scen, meths = summary["scenarios"], summary["methods"]
    grid = [[summary["winmass"][sc][m]["mean"] for m in meths] for sc in scen]
    fig, ax = plt.subplots(figsize=(1.0 + 0.85 * len(meths), 1.2 + 0.45 * len(scen)))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for i, sc in enumerate(scen):
        for j, m in enumerate(meths):
            best = summary["best"][sc] == m
            ax.text(
                j, i, f"{grid[i][j]:.2f}", ha="center", va="center", fontsize=7,
                color="black" if grid[i][j] > 0.55 * max(map(max, grid)) else "white",
                fontweight="bold" if best else "normal",
            )  # fmt: skip
            if best:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
    ax.set_xticks(
        range(len(meths)), [_short(m) for m in meths], rotation=45, ha="right", fontsize=8
    )
    ax.set_yticks(range(len(scen)), scen, fontsize=8)
    ref = summary["reference"]["winmass"]["mean"]
    ax.set_title(f"WinMass on clean held-out contexts (reference {ref:.2f}; red box = best)")
    fig.colorbar(im, ax=ax, fraction=0.03).set_label("WinMass (mean over seeds)", fontsize=8)
    fig.tight_layout()
    paths.append(out / "winmass_heatmap.png")
    fig.savefig(paths[-1], dpi=130)
    plt.close(fig)

    if summary.get("scaling"):
        widths = sorted(summary["scaling"], key=int)
        fig, ax = plt.subplots(figsize=(9.5, 4.5))
        bases = list(dict.fromkeys(METHODS[m].base for m in meths))
        colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(bases)}
        for m in meths:
            ys = [summary["scaling"][h][m] for h in widths]
            es = [summary["scaling_std"][h][m] for h in widths]
            ls = "--" if METHODS[m].anchor == "fixed" else "-"
            ax.errorbar(
                [int(h) for h in widths],
                ys,
                yerr=es,
                label=_short(m),
                color=colours[METHODS[m].base],
                ls=ls,
                marker="o",
                ms=3,
                capsize=2,
            )
        ax.plot(
            [int(h) for h in widths], [summary["scaling_reference"][h] for h in widths],
            color="gray", ls=":", label="reference",
        )  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(h) for h in widths], widths)
        ax.set(
            xlabel="hidden width",
            ylabel="WinMass",
            title=f"Capacity scaling on {summary['scaling_scenario']}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        paths.append(out / "scaling.png")
        fig.savefig(paths[-1], dpi=130)
        plt.close(fig)

    if summary["anchors"]:
        bases = list(summary["anchors"])
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        for ax, key, title in (
            (axes[0], "anchors", "final WinMass"),
            (axes[1], "anchors_online", "online WinMass (while training)"),
        ):
            xs = range(len(bases))
            ax.bar(
                [x - 0.2 for x in xs],
                [summary[key][b]["fixed"] for b in bases],
                0.4,
                label="fixed anchor (π_ref)",
            )
            ax.bar(
                [x + 0.2 for x in xs],
                [summary[key][b]["dynamic"] for b in bases],
                0.4,
                label="dynamic anchor (π_old)",
            )
            ax.set_xticks(list(xs), bases, fontsize=8)
            ax.set(title=f"{title}, mean over {len(scen)} scenarios", ylabel="WinMass")
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3, axis="y")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0, 1, 0.9))
        paths.append(out / "anchors.png")
        fig.savefig(paths[-1], dpi=130)
        plt.close(fig)
    return paths


def replot(cfg: BanditsConfig) -> list[Path]:
    """Redraw the plots from ``summary.json`` in ``cfg.out`` (the summary is not rewritten)."""
    path = Path(cfg.out) / "summary.json"
    summary = read_json(path)
    if summary is None:
        raise ValueError(f"adpo bench bandits --replot: no {path}")
    return plot(summary, Path(cfg.out))


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        BanditsConfig,
        args=argv,
        prog="adpo bench bandits",
        description=__doc__.split("\n\n")[0],
    )
    replot(cfg) if cfg.replot else run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
