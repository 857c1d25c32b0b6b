"""``adpo train``: online group RL on any Hugging Face causal LM and dataset, parsed as ``trl grpo``.

The flags are TRL's: every field of the objective's config (``ADPOConfig`` for ``--loss
adpo-pl``/``adpo``, ``OPOConfig`` for ``opo``, TRL's ``GRPOConfig`` for ``grpo``/``gspo``/
``dapo``, with the objective's preset from :func:`adpo.trainers.presets.preset`) is a flag
of the same name, beside the script's own arguments (:class:`TrainArgs`: model, dataset,
reward). The parser is TRL's ``TrlParser`` over those dataclasses, built when the command
runs, so a field added to a config is a flag at once and the defaults are the configs' own.
``--config FILE.yaml`` holds the same flat keys; a flag given on the command line always
beats the file. A flag of another objective is refused with a message naming the objective
that has it.

Everything that can be checked is checked before the model loads (the flags' ranges, the
config's own ``__post_init__``, the model folder, the dataset file and every row, the output
folder), and nothing is written before: a bad input is one line naming the flag, file or row,
exit status 2 for a usage error and 1 for bad data or files (``--debug`` shows the
traceback). An output folder that already holds files is refused unless the run resumes
(``--resume_from_checkpoint``) or ``--overwrite_output_dir`` is given. Ctrl-C finishes the
current optimizer step, saves a checkpoint, prints the command that resumes it and exits
with status 130 (a second Ctrl-C stops at once and names the last checkpoint saved).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import math
import os
import re
import shlex
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformers import TrainerCallback

from adpo._io import console
from adpo.cli._args import InputError, UsageError, run_command
from adpo.data.rows import load_rows, validate_rows
from adpo.trainers.presets import LOSSES, Loss, identity, loss_config, make_trainer, preset

__all__ = ["TrainArgs", "build_parser", "main", "parse_train_args", "prepare_dataset"]

PROG = "adpo train"
_PROMPT_SUFFIX_MATH = "\nPut your final answer within \\boxed{}."
# options of the script that no dataclass holds (a config field of the same name is left out)
_SCRIPT_OPTIONS = ("config", "debug")
# a hub id: "name" or "owner/name" (huggingface_hub's rules: no leading/trailing '-' or '.')
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


@dataclass
class TrainArgs:
    """The script's own arguments of ``adpo train`` (the trainer's config holds the rest)."""

    model: str = field(
        metadata={
            "help": "A local model folder (what save_pretrained writes, with its tokenizer) or a "
            "hub id (owner/name).",
            "aliases": ["--model_name_or_path"],
        }
    )
    dataset: str = field(
        metadata={
            "help": "A .jsonl/.json/.parquet/.csv file, a local dataset folder, or a hub id.",
            "aliases": ["--dataset_name"],
        }
    )
    loss: Loss = field(
        default="adpo-pl",
        metadata={"help": "The objective; its config's fields are the other options."},
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of a hub dataset."}
    )
    split: str = field(
        default="train",
        metadata={"help": "Dataset split.", "aliases": ["--dataset_train_split"]},
    )
    prompt_column: str | None = field(
        default=None, metadata={"help": "Prompt column (default: 'prompt', else 'problem')."}
    )
    reward: Literal["auto", "math", "exact", "arithmetic"] = field(
        default="auto",
        metadata={
            "help": "'math' (math-verify against the 'solution' column's last \\boxed{}), "
            "'exact' (against 'answer'), 'arithmetic', or 'auto' (default: math if there is a "
            "'solution' column, else exact)."
        },
    )
    reference_column: str | None = field(
        default=None,
        metadata={"help": "Column the reward compares with (default: 'solution' for math, else "
                  "'answer')."},
    )  # fmt: skip
    format_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of a format reward (exactly one \\boxed{}); 0 leaves it out."},
    )
    chat: Literal["auto", "yes", "no"] = field(
        default="auto",
        metadata={
            "help": "Wrap prompts as a user message: yes, no, or auto (default: when the "
            "tokenizer has a chat template)."
        },
    )
    prompt_suffix: str | None = field(
        default=None,
        metadata={"help": "Text appended to each prompt (default: for math, ask for a boxed answer)."},
    )  # fmt: skip
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an --output_dir that already holds files: files of the same name "
            "are replaced, none is deleted. Without it such a folder is refused unless the run "
            "resumes from a checkpoint."
        },
    )


# --------------------------------------------------------------------------- parsing

# Flags no config checks (TRL and transformers accept them and fail later, or run anyway):
# field → (accepts the value, what is expected). Applied to the fields the config has.
_RANGES: dict[str, tuple[Any, str]] = {
    "learning_rate": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "temperature": (lambda v: math.isfinite(v) and v > 0, "a number > 0"),
    "num_generations": (lambda v: v is None or v >= 2, "at least 2 (a group to compare)"),
    "per_device_train_batch_size": (lambda v: v >= 1, "at least 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "at least 1"),
    "max_steps": (lambda v: v >= 1 or v == -1, "at least 1, or -1 to train --num_train_epochs"),
}
# help of the fields whose meaning the command line changes
_HELP = {
    "bf16": "bfloat16 mixed precision (default: on where the GPU supports it, else off).",
    "resume_from_checkpoint": "A checkpoint folder to resume from, or 'latest' (default: "
    "none): the last checkpoint-* in --output_dir.",
    "output_dir": "Checkpoints, the model card and the final model (default: trainer_output).",
}


def _config_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _owners(name: str) -> list[str]:
    """The objectives whose config has field ``name``."""
    return [loss for loss in LOSSES if name in _config_fields(preset(loss)[0])]


def _unknown_message(loss: str, cls: type) -> Any:
    def message(name: str) -> str:
        name = name.replace("-", "_")
        owners = _owners(name)
        if owners:
            other = preset(owners[0])[0].__name__
            return (
                f"--{name} is an option of --loss {'/'.join(owners)} ({other}), not of "
                f"--loss {loss} ({cls.__name__})"
            )
        names = {n for lo in LOSSES for n in _config_fields(preset(lo)[0])}
        names |= {f.name for f in dataclasses.fields(TrainArgs)}
        close = difflib.get_close_matches(name, sorted(names), n=1)
        hint = f"; did you mean --{close[0]}?" if close else ""
        return f"unknown option --{name}{hint} (see {PROG} --help)"

    return message


def build_parser(loss: str = "adpo-pl"):
    """The parser of ``adpo train --loss LOSS``: :class:`TrainArgs` and the objective's config.

    Options come in groups: the script's, the objective's own config fields (``ADPOConfig``
    and ``OPOConfig`` only), TRL's ``GRPOConfig`` fields, transformers' ``TrainingArguments``
    fields. Defaults are the config's, with the objective's preset applied. For ADPO/OPO,
    the GRPO-loss fields they refuse (:data:`adpo.trainers.grpo_fields.REFUSED`) stay
    options but are left out of ``--help``.
    """
    from transformers import TrainingArguments
    from trl import GRPOConfig

    from adpo.cli._parser import DataclassParser
    from adpo.trainers.grpo_fields import REFUSED

    if loss not in LOSSES:
        raise UsageError(f"--loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    cls, settings = preset(loss)
    script = {f.name for f in dataclasses.fields(TrainArgs)} | set(_SCRIPT_OPTIONS)
    transformers_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    trl_fields = {f.name for f in dataclasses.fields(GRPOConfig)} - transformers_fields
    fields = [f for f in _config_fields(cls).values() if f.name not in script]
    own = [f for f in fields if f.name not in trl_fields | transformers_fields]
    hidden = list(REFUSED) if cls is not GRPOConfig else []
    parser = DataclassParser(
        prog=PROG,
        usage=f"{PROG} --model FOLDER|HUB_ID --dataset FILE|HUB_ID [--loss {{{','.join(LOSSES)}}}]"
        " [--config FILE.yaml] [--OPTION VALUE …]",
        description=f"Online group RL with --loss {loss} ({cls.__name__}). Every field of the "
        "objective's config is an option; `adpo train --loss LOSS --help` lists another "
        "objective's.",
        epilog="Options take underscores or dashes (--max_steps, --max-steps). A boolean option "
        "that defaults to true is switched off with --no_NAME or --NAME false. --config FILE.yaml "
        "holds the same names as keys (`max_steps: 200`); an option given on the command line "
        "beats the file. Exit status: 2 for a usage error, 1 for bad data or files, 130 after "
        "Ctrl-C (which saves a checkpoint first).",
        unknown=_unknown_message(loss, cls),
    )
    parser.add_fields(f"{PROG}", TrainArgs, defaults={"loss": loss})
    parser.add_option(PROG, "--config", metavar="FILE.yaml", help="Options from a YAML file.")
    parser.add_option(PROG, "--debug", action="store_true", help="Show the traceback of an error.")
    groups = [
        (f"{cls.__name__} (adpo): the objective's own options", own),
        (
            "GRPOConfig (TRL): generation, rewards, vLLM",
            [f for f in fields if f.name in trl_fields],
        ),
        (
            "TrainingArguments (transformers): optimizer, schedule, checkpoints, logging",
            [f for f in fields if f.name in transformers_fields],
        ),
    ]
    for title, group in groups:
        if group:
            parser.add_fields(title, cls, group, defaults=settings, hidden=hidden, help=_HELP)
    return parser


def _preparse(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """``--loss`` and ``--config`` from the command line, before the parser exists."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--loss")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(list(argv))
    return known.loss, known.config


