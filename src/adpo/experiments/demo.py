"""``adpo demo``: online RL with ADPO on a tiny language model, on a CPU, in minutes.

No download, no GPU. Everything is built in code (``adpo.tiny``):

1. a character-level tokenizer and a tiny Qwen3-architecture model from a config;
2. a verifiable task: generated integer addition (``"37+58="`` → ``"95"``), with a
   held-out test set that training never sees;
3. a short supervised warm start (``adpo.losses.sft_loss``) on a fixed set of solved
   problems, stopped early on purpose (about half the held-out problems right): the
   warm-started model is the reference policy, and RL has room to improve on it;
4. online group RL with TRL's generation loop and the chosen loss (default ADPO with the
   Plackett–Luce target, :class:`adpo.integrations.trl.ADPOTrainer`), rewarded only by
   exact-match correctness (:func:`adpo.rewards.arithmetic_reward`);
5. held-out greedy accuracy before and after RL.

Run::

    adpo demo --out runs/demo            # ADPO-PL, the default budget (minutes on 2 cores)
    adpo demo --loss opo --steps 200     # another objective, a short run

``--out DIR`` gets ``summary.json`` (exactly ``loss``, ``accuracy_before``,
``accuracy_after``, ``reward_curve``, ``steps``, ``train_time_s``), ``reward_curve.png``
and ``details.json`` (the held-out curve, per-step logs, config, command, load average).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import tyro

from adpo.experiments._io import (
    command_line,
    console,
    environment,
    prepare_out,
    progress_bar,
    write_json,
)

Loss = Literal["adpo-pl", "adpo", "opo", "grpo", "gspo", "dapo"]


@dataclass
class DemoConfig:
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
            raise ValueError(f"DemoConfig: `steps` must be >= 1, got {self.steps}")
        if self.num_generations < 2:
            raise ValueError(
                f"DemoConfig: `num_generations` must be >= 2, got {self.num_generations}"
            )
        if self.prompts_per_step < 1 or self.steps_per_generation < 1:
            raise ValueError(
                "DemoConfig: `prompts_per_step` and `steps_per_generation` must be >= 1, got "
                f"{self.prompts_per_step}, {self.steps_per_generation}"
            )
        if self.warmup_steps < 0 or self.warmup_examples < 1:
            raise ValueError(
                "DemoConfig: need warmup_steps >= 0 and warmup_examples >= 1, got "
                f"{self.warmup_steps}, {self.warmup_examples}"
            )
        if self.threads < 0:
            raise ValueError(f"DemoConfig: `threads` must be >= 0, got {self.threads}")
        if self.eval_every < 0:
            raise ValueError(f"DemoConfig: `eval_every` must be >= 0, got {self.eval_every}")


def _split(cfg: DemoConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """(warm-start rows, RL rows, test rows): disjoint by prompt."""
    from adpo.tiny import ArithmeticTask

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


def _setup(cfg: DemoConfig) -> None:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def held_out_accuracy(cfg: DemoConfig, model: Any, tok: Any, rows: list[dict]) -> float:
    """Greedy exact-match accuracy on ``rows`` (answers of ``digits+1`` digits and an EOS)."""
    from adpo.tiny import ArithmeticTask
    from adpo.trainers.online import greedy_accuracy

    return greedy_accuracy(model, tok, rows, ArithmeticTask.reward, max_new_tokens=cfg.digits + 2)


def warm_start(cfg: DemoConfig) -> WarmStart:
    """Build the tiny model and fine-tune it briefly on solved problems (the reference policy)."""
    _setup(cfg)
    import torch

    from adpo.tiny import char_tokenizer, tiny_qwen3
    from adpo.trainers.online import supervised_warm_start, timer

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
    cfg: DemoConfig, warm: WarmStart, *, extra_callbacks: list | None = None
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
    from adpo.trainers.online import RichProgress, loss_config, make_trainer, timer

    torch.manual_seed(cfg.seed)
    model, tok = warm.model, warm.tokenizer
    G = cfg.num_generations
    args = loss_config(
        cfg.loss,
        output_dir=str(Path(cfg.out) / "trainer") if cfg.out else "/tmp/adpo-demo",
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
    trainer.train()
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


def run(cfg: DemoConfig) -> dict[str, Any]:
    """Warm start, measure, RL, measure. Returns the summary and details (written to ``cfg.out``)."""
    import torch

    out = prepare_out(cfg.out) if cfg.out else None
    warm = warm_start(cfg)
    rl = reinforce(cfg, warm)
    rewards = [v for v in rl["per_step"].get("reward", []) if not math.isnan(v)]
    summary = {  # exactly the keys the README promises
        "loss": cfg.loss,
        "accuracy_before": warm.accuracy,
        "accuracy_after": rl["accuracy_after"],
        "reward_curve": rewards,
        "steps": cfg.steps,
        "train_time_s": rl["train_time_s"],
    }
    details = {  # everything else: provenance, the held-out curve, per-step logs
        "warm_start_time_s": warm.time_s,
        "warm_start_final_loss": warm.losses[-1] if warm.losses else None,
        "accuracy_curve": rl["accuracy_curve"],
        "per_step": rl["per_step"],
        "config": asdict(cfg),
        "command": command_line(),
        "environment": environment(),
        "load_average": os.getloadavg(),
        "threads": torch.get_num_threads(),
    }
    console.print(
        f"RL ({cfg.loss}): {cfg.steps} steps in {rl['train_time_s']:.0f} s; held-out greedy accuracy "
        f"{warm.accuracy:.3f} → {rl['accuracy_after']:.3f} (load average {os.getloadavg()[0]:.1f}, "
        f"{torch.get_num_threads()} threads)"
    )
    if out is not None:
        write_json(out / "summary.json", summary)
        write_json(out / "details.json", details)
        if cfg.plot:
            _plot({**summary, **details}, out / "reward_curve.png")
        console.print(
            f"wrote {out / 'summary.json'}, {out / 'details.json'}"
            + (f" and {out / 'reward_curve.png'}" if cfg.plot else "")
        )
    return {**summary, **details}


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    r = np.asarray(summary["reward_curve"], dtype=float)
    ax = axes[0]
    ax.plot(np.arange(1, len(r) + 1), r, color="0.7", lw=1, label="per round")
    if len(r) >= 5:
        k = max(len(r) // 20, 3)
        smooth = np.convolve(r, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k, len(r) + 1), smooth, color="C0", lw=2, label=f"moving mean ({k})")
    ax.set_xlabel("generation round")
    ax.set_ylabel("mean reward (training samples)")
    ax.set_title(f"{summary['loss']}: training reward")
    ax.legend(frameon=False)
    ax = axes[1]
    c = summary["accuracy_curve"]
    ax.plot([p["step"] for p in c], [p["accuracy"] for p in c], "o-", color="C1")
    ax.set_xlabel("RL optimizer step")
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("held-out accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(DemoConfig, args=argv, prog="adpo demo", description=__doc__.split("\n\n")[0])
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
