"""``adpo bench reasoning-long``: chain-of-thought RL with a long horizon and an OOD tier.

``adpo bench reasoning`` answers 2-digit additions in ≤ 4 tokens, too short for any of the
papers' claims to show. Here the completions are worked solutions
(:class:`adpo.data.chain_arithmetic.ChainArithmeticTask`: one line per intermediate result,
then ``\\boxed{answer}``; ~30 tokens on the training tier, ~40 on the OOD tier), and every
objective (adpo-pl, adpo, opo, grpo, gspo, dapo; :func:`adpo.trainers.loss_config`,
:func:`adpo.trainers.make_trainer`) is trained with the same tiny Qwen3, warm start, group
size, batch, generation settings and budget. Two experiments:

* ``long`` (OPO paper Exp. 1, ADPO paper §6.3): RL on tier 3 for ``long_steps`` steps;
  held-out tier-3 greedy accuracy every ``eval_every`` steps.
* ``ood`` (OPO paper Exp. 2): RL on a small fixed subset (``ood_fraction`` of the tier-3
  pool) for ``ood_steps`` steps (several epochs); held-out *tier-4* accuracy every
  ``eval_every`` steps (tier 4 has one more step than any chain the model was taught).

Protocol:

1. Warm start per seed: SFT on worked solutions of tiers ≤ 3 for ``warmup_steps`` (short
   on purpose: the model stays clearly imperfect); every objective and both experiments
   of a seed start from the same weights.
2. Learning rate per objective: the losses' scales differ by orders of magnitude, so each
   objective runs the ``long`` experiment once per value of ``lr_grid`` on
   ``sweep_seed`` (a seed of its own, not one of the reported ``seeds``) and keeps the
   value with the best validation accuracy (mean over the evaluations in the second half
   of training). ``fixed_lrs`` (``grpo=3e-4`` …) skips the sweep for an objective.
3. Both experiments for every objective and seed with the chosen learning rates; paired
   differences against GRPO on the same seed (same warm start).

Logged per step (``curves.csv``): training reward and its std, completion length, policy
entropy, gradient norm before clipping, the round's advantage range (``adv_range``,
max − min of the group-standardised advantages) and the gradient response efficiency
``grad_norm / (adv_range / 2)`` (OPO paper §7.1, fig. 7b), clip fractions (TRL's
``clip_ratio/*``; ADPO/OPO have no clip), held-out accuracy at the evaluation steps.
Per run (``runs.csv``): peak/final reward, collapse (:func:`detect_collapse`), accuracy
before/peak/final on tiers 3 and 4, length drift, entropy, gradient norm and efficiency
early and late (and late ÷ early, scale-free), wall time per step, load average, threads.

Run::

    adpo bench reasoning-long --out results/reasoning_long
    adpo bench reasoning-long --quick --out /tmp/rl-quick      # CI size, about a minute
    adpo bench reasoning-long --out DIR --replot               # summary/plots from the CSVs

The arms are :data:`ARMS`: each is an objective of :mod:`adpo.trainers.presets` at its
paper settings, optionally with config overrides; adding an arm is one line there, and its
runs pair with GRPO's on the same seeds, and with its objective's own arm when that runs
too. ``adpo-adaptive-tau`` is ADPO with the papers' adaptive temperature (the ``adpo`` arm
keeps this benchmark's constant τ 0.8)::

    adpo bench reasoning-long --losses adpo adpo-adaptive-tau grpo --experiments long \
        --fixed-lrs adpo=3e-5 adpo-adaptive-tau=3e-5 grpo=3e-5 --out DIR

``summary.json`` records the command and the environment (code version and commit,
TRL/transformers/accelerate versions, threads, device); ``--replot`` keeps them.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import tyro

from adpo._io import (
    HF_TRAINING,
    bench_command,
    console,
    prepare_out,
    provenance,
    read_csv,
    read_json,
    replot_provenance,
    timer,
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
from adpo.metrics import paired_differences
from adpo.trainers.presets import LOSSES, Loss

__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "QUICK",
    "ReasoningLongConfig",
    "detect_collapse",
    "main",
    "markdown_table",
    "replot",
    "run",
    "train_one",
]

Experiment = Literal["long", "ood"]

#: The benchmark's arms: name -> (objective of :data:`adpo.trainers.presets.LOSSES`,
#: overrides of that objective's config, which win over ``adpo_tau_schedule``). An arm is
#: one more entry of this dict; its runs pair with GRPO's and, when that objective runs
#: too, with the objective's own (``paired_vs_objective``).
ARMS: dict[str, tuple[Loss, dict[str, Any]]] = {
    **{loss: (loss, {}) for loss in LOSSES},  # every objective at its paper settings
    # ADPO with the papers' adaptive temperature (ADPO paper §6.3: τ_base 0.8, α 0.2, β 0.5,
    # one τ per prompt from its entropy and accuracy), beside `adpo` at this benchmark's
    # constant τ 0.8; not in the default `losses` (the committed runs predate it)
    "adpo-adaptive-tau": ("adpo", {"tau_schedule": "entropy_reward"}),
}
#: arms run by default: every objective at its paper settings
DEFAULT_ARMS: tuple[str, ...] = tuple(LOSSES)
#: an arm's name (``--losses`` choices)
Arm = Literal[tuple(ARMS)]  # type: ignore[valid-type]


@dataclass
class ReasoningLongConfig:
    """Every objective on worked multi-step arithmetic, long horizon and OOD. Every field is a CLI flag."""

    out: str = "runs/reasoning_long"
    """output folder"""
    losses: tuple[Arm, ...] = DEFAULT_ARMS
    """arms to run (:data:`ARMS`: the objectives, and e.g. `adpo-adaptive-tau`)"""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """reported seeds (model init, data split, sampling); ≥ 3 for mean ± std"""
    experiments: tuple[Experiment, ...] = ("long", "ood")
    """which experiments to run"""
    quick: bool = False
    """CI size (tiny model, a few steps, one seed, two lr values): replaces the sizes below"""
    device: Literal["cpu", "cuda"] = "cpu"
    """where to train and generate"""
    threads: int = 1
    """torch CPU threads (0: torch's default); one leaves the other cores to other jobs"""

    # ---- model and warm start
    hidden_size: int = 64
    """tiny Qwen3 width"""
    num_layers: int = 2
    """tiny Qwen3 depth"""
    warmup_tiers: tuple[int, ...] = (1, 2, 3)
    """tiers whose worked solutions the warm start trains on"""
    warmup_examples: int = 3000
    """worked solutions per warm-start tier"""
    warmup_steps: int = 400
    """SFT steps (batch 64); short, so the warm-started model stays clearly imperfect"""
    warmup_lr: float = 3e-3
    """SFT AdamW learning rate"""

    # ---- RL, shared by every objective
    train_tier: int = 3
    """tier the RL prompts come from"""
    ood_tier: int = 4
    """held-out tier of the `ood` experiment"""
    num_generations: int = 8
    """completions per prompt (G)"""
    prompts_per_step: int = 8
    """prompts (groups) per optimizer step"""
    steps_per_generation: int = 2
    """optimizer steps fed by one generation round (the second one is off-policy: clipping acts)"""
    temperature: float = 1.0
    """sampling temperature"""
    adpo_tau_schedule: Literal["constant", "entropy_reward", "guarded"] = "constant"
    """ADPO's temperature schedule (`ADPOConfig.tau_schedule`) in the `adpo-pl` and `adpo`
    arms: constant τ 0.8, this benchmark's protocol since its first run; the papers' LLM runs
    used `entropy_reward` (the `adpo-adaptive-tau` arm)"""
    completion_slack: int = 5
    """max completion length = the training tier's longest worked solution + this"""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """RL learning-rate schedule (constant: late-training dynamics are not damped by decay)"""
    max_grad_norm: float = 1.0
    """gradient clipping (the logged norm is before clipping)"""
    n_train: int = 2000
    """distinct tier-3 RL prompts (the `long` pool)"""
    n_test: int = 200
    """held-out prompts per evaluated tier (greedy accuracy)"""
    eval_every: int = 20
    """held-out accuracy every this many steps"""
    long_steps: int = 300
    """optimizer steps of the `long` experiment"""
    ood_steps: int = 200
    """optimizer steps of the `ood` experiment"""
    ood_fraction: float = 0.1
    """share of the tier-3 pool the `ood` experiment trains on (a fixed subset per seed)"""

    # ---- learning rates
    lr_grid: tuple[float, ...] = (3e-5, 1e-4, 3e-4, 1e-3)
    """learning rates each objective tries on `sweep_seed` (one value: no sweep)"""
    sweep_seed: int = 100
    """seed of the learning-rate sweep (kept apart from the reported seeds)"""
    fixed_lrs: tuple[str, ...] = ()
    """`loss=lr` entries that skip the sweep for that objective (e.g. grpo=3e-4)"""

    # ---- analysis
    collapse_fraction: float = 0.5
    """collapse: the smoothed reward falls below this fraction of its peak and stays there"""
    collapse_min_peak: float = 0.05
    """runs whose smoothed peak reward is below this cannot collapse"""
    late_fraction: float = 0.25
    """the first/last this fraction of steps is "early"/"late" (gradients, length, entropy)"""
    plot: bool = True
    """write the PNG plots"""
    replot: bool = False
    """train nothing: rebuild summary.json, table.md and plots from the CSVs in `out`"""

    def __post_init__(self) -> None:
        from adpo.data.chain_arithmetic import TIERS

        name = "ReasoningLongConfig"
        if not self.seeds or not self.losses or not self.experiments:
            raise ValueError(f"{name}: `seeds`, `losses` and `experiments` must be non-empty")
        bad = [x for x in self.losses if x not in ARMS]
        if bad:
            raise ValueError(f"{name}: `losses` must be among {tuple(ARMS)}, got {bad}")
        bad = [x for x in self.experiments if x not in ("long", "ood")]
        if bad:
            raise ValueError(f"{name}: `experiments` must be among ('long', 'ood'), got {bad}")
        for f in ("train_tier", "ood_tier"):
            if getattr(self, f) not in TIERS:
                raise ValueError(
                    f"{name}: `{f}` must be one of {sorted(TIERS)}, got {getattr(self, f)}"
                )
        bad = [t for t in self.warmup_tiers if t not in TIERS]
        if bad or not self.warmup_tiers:
            raise ValueError(
                f"{name}: `warmup_tiers` must be a non-empty subset of {sorted(TIERS)}, got "
                f"{self.warmup_tiers}"
            )
        if self.ood_tier in self.warmup_tiers:
            raise ValueError(
                f"{name}: `ood_tier` {self.ood_tier} is one of the `warmup_tiers` "
                f"{self.warmup_tiers}; out of distribution means unseen"
            )
        for f in (
            "hidden_size",
            "num_layers",
            "warmup_examples",
            "prompts_per_step",
            "steps_per_generation",
            "n_train",
            "n_test",
            "eval_every",
            "long_steps",
            "ood_steps",
        ):
            if getattr(self, f) < 1:
                raise ValueError(f"{name}: `{f}` must be >= 1, got {getattr(self, f)}")
        for f in ("warmup_steps", "completion_slack", "threads"):
            if getattr(self, f) < 0:
                raise ValueError(f"{name}: `{f}` must be >= 0, got {getattr(self, f)}")
        if self.num_generations < 2:
            raise ValueError(f"{name}: `num_generations` must be >= 2, got {self.num_generations}")
        for f in ("warmup_lr", "temperature", "max_grad_norm"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: `{f}` must be finite and > 0, got {v}")
        if not self.lr_grid or not all(math.isfinite(x) and x > 0 for x in self.lr_grid):
            raise ValueError(
                f"{name}: `lr_grid` must hold one or more finite values > 0, got {self.lr_grid}"
            )
        for f in ("ood_fraction", "late_fraction", "collapse_fraction"):
            v = getattr(self, f)
            if not 0 < v <= 1:
                raise ValueError(f"{name}: `{f}` must lie in (0, 1], got {v}")
        if not 0 <= self.collapse_min_peak < 1:
            raise ValueError(
                f"{name}: `collapse_min_peak` must lie in [0, 1), got {self.collapse_min_peak}"
            )
        if round(self.ood_fraction * self.n_train) < self.prompts_per_step:
            raise ValueError(
                f"{name}: `ood_fraction`·`n_train` = {self.ood_fraction * self.n_train:g} prompts "
                f"is fewer than one step's `prompts_per_step` ({self.prompts_per_step})"
            )
        if self.sweep_seed in self.seeds and len(self.lr_grid) > 1:
            raise ValueError(
                f"{name}: `sweep_seed` {self.sweep_seed} is one of the reported `seeds` "
                f"{self.seeds}; the sweep picks on a seed of its own"
            )
        self.fixed_lr_map()  # validates `fixed_lrs`
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"{name}: `device` is 'cuda' but torch sees no CUDA device")

    def fixed_lr_map(self) -> dict[str, float]:
        """``fixed_lrs`` as ``{loss: lr}`` (checked)."""
        out: dict[str, float] = {}
        for entry in self.fixed_lrs:
            loss, sep, value = entry.partition("=")
            try:
                lr = float(value)
            except ValueError:
                lr = math.nan
            if not sep or loss not in ARMS or not (math.isfinite(lr) and lr > 0):
                raise ValueError(
                    f"ReasoningLongConfig: `fixed_lrs` entries are `loss=lr` with a loss of "
                    f"{tuple(ARMS)} and a finite lr > 0, got {entry!r}"
                )
            out[loss] = lr
        return out


#: what `--quick` replaces (CI size: about a minute on one CPU thread)
QUICK: dict[str, Any] = dict(
    seeds=(0,),
    warmup_examples=400,
    warmup_steps=120,
    num_generations=4,
    prompts_per_step=2,
    n_train=80,
    n_test=16,
    eval_every=2,
    long_steps=4,
    ood_steps=4,
    ood_fraction=0.25,
    lr_grid=(3e-4, 1e-3),
)


def quick_config(cfg: ReasoningLongConfig) -> ReasoningLongConfig:
    """``cfg`` with the :data:`QUICK` sizes (the ``--quick`` flag)."""
    return replace(cfg, **{**QUICK, "quick": True})


# --------------------------------------------------------------------------- analysis


def moving_mean(xs: list[float], window: int) -> list[float]:
    """Trailing moving mean (the first ``window − 1`` values average what exists so far)."""
    if window < 1:
        raise ValueError(f"moving_mean: `window` must be >= 1, got {window}")
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= window:
            acc -= xs[i - window]
        out.append(acc / min(i + 1, window))
    return out


def detect_collapse(
    rewards: list[float],
    *,
    fraction: float = 0.5,
    window: int | None = None,
    patience: int | None = None,
    min_peak: float = 0.05,
) -> dict[str, Any]:
    """Collapse of a reward curve: it falls below ``fraction`` × its peak and stays there.

    ``rewards`` are per generation round (NaNs are dropped). They are smoothed by a
    trailing moving mean of ``window`` points (default ``max(len/10, 3)``, so one bad
    round is not a collapse); the peak is the maximum of the smoothed curve. The run
    collapsed when, after the peak, the smoothed curve goes below ``fraction·peak`` and
    never comes back up to it, for at least ``patience`` points (default
    ``max(len/10, 3)``) up to the end. A curve whose peak is below ``min_peak`` (nothing
    learnt, nothing to lose) never collapses.

    Returns:
        ``{"collapsed": bool, "index": first point of the stay below (or None),
        "peak": smoothed peak, "peak_index": its position, "final": last smoothed value}``
        (indices into the NaN-free curve).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"detect_collapse: `fraction` must lie in (0, 1), got {fraction}")
    xs = [float(x) for x in rewards if not math.isnan(float(x))]
    if not xs:
        return {
            "collapsed": False,
            "index": None,
            "peak": math.nan,
            "peak_index": None,
            "final": math.nan,
        }
    n = len(xs)
    window = window or max(n // 10, 3)
    patience = patience or max(n // 10, 3)
    sm = moving_mean(xs, window)
    peak_i = max(range(n), key=lambda i: sm[i])
    peak = sm[peak_i]
    result = {
        "collapsed": False,
        "index": None,
        "peak": peak,
        "peak_index": peak_i,
        "final": sm[-1],
    }
    if peak < min_peak:
        return result
    start = None  # first index of the final stretch below the threshold
    for i in range(n - 1, peak_i, -1):
        if sm[i] < fraction * peak:
            start = i
        else:
            break
    if start is not None and n - start >= patience:
        result.update(collapsed=True, index=start)
    return result


# --------------------------------------------------------------------------- data and warm start


@dataclass
class SeedData:
    """One seed's warm-started model and data split (shared by every objective)."""

    seed: int
    model: Any
    tokenizer: Any
    train_rows: list[dict]  # the tier-3 RL pool (`long`)
    ood_train_rows: list[dict]  # the fixed subset (`ood`)
    test: dict[int, list[dict]]  # tier -> held-out rows
    accuracy: dict[int, float]  # warm-start greedy accuracy per tier
    time_s: float


def _setup(cfg: ReasoningLongConfig) -> None:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def split(
    cfg: ReasoningLongConfig, seed: int
) -> tuple[list[dict], list[dict], dict[int, list[dict]]]:
    """(warm-start rows, tier-3 RL pool, held-out rows per tier): disjoint by prompt."""
    from adpo.data.chain_arithmetic import ChainArithmeticTask

    test = {
        t: ChainArithmeticTask(t).sample_distinct(cfg.n_test, seed=10_000 + seed)
        for t in sorted({cfg.train_tier, cfg.ood_tier})
    }
    held = {r["prompt"] for rows in test.values() for r in rows}
    warm: list[dict] = []
    for t in cfg.warmup_tiers:
        task = ChainArithmeticTask(t)
        rows = [
            r
            for r in task.sample(cfg.warmup_examples * 2, seed=20_000 + seed)
            if r["prompt"] not in held
        ]
        warm += rows[: cfg.warmup_examples]
    seen = held | {r["prompt"] for r in warm}
    pool = ChainArithmeticTask(cfg.train_tier).sample_distinct(
        cfg.n_train, 30_000 + seed, exclude=seen
    )
    return warm, pool, test


def accuracy(cfg: ReasoningLongConfig, model: Any, tok: Any, rows: list[dict], tier: int) -> float:
    """Greedy accuracy on ``rows`` of ``tier`` (room for its longest worked solution + slack)."""
    from adpo.data.chain_arithmetic import ChainArithmeticTask
    from adpo.rewards import boxed_integer_score
    from adpo.trainers.warm_start import greedy_accuracy

    n = ChainArithmeticTask(tier).max_completion_tokens() + cfg.completion_slack
    return greedy_accuracy(model, tok, rows, boxed_integer_score, max_new_tokens=n)


def warm_start(cfg: ReasoningLongConfig, seed: int) -> SeedData:
    """Tiny Qwen3, SFT on worked solutions of ``warmup_tiers``: the reference policy of a seed."""
    _setup(cfg)
    import torch

    from adpo.testing import char_tokenizer, tiny_qwen3
    from adpo.trainers.warm_start import supervised_warm_start

    torch.manual_seed(seed)
    warm, pool, test = split(cfg, seed)
    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, seed=seed)
    model.to(cfg.device)
    elapsed = timer()
    sft_rows = [{"prompt": r["prompt"], "answer": r["solution"]} for r in warm]
    supervised_warm_start(model, tok, sft_rows, steps=cfg.warmup_steps, lr=cfg.warmup_lr, seed=seed)
    t = elapsed()
    acc = {tier: accuracy(cfg, model, tok, rows, tier) for tier, rows in test.items()}
    n_ood = round(cfg.ood_fraction * cfg.n_train)
    console.print(
        f"seed {seed}: warm start {cfg.warmup_steps} SFT steps on {len(warm)} worked solutions "
        f"(tiers {list(cfg.warmup_tiers)}) in {t:.0f} s; greedy accuracy "
        + ", ".join(f"tier {k} {v:.3f}" for k, v in acc.items())
    )
    rl = [{"prompt": r["prompt"], "answer": r["answer"]} for r in pool]
    return SeedData(seed, model, tok, rl, rl[:n_ood], test, acc, t)


