"""``adpo demo``: online RL with ADPO on a tiny language model, on a CPU, in minutes.

No download, no GPU. Everything is built in code (``adpo.tiny``):

1. a character-level tokenizer and a tiny Qwen3-architecture model from a config;
2. a verifiable task: generated integer addition (``"37+58="`` → ``"95"``), with a
   held-out test set that training never sees;
3. a short supervised warm start (``adpo.losses.sft_loss``) on a small, fixed set of
   solved problems; the warm-started model is the reference policy;
4. online group RL with TRL's generation loop and the chosen loss (default ADPO with the
   Plackett–Luce target, :class:`adpo.integrations.trl.ADPOTrainer`), rewarded only by
   exact-match correctness (:func:`adpo.rewards.arithmetic_reward`);
5. held-out greedy accuracy before and after RL.

Run::

    adpo demo --out runs/demo            # ADPO-PL, the default budget
    adpo demo --loss opo --steps 40      # another objective, a short run

``--out DIR`` gets ``summary.json`` (``loss``, ``accuracy_before``, ``accuracy_after``,
``reward_curve``, ``steps``, ``train_time_s`` and more) and ``reward_curve.png``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import tyro

from adpo.experiments._io import command_line, console, environment, prepare_out, write_json

Loss = Literal["adpo-pl", "adpo", "opo", "grpo", "gspo", "dapo"]


@dataclass
class DemoConfig:
    """Tiny-model online RL demo. Every field is a CLI flag (``--steps 40`` …)."""

    out: str | None = None
    """output folder for summary.json and reward_curve.png (None: print only)"""
    loss: Loss = "adpo-pl"
    """objective (see `adpo train --help`); GRPO/GSPO/DAPO run through TRL's GRPOTrainer"""
    steps: int = 150
    """RL optimizer steps"""
    seed: int = 0
    """seed of the model, the data and the sampler"""
    digits: int = 2
    """operand digits of the addition problems"""
    hidden_size: int = 64
    """tiny Qwen3 width"""
    num_layers: int = 2
    """tiny Qwen3 depth"""
    warmup_steps: int = 300
    """supervised warm-start steps (the warm-started model is the reference policy)"""
    warmup_examples: int = 500
    """size of the fixed set of solved problems the warm start sees"""
    warmup_lr: float = 3e-3
    """warm-start AdamW learning rate"""
    num_generations: int = 8
    """completions per prompt (G)"""
    prompts_per_step: int = 8
    """prompts (groups) per optimizer step"""
    steps_per_generation: int = 2
    """optimizer steps fed by one generation round (mini-batches sharing one anchor)"""
    lr: float = 1e-3
    """RL learning rate (AdamW, constant)"""
    temperature: float = 1.0
    """sampling temperature"""
    n_train: int = 4000
    """distinct RL training prompts"""
    n_test: int = 500
    """held-out test prompts (greedy accuracy)"""
    eval_every: int = 0
    """also measure held-out accuracy every this many steps (0: only before and after)"""
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