def parse_train_args(argv: Sequence[str]) -> tuple[TrainArgs, Any]:
    """``(script arguments, the objective's config)`` from flags, a config file and defaults.

    Order of precedence: the command line, then ``--config``, then the config's defaults
    with the objective's preset. Checks what no config checks (:data:`_RANGES`) and builds
    the config, so its ``__post_init__`` runs here, before any model or data is read.

    Raises:
        UsageError: an unknown flag or key (naming the objective that has it), a value out
            of range, or the config's own ``ValueError``; named by flag, or by file and line.
        InputError: a config file that is missing or not YAML.
    """
    from adpo.cli._parser import read_config_file

    argv = list(argv)
    loss, config_path = _preparse(argv)
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if config_path:
        values, lines = read_config_file(config_path)
        env = values.pop("env", None)
        if env is not None:  # TRL's config files may set environment variables
            if not isinstance(env, dict):
                raise UsageError(f"{config_path} line {lines['env']}: `env` must be a mapping")
            os.environ.update({str(k): str(v) for k, v in env.items()})
        if "trainer" in values:  # the layout before TRL's parser: a nested `trainer:` block
            block = values["trainer"]
            keys = ", ".join(f"{k}: …" for k in block) if isinstance(block, dict) else ""
            raise UsageError(
                f"{config_path} line {lines['trainer']}: `trainer:` is gone; write its keys at "
                f"the top level ({keys or 'tau: 0.5'}), as every option of the config is"
            )
    if loss is None and "loss" in values:
        loss = str(values["loss"])
        if loss not in LOSSES:
            raise UsageError(
                f"{config_path} line {lines['loss']}: `loss` must be one of {', '.join(LOSSES)}; "
                f"got {loss!r}"
            )
    parser = build_parser(loss or "adpo-pl")
    where = parser.set_file_defaults(values, lines, config_path) if values else {}
    parsed = parser.parse(argv)
    given = {d for a in argv if a.startswith("--") and (d := parser.dest_of(a))}

    def at(name: str) -> str:
        """Where a value came from, for a message: the flag, or the file's line."""
        return f"--{name}" if name in given or name not in where else f"`{name}` ({where[name]})"

    script = {f.name: parsed.pop(f.name) for f in dataclasses.fields(TrainArgs)}
    parsed.pop("config", None)
    parsed.pop("debug", None)
    args = TrainArgs(**script)
    for name, (ok, expected) in _RANGES.items():
        if name in parsed and parsed[name] is not None and not ok(parsed[name]):
            raise UsageError(f"{at(name)} must be {expected}; got {parsed[name]!r}")
    if parsed.get("max_steps") == -1 and not parsed.get("num_train_epochs", 1) > 0:
        raise UsageError(
            f"{at('num_train_epochs')} must be > 0 when --max_steps is -1; got "
            f"{parsed['num_train_epochs']!r}"
        )
    if args.format_weight < 0 or not math.isfinite(args.format_weight):
        raise UsageError(f"{at('format_weight')} must be ≥ 0; got {args.format_weight!r}")
    if args.format_weight > 0:
        if parsed.get("reward_weights") is not None:
            raise UsageError("give --format_weight or --reward_weights, not both")
        parsed["reward_weights"] = [1.0, args.format_weight]
    if parsed.get("bf16") is None and not parsed.get("fp16"):
        from transformers.utils import is_torch_bf16_gpu_available

        parsed["bf16"] = is_torch_bf16_gpu_available()
    try:
        config = loss_config(args.loss, **parsed)
    except ValueError as e:
        message = str(e)
        named = re.search(r"`(\w+)`", message)
        if named and named.group(1) in where and named.group(1) not in given:
            message += f" ({where[named.group(1)]})"
        raise UsageError(message) from e
    for name, allowed in identity(args.loss).items():  # what --loss means, not to contradict
        given_value = getattr(config, name)
        if given_value not in allowed:
            other = [lo for lo in LOSSES if given_value in identity(lo).get(name, ())]
            hint = f"; that is --loss {other[0]}" if other else "; no --loss trains with it"
            raise UsageError(
                f"{at(name)} {given_value} contradicts --loss {args.loss} ({name} "
                f"{' or '.join(map(str, allowed))}){hint}"
            )
    return args, config


