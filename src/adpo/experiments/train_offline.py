r"""The pipeline of ``adpo train-offline``: ADPO on a fixed listwise dataset (algorithm 1, OFFLINE).

:func:`run` loads (or builds) the model and rows, trains a :class:`adpo.trainers.ListwiseTrainer`,
evaluates it and writes the output folder; ``adpo bench listwise`` calls it per variant.

Run on your model and data::

    adpo train-offline --model ID_OR_PATH --data rows.jsonl --out runs/offline \
        [--target softmax|plackett_luce|top1|probs] [--anchor fixed|precomputed|self|ema|on_policy] \
        [--config listwise.yaml] [--skip-bad-rows]

or with no ``--model``/``--data`` on the embedded default: a tiny Qwen3 warm-started with
SFT on generated arithmetic (``12+34=`` → ``46``; it becomes the reference), then ADPO on
a generated listwise dataset of 3–5 candidate answers per prompt scored with partial
credit. ``--config`` is a YAML file of :class:`adpo.trainers.ListwiseConfig` fields (any
``transformers.TrainingArguments`` field too); flags given on the command line win.

Writes to ``--out``: ``summary.json`` (``rows``, ``steps``, ``top1_accuracy_before/after``,
``ndcg_before/after``, ``kl_to_reference`` on the held-out split, plus the policy's own
log-prob ranking metrics, skipped-row counts, timing with load average), ``log_history.csv``,
``training.png``, and the trained ``model/``.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch

from adpo._io import (
    console,
    prepare_out,
    provenance,
    write_csv,
    write_json,
)
from adpo.data.arithmetic import ArithmeticTask
from adpo.data.rows import load_rows, read_yaml_config
from adpo.trainers.warm_start import supervised_warm_start

__all__ = ["LIBRARIES", "TrainOfflineArgs", "run"]

#: the libraries a run drives (recorded in its summary's environment)
LIBRARIES = ("transformers", "accelerate")

#: ListwiseConfig values of the embedded default (a tiny model needs a large learning rate)
DEFAULT_TASK_CONFIG: dict[str, Any] = {
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "constant",
    "tau": 1.0,
    "target_beta": 0.5,
    "max_steps": 300,
    "logging_steps": 10,
}


@dataclass
class TrainOfflineArgs:
    """Offline listwise ADPO. Every field is a flag (``--skip-bad-rows``, ``--eval-fraction 0.2`` …)."""

    model: str | None = None
    """policy model id or path (None: the embedded tiny default, with --data unset too)"""
    data: str | None = None
    """rows: .json/.jsonl/.parquet/.csv file, a `save_to_disk` folder, or a datasets id"""
    out: str = "runs/train-offline"
    """output folder"""
    target: Literal["softmax", "plackett_luce", "top1", "probs"] | None = None
    """target q (default: the config's, else 'softmax')"""
    anchor: Literal["fixed", "precomputed", "self", "ema", "on_policy", "dynamic"] | None = None
    """anchor strategy (default: the config's, else 'fixed'); 'on_policy' refreshes every
    ``anchor_refresh_every`` steps ('dynamic' is its deprecated spelling)"""
    config: str | None = None
    """YAML file of ListwiseConfig / TrainingArguments fields"""
    ref_model: str | None = None
    """reference model id or path (default: the initial policy)"""
    eval_data: str | None = None
    """held-out rows (default: a random --eval-fraction of --data)"""
    eval_fraction: float = 0.1
    """share of the rows held out for evaluation when --eval-data is not given"""
    skip_bad_rows: bool = False
    """skip malformed rows and count them in the summary instead of stopping"""
    overwrite: bool = False
    """write into an --out folder that already holds files (an earlier run's are replaced)"""
    max_steps: int | None = None
    """optimiser steps (overrides the config)"""
    seed: int = 0
    """seed for the split, the default task and training"""
    default_train_rows: int = 3000
    """embedded default: generated listwise training rows"""
    default_eval_rows: int = 300
    """embedded default: generated held-out rows"""
    warm_start_steps: int = 400
    """embedded default: SFT steps that make the reference model"""
    threads: int | None = None
    """torch intra-op threads (default: 1 for the embedded tiny model, where more threads only
    add synchronisation, torch's default otherwise)"""

    def __post_init__(self) -> None:
        if (self.model is None) != (self.data is None):
            raise ValueError(
                "train-offline: give both --model and --data, or neither (embedded default)"
            )
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(
                f"train-offline: --eval-fraction must lie in (0, 1), got {self.eval_fraction}"
            )


def _load_yaml(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    from adpo.trainers.listwise import ListwiseConfig

    return read_yaml_config(
        path,
        allowed={f.name for f in fields(ListwiseConfig)},
        where="train-offline",
        hint="keys are ListwiseConfig / TrainingArguments fields",
    )


def warm_start(model, tokenizer, *, steps: int, seed: int, batch_size: int = 32, lr: float = 3e-3):
    """SFT of the tiny model on generated arithmetic (prompt → right answer), in place.

    A short warm start, so the reference knows the format and is partly right: the
    listwise stage then has something to sharpen. Prompts start with BOS, as the listwise
    trainer tokenizes them. Returns the last step's loss.
    """
    rows = ArithmeticTask(digits=2).sample(20_000, seed=seed + 10_000)
    losses = supervised_warm_start(
        model, tokenizer, rows, steps=steps, batch_size=batch_size, lr=lr, seed=seed, bos=True
    )
    model.eval()
    return losses[-1] if losses else float("nan")


def _split(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_eval = max(1, round(fraction * len(rows)))
    if n_eval >= len(rows):
        raise ValueError(f"train-offline: {len(rows)} usable rows are too few to hold some out")
    held = set(idx[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def _plot(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if "loss" in h and "step" in h]
    if not train:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [h["step"] for h in train]
    axes[0].plot(steps, [h["loss"] for h in train])
    axes[0].set(xlabel="step", ylabel="ADPO loss (train)")
    if "anchored_top1_agreement" in train[0]:
        axes[1].plot(steps, [h["anchored_top1_agreement"] for h in train])
        axes[1].set(xlabel="step", ylabel="anchored top-1 agreement (train batches)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: TrainOfflineArgs) -> dict[str, Any]:
    """Train and evaluate; write the output folder; return the summary."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adpo.data.listwise import make_arithmetic_listwise, normalize_rows
    from adpo.trainers.listwise import ListwiseConfig, ListwiseTrainer

    t0, cpu0 = time.time(), time.process_time()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"train-offline: --out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(
            f"train-offline: --out {out} already holds files (an earlier run?): choose another "
            "--out, or pass --overwrite to replace them"
        )
    default_task = args.model is None
    threads = args.threads if args.threads is not None else (1 if default_task else None)
    if threads is not None:
        torch.set_num_threads(threads)
    # every input is read and checked before anything is written to --out
    cfg: dict[str, Any] = dict(DEFAULT_TASK_CONFIG) if default_task else {}
    cfg.update(_load_yaml(args.config))
    for key in ("target", "anchor", "max_steps"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["skip_bad_rows"] = args.skip_bad_rows or bool(cfg.get("skip_bad_rows", False))
    cfg.setdefault("seed", args.seed)
    cfg.setdefault("report_to", "none")
    cfg.setdefault("disable_tqdm", False)
    cfg["output_dir"] = str(out / "checkpoints")
    config = ListwiseConfig(**cfg)
    if default_task:  # the embedded default: generated rows (the model comes below)
        raw = make_arithmetic_listwise(args.default_train_rows, seed=args.seed + 1)
        raw_eval = make_arithmetic_listwise(args.default_eval_rows, seed=args.seed + 2)
    else:
        model_path = Path(args.model) if Path(args.model).exists() else args.model
        raw = load_rows(args.data)
        raw_eval = load_rows(args.eval_data) if args.eval_data else None

    # validate every row up front so errors and skip counts name the rows of the input file
    norm = normalize_rows(raw, skip_bad_rows=cfg["skip_bad_rows"])
    skipped = list(norm.skipped)
    if raw_eval is None:
        train_rows, eval_rows = _split(norm.rows, args.eval_fraction, args.seed)
    else:
        train_rows = norm.rows
        norm_eval = normalize_rows(raw_eval, skip_bad_rows=cfg["skip_bad_rows"])
        skipped += [(i, k, f"eval {r}") for i, k, r in norm_eval.skipped]
        eval_rows = norm_eval.rows
    if skipped:
        console.print(
            f"[yellow]skipped {len(skipped)} bad rows[/]: first row {skipped[0][0]}: {skipped[0][2]}"
        )

    out = prepare_out(out)
    if default_task:  # a warm-started tiny Qwen3, saved as the reference
        from adpo.testing import char_tokenizer, tiny_qwen3

        tokenizer = char_tokenizer()
        model = tiny_qwen3(len(tokenizer), seed=args.seed)
        with console.status(f"warm start: {args.warm_start_steps} SFT steps"):
            sft = warm_start(model, tokenizer, steps=args.warm_start_steps, seed=args.seed)
        console.print(f"warm start done (SFT loss {sft:.3f}, {time.time() - t0:.0f} s)")
        model_path = out / "reference"
        model.save_pretrained(model_path)
        tokenizer.save_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    ref_source = args.ref_model or model_path
    ref_model = AutoModelForCausalLM.from_pretrained(args.ref_model) if args.ref_model else None
    trainer = ListwiseTrainer(
        model,
        ref_model=ref_model if config.anchor in ("fixed", "precomputed") else None,
        args=config,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
    )
    del ref_model  # with anchor='precomputed' nothing holds the reference from here on
    eval_ds = trainer.eval_dataset
    bs = config.per_device_eval_batch_size
    # anchored scores are measured against the initial reference π_ref0, whatever the anchor
    if "ref_logps" in eval_ds.column_names:
        ref_eval = torch.zeros(len(eval_ds), max(len(c) for c in eval_ds["completion_ids"]))
        for r, lp in enumerate(eval_ds["ref_logps"]):
            ref_eval[r, : len(lp)] = torch.tensor(lp)
    else:
        reference = trainer.ref_model if trainer.ref_model is not None else trainer.model
        ref_eval = trainer.dataset_logps(eval_ds, reference, batch_size=bs)
    before = trainer.ranking_metrics(eval_ds, ref_eval, batch_size=bs)
    console.print(f"before: {before}")
    t_train = time.time()
    trainer.train()
    train_s = time.time() - t_train
    after = trainer.ranking_metrics(eval_ds, ref_eval, batch_size=bs)
    console.print(f"after:  {after}")
    kl_ref = trainer.ref_model
    if kl_ref is None:
        kl_ref = AutoModelForCausalLM.from_pretrained(ref_source).to(trainer.args.device)
    kl = trainer.reference_kl(eval_ds, kl_ref, batch_size=bs)
    trainer.save_model(str(out / "model"))

    summary = {
        "rows": len(norm.rows) if raw_eval is None else len(train_rows) + len(eval_rows),
        "steps": int(trainer.state.global_step),
        "top1_accuracy_before": before["top1_accuracy"],
        "top1_accuracy_after": after["top1_accuracy"],
        "ndcg_before": before["ndcg"],
        "ndcg_after": after["ndcg"],
        "kl_to_reference": kl,
        "logp_top1_accuracy_before": before["logp_top1_accuracy"],
        "logp_top1_accuracy_after": after["logp_top1_accuracy"],
        "logp_ndcg_before": before["logp_ndcg"],
        "logp_ndcg_after": after["logp_ndcg"],
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows),
        "skipped_rows": len(skipped),
        "skipped_by_kind": dict(
            sorted({k: sum(1 for _, kk, _ in skipped if kk == k) for _, k, _ in skipped}.items())
        ),
        "truncated_sequences": trainer.truncated,
        "target": config.target,
        "anchor": config.anchor,
        "tau": config.tau,
        "beta": config.target_beta,  # β_r (key kept: committed summaries use it)
        "learning_rate": config.learning_rate,
        "model": "embedded tiny Qwen3 (warm-started)" if default_task else str(args.model),
        "data": "generated arithmetic listwise" if default_task else str(args.data),
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - t0, 1),
        # CPU time of this process: less sensitive than wall time to other jobs on the machine
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "loadavg": list(os.getloadavg()),
        "torch_threads": torch.get_num_threads(),
        **provenance(LIBRARIES),
        "cli_args": asdict(args),
    }
    write_json(out / "summary.json", summary)
    history = list(trainer.state.log_history)
    if history:
        keys = sorted({k for h in history for k in h})
        write_csv(out / "log_history.csv", [{k: h.get(k, "") for k in keys} for h in history])
        _plot(history, out / "training.png")
    console.print(
        f"top-1 accuracy {summary['top1_accuracy_before']:.3f} → {summary['top1_accuracy_after']:.3f}, "
        f"NDCG {summary['ndcg_before']:.3f} → {summary['ndcg_after']:.3f}, "
        f"KL to reference {kl:.4f} ({summary['total_seconds']:.0f} s)"
    )
    console.print(f"wrote {out}/summary.json, log_history.csv, training.png, model/")
    return summary
