"""Online group RL on generated addition with a tiny model: the runner behind ``adpo demo``
and ``adpo bench reasoning``.

:func:`warm_start` builds the tiny tokenizer and Qwen3 (:mod:`adpo.testing`), draws
disjoint warm-start / RL / test problems (:class:`adpo.data.arithmetic.ArithmeticTask`) and
fine-tunes the model briefly (the reference policy); :func:`reinforce` runs one objective
(:func:`adpo.trainers.loss_config`) from it and measures held-out greedy accuracy.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Literal

from adpo._io import console, progress_bar, timer
from adpo.trainers.presets import Loss

__all__ = ["ArithmeticRLConfig", "WarmStart", "held_out_accuracy", "reinforce", "warm_start"]


@dataclass
class ArithmeticRLConfig:
    """Tiny-model online RL demo. Every field is a CLI flag (``--steps 40`` …)."""

    out: str | None = None
    """output folder for summary.json and reward_curve.png (None: print only)"""
    loss: Loss = "adpo-pl"
    """objective (see `adpo train --help`); GRPO/GSPO/DAPO run through TRL's GRPOTrainer"""
    steps: int = 1200
    """RL optimizer steps"""
    seed: int = 0
    """seed of the model, the data and the sampler"""
    digits: int = 2
    """operand digits of the addition problems"""
    hidden_size: int = 64
    """tiny Qwen3 width"""
    num_layers: int = 2
    """tiny Qwen3 depth"""
    warmup_steps: int = 900
    """supervised warm-start steps (the warm-started model is the reference policy)"""
    warmup_examples: int = 4000
    """size of the fixed set of solved problems the warm start sees"""
    warmup_lr: float = 3e-3
    """warm-start AdamW learning rate"""
    num_generations: int = 8
    """completions per prompt (G)"""
    prompts_per_step: int = 16
    """prompts (groups) per optimizer step"""
    steps_per_generation: int = 2
    """optimizer steps fed by one generation round (mini-batches sharing one anchor)"""
    lr: float = 3e-4
    """RL learning rate (AdamW)"""
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"
    """RL learning-rate schedule (linear: decays to 0 at the last step, a steadier end point)"""
    temperature: float = 1.0
    """sampling temperature"""
    adpo_tau_schedule: Literal["constant", "entropy_reward", "guarded"] = "constant"
    """ADPO's temperature schedule (`ADPOConfig.tau_schedule`): constant τ 0.8, this
    benchmark's protocol since its first run; the papers' LLM runs used `entropy_reward`"""
    n_train: int = 4000
    """distinct RL training prompts"""
    n_test: int = 500
    """held-out test prompts (greedy accuracy)"""
    eval_every: int = 200
    """also measure held-out accuracy every this many steps (0: only before and after)"""
    threads: int = 1
    """torch CPU threads (0: torch's default). One is as fast for a model this small, and it
    stays fast when other jobs share the cores (more threads than free cores spin and were
    8× slower on our 2-core machine)"""
    plot: bool = True
    """write reward_curve.png"""
    progress: bool = True
    """show progress bars"""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"ArithmeticRLConfig: `steps` must be >= 1, got {self.steps}")
        if self.num_generations < 2:
            raise ValueError(
                f"ArithmeticRLConfig: `num_generations` must be >= 2, got {self.num_generations}"
            )
        if self.prompts_per_step < 1 or self.steps_per_generation < 1:
            raise ValueError(
                "ArithmeticRLConfig: `prompts_per_step` and `steps_per_generation` must be >= 1, got "
                f"{self.prompts_per_step}, {self.steps_per_generation}"
            )
        if self.warmup_steps < 0 or self.warmup_examples < 1:
            raise ValueError(
                "ArithmeticRLConfig: need warmup_steps >= 0 and warmup_examples >= 1, got "
                f"{self.warmup_steps}, {self.warmup_examples}"
            )
        if self.threads < 0:
            raise ValueError(f"ArithmeticRLConfig: `threads` must be >= 0, got {self.threads}")
        if self.eval_every < 0:
            raise ValueError(
                f"ArithmeticRLConfig: `eval_every` must be >= 0, got {self.eval_every}"
            )


