"""Online group RL on Hugging Face models: loss presets, warm start, evaluation, datasets.

The glue shared by ``adpo train``, ``adpo demo`` and ``adpo bench reasoning``:

* :func:`loss_config` / :func:`make_trainer` — one name per objective, each with its
  paper's standard settings, so runs compare on equal terms (same generation, batching
  and reward code; only the loss differs):

  ==========  ===============================================================================
  ``adpo-pl`` :class:`~adpo.integrations.trl.ADPOTrainer`, Plackett–Luce target (the ADPO
              paper's LLM setting: τ 0.8)
  ``adpo``    :class:`~adpo.integrations.trl.ADPOTrainer`, softmax target (τ 0.8, β_r 0.5)
  ``opo``     :class:`~adpo.integrations.trl.OPOTrainer` (α 0.4, μ 1.0)
  ``grpo``    TRL ``GRPOTrainer``, ``loss_type="grpo"``: PPO-clip ε 0.2, per-sequence token
              mean, group-std advantages, no KL (β 0)
  ``gspo``    TRL ``GRPOTrainer``, sequence-level ratio (``importance_sampling_level=
              "sequence"``), ε 3e-4 / 4e-4, ``loss_type="grpo"`` (TRL's GSPO recipe)
  ``dapo``    TRL ``GRPOTrainer``, ``loss_type="dapo"`` (token-level sum over the batch),
              clip-higher ε 0.2 / 0.28, overlong filtering (``mask_truncated_completions``).
              DAPO's dynamic sampling (re-drawing zero-signal groups) is not in TRL and
              not here.
  ==========  ===============================================================================

* :func:`supervised_warm_start` — a short SFT (``adpo.losses.sft_loss``) that becomes the
  reference policy of the demo.
* :func:`greedy_accuracy` — held-out accuracy of greedy decoding.
* :func:`load_rows` / :func:`validate_rows` — datasets from a hub id, a local folder, JSONL
  or parquet, with a clear error naming the first bad row.
* :class:`RichProgress` — a rich progress bar for ``Trainer`` runs.

Shapes: ``N`` sequences, ``L`` tokens per sequence, ``T`` answer tokens.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LOSSES",
    "RichProgress",
    "greedy_accuracy",
    "load_rows",
    "loss_config",
    "make_trainer",
    "supervised_warm_start",
    "validate_rows",
]

#: objective names accepted by ``adpo train --loss``, the demo and the benchmark
LOSSES = ("adpo-pl", "adpo", "opo", "grpo", "gspo", "dapo")

# each preset: (config class name, the paper's standard settings)
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "adpo-pl": ("ADPOConfig", {"target": "plackett_luce", "tau": 0.8}),
    "adpo": ("ADPOConfig", {"target": "softmax", "tau": 0.8, "target_beta": 0.5}),
    "opo": ("OPOConfig", {"alpha": 0.4, "mu": 1.0}),
    "grpo": ("GRPOConfig", {"loss_type": "grpo", "epsilon": 0.2, "beta": 0.0}),
    "gspo": (
        "GRPOConfig",
        {
            "loss_type": "grpo",
            "importance_sampling_level": "sequence",
            "epsilon": 3e-4,
            "epsilon_high": 4e-4,
            "beta": 0.0,
        },
    ),
    "dapo": (
        "GRPOConfig",
        {
            "loss_type": "dapo",
            "epsilon": 0.2,
            "epsilon_high": 0.28,
            "mask_truncated_completions": True,
            "beta": 0.0,
        },
    ),
}


def _config_class(name: str) -> type:
    if name == "GRPOConfig":
        from trl import GRPOConfig

        return GRPOConfig
    from adpo.integrations import trl as adpo_trl

    return getattr(adpo_trl, name)


def loss_config(loss: str, **overrides: Any):
    """The TRL config of objective ``loss`` (one of :data:`LOSSES`), preset then ``overrides``.

    Raises:
        ValueError: unknown ``loss``, or an override that is not a field of the config
            class (named in the message).
    """
    if loss not in _PRESETS:
        raise ValueError(f"loss_config: `loss` must be one of {LOSSES}, got {loss!r}")
    cls_name, preset = _PRESETS[loss]
    cls = _config_class(cls_name)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"loss_config: {unknown} are not fields of {cls_name} (loss {loss!r}); check the "
            "spelling, or whether the option belongs to another objective"
        )
    return cls(**{**preset, **overrides})


def make_trainer(
    loss: str,
    model: Any,
    reward_funcs: Any,
    args: Any,
    train_dataset: Any,
    processing_class: Any = None,
    *,
    ref_model: Any = None,
    callbacks: list | None = None,
    eval_dataset: Any = None,
    peft_config: Any = None,
):
    """The trainer of objective ``loss`` with config ``args`` (from :func:`loss_config`).

    GRPO/GSPO/DAPO use TRL's own ``GRPOTrainer``; their callable rewards are wrapped in
    :func:`adpo.rewards.guard_reward` as ADPO/OPO's are (a failing sample gets no reward
    instead of stopping the run).
    """
    from trl import GRPOTrainer

    from adpo.integrations.trl import ADPOTrainer, OPOTrainer
    from adpo.rewards import guard_reward_funcs

    if loss not in _PRESETS:
        raise ValueError(f"make_trainer: `loss` must be one of {LOSSES}, got {loss!r}")
    common = dict(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processing_class,
        callbacks=callbacks,
        peft_config=peft_config,
    )
    if loss in ("adpo-pl", "adpo"):
        return ADPOTrainer(**common, ref_model=ref_model)
    if loss == "opo":
        return OPOTrainer(**common, ref_model=ref_model)
    common["reward_funcs"] = guard_reward_funcs(reward_funcs)
    return GRPOTrainer(**common)


# --------------------------------------------------------------------------- warm start


def _sft_batch(tokenizer, rows: Sequence[dict[str, str]], device) -> tuple[torch.Tensor, ...]:
    """Left-padded ``prompt + answer + eos`` ids ``[N, L]``, attention ``[N, L]``, and the
    answer mask over the last ``T`` positions ``[N, T]`` (answers right-aligned, so the last
    ``T`` tokens hold every answer)."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    seqs, n_answer = [], []
    for r in rows:
        p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        a = tokenizer(r["answer"], add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(p + a)
        n_answer.append(len(a))
    L, T = max(map(len, seqs)), max(n_answer)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), L), dtype=torch.long)
    ans = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, (s, k) in enumerate(zip(seqs, n_answer, strict=True)):
        ids[i, L - len(s) :] = torch.tensor(s)
        att[i, L - len(s) :] = 1
        ans[i, T - k :] = True
    return ids.to(device), att.to(device), ans.to(device)