# --------------------------------------------------------------------------- checks


def _check_model(model: str) -> None:
    """A model folder with a config, or something that can be a hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(
                f"--model {model}: the folder has no config.json (a model folder is what "
                "save_pretrained writes)"
            )
        return
    if path.exists():
        raise InputError(f"--model {model}: a file, not a model folder")
    if model.startswith((".", "/", "~")) or not _HUB_ID.match(model) or ".." in model:
        raise InputError(f"--model {model}: no such folder (and not a hub id: owner/name)")


def _resume_point(args: TrainArgs, config: Any) -> str | None:
    """The checkpoint to resume from (checked), or None; refuses to write over a run."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(config.output_dir)
    resume = config.resume_from_checkpoint
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out}: a file, not a folder")
    if resume in (None, "", "false", "False"):
        if out.is_dir() and any(out.iterdir()) and not args.overwrite_output_dir:
            raise UsageError(
                f"--output_dir {out} already holds files (an earlier run?): resume it with "
                "--resume_from_checkpoint latest, choose another --output_dir, or pass "
                "--overwrite_output_dir to train into it anyway"
            )
        return None
    if resume in ("latest", "true", "True"):
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise InputError(f"--resume_from_checkpoint {resume}: no checkpoint-* folder in {out}")
        return last
    if not Path(resume).is_dir():
        raise InputError(f"--resume_from_checkpoint {resume}: no such folder")
    if not (Path(resume) / "trainer_state.json").is_file():
        raise InputError(
            f"--resume_from_checkpoint {resume}: not a checkpoint (no trainer_state.json)"
        )
    return str(resume)