def run(cfg: DemoConfig, *, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Warm start, measure, RL, measure. Returns the summary (also written to ``cfg.out``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging

    from adpo.rewards import arithmetic_reward
    from adpo.tiny import ArithmeticTask, char_tokenizer, tiny_qwen3
    from adpo.trainers.online import (
        RichProgress,
        greedy_accuracy,
        loss_config,
        make_trainer,
        supervised_warm_start,
        timer,
    )

    hf_logging.set_verbosity_error()
    torch.manual_seed(cfg.seed)
    out = prepare_out(cfg.out) if cfg.out else None
    warm_rows, rl_rows, test_rows = _split(cfg)
    tok = char_tokenizer()
    model = tiny_qwen3(
        len(tok), hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, seed=cfg.seed
    )
    answer_len = cfg.digits + 1  # a+b has at most digits+1 digits
    max_new = answer_len + 1  # … and an EOS

    def accuracy() -> float:
        return greedy_accuracy(model, tok, test_rows, ArithmeticTask.reward, max_new_tokens=max_new)

    # 1. supervised warm start → reference policy
    elapsed = timer()
    if cfg.progress and cfg.warmup_steps:
        from rich.progress import Progress

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("warm start (SFT)", total=cfg.warmup_steps)
            warm_losses = supervised_warm_start(
                model,
                tok,
                warm_rows,
                steps=cfg.warmup_steps,
                lr=cfg.warmup_lr,
                seed=cfg.seed,
                on_step=lambda s, _l: bar.update(task, completed=s + 1),
            )
    else:
        warm_losses = supervised_warm_start(
            model, tok, warm_rows, steps=cfg.warmup_steps, lr=cfg.warmup_lr, seed=cfg.seed
        )
    warm_time = elapsed()
    acc_before = accuracy()
    console.print(
        f"warm start: {cfg.warmup_steps} SFT steps in {warm_time:.0f} s, held-out greedy "
        f"accuracy {acc_before:.3f}"
    )

    # 2. online RL
    G = cfg.num_generations
    args = loss_config(
        cfg.loss,
        output_dir=str(out / "trainer") if out else "/tmp/adpo-demo",
        num_generations=G,
        per_device_train_batch_size=cfg.prompts_per_step * G,
        steps_per_generation=cfg.steps_per_generation,
        max_completion_length=max_new,
        temperature=cfg.temperature,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
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
    curve_eval: list[tuple[int, float]] = [(0, acc_before)]

    class _Eval(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                curve_eval.append((step, accuracy()))

    callbacks: list = [_Eval(), *(extra_callbacks or [])]
    if cfg.progress:
        callbacks.append(RichProgress(cfg.steps, f"RL ({cfg.loss})"))
    trainer = make_trainer(
        cfg.loss,
        model,
        arithmetic_reward,
        args,
        Dataset.from_list(rl_rows),
        tok,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar replaces the per-step dicts
    elapsed = timer()
    trainer.train()
    train_time = elapsed()
    acc_after = accuracy()
    curve_eval.append((cfg.steps, acc_after))

    logs = [h for h in trainer.state.log_history if "step" in h]
    by_step: dict[int, dict] = {}
    for h in logs:
        by_step.setdefault(int(h["step"]), {}).update(h)

    def series(key: str) -> list[float]:
        return [float(by_step[s][key]) if key in by_step[s] else math.nan for s in sorted(by_step)]

    rewards = [v for v in series("reward") if not math.isnan(v)]
    summary = {
        "loss": cfg.loss,
        "accuracy_before": acc_before,
        "accuracy_after": acc_after,
        "reward_curve": rewards,
        "steps": cfg.steps,
        "train_time_s": train_time,
        "warm_start_time_s": warm_time,
        "warm_start_final_loss": warm_losses[-1] if warm_losses else None,
        "accuracy_curve": [{"step": s, "accuracy": a} for s, a in curve_eval],
        "per_step": {
            k: series(k)
            for k in (
                "reward",
                "accuracy",
                "entropy",
                "completions/mean_length",
                "grad_norm",
                "step_time",
                "anchored_entropy",
                "tau",
                "kl_to_init",
                "frac_reward_zero_std",
            )
        },
        "config": asdict(cfg),
        "command": command_line(),
        "environment": environment(),
        "load_average": os.getloadavg(),
    }
    console.print(
        f"RL ({cfg.loss}): {cfg.steps} steps in {train_time:.0f} s; held-out greedy accuracy "
        f"{acc_before:.3f} → {acc_after:.3f} (load average {os.getloadavg()[0]:.1f}, "
        f"{torch.get_num_threads()} threads)"
    )
    if out is not None:
        write_json(out / "summary.json", summary)
        if cfg.plot:
            _plot(summary, out / "reward_curve.png")
        console.print(
            f"wrote {out / 'summary.json'}"
            + (f" and {out / 'reward_curve.png'}" if cfg.plot else "")
        )
    return summary


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