def supervised_warm_start(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[dict[str, str]],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Supervised fine-tuning on ``prompt → answer<eos>`` rows (``adpo.losses.sft_loss``).

    Batches are drawn uniformly from ``rows`` with a seeded RNG; AdamW, constant ``lr``.

    Returns:
        The loss of every step.
    """
    from adpo.logprobs import causal_lm_logps
    from adpo.losses import sft_loss

    if steps < 0 or batch_size < 1:
        raise ValueError(
            f"supervised_warm_start: need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}"
        )
    if not rows:
        raise ValueError("supervised_warm_start: `rows` is empty")
    rng = random.Random(seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        batch = [rows[rng.randrange(len(rows))] for _ in range(batch_size)]
        ids, att, ans = _sft_batch(tokenizer, batch, device)
        logps = causal_lm_logps(model, ids, att, logits_to_keep=ans.shape[1])  # (N, T)
        out = sft_loss(logps, ans)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


@torch.no_grad()
def greedy_accuracy(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[dict[str, str]],
    reward: Callable[[str, str], float],
    *,
    max_new_tokens: int,
    batch_size: int = 256,
) -> float:
    """Fraction of ``rows`` whose greedy completion gets ``reward(completion, answer) >= 1``."""
    was_training = model.training
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        enc = tokenizer(
            [r["prompt"] for r in chunk],
            padding=True,
            return_tensors="pt",
            add_special_tokens=False,
        ).to(device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(
            out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
        correct += sum(reward(t, r["answer"]) >= 1.0 for t, r in zip(texts, chunk, strict=True))
    model.train(was_training)
    return correct / max(len(rows), 1)


# --------------------------------------------------------------------------- progress


def RichProgress(total: int, description: str = "RL", metric: str = "reward"):
    """A ``TrainerCallback`` that draws a rich progress bar and the latest ``metric``."""
    from transformers import TrainerCallback

    from adpo.experiments._io import progress_bar

    class _RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress = None  # a rich Progress while training runs
            self.task = None
            self.last = math.nan

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.progress = progress_bar(info=True)
            self.progress.start()
            self.task = self.progress.add_task(
                description, total=total, info="", completed=state.global_step
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and metric in logs:
                self.last = float(logs[metric])

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(
                    self.task, completed=state.global_step, info=f"{metric} {self.last:.3f}"
                )

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return _RichProgress()


# --------------------------------------------------------------------------- datasets


def load_rows(source: str, *, split: str = "train"):
    """A ``datasets.Dataset`` from a hub id, a local dataset folder, a JSON/JSONL or a parquet file.

    Raises:
        FileNotFoundError: a path-like ``source`` that does not exist.
    """
    import datasets

    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".parquet", ".csv"):
        if not path.exists():
            raise FileNotFoundError(f"load_rows: no such file {source!r}")
        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}[suffix]
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        return datasets.load_dataset(str(path), split=split)
    if source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"load_rows: no such file or folder {source!r}")
    return datasets.load_dataset(source, split=split)


def validate_rows(dataset: Any, required: Sequence[str], *, name: str = "dataset") -> None:
    """Check that every row has every ``required`` column, non-empty.

    A prompt may be a string or a list of chat messages (``{"role", "content"}``).

    Raises:
        ValueError: naming the first bad row and column.
    """
    cols = set(dataset.column_names)
    missing = [c for c in required if c not in cols]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; the dataset has {sorted(cols)}")
    if len(dataset) == 0:
        raise ValueError(f"{name}: the dataset has no rows")
    for i, row in enumerate(dataset.select_columns(list(required))):
        for c in required:
            v = row[c]
            if v is None:
                raise ValueError(f"{name}: row {i}: column {c!r} is missing (None)")
            if isinstance(v, str):
                if not v.strip():
                    raise ValueError(f"{name}: row {i}: column {c!r} is empty")
            elif isinstance(v, list):
                if not v:
                    raise ValueError(f"{name}: row {i}: column {c!r} is an empty list")
                for m in v:
                    if not (isinstance(m, dict) and "role" in m and "content" in m):
                        raise ValueError(
                            f"{name}: row {i}: column {c!r} must be a string or a list of "
                            f"{{'role', 'content'}} messages, got an element {m!r:.80}"
                        )
                if not any(str(m["content"]).strip() for m in v):
                    raise ValueError(f"{name}: row {i}: column {c!r} has only empty messages")
            elif not isinstance(v, (int, float)):
                raise ValueError(
                    f"{name}: row {i}: column {c!r} must be text, got {type(v).__name__}"
                )


def timer() -> Callable[[], float]:
    """``elapsed = timer(); …; elapsed()`` seconds (``time.perf_counter``)."""
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0


# --------------------------------------------------------------------------- adpo train

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
    import yaml

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"adpo train: no such config file {path!r}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"adpo train: {path} must hold a mapping, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(TrainArgs)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(
            f"adpo train: unknown key(s) {unknown} in {path}; top-level keys are the flags of "
            f"`adpo train --help` (underscores), TRL config fields go under `trainer:`"
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

    Returns:
        ``(dataset, reward_kind)`` with ``reward_kind`` in ``{"math", "exact", "arithmetic"}``.
    """
    cols = set(dataset.column_names)
    prompt_col = args.prompt_column or ("prompt" if "prompt" in cols else "problem")
    kind = args.reward
    if kind == "auto":
        kind = "math" if "solution" in cols else "exact"
    ref_col = "solution" if kind == "math" else "answer"
    validate_rows(dataset, [prompt_col, ref_col], name=f"dataset {args.dataset!r}")
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

    from adpo.experiments._io import console
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