def _read_rows(args: TrainArgs) -> list[dict[str, Any]]:
    try:
        rows = load_rows(args.dataset, split=args.split, name=args.dataset_config)
    except (OSError, ValueError) as e:  # load_rows's own messages name the file: once is enough
        reason = str(e).removeprefix("load_rows: ").splitlines()[0]
        for name in (str(Path(args.dataset).expanduser()), args.dataset):
            reason = reason.removeprefix(f"{name}: ")
        raise InputError(f"--dataset {args.dataset}: {reason}") from e
    except Exception as e:  # datasets' own errors (hub, pyarrow): one line
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"--dataset {args.dataset}: {reason}") from e
    return rows


def _columns(dataset: Any, args: TrainArgs) -> tuple[str, str, str]:
    """``(prompt column, reference column, reward kind)`` of the dataset."""
    cols = set(getattr(dataset, "column_names", None) or (dataset[0] if len(dataset) else {}))
    prompt_col = args.prompt_column or ("prompt" if "prompt" in cols else "problem")
    kind = args.reward
    if kind == "auto":
        kind = "math" if "solution" in cols else "exact"
    ref_col = args.reference_column or ("solution" if kind == "math" else "answer")
    return prompt_col, ref_col, kind


def prepare_dataset(dataset: Any, args: TrainArgs, tokenizer: Any):
    """Validate rows and map them to TRL's ``prompt`` (+ reference) columns.

    Args:
        dataset: a ``list[dict]`` (from :func:`adpo.data.load_rows`) or a ``datasets.Dataset``.

    Returns:
        ``(dataset, reward_kind)``: a ``datasets.Dataset`` and ``reward_kind`` in
        ``{"math", "exact", "arithmetic"}``.

    Raises:
        ValueError: a missing column or a bad row, named.
    """
    prompt_col, ref_col, kind = _columns(dataset, args)
    validate_rows(dataset, [prompt_col, ref_col], name=f"--dataset {args.dataset}")
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
                f"{ref_col!r} (first: row {bad[0]}); they give no reward (no learning signal)",
                stacklevel=2,
            )
    suffix = args.prompt_suffix
    if suffix is None:
        suffix = _PROMPT_SUFFIX_MATH if kind == "math" else ""
    chat = args.chat == "yes" or (args.chat == "auto" and getattr(tokenizer, "chat_template", None))
    out_ref = "solution" if kind == "math" else "answer"  # what the reward functions read

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        p = row[prompt_col]
        if isinstance(p, str):
            p = p + suffix
            if chat:
                p = [{"role": "user", "content": p}]
        elif suffix:  # conversational: append to the last user message
            p = [*p[:-1], {**p[-1], "content": str(p[-1]["content"]) + suffix}]
        return {"prompt": p, out_ref: str(row[ref_col])}

    return dataset.map(convert, remove_columns=dataset.column_names), kind


