"""MuJoCo policy distillation: KD versus anchored students (ADPO paper §6.2, table 2).

A SAC teacher (``adpo bench distill-teacher``) is distilled into a student policy of one
fixed architecture from states the teacher visits (optionally also states the student
visits, DAgger-style). Distillation is *listwise over candidate actions*: for each state
a set of ``K`` candidate actions (the teacher's mean, samples of the teacher and wider
perturbations around its mean), teacher scores for them (teacher log-density or critic
value), and the student's log-densities of the candidates. Every student below is one
loss from :mod:`adpo.losses` on those ``[B, K]`` tensors, with the same network,
optimiser, data and number of updates:

| method | loss |
|---|---|
| KD | ``kd_loss``: ``KL(q ‖ softmax(log πθ))`` over the candidates, absolute coordinates (the paper's KD baseline) |
| BC | ``sft_loss``: Gaussian likelihood of the teacher's sampled actions (plain behaviour cloning, the forward KL over the whole action space) |
| ADPO-self | ``adpo_loss(targets=q)``, anchor = the student's initialisation (``SelfAnchor``) |
| ADPO-EMA | same, anchor = EMA of the student (``EMAAnchor``) |
| ADPO-teacher | same, anchor = the teacher (``FixedAnchor``), the abstract's "fixed anchor pointing to the teacher" |
| OPO | ``opo_loss(rewards=teacher scores)``, anchor = the teacher (it is the distribution the candidates are drawn from: OPO's π_k) |
| ADPO-*-residual | ``adpo_loss`` with the *residual* target ``q ∝ exp(s − log π_ref)`` |

Why the residual variants: with a soft target ``q ∝ exp(s/β)`` the ADPO loss is minimised
by ``π ∝ π_ref · q^τ`` (paper app. C), so with ``s = log π_T`` and ``τ = β = 1`` a self
anchor learns ``π_ref·π_T``, not ``π_T``; an EMA anchor keeps multiplying by ``π_T``
and sharpens without end; a teacher anchor learns ``π_T²``. The target
``q ∝ π_T/π_ref`` (the teacher's advantage in the anchor's coordinates, eq. 6) makes
``π_T`` itself the minimiser for every anchor. Both are reported.

Shapes::

    N  states in the dataset          D  observation dimension
    B  states in a mini-batch         A  action dimension
    K  candidate actions per state    S  teacher samples among the candidates

Actions are handled in pre-tanh coordinates ``z`` (``a = tanh z``; see
:mod:`adpo.experiments.distill_teacher`). Metrics on held-out teacher states:

* ``kl_to_teacher`` — closed-form ``KL(π_T(·|s) ‖ πθ(·|s))`` of the Gaussians (nats,
  mean over states; equal to the KL of the squashed policies),
* ``kl_candidates`` — ``KL(q ‖ softmax(log πθ))`` restricted to the candidate sets,
* ``ndcg`` — NDCG@K of the student's ranking of the candidates (by ``log πθ``) with
  the teacher's target probabilities ``q`` as gains,
* ``action_mse`` — mean squared gap of the deterministic actions ``tanh μ``,
* ``return`` — undiscounted return of the deterministic student ``tanh μθ(s)`` over
  ``eval_episodes`` episodes per seed, on the same reset seeds as the teacher's.

Run::

    adpo bench distill --env HalfCheetah-v5 --out runs/distill/halfcheetah --seeds 3
    adpo bench distill --env Hopper-v5 --out runs/distill/hopper --quick
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from torch import Tensor, nn

from adpo import metrics
from adpo._io import (
    MUJOCO,
    console,
    prepare_out,
    progress_bar,
    provenance,
    write_csv,
    write_json,
)
from adpo.anchors import Anchor, AnchorConfig, canonical_anchor, make_anchor
from adpo.experiments.distill_teacher import (
    LOG_STD_MAX,
    Teacher,
    check_env_id,
    evaluate_returns,
    make_env,
    teacher_path,
)
from adpo.losses import adpo_loss, kd_loss, opo_loss, sft_loss

__all__ = [
    "METHODS",
    "Batch",
    "DistillConfig",
    "GaussianPolicy",
    "MethodSpec",
    "TeacherActor",
    "collect_states",
    "gaussian_kl",
    "gaussian_logp",
    "make_candidates",
    "ndcg",
    "run",
    "seed_data",
    "teacher_scores",
]

LOG_2PI = math.log(2 * math.pi)
STUDENT_LOG_STD_MIN = -10.0  # below any teacher σ we saw (log σ_T ≥ -3.4), so it never binds a fit

# ---------------------------------------------------------------------------------------
# Gaussian policies in pre-tanh coordinates
# ---------------------------------------------------------------------------------------


def gaussian_logp(mean: Tensor, log_std: Tensor, z: Tensor) -> Tensor:
    """Diagonal-Gaussian log-density of candidates.

    Args:
        mean: ``[B, A]``.
        log_std: ``[B, A]``.
        z: ``[B, K, A]`` candidate actions (pre-tanh).

    Returns:
        ``[B, K]`` log-densities (summed over the ``A`` action dimensions).
    """
    if z.dim() != 3 or mean.shape != z.shape[::2] or log_std.shape != mean.shape:
        raise ValueError(
            f"gaussian_logp: need mean/log_std [B, A] and z [B, K, A], got "
            f"{tuple(mean.shape)}, {tuple(log_std.shape)}, {tuple(z.shape)}"
        )
    x = (z - mean[:, None, :]) * torch.exp(-log_std)[:, None, :]  # (B, K, A)
    return (-0.5 * x.pow(2) - log_std[:, None, :] - 0.5 * LOG_2PI).sum(-1)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """Closed-form ``KL(N(μ_p, σ_p) ‖ N(μ_q, σ_q))`` of diagonal Gaussians, ``[B, A] → [B]``."""
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))  # (B, A)
    maha = ((mean_p - mean_q) * torch.exp(-log_std_q)).pow(2)  # (B, A)
    return (log_std_q - log_std_p + 0.5 * (var_ratio + maha) - 0.5).sum(-1)


class GaussianPolicy(nn.Module):
    """Student: MLP ``s ↦ (μ(s), log σ(s))`` of a tanh-squashed diagonal Gaussian.

    Observations are standardised with dataset statistics held as buffers (so an EMA or
    self anchor carries the same normalisation).

    Args:
        obs_dim: ``D``.
        act_dim: ``A``.
        hidden: width of each hidden layer.
        layers: number of hidden layers.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        dims = [obs_dim] + [hidden] * layers
        body: list[nn.Module] = []
        for i, o in itertools.pairwise(dims):
            body += [nn.Linear(i, o), nn.ReLU()]
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(dims[-1], 2 * act_dim)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def set_normalization(self, obs: Tensor) -> None:
        """Standardise inputs with the mean/std of ``obs [N, D]``."""
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0).clamp_min(1e-3))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs [B, D] → (mean [B, A], log_std [B, A])``."""
        h = self.body((obs - self.obs_mean) / self.obs_std)
        mean, log_std = self.head(h).chunk(2, dim=-1)
        return mean, log_std.clamp(STUDENT_LOG_STD_MIN, LOG_STD_MAX)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action ``tanh μ(s)`` for one observation ``[D]`` → ``[A]``."""
        mean, _ = self(torch.as_tensor(obs, dtype=torch.float32)[None])
        return torch.tanh(mean)[0].numpy()