# --------------------------------------------------------------------------- one run


class RoundRecorder:
    """The reward function of every run: :func:`adpo.rewards.chain_arithmetic_reward`, plus a
    record of each generation round's rewards (for the advantage range).

    TRL calls the reward once per round on the round's ``N = (N/G)·G`` completions, each
    prompt's ``G`` completions consecutive; :meth:`adv_range` standardises them per group
    with :func:`adpo.losses.group_advantages` and returns ``max − min`` over the round.
    """

    __name__ = "chain_arithmetic_reward"

    def __init__(self, num_generations: int):
        self.G = num_generations
        self.rounds: list[list[float]] = []

    def __call__(
        self, prompts: list, completions: list, answer: list, **kwargs: Any
    ) -> list[float]:
        from adpo.rewards import chain_arithmetic_reward

        rewards = chain_arithmetic_reward(completions, answer)
        G = self.G
        if len(rewards) % G == 0 and all(
            len(set(map(str, prompts[i : i + G]))) == 1 for i in range(0, len(prompts), G)
        ):
            self.rounds.append(list(rewards))
        else:  # not the layout we rely on: record nothing rather than a wrong range
            self.rounds.append([])
        return rewards

    def adv_range(self, i: int) -> float:
        import torch

        from adpo.losses import group_advantages

        if i >= len(self.rounds) or not self.rounds[i]:
            return math.nan
        r = torch.tensor(self.rounds[i], dtype=torch.float64).view(-1, self.G)  # (B, G)
        a = group_advantages(r)  # (B, G)
        return float(a.max() - a.min())


