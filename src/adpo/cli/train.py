"""``adpo train``: online group RL on any Hugging Face causal LM and dataset.

Wires :class:`TrainArgs` (the flags, or a YAML file) to :func:`adpo.trainers.loss_config`
and :func:`adpo.trainers.make_trainer`: ADPO/OPO through :mod:`adpo.trainers.online`,
GRPO/GSPO/DAPO through TRL's own ``GRPOTrainer``. Rows come from
:func:`adpo.data.load_rows` (a hub id, a local folder, JSONL or parquet), checked by
:func:`adpo.data.validate_rows` with the first bad row named.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from adpo._io import console
from adpo.data.rows import load_rows, read_yaml_config, validate_rows
from adpo.trainers.presets import LOSSES, loss_config, make_trainer

__all__ = ["TrainArgs", "main", "parse_train_args", "prepare_dataset"]

_PROMPT_SUFFIX_MATH = "\nPut your final answer within \\boxed{}."


@dataclasses.dataclass
class TrainArgs:
    """``adpo train``: online group RL on a Hugging Face causal LM and dataset.

    Every field is a CLI flag; ``--config FILE.yaml`` sets them from a file first (CLI flags
    win). The YAML may also hold a ``trainer:`` mapping of any field of the objective's TRL
    config (``ADPOConfig``/``OPOConfig``/``GRPOConfig``: ``tau``, ``anchor``, ``beta`` …).
    """

    model: str
    """model: a hub id or a local folder (``save_pretrained``) with its tokenizer"""
    dataset: str
    """dataset: a hub id, a local folder, or a .jsonl/.json/.parquet/.csv file"""
    loss: str = "adpo-pl"
    """objective: adpo-pl, adpo, opo, grpo, gspo or dapo"""
    config: str | None = None
    """YAML file with defaults for these flags and a ``trainer:`` mapping of config fields"""
    output_dir: str = "runs/train"
    """checkpoints and the final model"""
    split: str = "train"
    """dataset split"""
    reward: str = "auto"
    """'math' (math-verify vs a ``solution`` column), 'exact' (vs ``answer``), 'arithmetic', or
    'auto' (math if there is a ``solution`` column, else exact)"""
    prompt_column: str | None = None
    """prompt column (default: ``prompt``, else ``problem``)"""
    format_weight: float = 0.0
    """weight of an extra format reward (exactly one ``\\boxed{}``); 0 = off"""
    chat: str = "auto"
    """wrap prompts as a user message: 'yes', 'no', or 'auto' (if the tokenizer has a chat template)"""
    prompt_suffix: str | None = None
    """text appended to each prompt (default for math: ask for a boxed answer)"""
    max_steps: int = 100
    """optimizer steps"""
    learning_rate: float | None = None
    """AdamW learning rate (default: the objective's paper value)"""
    num_generations: int = 8
    """completions per prompt (G)"""
    per_device_train_batch_size: int | None = None
    """completions per micro-batch, a multiple of G (default: G)"""
    gradient_accumulation_steps: int = 1
    """micro-batches per optimizer step"""
    steps_per_generation: int | None = None
    """optimizer steps per generation round (default: TRL's, one)"""
    max_completion_length: int = 512
    """tokens per completion"""
    temperature: float = 1.0
    """sampling temperature"""
    logging_steps: int = 1
    """log every this many steps"""
    save_steps: int = 50
    """checkpoint every this many steps"""
    seed: int = 0
    """seed"""
    bf16: bool | None = None
    """bfloat16 mixed precision (default: on with a GPU, off on CPU)"""
    resume_from_checkpoint: str | None = None
    """a checkpoint folder, or 'latest' (the last one in output_dir)"""
    report_to: str = "none"
    """'none', 'wandb', 'tensorboard', 'trackio' …"""
    trainer: dict[str, Any] | None = None
    """(YAML only) extra fields of the TRL config"""


def _read_yaml(path: str) -> dict[str, Any]:
    data = read_yaml_config(
        path,
        allowed={f.name for f in dataclasses.fields(TrainArgs)},
        where="adpo train",
        hint="top-level keys are the flags of `adpo train --help` (underscores), TRL config "
        "fields go under `trainer:`",
    )
    if "trainer" in data and not isinstance(data["trainer"], dict):
        raise ValueError(f"adpo train: `trainer:` in {path} must be a mapping")
    return data


def parse_train_args(argv: list[str] | None) -> TrainArgs:
    """CLI flags over ``--config`` YAML over defaults."""
    import sys

    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg_path = None
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            cfg_path = argv[i + 1]
        elif a.startswith("--config="):
            cfg_path = a.split("=", 1)[1]
    defaults: dict[str, Any] = _read_yaml(cfg_path) if cfg_path else {}
    trainer_fields = defaults.pop("trainer", None)
    if "model" in defaults and "dataset" in defaults:
        default = TrainArgs(**defaults)
        args = tyro.cli(TrainArgs, args=argv, default=default, prog="adpo train")
    else:
        args = tyro.cli(TrainArgs, args=argv, prog="adpo train")
        for k, v in defaults.items():  # YAML values where the CLI left the default
            if getattr(args, k) == getattr(TrainArgs(model="", dataset=""), k):
                setattr(args, k, v)
    args.trainer = trainer_fields
    if args.loss not in LOSSES:
        raise ValueError(f"adpo train: `--loss` must be one of {LOSSES}, got {args.loss!r}")
    if args.reward not in ("auto", "math", "exact", "arithmetic"):
        raise ValueError(
            f"adpo train: `--reward` must be auto, math, exact or arithmetic, got {args.reward!r}"
        )
    if args.chat not in ("auto", "yes", "no"):
        raise ValueError(f"adpo train: `--chat` must be auto, yes or no, got {args.chat!r}")
    return args


def prepare_dataset(dataset: Any, args: TrainArgs, tokenizer: Any):
    """Validate rows and map them to TRL's ``prompt`` (+ reference) columns.

    Args:
        dataset: a ``list[dict]`` (from :func:`adpo.data.load_rows`) or a ``datasets.Dataset``.

    Returns:
        ``(dataset, reward_kind)``: a ``datasets.Dataset`` and ``reward_kind`` in
        ``{"math", "exact", "arithmetic"}``.
    """
    cols = set(getattr(dataset, "column_names", None) or (dataset[0] if len(dataset) else {}))
    prompt_col = args.prompt_column or ("prompt" if "prompt" in cols else "problem")
    kind = args.reward
    if kind == "auto":
        kind = "math" if "solution" in cols else "exact"
    ref_col = "solution" if kind == "math" else "answer"
    validate_rows(dataset, [prompt_col, ref_col], name=f"dataset {args.dataset!r}")
    if isinstance(dataset, list):  # validated first: a bad row is named, not an Arrow error
        import datasets

        dataset = datasets.Dataset.from_list(dataset)
    if kind == "math":
        from adpo.rewards.math import parse_gold

        bad = [i for i, s in enumerate(dataset[ref_col]) if not parse_gold(str(s))]
        if bad:
            import warnings

            warnings.warn(
                f"adpo train: {len(bad)} of {len(dataset)} rows have no parsable answer in "
                f"'solution' (first: row {bad[0]}); they give no reward (no learning signal)",
                stacklevel=2,
            )
    suffix = args.prompt_suffix
    if suffix is None:
        suffix = _PROMPT_SUFFIX_MATH if kind == "math" else ""
    chat = args.chat == "yes" or (args.chat == "auto" and getattr(tokenizer, "chat_template", None))

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        p = row[prompt_col]
        if isinstance(p, str):
            p = p + suffix
            if chat:
                p = [{"role": "user", "content": p}]
        elif suffix:  # conversational: append to the last user message
            p = [*p[:-1], {**p[-1], "content": str(p[-1]["content"]) + suffix}]
        return {"prompt": p, ref_col: str(row[ref_col])}

    keep = [c for c in dataset.column_names if c not in (prompt_col, ref_col, "prompt")]
    return dataset.map(
        convert, remove_columns=keep + ([prompt_col] if prompt_col != "prompt" else [])
    ), kind


def main(argv: list[str] | None = None) -> int:
    """``adpo train`` (see :class:`TrainArgs`)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adpo.rewards import FormatReward, arithmetic_reward, exact_match_reward, math_reward

    args = parse_train_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset, kind = prepare_dataset(load_rows(args.dataset, split=args.split), args, tokenizer)
    reward_funcs: list = [
        {"math": math_reward, "exact": exact_match_reward, "arithmetic": arithmetic_reward}[kind]
    ]
    weights = None
    if args.format_weight > 0:
        reward_funcs.append(FormatReward())
        weights = [1.0, args.format_weight]
    model = AutoModelForCausalLM.from_pretrained(args.model)
    use_gpu = torch.cuda.is_available()
    overrides: dict[str, Any] = dict(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        num_generations=args.num_generations,
        per_device_train_batch_size=args.per_device_train_batch_size or args.num_generations,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        seed=args.seed,
        bf16=use_gpu if args.bf16 is None else args.bf16,
        report_to=[] if args.report_to == "none" else [args.report_to],
        reward_weights=weights,
    )
    if not use_gpu:
        overrides["use_cpu"] = True
    if args.steps_per_generation is not None:
        overrides["steps_per_generation"] = args.steps_per_generation
    if args.learning_rate is not None:
        overrides["learning_rate"] = args.learning_rate
    overrides.update(args.trainer or {})
    config = loss_config(args.loss, **overrides)
    trainer = make_trainer(args.loss, model, reward_funcs, config, dataset, tokenizer)
    resume: str | bool | None = args.resume_from_checkpoint
    if resume == "latest":
        resume = True
    console.print(
        f"adpo train: {args.loss} on {args.model} with {len(dataset)} prompts ({kind} reward), "
        f"{args.max_steps} steps → {args.output_dir}"
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    console.print(f"saved the model to {args.output_dir}")
    return 0