# --------------------------------------------------------------------------- the run


def _say(message: str) -> None:
    """A line on stderr, never wrapped (a command to copy stays one line)."""
    console.print(message, soft_wrap=True, highlight=False, markup=False)


def _tied_aliases(model: Any) -> set[str]:
    """Parameter names that share their tensor with an earlier one (a tied ``lm_head``)."""
    first: dict[int, str] = {}
    aliases = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(p), name) != name:
            aliases.add(name)
    return aliases


class _TiedWeightsNote(logging.Filter):
    """Drops transformers' "missing keys … ['lm_head.weight']" on resume when every missing
    key is a tied alias: ``save_pretrained`` leaves aliases out of a checkpoint and loading
    re-ties them, so nothing is missing."""

    _MISSING = re.compile(r"There were missing keys in the checkpoint model loaded: (\[.*\])\.?$")

    def __init__(self, aliases: set[str]) -> None:
        super().__init__()
        self.aliases = aliases

    def filter(self, record: logging.LogRecord) -> bool:
        m = self._MISSING.match(record.getMessage())
        return not (m and set(re.findall(r"'([^']+)'", m.group(1))) <= self.aliases)


class _StopOnInterrupt(TrainerCallback):
    """Ctrl-C during training: finish the optimizer step, save a checkpoint, stop.

    A second Ctrl-C raises ``KeyboardInterrupt`` at once. With several processes, each stops
    at the first step where any of them was interrupted.
    """

    def __init__(self) -> None:
        self.requested = False
        self.stopped_at: int | None = None
        self._previous: Any = None

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        if state.is_world_process_zero:
            _say(f"{PROG}: training (Ctrl-C saves a checkpoint and stops)")

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        _say(f"{PROG}: stopping after this step to save a checkpoint (Ctrl-C again stops now)")

    def on_step_end(self, args, state, control, **kwargs):
        if self._anywhere(args):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def _anywhere(self, args) -> bool:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        import torch

        flag = torch.tensor([float(self.requested)], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _resume_command(argv: Sequence[str], checkpoint: str) -> str:
    """The command line of this run, resuming from ``checkpoint``."""
    out, i = [], 0
    while i < len(argv):  # this run's flags, less how it started (resume, overwrite)
        a = argv[i]
        name = a.split("=", 1)[0].lstrip("-").replace("-", "_") if a.startswith("--") else ""
        has_value = "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("--")
        if name in ("resume_from_checkpoint", "overwrite_output_dir"):
            i += 2 if has_value else 1
            continue
        out.append(a)
        i += 1
    return shlex.join([*PROG.split(), *out, "--resume_from_checkpoint", checkpoint])


@contextlib.contextmanager
def _quiet_tied_weights(model: Any) -> Iterator[None]:
    logger = logging.getLogger("transformers.trainer")
    note = _TiedWeightsNote(_tied_aliases(model))
    logger.addFilter(note)
    try:
        yield
    finally:
        logger.removeFilter(note)


def _load(what: str, loader: Any, model: str) -> Any:
    try:
        return loader(model)
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = "" if Path(model).expanduser().is_dir() else " (no such folder; tried the hub)"
        raise InputError(f"--model {model}: cannot load the {what}{hint}: {reason}") from e


def _train(argv: list[str]) -> int:
    args, config = parse_train_args(argv)
    _check_model(args.model)
    resume = _resume_point(args, config)
    rows = _read_rows(args)
    # only files are read so far; the tokenizer (for its chat template) writes nothing either
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adpo.rewards import FormatReward, arithmetic_reward, exact_match_reward, math_reward
    from adpo.trainers import _model_card

    tokenizer = _load("tokenizer", AutoTokenizer.from_pretrained, args.model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        dataset, kind = prepare_dataset(rows, args, tokenizer)
    except ValueError as e:  # a missing column or a bad row, named
        raise InputError(str(e)) from e
    reward = {"math": math_reward, "exact": exact_match_reward, "arithmetic": arithmetic_reward}
    reward_funcs: list = [reward[kind]]
    if args.format_weight > 0:
        reward_funcs.append(FormatReward())
    model = _load("model", AutoModelForCausalLM.from_pretrained, args.model)
    trainer = make_trainer(args.loss, model, reward_funcs, config, dataset, tokenizer)
    stop = _StopOnInterrupt()
    trainer.add_callback(stop)
    out = config.output_dir
    steps = (
        f"{config.max_steps} steps"
        if config.max_steps > 0
        else f"{config.num_train_epochs:g} epochs"
    )
    _say(
        f"{PROG}: {args.loss} ({type(config).__name__}) on {args.model} with {len(dataset)} "
        f"prompts ({kind} reward), {steps} → {out}"
        + (f", resuming from {resume}" if resume else "")
    )
    try:
        with _quiet_tied_weights(model):
            trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(out) if Path(out).is_dir() else None
        if last is None:
            _say(f"{PROG}: interrupted at step {trainer.state.global_step}; no checkpoint saved")
        else:
            resume_with = _resume_command(argv, last)
            _say(f"{PROG}: interrupted; the last checkpoint is {last}\nresume with: {resume_with}")
        return 130
    if stop.stopped_at is not None:
        checkpoint = os.path.join(out, f"checkpoint-{stop.stopped_at}")
        _say(
            f"{PROG}: stopped at step {stop.stopped_at}; saved {checkpoint}\nresume with: "
            f"{_resume_command(argv, checkpoint)}"
        )
        return 130
    trainer.save_model(out)
    dataset_id = None if Path(args.dataset).expanduser().exists() else args.dataset
    trainer.create_model_card(model_name=Path(out).name, dataset_name=dataset_id)
    _model_card.complete(trainer)
    _say(f"{PROG}: saved the model and its card to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``adpo train`` (see the module doc); returns the exit status."""
    import sys

    return run_command(PROG, _train, sys.argv[1:] if argv is None else argv)