_STEP_KEYS = {  # per-step log keys kept in curves.csv (TRL's name -> ours)
    "reward": "reward",
    "reward_std": "reward_std",
    "completions/mean_length": "length",
    "completions/clipped_ratio": "truncated_frac",
    "entropy": "entropy",
    "grad_norm": "grad_norm",
    "clip_ratio/region_mean": "clip_frac",
    "clip_ratio/low_mean": "clip_frac_low",
    "clip_ratio/high_mean": "clip_frac_high",
    "frac_reward_zero_std": "zero_signal_frac",
    "step_time": "trainer_step_time",
    "tau": "tau",  # ADPO's temperature (mean over the step's prompts); NaN for the others
}


def train_one(
    cfg: ReasoningLongConfig, data: SeedData, experiment: Experiment, loss: str, lr: float
) -> dict[str, Any]:
    """One RL run of arm ``loss`` (:data:`ARMS`) from ``data.model`` (copied; the warm start
    stays pristine).

    Returns ``{"per_step": {key: [value per step]}, "accuracy_curve": [(step, acc)],
    "accuracy_final": {tier: acc}, "train_time_s", "steps"}``.
    """
    _setup(cfg)
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback

    from adpo.data.chain_arithmetic import ChainArithmeticTask
    from adpo.trainers.presets import loss_config, make_trainer

    torch.manual_seed(data.seed)
    model = copy.deepcopy(data.model)
    tok = data.tokenizer
    steps = cfg.long_steps if experiment == "long" else cfg.ood_steps
    eval_tier = cfg.train_tier if experiment == "long" else cfg.ood_tier
    rows = data.train_rows if experiment == "long" else data.ood_train_rows
    G = cfg.num_generations
    objective, overrides = ARMS[loss]
    if objective in ("adpo-pl", "adpo"):  # an arm's own schedule wins
        overrides = {"tau_schedule": cfg.adpo_tau_schedule, **overrides}
    scratch = tempfile.mkdtemp(prefix="adpo-reasoning-long-")  # TRL's output_dir; nothing is saved
    args = loss_config(
        objective,
        **overrides,
        output_dir=scratch,
        num_generations=G,
        per_device_train_batch_size=cfg.prompts_per_step * G,
        steps_per_generation=cfg.steps_per_generation,
        max_completion_length=ChainArithmeticTask(cfg.train_tier).max_completion_tokens()
        + cfg.completion_slack,
        temperature=cfg.temperature,
        learning_rate=lr,
        lr_scheduler_type=cfg.lr_scheduler,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=False,
        use_cpu=cfg.device == "cpu",
        seed=data.seed,
        data_seed=data.seed,
        disable_tqdm=True,
        max_grad_norm=cfg.max_grad_norm,
        gradient_checkpointing=False,
    )
    curve: list[tuple[int, float]] = [(0, data.accuracy[eval_tier])]
    step_ends: list[float] = []

    class _Eval(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())
            s = state.global_step
            if s % cfg.eval_every == 0 and s < steps:
                curve.append((s, accuracy(cfg, model, tok, data.test[eval_tier], eval_tier)))

    reward = RoundRecorder(G)
    trainer = make_trainer(
        objective, model, reward, args, Dataset.from_list(rows), tok, callbacks=[_Eval()]
    )
    trainer.remove_callback(PrinterCallback)
    elapsed = timer()
    try:
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    train_time = elapsed()
    final = {t: accuracy(cfg, model, tok, r, t) for t, r in data.test.items()}
    curve.append((steps, final[eval_tier]))

    by_step: dict[int, dict] = {}
    for h in trainer.state.log_history:
        if "step" in h and "train_runtime" not in h:
            by_step.setdefault(int(h["step"]), {}).update(h)
    n = steps
    per_step: dict[str, list[float]] = {
        ours: [float(by_step.get(s, {}).get(theirs, math.nan)) for s in range(1, n + 1)]
        for theirs, ours in _STEP_KEYS.items()
    }
    spg = cfg.steps_per_generation
    per_step["adv_range"] = [reward.adv_range((s - 1) // spg) for s in range(1, n + 1)]
    per_step["grad_efficiency"] = [
        g / (0.5 * a) if a and not math.isnan(a) and a > 0 else math.nan
        for g, a in zip(per_step["grad_norm"], per_step["adv_range"], strict=True)
    ]
    # the round's reward holds for the steps it feeds (TRL logs it on the generating step)
    for key in ("reward", "reward_std", "length", "truncated_frac", "zero_signal_frac"):
        vals = per_step[key]
        for s in range(n):
            if math.isnan(vals[s]) and s % spg:
                vals[s] = vals[s - s % spg]
    per_step["round_start"] = [float(s % spg == 0) for s in range(n)]
    return {
        "per_step": per_step,
        "accuracy_curve": curve,
        "accuracy_final": final,
        "train_time_s": train_time,
        "steps": n,
    }


def summarize_run(cfg: ReasoningLongConfig, res: dict[str, Any]) -> dict[str, Any]:
    """The per-run numbers of ``runs.csv`` from one :func:`train_one` result."""
    ps, n = res["per_step"], res["steps"]
    late = max(round(n * cfg.late_fraction), 1)
    rounds = [r for r, first in zip(ps["reward"], ps["round_start"], strict=True) if first]
    col = detect_collapse(rounds, fraction=cfg.collapse_fraction, min_peak=cfg.collapse_min_peak)
    accs = [a for s, a in res["accuracy_curve"] if s > 0]
    half = [a for s, a in res["accuracy_curve"] if s >= n / 2] or accs
    gn, ge = ps["grad_norm"], ps["grad_efficiency"]
    spg = cfg.steps_per_generation
    k = max(len(rounds) // 10, 1)
    out = {
        "accuracy_peak": max(accs) if accs else math.nan,
        "accuracy_final": res["accuracy_curve"][-1][1],
        "accuracy_late_mean": nanmean(half),
        "reward_first": nanmean(rounds[:k]),
        "reward_peak": col["peak"],
        "reward_final": nanmean(rounds[-k:]),
        "collapsed": int(col["collapsed"]),
        "collapse_step": (col["index"] * spg + 1) if col["collapsed"] else math.nan,
        "length_early": nanmean(ps["length"][:late]),
        "length_late": nanmean(ps["length"][-late:]),
        "truncated_frac_late": nanmean(ps["truncated_frac"][-late:]),
        "entropy_early": nanmean(ps["entropy"][:late]),
        "entropy_late": nanmean(ps["entropy"][-late:]),
        "grad_norm_early": nanmean(gn[:late]),
        "grad_norm_late": nanmean(gn[-late:]),
        "grad_norm_late_over_early": ratio(nanmean(gn[-late:]), nanmean(gn[:late])),
        "grad_efficiency_early": nanmean(ge[:late]),
        "grad_efficiency_late": nanmean(ge[-late:]),
        "grad_efficiency_late_over_early": ratio(nanmean(ge[-late:]), nanmean(ge[:late])),
        "clip_frac_mean": nanmean(ps["clip_frac"]),
        "tau_mean": nanmean(ps["tau"]),
        "step_time_s": res["train_time_s"] / max(n, 1),
        "train_time_s": res["train_time_s"],
    }
    for tier, acc in res["accuracy_final"].items():
        out[f"accuracy_final_tier{tier}"] = acc
    return out


# --------------------------------------------------------------------------- the bench


def run(cfg: ReasoningLongConfig, *, command: str | None = None) -> dict[str, Any]:
    """Sweep, then every experiment × objective × seed; writes the CSVs after every run.

    ``command``: the command line recorded with the results (default: this process's).
    """
    import torch

    out = prepare_out(cfg.out)
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    _setup(cfg)

    def one(phase: str, data: SeedData, experiment: Experiment, loss: str, lr: float) -> dict:
        load_before = os.getloadavg()[0]
        res = train_one(cfg, data, experiment, loss, lr)
        row = {
            "phase": phase,
            "experiment": experiment,
            "loss": loss,
            "seed": data.seed,
            "lr": lr,
            "accuracy_before": data.accuracy[
                cfg.train_tier if experiment == "long" else cfg.ood_tier
            ],
            **{f"accuracy_before_tier{t}": a for t, a in data.accuracy.items()},
            **summarize_run(cfg, res),
            "warm_start_time_s": data.time_s,
            "load_average": 0.5 * (load_before + os.getloadavg()[0]),
            "threads": torch.get_num_threads(),
            "device": cfg.device,
        }
        rows.append(row)
        tag = {"phase": phase, "experiment": experiment, "loss": loss, "seed": data.seed, "lr": lr}
        ps = res["per_step"]
        for i in range(res["steps"]):
            curves.append({**tag, "step": i + 1, **{k: v[i] for k, v in ps.items()}})
        for s, a in res["accuracy_curve"]:
            curves.append({**tag, "step": s, "heldout_accuracy": a})
        write_csv(out / "runs.csv", rows)
        write_csv(out / "curves.csv", curves)
        console.print(
            f"{phase:5s} {experiment:4s} seed {data.seed} {loss:8s} lr {lr:.0e}: accuracy "
            f"{row['accuracy_before']:.3f} → {row['accuracy_final']:.3f} (peak {row['accuracy_peak']:.3f}), "
            f"reward peak {row['reward_peak']:.3f} final {row['reward_final']:.3f}"
            f"{' COLLAPSED' if row['collapsed'] else ''}, {row['step_time_s']:.2f} s/step, "
            f"load {row['load_average']:.1f}"
        )
        return row

    chosen = dict(cfg.fixed_lr_map())
    to_sweep = [x for x in cfg.losses if x not in chosen]
    if len(cfg.lr_grid) == 1:
        chosen.update({x: cfg.lr_grid[0] for x in to_sweep})
    elif to_sweep:
        data = warm_start(cfg, cfg.sweep_seed)
        for loss in to_sweep:
            scores = [
                (one("sweep", data, "long", loss, lr)["accuracy_late_mean"], lr)
                for lr in cfg.lr_grid
            ]
            best = max(scores, key=lambda t: (-math.inf if math.isnan(t[0]) else t[0], -t[1]))
            chosen[loss] = best[1]
            console.print(
                f"lr sweep {loss}: "
                + ", ".join(f"{lr:.0e} → {s:.3f}" for s, lr in scores)
                + f"; chosen {best[1]:.0e}"
            )
        del data
    for seed in cfg.seeds:
        data = warm_start(cfg, seed)
        for experiment in cfg.experiments:
            for loss in cfg.losses:
                one("main", data, experiment, loss, chosen[loss])
        del data
    wall = time.perf_counter() - t_start
    prov = {
        "wall_time_s": wall,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "chosen_lr": chosen,
        **provenance(HF_TRAINING, device=cfg.device, command=command),
    }
    return _report(cfg, out, rows, curves, prov)


#: run-time fields of a summary that a replot keeps (with the command and the environment;
#: ``commands``/``wall_time_s_parts``/``parts``: a result joined from runs over parts of the
#: seeds, and how they were joined)
RUN_FIELDS = (
    "wall_time_s",
    "load_average_start",
    "load_average_end",
    "commands",
    "wall_time_s_parts",
    "parts",
)


def replot(cfg: ReasoningLongConfig, *, command: str | None = None) -> dict[str, Any]:
    """Summary, table and plots from the CSVs in ``cfg.out`` (no training); the recorded
    command, environment and wall time of the runs are kept (:func:`adpo._io.replot_provenance`)."""
    out = Path(cfg.out)
    rows, curves = read_csv(out / "runs.csv"), read_csv(out / "curves.csv")
    if not rows:
        raise ValueError(f"adpo bench reasoning-long --replot: {out / 'runs.csv'} has no runs")
    main_rows = [r for r in rows if r["phase"] == "main"] or rows
    cfg = replace(
        cfg,
        losses=tuple(dict.fromkeys(r["loss"] for r in main_rows)),
        seeds=tuple(dict.fromkeys(r["seed"] for r in main_rows)),
        experiments=tuple(dict.fromkeys(r["experiment"] for r in main_rows)),
    )
    prov = replot_provenance(read_json(out / "summary.json"), keep=RUN_FIELDS, command=command)
    prov["chosen_lr"] = {r["loss"]: r["lr"] for r in main_rows}
    return _report(cfg, out, rows, curves, prov)


METRICS = (
    "accuracy_before",
    "accuracy_final",
    "accuracy_peak",
    "accuracy_late_mean",
    "reward_peak",
    "reward_final",
    "collapsed",
    "length_early",
    "length_late",
    "entropy_early",
    "entropy_late",
    "grad_norm_late_over_early",
    "grad_efficiency_early",
    "grad_efficiency_late",
    "clip_frac_mean",
    "step_time_s",
)
PAIRED = (
    "accuracy_final",
    "accuracy_peak",
    "accuracy_late_mean",
    "reward_first",
    "reward_peak",
    "reward_final",
    "entropy_late",
    "length_late",
)


def _summarize(cfg: ReasoningLongConfig, rows: list[dict], prov: dict) -> dict[str, Any]:
    main_rows = [r for r in rows if r["phase"] == "main"]
    per: dict[str, Any] = {}
    paired: dict[str, Any] = {}
    vs_objective: dict[str, Any] = {}
    for exp in cfg.experiments:
        mine = [r for r in main_rows if r["experiment"] == exp]
        per[exp] = {}
        for loss in cfg.losses:
            rs = [r for r in mine if r["loss"] == loss]
            if not rs:
                continue
            per[exp][loss] = {
                m: dict(
                    zip(
                        ("mean", "std"),
                        seed_mean_std([float(r.get(m, math.nan)) for r in rs]),
                        strict=True,
                    )
                )
                for m in METRICS
            }
            per[exp][loss]["n_seeds"] = len(rs)
            per[exp][loss]["n_collapsed"] = int(sum(r["collapsed"] for r in rs))
            per[exp][loss]["lr"] = rs[0]["lr"]
        paired[exp] = paired_differences(mine, PAIRED, base="grpo", by="loss", pair="seed")
        for arm in cfg.losses:  # an objective at other settings against its paper settings
            objective = ARMS[arm][0]
            if arm != objective and objective in cfg.losses:
                both = [r for r in mine if r["loss"] in (arm, objective)]
                diffs = paired_differences(both, PAIRED, base=objective, by="loss", pair="seed")
                if arm in diffs:
                    vs_objective.setdefault(exp, {})[arm] = {"base": objective, **diffs[arm]}
    sweep = [
        {
            k: r[k]
            for k in (
                "loss",
                "lr",
                "accuracy_late_mean",
                "accuracy_final",
                "reward_peak",
                "collapsed",
            )
        }
        for r in rows
        if r["phase"] == "sweep"
    ]

    def get(exp: str, loss: str, m: str) -> float | None:
        v = per.get(exp, {}).get(loss, {}).get(m, {}).get("mean")
        return None if v is None or math.isnan(v) else v

    def diff(exp: str, loss: str, m: str) -> float | None:
        v = paired.get(exp, {}).get(loss, {}).get(m, {}).get("mean")
        return None if v is None or math.isnan(v) else v

    seq, tok = ("adpo-pl", "adpo", "opo", "gspo"), ("grpo", "dapo")
    ent = {loss: get("long", loss, "entropy_late") for loss in cfg.losses}
    claims = {
        # ADPO paper fig. 3: GRPO collapses (~step 40), ADPO-PL stays stable
        "collapsed_runs_long": {
            loss: per.get("long", {}).get(loss, {}).get("n_collapsed") for loss in cfg.losses
        },
        # ADPO paper: +30.9 % peak reward over GRPO
        "adpo_pl_minus_grpo_peak_reward": diff("long", "adpo-pl", "reward_peak"),
        "adpo_minus_grpo_peak_reward": diff("long", "adpo", "reward_peak"),
        "adpo_pl_minus_gspo_peak_reward": (
            None
            if get("long", "adpo-pl", "reward_peak") is None
            or get("long", "gspo", "reward_peak") is None
            else get("long", "adpo-pl", "reward_peak") - get("long", "gspo", "reward_peak")
        ),
        # OPO Exp. 1: late crossover (OPO − GRPO reward, early vs final) ...
        # (a crossover: OPO behind GRPO in the first rounds, ahead in the last)
        "opo_minus_grpo_first_reward": diff("long", "opo", "reward_first"),
        "opo_minus_grpo_final_reward": diff("long", "opo", "reward_final"),
        # ... and gradients that do not vanish as reward rises (scale-free)
        "grad_norm_late_over_early": {
            loss: get("long", loss, "grad_norm_late_over_early") for loss in cfg.losses
        },
        "grad_efficiency_late": {
            loss: get("long", loss, "grad_efficiency_late") for loss in cfg.losses
        },
        # OPO Exp. 2: OOD accuracy (48 % vs 44 % on MATH L4)
        "ood_accuracy_final_minus_grpo": {
            loss: diff("ood", loss, "accuracy_final") for loss in cfg.losses if loss != "grpo"
        },
        # OPO fig. 8: sequence-level objectives keep more entropy than token-level ones
        "entropy_late_sequence_level_mean": nanmean(
            [v for k, v in ent.items() if k in seq and v is not None]
        ),
        "entropy_late_token_level_mean": nanmean(
            [v for k, v in ent.items() if k in tok and v is not None]
        ),
    }
    return {
        "per_objective": per,
        "paired_vs_grpo": paired,
        "paired_vs_objective": vs_objective,
        "lr_sweep": sweep,
        "claims": claims,
        "config": asdict(cfg),
        **prov,
    }


_COLUMNS = (  # (header, metric, decimals)
    ("lr", None, 0),
    ("acc before", "accuracy_before", 3),
    ("final acc", "accuracy_final", 3),
    ("peak acc", "accuracy_peak", 3),
    ("peak reward", "reward_peak", 3),
    ("final reward", "reward_final", 3),
    ("collapsed", None, 0),
    ("length early→late", None, 0),
    ("entropy late", "entropy_late", 3),
    ("grad late/early", "grad_norm_late_over_early", 2),
    ("GRE late", "grad_efficiency_late", 2),
    ("clip frac", "clip_frac_mean", 3),
    ("s/step", "step_time_s", 2),
)


def _cells(m: dict[str, Any]) -> list[str]:
    cells = []
    for head, key, d in _COLUMNS:
        if head == "lr":
            cells.append(f"{m['lr']:.0e}")
        elif head == "collapsed":
            cells.append(f"{m['n_collapsed']}/{m['n_seeds']}")
        elif head.startswith("length"):
            cells.append(f"{m['length_early']['mean']:.1f} → {m['length_late']['mean']:.1f}")
        else:
            v = m[key]
            cells.append(
                "n/a" if math.isnan(v["mean"]) else f"{v['mean']:.{d}f} ± {v['std']:.{d}f}"
            )
    return cells


def markdown_table(summary: dict[str, Any]) -> str:
    """Per experiment: the objectives' table (mean ± std over seeds) and paired differences."""
    lines: list[str] = []
    names = {
        "long": "Long horizon (tier 3, held-out tier-3 accuracy)",
        "ood": "Out of distribution (10 % of tier 3, held-out tier-4 accuracy)",
    }
    for exp, per in summary["per_objective"].items():
        head = ["objective", *(h for h, _, _ in _COLUMNS)]
        lines += [
            f"### {names.get(exp, exp)}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for loss, m in per.items():
            lines.append("| " + " | ".join([f"`{loss}`", *_cells(m)]) + " |")
        paired = summary["paired_vs_grpo"].get(exp) or {}
        if paired:
            head = ["objective − grpo, same seed", *PAIRED]
            lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for loss, m in paired.items():
                cells = [paired_cell(m[k]) for k in PAIRED]
                lines.append("| " + " | ".join([f"`{loss}` ({m['n_seeds']} seeds)", *cells]) + " |")
            lines += ["", PAIRED_CELL_NOTE]
        own = (summary.get("paired_vs_objective") or {}).get(exp) or {}
        if own:
            head = ["arm − its objective's arm, same seed", *PAIRED]
            lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for arm, m in own.items():
                cells = [paired_cell(m[k]) for k in PAIRED]
                name = f"`{arm}` − `{m['base']}` ({m['n_seeds']} seeds)"
                lines.append("| " + " | ".join([name, *cells]) + " |")
            lines += ["", PAIRED_CELL_NOTE.replace("GRPO", "the objective's arm")]
        lines.append("")
    if summary.get("lr_sweep"):
        lines += [
            "### Learning-rate sweep (long horizon, sweep seed)",
            "",
            "| objective | lr | late held-out acc | final acc | peak reward | collapsed |",
            "|---|---|---|---|---|---|",
        ]
        for r in summary["lr_sweep"]:
            lines.append(
                f"| `{r['loss']}` | {r['lr']:.0e} | {r['accuracy_late_mean']:.3f} | "
                f"{r['accuracy_final']:.3f} | {r['reward_peak']:.3f} | {r['collapsed']} |"
            )
        lines.append("")
    lines += [f"Command: `{summary['command']}`", ""]
    return "\n".join(lines)


def _report(cfg, out: Path, rows, curves, prov) -> dict[str, Any]:
    summary = _summarize(cfg, rows, prov)
    write_json(out / "summary.json", summary)
    (out / "table.md").write_text(markdown_table(summary))
    if summary["command"]:
        (out / "command.txt").write_text(summary["command"] + "\n")
    if cfg.plot:
        _plots(cfg, [c for c in curves if c.get("phase") == "main"], out)
        for exp in cfg.experiments:
            mine = [r for r in rows if r.get("phase") == "main" and r["experiment"] == exp]
            if any(r["loss"] == "grpo" for r in mine) and len(mine) > 1:
                tier = cfg.train_tier if exp == "long" else cfg.ood_tier
                paired_plot(
                    mine,
                    [
                        ("accuracy_final", f"final tier-{tier} acc"),
                        ("reward_peak", "peak reward"),
                        ("reward_final", "final reward"),
                        ("entropy_late", "late entropy"),
                    ],
                    out / f"{exp}_paired.png",
                    title=f"{exp}: each objective − GRPO on the same seed",
                    labels={r["loss"]: f"{r['loss']} ({r['lr']:.0e})" for r in mine},
                )
        sweep = [r for r in rows if r.get("phase") == "sweep"]
        if len({r["lr"] for r in sweep}) > 1:
            _sweep_plot(cfg, sweep, out)
    console.print(markdown_table(summary))
    console.print(
        f"wrote {out}/runs.csv, curves.csv, summary.json, table.md, command.txt"
        + (" and plots" if cfg.plot else "")
    )
    return summary


def _plots(cfg: ReasoningLongConfig, curves: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def series(exp: str, loss: str, key: str) -> list[list[tuple[float, float]]]:
        per_seed = []
        for seed in cfg.seeds:
            pts = sorted(
                (r["step"], float(r[key]))
                for r in curves
                if r["experiment"] == exp
                and r["loss"] == loss
                and r["seed"] == seed
                and key in r
                and r[key] != ""
                and not math.isnan(float(r[key]))
            )
            if pts:
                per_seed.append(pts)
        return per_seed

    lr_of = {(r["experiment"], r["loss"]): r["lr"] for r in curves if "lr" in r}

    def label(exp: str, loss: str) -> str:  # objectives ran at different lrs: say which
        lr = lr_of.get((exp, loss))
        return loss if lr is None else f"{loss}, lr {float(lr):.0e}"

    def legend(ax: Any) -> None:
        ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))

    def panel(
        exp: str, key: str, ylabel: str, name: str, smooth: int = 1, log: bool = False
    ) -> None:
        fig, ax = plt.subplots(figsize=(7.8, 4))
        drawn = False
        for i, loss in enumerate(cfg.losses):
            per_seed = series(exp, loss, key)
            if not per_seed:
                continue
            steps, mu, sd = seed_band(per_seed, smooth)
            ax.plot(
                steps,
                mu,
                label=label(exp, loss),
                color=f"C{i}",
                lw=2 if loss in ("adpo-pl", "opo") else 1.3,
            )
            lo = np.maximum(mu - sd, mu / 10) if log else mu - sd  # log: a band above 0
            ax.fill_between(steps, lo, mu + sd, color=f"C{i}", alpha=0.12)
            drawn = True
        if drawn:
            legend(ax)
            if log:
                ax.set_yscale("log")
        ax.set_xlabel("RL optimizer step")
        ax.set_ylabel(ylabel + (" (log)" if log else ""))
        ax.set_title(f"{exp}: {ylabel} (mean ± std, {len(cfg.seeds)} seeds)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / f"{exp}_{name}.png", dpi=110)
        plt.close(fig)

    for exp in cfg.experiments:
        tier = cfg.train_tier if exp == "long" else cfg.ood_tier
        panel(exp, "heldout_accuracy", f"held-out tier-{tier} greedy accuracy", "accuracy")
        panel(exp, "reward", "training reward", "reward", smooth=9)
        panel(exp, "length", "completion length (tokens)", "length", smooth=9)
        panel(exp, "entropy", "policy entropy (nats/token)", "entropy", smooth=9)
        panel(exp, "grad_norm", "gradient norm (before clipping)", "grad_norm", smooth=9, log=True)
        panel(
            exp,
            "grad_efficiency",
            "gradient response efficiency",
            "grad_efficiency",
            smooth=9,
            log=True,
        )
        # OPO fig. 7a: gradient norm against mean reward (binned), each objective relative to
        # its own mean (all seeds pooled) so objectives with different loss scales share one axis
        fig, ax = plt.subplots(figsize=(7.8, 4))
        for i, loss in enumerate(cfg.losses):
            pts = [
                (float(r["reward"]), float(r["grad_norm"]))
                for r in curves
                if r["experiment"] == exp
                and r["loss"] == loss
                and r.get("reward", "") != ""
                and r.get("grad_norm", "") != ""
                and not math.isnan(float(r["reward"]))
                and not math.isnan(float(r["grad_norm"]))
            ]
            if len(pts) < 4:
                continue
            rw, gn = np.array(pts).T
            if not gn.mean() > 0:
                continue
            gn = gn / gn.mean()
            bins = np.linspace(0, 1, 11)
            idx = np.clip(np.digitize(rw, bins) - 1, 0, 9)
            xs = [(bins[b] + bins[b + 1]) / 2 for b in range(10) if (idx == b).sum() >= 3]
            ys = [gn[idx == b].mean() for b in range(10) if (idx == b).sum() >= 3]
            ax.plot(xs, ys, "o-", label=label(exp, loss), color=f"C{i}", ms=3)
        ax.set_xlabel("mean training reward of the step")
        ax.set_ylabel("gradient norm / the objective's mean (all seeds)")
        ax.set_title(f"{exp}: gradient norm against reward (binned)", fontsize=10)
        legend(ax)
        fig.tight_layout()
        fig.savefig(out / f"{exp}_grad_vs_reward.png", dpi=110)
        plt.close(fig)


def _sweep_plot(cfg: ReasoningLongConfig, sweep: list[dict[str, Any]], out: Path) -> None:
    """``lr_sweep.png``: per objective, late held-out accuracy and late completion length
    against the learning rate (collapsed runs marked ×): where each objective breaks, and how."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    panels = (
        ("accuracy_late_mean", "late held-out accuracy"),
        ("length_late", "late length (tokens)"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, loss in enumerate(cfg.losses):
            rs = sorted((float(r["lr"]), r) for r in sweep if r["loss"] == loss)
            if not rs:
                continue
            lrs = [lr for lr, _ in rs]
            ax.plot(lrs, [float(r[key]) for _, r in rs], "o-", color=f"C{i}", label=loss, ms=4)
            bad = [(lr, float(r[key])) for lr, r in rs if int(r["collapsed"])]
            if bad:
                ax.plot(*zip(*bad, strict=True), "x", color=f"C{i}", ms=11, mew=2)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(label)
    axes[0].legend(frameon=False, fontsize=8)
    fig.suptitle(
        f"learning-rate sweep, long horizon, seed {cfg.sweep_seed} (×: collapsed)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(out / "lr_sweep.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        ReasoningLongConfig,
        args=argv,
        prog="adpo bench reasoning-long",
        description=__doc__.split("\n\n")[0],
    )
    if cfg.quick:
        cfg = quick_config(cfg)
    command = bench_command("reasoning-long", argv)
    replot(cfg, command=command) if cfg.replot else run(cfg, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