def _split(cfg: ArithmeticRLConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """(warm-start rows, RL rows, test rows): disjoint by prompt."""
    from adpo.data.arithmetic import ArithmeticTask

    task = ArithmeticTask(digits=cfg.digits, ops="+")
    test = list(
        {r["prompt"]: r for r in task.sample(cfg.n_test * 2, seed=10_000 + cfg.seed)}.values()
    )
    test = test[: cfg.n_test]
    seen = {r["prompt"] for r in test}
    pool = []
    for r in task.sample(4 * (cfg.n_train + cfg.warmup_examples), seed=20_000 + cfg.seed):
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            pool.append(r)
    need = cfg.n_train + cfg.warmup_examples
    if len(pool) < need:
        raise ValueError(
            f"demo: only {len(pool)} distinct {cfg.digits}-digit problems outside the test set; "
            f"lower n_train/warmup_examples (need {need})"
        )
    return pool[: cfg.warmup_examples], pool[cfg.warmup_examples : need], test


@dataclass
class WarmStart:
    """The warm-started reference policy and the data split it came with."""

    model: Any
    tokenizer: Any
    rl_rows: list[dict]
    test_rows: list[dict]
    accuracy: float
    time_s: float
    losses: list[float]


def _setup(cfg: ArithmeticRLConfig) -> None:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def held_out_accuracy(cfg: ArithmeticRLConfig, model: Any, tok: Any, rows: list[dict]) -> float:
    """Greedy exact-match accuracy on ``rows`` (answers of ``digits+1`` digits and an EOS)."""
    from adpo.data.arithmetic import ArithmeticTask
    from adpo.trainers.warm_start import greedy_accuracy

    return greedy_accuracy(model, tok, rows, ArithmeticTask.reward, max_new_tokens=cfg.digits + 2)


def warm_start(cfg: ArithmeticRLConfig) -> WarmStart:
    """Build the tiny model and fine-tune it briefly on solved problems (the reference policy)."""
    _setup(cfg)
    import torch

    from adpo.testing import char_tokenizer, tiny_qwen3
    from adpo.trainers.warm_start import supervised_warm_start

    torch.manual_seed(cfg.seed)
    warm_rows, rl_rows, test_rows = _split(cfg)
    tok = char_tokenizer()
    model = tiny_qwen3(
        len(tok), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, seed=cfg.seed
    )
    elapsed = timer()
    kw = dict(steps=cfg.warmup_steps, lr=cfg.warmup_lr, seed=cfg.seed)
    if cfg.progress and cfg.warmup_steps:
        with progress_bar(transient=True) as bar:
            task = bar.add_task("warm start (SFT)", total=cfg.warmup_steps)
            losses = supervised_warm_start(
                model, tok, warm_rows, on_step=lambda s, _l: bar.update(task, completed=s + 1), **kw
            )
    else:
        losses = supervised_warm_start(model, tok, warm_rows, **kw)
    t = elapsed()
    acc = held_out_accuracy(cfg, model, tok, test_rows)
    console.print(
        f"warm start: {cfg.warmup_steps} SFT steps on {len(warm_rows)} solved problems in {t:.0f} s; "
        f"held-out greedy accuracy {acc:.3f}"
    )
    return WarmStart(model, tok, rl_rows, test_rows, acc, t, losses)


def reinforce(
    cfg: ArithmeticRLConfig, warm: WarmStart, *, extra_callbacks: list | None = None
) -> dict[str, Any]:
    """Online RL from ``warm.model`` (trained in place) with ``cfg.loss``.

    Returns:
        ``{"accuracy_after", "train_time_s", "accuracy_curve", "per_step"}``: the held-out
        curve every ``cfg.eval_every`` steps and the trainer's per-step logs.
    """
    _setup(cfg)
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback

    from adpo.rewards import arithmetic_reward
    from adpo.trainers.callbacks import RichProgress
    from adpo.trainers.presets import loss_config, make_trainer

    torch.manual_seed(cfg.seed)
    model, tok = warm.model, warm.tokenizer
    G = cfg.num_generations
    scratch = tempfile.mkdtemp(prefix="adpo-demo-")  # TRL's output_dir; nothing is saved
    args = loss_config(
        cfg.loss,
        output_dir=scratch,
        **({"tau_schedule": cfg.adpo_tau_schedule} if cfg.loss in ("adpo-pl", "adpo") else {}),
        num_generations=G,
        per_device_train_batch_size=cfg.prompts_per_step * G,
        steps_per_generation=cfg.steps_per_generation,
        max_completion_length=cfg.digits + 2,  # the longest answer and an EOS
        temperature=cfg.temperature,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        max_steps=cfg.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        bf16=False,
        use_cpu=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=True,
        max_grad_norm=1.0,
        gradient_checkpointing=False,
    )
    curve: list[tuple[int, float]] = [(0, warm.accuracy)]

    class _Eval(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                curve.append((step, held_out_accuracy(cfg, model, tok, warm.test_rows)))

    callbacks: list = [_Eval(), *(extra_callbacks or [])]
    if cfg.progress:
        callbacks.append(RichProgress(cfg.steps, f"RL ({cfg.loss})"))
    trainer = make_trainer(
        cfg.loss,
        model,
        arithmetic_reward,
        args,
        Dataset.from_list(warm.rl_rows),
        tok,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar replaces the per-step dicts
    elapsed = timer()
    try:
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    train_time = elapsed()
    acc_after = held_out_accuracy(cfg, model, tok, warm.test_rows)
    curve.append((cfg.steps, acc_after))

    by_step: dict[int, dict] = {}
    for h in trainer.state.log_history:
        if "step" in h and "train_runtime" not in h:
            by_step.setdefault(int(h["step"]), {}).update(h)
    keys = sorted({k for h in by_step.values() for k in h if isinstance(h[k], (int, float))})
    per_step = {
        k: [float(by_step[s][k]) if k in by_step[s] else math.nan for s in sorted(by_step)]
        for k in keys
    }
    return {
        "accuracy_after": acc_after,
        "train_time_s": train_time,
        "accuracy_curve": [{"step": s, "accuracy": a} for s, a in curve],
        "per_step": per_step,
    }