class TeacherActor(nn.Module):
    """The teacher's actor as an ``nn.Module`` with the student's interface, for anchors."""

    def __init__(self, teacher: Teacher):
        super().__init__()
        self.actor = teacher.policy.actor

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std, _ = self.actor.get_action_dist_params(obs)
        return mean, log_std


def _policy_logps(module: nn.Module, obs: Tensor, z: Tensor) -> Tensor:
    """``log π(z_k | s)`` for a module returning ``(mean, log_std)``: ``[B, K]``."""
    return gaussian_logp(*module(obs), z)


# ---------------------------------------------------------------------------------------
# Data: teacher-visited states, candidate sets, teacher scores
# ---------------------------------------------------------------------------------------


@dataclass
class Batch:
    """States with the teacher's Gaussian at each (all float32).

    Attributes:
        obs: ``[N, D]``.
        mean: ``[N, A]`` teacher μ_T(s) (pre-tanh).
        log_std: ``[N, A]`` teacher log σ_T(s).
    """

    obs: Tensor
    mean: Tensor
    log_std: Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def __getitem__(self, idx) -> Batch:
        return Batch(self.obs[idx], self.mean[idx], self.log_std[idx])

    def cat(self, other: Batch) -> Batch:
        return Batch(
            *(torch.cat([a, b]) for a, b in zip(self.astuple(), other.astuple(), strict=True))
        )

    def astuple(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.obs, self.mean, self.log_std


@torch.no_grad()
def collect_states(
    teacher: Teacher,
    env_id: str,
    n_states: int,
    *,
    seed: int,
    actor: nn.Module | None = None,
    stochastic: bool = True,
) -> Batch:
    """Roll out a policy and label every visited state with the teacher's Gaussian.

    Args:
        teacher: labels the states.
        env_id: gymnasium id.
        n_states: states to collect (episodes are cut when this many are reached).
        seed: episode ``i`` resets with ``seed + i``; action noise uses a generator seeded
            with ``seed``.
        actor: the behaviour policy (``obs [1, D] → (mean, log_std)``); the teacher when
            None. DAgger passes the student.
        stochastic: act with a sample ``tanh(μ + σ·ε)`` (True) or with ``tanh μ``.

    Returns:
        :class:`Batch` with ``N = n_states``.
    """
    env = make_env(env_id)
    teacher.check_env(env)
    behaviour = actor if actor is not None else TeacherActor(teacher)
    gen = torch.Generator().manual_seed(seed)
    obs_l: list[np.ndarray] = []
    episode = 0
    obs, _ = env.reset(seed=seed)
    while len(obs_l) < n_states:
        obs_l.append(np.asarray(obs, dtype=np.float32))
        mean, log_std = behaviour(torch.as_tensor(obs_l[-1])[None])
        z = mean
        if stochastic:
            z = mean + log_std.exp() * torch.randn(mean.shape, generator=gen)
        obs, _, term, trunc, _ = env.step(torch.tanh(z)[0].numpy())
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    obs_t = torch.from_numpy(np.stack(obs_l))
    mean_t, log_std_t = teacher.dist_params(obs_t)
    return Batch(obs_t, mean_t.float(), log_std_t.float())


def make_candidates(
    mean: Tensor,
    log_std: Tensor,
    k: int,
    *,
    samples: int,
    perturb_std: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Candidate actions around the teacher, pre-tanh.

    Per state: slot 0 is the teacher's mean μ_T (its deterministic action), slots
    ``1..samples`` are teacher samples ``μ_T + σ_T·ε``, the remaining ``k − 1 − samples``
    are perturbations ``μ_T + perturb_std·ε`` (a fixed width, so that candidates reach
    beyond the teacher's own spread even where σ_T is tiny).

    Args:
        mean: ``[B, A]`` teacher means.
        log_std: ``[B, A]`` teacher log-stds.
        k: candidates per state ``K`` (≥ 2: a listwise loss needs a list).
        samples: ``S`` teacher samples, ``0 ≤ S ≤ K − 1``.
        perturb_std: width of the perturbations (> 0 when there are any).
        generator: torch generator for reproducible candidates.

    Returns:
        ``[B, K, A]``.
    """
    if k < 2:
        raise ValueError(f"make_candidates: `k` must be >= 2 (a list), got {k}")
    if not 0 <= samples <= k - 1:
        raise ValueError(
            f"make_candidates: `samples` must lie in [0, k-1] = [0, {k - 1}], got {samples}"
        )
    if k - 1 - samples > 0 and not perturb_std > 0:
        raise ValueError(f"make_candidates: `perturb_std` must be > 0, got {perturb_std}")
    if mean.shape != log_std.shape or mean.dim() != 2:
        raise ValueError(
            f"make_candidates: `mean` and `log_std` must both be [B, A], got "
            f"{tuple(mean.shape)} and {tuple(log_std.shape)}"
        )
    B, A = mean.shape
    eps = torch.randn((B, k - 1, A), generator=generator, dtype=mean.dtype)  # (B, K-1, A)
    scale = torch.cat(
        [
            log_std.exp()[:, None, :].expand(B, samples, A),
            torch.full((B, k - 1 - samples, A), float(perturb_std), dtype=mean.dtype),
        ],
        dim=1,
    )  # (B, K-1, A)
    return torch.cat([mean[:, None, :], mean[:, None, :] + scale * eps], dim=1)  # (B, K, A)


def teacher_scores(
    batch: Batch, z: Tensor, score: Literal["logp", "q"], teacher: Teacher | None = None
) -> Tensor:
    """Teacher scores of the candidates ``z [B, K, A]`` → ``[B, K]``.

    ``"logp"``: ``log π_T(z | s)`` (pre-tanh Gaussian); ``"q"``: ``min(Q_1, Q_2)(s, tanh z)``.
    """
    if score == "logp":
        return gaussian_logp(batch.mean, batch.log_std, z)
    if score == "q":
        if teacher is None:
            raise ValueError("teacher_scores: score='q' needs the `teacher` (its critic)")
        return teacher.q_values(batch.obs, z)
    raise ValueError(f"teacher_scores: `score` must be 'logp' or 'q', got {score!r}")


def scored_candidates(
    batch: Batch, cfg: DistillConfig, teacher: Teacher, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``cfg``'s candidates for ``batch`` and the teacher's scores: ``[B, K, A]``, ``[B, K]``."""
    z = make_candidates(
        batch.mean,
        batch.log_std,
        cfg.candidates,
        samples=cfg.teacher_samples,
        perturb_std=cfg.perturb_std,
        generator=generator,
    )
    return z, teacher_scores(batch, z, cfg.score, teacher)


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------


def ndcg(scores: Tensor, gains: Tensor) -> Tensor:
    """NDCG@K of the ranking by ``scores`` (ties by index) with linear graded relevance ``gains``.

    ``DCG = Σ_r gain_(r) / log2(r + 1)`` over ranks ``r = 1..K`` of the list sorted by
    ``scores`` (descending); divided by the DCG of the list sorted by ``gains`` (the
    teacher's probabilities are already graded relevance in [0, 1]). See
    :func:`adpo.metrics.ndcg`.

    Args:
        scores: ``[B, K]`` the ranker's scores (e.g. student log-densities).
        gains: ``[B, K]`` non-negative relevance (e.g. teacher target probabilities).

    Returns:
        ``[B]`` in [0, 1]; 1 where every gain is 0 (any order is ideal).
    """
    if scores.shape != gains.shape or scores.dim() != 2:
        raise ValueError(
            f"ndcg: `scores` and `gains` must both be [B, K], got {tuple(scores.shape)} "
            f"and {tuple(gains.shape)}"
        )
    return metrics.ndcg(scores, gains, gain="linear", ties="index")


def candidate_kl(student_logp: Tensor, q: Tensor) -> Tensor:
    """``KL(q ‖ softmax(student_logp))`` over each candidate set: ``[B, K] → [B]``."""
    logp = torch.log_softmax(student_logp, dim=-1)
    logq = torch.log(q.clamp_min(1e-30))
    return torch.where(q > 0, q * (logq - logp), torch.zeros_like(q)).sum(-1)


# ---------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodSpec:
    """One student: which loss, which anchor, which target.

    Attributes:
        loss: ``"kd"`` (kd_loss), ``"bc"`` (sft_loss on teacher samples), ``"adpo"``,
            ``"opo"``.
        anchor: ``None`` (KD, BC), ``"self"``, ``"ema"`` or ``"fixed"`` (the teacher;
            the old spelling ``"teacher"`` still works, with a ``DeprecationWarning``).
        target: ``"teacher"`` (``q ∝ exp(s/β)``) or ``"residual"``
            (``q ∝ exp((s − log π_ref)/β)``); ADPO only.
    """

    loss: Literal["kd", "bc", "adpo", "opo"]
    anchor: Literal["self", "ema", "fixed"] | None = None
    target: Literal["teacher", "residual"] = "teacher"

    def __post_init__(self) -> None:
        if self.anchor is not None:
            kind = canonical_anchor(self.anchor, owner="MethodSpec: `anchor`")
            if kind not in ("self", "ema", "fixed"):
                raise ValueError(
                    f"MethodSpec: `anchor` must be 'self', 'ema' or 'fixed', got {self.anchor!r}"
                )
            object.__setattr__(self, "anchor", kind)  # frozen dataclass
        if self.loss in ("adpo", "opo") and self.anchor is None:
            raise ValueError(f"MethodSpec: loss {self.loss!r} needs an anchor")
        if self.loss in ("kd", "bc") and self.anchor is not None:
            raise ValueError(f"MethodSpec: loss {self.loss!r} has no anchor (absolute coordinates)")
        if self.target == "residual" and self.loss != "adpo":
            raise ValueError("MethodSpec: the residual target is an ADPO option")


METHODS: dict[str, MethodSpec] = {
    "KD": MethodSpec("kd"),
    "BC": MethodSpec("bc"),
    "ADPO-self": MethodSpec("adpo", "self"),
    "ADPO-EMA": MethodSpec("adpo", "ema"),
    "ADPO-teacher": MethodSpec("adpo", "fixed"),
    "OPO": MethodSpec("opo", "fixed"),
    "ADPO-self-residual": MethodSpec("adpo", "self", "residual"),
    "ADPO-EMA-residual": MethodSpec("adpo", "ema", "residual"),
}

# The quick run (a test) keeps one method of each family.
QUICK_METHODS = ("KD", "ADPO-teacher", "ADPO-self-residual", "OPO")


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


@dataclass
class DistillConfig:
    """Policy distillation benchmark. Every field is a CLI flag (``--steps 5000`` …)."""

    env: str = "HalfCheetah-v5"
    """gymnasium environment id"""
    out: str = "runs/distill"
    """output folder"""
    teacher: str | None = None
    """teacher weights (default: results/distill/teachers/<env>.pt)"""
    seeds: int = 3
    """seeds (each: its own dataset, student init, candidate noise)"""
    seed: int = 0
    """first seed"""
    quick: bool = False
    """a small, fast run (a test): small dataset, few updates, fewer episodes, one seed
    unless --seeds is given, methods QUICK_METHODS unless --methods is given"""
    methods: tuple[str, ...] = tuple(METHODS)
    """students to train (names of METHODS)"""
    dataset_states: int = 50_000
    """teacher-visited training states per seed"""
    val_states: int = 5_000
    """held-out teacher-visited states per seed (metrics)"""
    collect: Literal["sample", "mean"] = "sample"
    """the teacher acts with samples (wider state coverage) or its mean while collecting"""
    candidates: int = 16
    """K candidate actions per state"""
    teacher_samples: int = 7
    """S of the K candidates are teacher samples (slot 0 is the teacher mean, the rest
    are perturbations)"""
    perturb_std: float = 0.5
    """width of the perturbation candidates (pre-tanh units)"""
    score: Literal["logp", "q"] = "logp"
    """teacher score of a candidate: log-density or critic value min(Q1, Q2)"""
    target_temp: float = 1.0
    """β: targets q = softmax(score/β); also KD's temperature T"""
    tau: float = 1.0
    """ADPO anchoring temperature τ"""
    ema_decay: float = 0.99
    """decay of the EMA anchor (refreshed every update)"""
    opo_alpha: float = 0.4
    """OPO escort exponent α (paper: 0.4)"""
    opo_mu: float = 1.0
    """OPO stiffness μ (paper: 1.0)"""
    hidden: int = 128
    """student hidden width (the teacher's actor is 256-256: the student has ~1/3 of its
    parameters, and costs ~1/3 of the CPU time per update)"""
    layers: int = 2
    """student hidden layers"""
    lr: float = 1e-3
    """AdamW learning rate (2× the paper's §6.1 bandit setting, 5e-4: distillation
    converged too slowly for our CPU budget at 5e-4)"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    batch_size: int = 256
    """states per update (each with K candidates)"""
    steps: int = 10_000
    """updates per student (split evenly over the DAgger phases)"""
    dagger_rounds: int = 0
    """DAgger rounds: after each phase roll out the student, label its states with the
    teacher and add them to the dataset (0 = teacher states only)"""
    dagger_states: int = 5_000
    """student-visited states added per DAgger round"""
    eval_episodes: int = 10
    """evaluation episodes per seed (deterministic policies)"""
    eval_seed: int = 100_000
    """reset seed of evaluation episode i is eval_seed + i (same for every policy)"""
    log_every: int = 1_000
    """log training loss and held-out metrics every this many updates"""
    threads: int = 1
    """torch threads"""
    plot: bool = True
    """write distill.png"""

    def __post_init__(self) -> None:
        if self.quick:
            # smaller everything; explicit flags that differ from the defaults still win
            d = DistillConfig.__dataclass_fields__
            small = {
                "dataset_states": 4_000,
                "val_states": 500,
                "steps": 600,
                "eval_episodes": 3,
                "seeds": 1,
                "log_every": 200,
                "methods": QUICK_METHODS,
                "dagger_states": 1_000,
            }
            for name, value in small.items():
                if getattr(self, name) == d[name].default:
                    setattr(self, name, value)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(
                f"DistillConfig: unknown `methods` {unknown or '(empty)'}; choose from {list(METHODS)}"
            )
        for name in (
            "seeds",
            "dataset_states",
            "val_states",
            "steps",
            "batch_size",
            "eval_episodes",
            "log_every",
            "threads",
            "hidden",
            "layers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"DistillConfig: `{name}` must be >= 1, got {getattr(self, name)}")
        if self.candidates < 2:
            raise ValueError(
                f"DistillConfig: `candidates` must be >= 2 (a list), got {self.candidates}"
            )
        if not 0 <= self.teacher_samples <= self.candidates - 1:
            raise ValueError(
                f"DistillConfig: `teacher_samples` must lie in [0, candidates-1] = "
                f"[0, {self.candidates - 1}], got {self.teacher_samples}"
            )
        if any("BC" == m for m in self.methods) and self.teacher_samples < 1:
            raise ValueError("DistillConfig: BC needs `teacher_samples` >= 1 (it fits the samples)")
        for name in ("perturb_std", "target_temp", "tau", "opo_mu", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DistillConfig: `{name}` must be > 0, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"DistillConfig: `ema_decay` must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= self.opo_alpha <= 1:
            raise ValueError(f"DistillConfig: `opo_alpha` must lie in [0, 1], got {self.opo_alpha}")
        if self.dagger_rounds < 0 or self.dagger_states < 1:
            raise ValueError("DistillConfig: `dagger_rounds` >= 0 and `dagger_states` >= 1")
        check_env_id(self.env)


# ---------------------------------------------------------------------------------------
# Training one student
# ---------------------------------------------------------------------------------------


def _make_anchor(
    spec: MethodSpec, student: nn.Module, teacher: Teacher, cfg: DistillConfig
) -> Anchor | None:
    if spec.anchor is None:
        return None
    ref = TeacherActor(teacher) if spec.anchor == "fixed" else None
    return make_anchor(AnchorConfig(kind=spec.anchor, ema_decay=cfg.ema_decay), student, ref)


def student_loss(
    spec: MethodSpec,
    student: nn.Module,
    anchor: Anchor | None,
    batch: Batch,
    z: Tensor,
    scores: Tensor,
    cfg: DistillConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of method ``spec`` on one mini-batch; every formula is from ``adpo.losses``.

    Args:
        batch: ``B`` states with the teacher's Gaussian.
        z: ``[B, K, A]`` candidates (slot 0 the teacher mean, then ``S`` teacher samples).
        scores: ``[B, K]`` teacher scores of the candidates.
    """
    logps = _policy_logps(student, batch.obs, z)  # (B, K)
    if spec.loss == "bc":  # likelihood of the teacher's samples, slots 1..S
        out = sft_loss(logps[:, 1 : 1 + cfg.teacher_samples])
        return out.loss, out.metrics
    if spec.loss == "kd":
        q = torch.softmax(scores / cfg.target_temp, dim=-1)  # (B, K)
        out = kd_loss(logps, q, temperature=cfg.target_temp)
        return out.loss, out.metrics
    if anchor is None:
        raise ValueError(f"student_loss: loss {spec.loss!r} needs an `anchor`, got None")
    ref = anchor.anchor_logps(_policy_logps, batch.obs, z)  # (B, K), no grad
    if spec.loss == "opo":
        out = opo_loss(logps, ref, scores, alpha=cfg.opo_alpha, mu=cfg.opo_mu)
        return out.loss, out.metrics
    s = scores - ref if spec.target == "residual" else scores  # (B, K)
    q = torch.softmax(s / cfg.target_temp, dim=-1)  # (B, K)
    out = adpo_loss(logps, ref, targets=q, tau=cfg.tau)
    return out.loss, out.metrics


@torch.no_grad()
def held_out_metrics(student: nn.Module, val: Batch, z: Tensor, q: Tensor) -> dict[str, float]:
    """Metrics of ``student`` on held-out states ``val`` with fixed candidates ``z [N, K, A]``
    and teacher targets ``q [N, K]``."""
    student.eval()
    mean, log_std = student(val.obs)  # (N, A)
    logps = gaussian_logp(mean, log_std, z)  # (N, K)
    student.train()
    return {
        "kl_to_teacher": float(gaussian_kl(val.mean, val.log_std, mean, log_std).mean()),
        "kl_candidates": float(candidate_kl(logps, q).mean()),
        "ndcg": float(ndcg(logps, q).mean()),
        "action_mse": float((torch.tanh(mean) - torch.tanh(val.mean)).pow(2).mean()),
        "student_log_std": float(log_std.mean()),
    }


def train_student(
    name: str,
    teacher: Teacher,
    data: Batch,
    val: Batch,
    val_z: Tensor,
    val_q: Tensor,
    cfg: DistillConfig,
    seed: int,
    progress=None,
    task=None,
) -> tuple[GaussianPolicy, list[dict], Batch]:
    """Train student ``name`` from seed ``seed``'s initialisation; returns (student, log, data
    including any DAgger states)."""
    spec = METHODS[name]
    torch.manual_seed(seed)  # the same initial student for every method of a seed
    student = GaussianPolicy(teacher.obs_dim, teacher.act_dim, cfg.hidden, cfg.layers)
    student.set_normalization(data.obs)
    anchor = _make_anchor(spec, student, teacher, cfg)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(10_000 + seed)  # batches and candidates
    phases = cfg.dagger_rounds + 1
    per_phase = [cfg.steps // phases + (1 if i < cfg.steps % phases else 0) for i in range(phases)]
    log: list[dict] = []
    step = 0
    for phase, n_updates in enumerate(per_phase):
        if phase > 0:  # DAgger: states the student visits, labelled by the teacher
            extra = collect_states(
                teacher,
                cfg.env,
                cfg.dagger_states,
                seed=2_000_000 + 10_000 * seed + phase * 1_000,
                actor=student.eval(),
                stochastic=False,
            )
            student.train()
            data = data.cat(extra)
        for _ in range(n_updates):
            idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
            batch = data[idx]
            z, scores = scored_candidates(batch, cfg, teacher, gen)  # (B, K, A), (B, K)
            loss, _ = student_loss(spec, student, anchor, batch, z, scores, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if anchor is not None:
                anchor.refresh(student)  # EMA folds the weights in; self/teacher: no-op
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"{name}: non-finite loss at update {step}")
                row = {"method": name, "seed": seed, "step": step, "loss": loss.item()}
                row.update(held_out_metrics(student, val, val_z, val_q))
                row["dataset_states"] = len(data)
                log.append(row)
            if progress is not None:
                progress.advance(task)
    return student.eval(), log, data


# ---------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------


def seed_data(
    cfg: DistillConfig, teacher: Teacher, seed: int
) -> tuple[Batch, Batch, Tensor, Tensor]:
    """One seed's data: ``(train states, held-out states, held-out candidates [N, K, A],
    their teacher targets q [N, K])``, each drawn from its own seed."""
    data = collect_states(
        teacher, cfg.env, cfg.dataset_states, seed=1_000 * seed, stochastic=cfg.collect == "sample"
    )
    val = collect_states(
        teacher,
        cfg.env,
        cfg.val_states,
        seed=500_000 + 1_000 * seed,
        stochastic=cfg.collect == "sample",
    )
    g = torch.Generator().manual_seed(777 + seed)
    val_z, val_scores = scored_candidates(val, cfg, teacher, g)  # (N, K, A), (N, K)
    return data, val, val_z, torch.softmax(val_scores / cfg.target_temp, -1)


def _stats(xs: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof = 1; 0 for a single value)."""
    return metrics.mean_std(xs)


def run(cfg: DistillConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    out = prepare_out(cfg.out)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    tpath = Path(cfg.teacher) if cfg.teacher else teacher_path("results/distill/teachers", cfg.env)
    teacher = Teacher.load(tpath, cfg.env)

    episodes = cfg.eval_episodes
    teacher_rets = evaluate_returns(teacher.act, cfg.env, episodes, cfg.eval_seed)
    rng = np.random.default_rng(cfg.eval_seed)
    env = make_env(cfg.env)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    random_rets = evaluate_returns(
        lambda _o: rng.uniform(low, high).astype(np.float32), cfg.env, episodes, cfg.eval_seed
    )
    t_ret, t_std = _stats(teacher_rets)
    console.print(
        f"[bold]distill[/] {cfg.env}: teacher {tpath} return {t_ret:.1f} ± {t_std:.1f}, "
        f"random {np.mean(random_rets):.1f} ({episodes} episodes)"
    )

    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    per_run: list[dict] = []
    train_log: list[dict] = []
    with progress_bar() as progress:
        task = progress.add_task("updates", total=cfg.steps * len(seeds) * len(cfg.methods))
        for seed in seeds:
            t0 = time.perf_counter()
            data, val, val_z, val_q = seed_data(cfg, teacher, seed)
            collect_s = time.perf_counter() - t0
            for name in cfg.methods:
                progress.update(task, description=f"seed {seed} {name}")
                t1 = time.perf_counter()
                student, log, used = train_student(
                    name, teacher, data, val, val_z, val_q, cfg, seed, progress, task
                )
                train_s = time.perf_counter() - t1
                t2 = time.perf_counter()
                rets = evaluate_returns(student.act, cfg.env, episodes, cfg.eval_seed)
                eval_s = time.perf_counter() - t2
                final = held_out_metrics(student, val, val_z, val_q)
                train_log += log
                per_run.append(
                    {
                        "method": name,
                        "seed": seed,
                        "return_mean": float(np.mean(rets)),
                        "returns": rets,
                        **final,
                        "dataset_states": len(used),
                        "collect_seconds": round(collect_s, 1),
                        "train_seconds": round(train_s, 1),
                        "eval_seconds": round(eval_s, 1),
                        "loadavg_1m": round(os.getloadavg()[0], 2),
                        "threads": torch.get_num_threads(),
                    }
                )
                progress.console.print(
                    f"  seed {seed} {name:<20} return {np.mean(rets):9.1f}  "
                    f"KL {final['kl_to_teacher']:8.3f}  NDCG {final['ndcg']:.3f}  "
                    f"({train_s:.0f}s train, load {os.getloadavg()[0]:.1f})"
                )

    methods: dict[str, dict] = {}
    for name in cfg.methods:
        runs = [r for r in per_run if r["method"] == name]
        r_mean, r_std = _stats([r["return_mean"] for r in runs])
        entry = {"return_mean": r_mean, "return_std": r_std}
        for key in ("ndcg", "kl_to_teacher", "kl_candidates", "action_mse"):
            entry[key], entry[key + "_std"] = _stats([r[key] for r in runs])
        entry["return_ratio"] = r_mean / t_ret if t_ret != 0 else float("nan")
        entry["per_seed_return"] = [r["return_mean"] for r in runs]
        methods[name] = entry
    summary = {
        "env": cfg.env,
        "teacher_return": t_ret,
        "teacher_return_std": t_std,
        "random_return": float(np.mean(random_rets)),
        "methods": methods,
        "experiment": "listwise policy distillation over candidate actions (ADPO paper §6.2)",
        "notes": (
            "return_mean/std: mean and sample std over seeds of each seed's mean over "
            "eval_episodes deterministic episodes; teacher and random policy on the same "
            "reset seeds; kl_to_teacher: closed-form KL(teacher || student), nats, mean over "
            "held-out teacher states; return_ratio = return_mean / teacher_return"
        ),
        "teacher": {
            "path": str(tpath),
            **{k: teacher.meta.get(k) for k in ("steps_done", "train_seconds", "kept_checkpoint")},
        },
        "config": asdict(cfg),
        "runtime_s": round(time.perf_counter() - t_start, 1),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        **provenance(MUJOCO),
    }
    write_json(out / "summary.json", summary)
    write_csv(out / "runs.csv", [{k: v for k, v in r.items() if k != "returns"} for r in per_run])
    write_json(out / "runs.json", {"runs": per_run})
    write_csv(out / "train_log.csv", train_log)
    if cfg.plot:
        plot(summary, out / "distill.png")
    _print_table(summary)
    console.print(
        f"[bold]distill[/]: wrote {out / 'summary.json'}, runs.csv, train_log.csv"
        + (", distill.png" if cfg.plot else "")
        + f" in {summary['runtime_s']:.0f}s"
    )
    return summary


def _print_table(summary: dict) -> None:
    from rich.table import Table

    t = summary["teacher_return"]
    table = Table(title=f"{summary['env']}: teacher {t:.1f}, random {summary['random_return']:.1f}")
    for col in ("method", "return", "ratio", "NDCG", "KL(T‖S)", "KL cand.", "action MSE"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, m in summary["methods"].items():
        table.add_row(
            name,
            f"{m['return_mean']:.1f} ± {m['return_std']:.1f}",
            f"{m['return_ratio']:.3f}",
            f"{m['ndcg']:.3f}",
            f"{m['kl_to_teacher']:.3g}",
            f"{m['kl_candidates']:.3g}",
            f"{m['action_mse']:.2e}",
        )
    console.print(table)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["methods"])
    ms = [summary["methods"][n] for n in names]
    x = np.arange(len(names))
    colors = [
        "tab:gray" if n in ("KD", "BC") else "tab:green" if n.startswith("OPO") else "tab:red"
        for n in names
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    ax.bar(
        x,
        [m["return_mean"] for m in ms],
        yerr=[m["return_std"] for m in ms],
        color=colors,
        capsize=3,
    )
    ax.axhline(summary["teacher_return"], color="k", ls="--", lw=1, label="teacher")
    ax.axhline(summary["random_return"], color="tab:blue", ls=":", lw=1, label="random policy")
    ax.set(title=f"{summary['env']}: return (mean ± std over seeds)", ylabel="return")
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    ax = axes[1]
    ax.bar(
        x,
        [m["kl_to_teacher"] for m in ms],
        yerr=[m["kl_to_teacher_std"] for m in ms],
        color=colors,
        capsize=3,
    )
    ax.set(title="KL(teacher ‖ student), held-out states", ylabel="nats (log scale)", yscale="log")
    ax = axes[2]
    ax.bar(x, [m["ndcg"] for m in ms], yerr=[m["ndcg_std"] for m in ms], color=colors, capsize=3)
    ax.set(
        title="NDCG@K of the candidate ranking",
        ylim=(min(0.5, min(m["ndcg"] for m in ms) - 0.05), 1.0),
    )
    for ax in axes:
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        DistillConfig,
        args=argv,
        prog="adpo bench distill",
        description=__doc__.split("\n\n")[0],
    )
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
