"""The seam to TRL's private code: every private TRL/transformers name adpo uses, in one place.

:class:`adpo.trainers.ADPOTrainer` and :class:`adpo.trainers.OPOTrainer` subclass TRL's
``GRPOTrainer`` and keep its generation, rewards, logging and checkpoints; to change only
the loss and keep groups whole they must reach into private code. All of it is named here
and wrapped by the small functions below, and :func:`seam_problems` checks each name
against the installed TRL, so an upgrade fails one clear test (``tests/compat``) and one
clear error at trainer construction instead of a run.

What the online trainers rely on, and why:

* **Overridden private methods** (:data:`OVERRIDDEN`, with the parameters TRL calls them
  with): ``_generate_and_score_completions`` (group ids, raw rewards, anchors per round),
  ``_prepare_inputs`` (shuffle a round by whole groups, prepare each optimizer step), ``_calculate_rewards``
  (see below), ``_compute_loss`` (the anchored loss); and transformers' ``_save_checkpoint``
  / ``_load_optimizer_and_scheduler`` (our round buffer and schedules in checkpoints).
* **Private methods called** (:data:`CALLED`): ``_get_per_token_logps_and_entropies`` with
  the keywords in :data:`CALLED`; transformers' ``_get_output_dir``.
* **Private state read or written** (:data:`ATTRIBUTES`): ``_metrics`` (TRL's per-step log
  lists), ``_step`` (micro-steps, drives the round schedule), ``_buffered_inputs`` (the
  round's mini-batches), ``_logs`` (the completions table of ``log_completions``, whose
  ``advantages`` column we replace with the group advantages our losses use,
  :func:`replace_logged_advantages`).
* **Helpers** from ``trl.trainer.utils`` (:data:`HELPERS`): splitting rounds, PEFT adapter
  switching, the fused LM head. ``add_fused_lm_head`` patches ``forward`` *on the
  instance*; a frozen copy of the policy must drop the copied patch and get its own
  (:func:`patch_frozen_forward`).
* **Round keys** TRL's ``_generate_and_score_completions`` returns that we read
  (:data:`ROUND_KEYS`, :data:`MULTIMODAL_KEYS`).
* **Sampler layout**: ``RepeatSampler(mini_repeat_count=G, …)`` lays each prompt out as a
  run of ``G`` consecutive rows, and each process gets a contiguous slice, so a row's
  place in the round (process × local row) names its group.
* **Raw rewards.** TRL's ``_generate_and_score_completions`` calls ``_calculate_rewards``
  and returns only advantages, so no return value carries the per-function rewards to our
  override of it. ``_calculate_rewards`` hands them over once (:class:`RewardHandOff`):
  set once per round, taken once, an error if missing.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trl
from packaging.version import Version
from torch import Tensor, nn

__all__ = [
    "ATTRIBUTES",
    "CALLED",
    "HELPERS",
    "MULTIMODAL_KEYS",
    "OVERRIDDEN",
    "ROUND_KEYS",
    "TESTED_TRL",
    "RewardHandOff",
    "check_trl",
    "checkpoint_folder",
    "is_peft",
    "patch_frozen_forward",
    "reference_adapter",
    "replace_logged_advantages",
    "seam_problems",
    "split_images",
    "split_round",
    "token_logps_and_entropies",
]

#: the TRL versions the seam was tested with: ``[low, high)``
TESTED_TRL = (Version("1.16.0"), Version("1.17.0"))

#: private methods the online trainers override → the parameters TRL/transformers call them with
OVERRIDDEN: dict[str, tuple[str, ...]] = {
    "_generate_and_score_completions": ("self", "inputs"),
    "_prepare_inputs": ("self", "generation_batch"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_compute_loss": ("self", "model", "inputs"),
    "_save_checkpoint": ("self", "model", "trial"),
    "_load_optimizer_and_scheduler": ("self", "checkpoint"),
}

#: image/video inputs TRL passes to the forward (all optional)
MULTIMODAL_KEYS: tuple[str, ...] = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)

#: private methods called → the parameter names we pass
CALLED: dict[str, tuple[str, ...]] = {
    "_get_per_token_logps_and_entropies": (
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
        *MULTIMODAL_KEYS,
    ),
    "_get_output_dir": ("trial",),
}

#: private attributes set by ``GRPOTrainer.__init__`` that we read or write
ATTRIBUTES: tuple[str, ...] = ("_metrics", "_step", "_buffered_inputs", "_logs")

#: helpers imported from ``trl.trainer.utils``
HELPERS: tuple[str, ...] = (
    "RepeatSampler",
    "add_fused_lm_head",
    "split_pixel_values_by_grid",
    "split_tensor_dict",
    "unsplit_pixel_values_by_grid",
    "use_adapter",
)

#: keys of TRL's round dict that we read (besides ``MULTIMODAL_KEYS``)
ROUND_KEYS: tuple[str, ...] = (
    "prompt_ids",
    "prompt_mask",
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "sampling_per_token_logps",
    "tool_mask",
)


def _params(fn: Any) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def seam_problems(trainer_cls: type | None = None) -> list[str]:
    """Every private name of the seam that the installed TRL lacks or has changed.

    Args:
        trainer_cls: the class to check (default ``trl.GRPOTrainer``).

    Returns:
        One message per problem (empty when the seam holds).
    """
    import trl.trainer.utils as tu

    cls = trl.GRPOTrainer if trainer_cls is None else trainer_cls
    out = []
    for name, want in OVERRIDDEN.items():
        fn = getattr(cls, name, None)
        if fn is None:
            out.append(f"{cls.__name__}.{name} is gone (adpo overrides it)")
        elif _params(fn)[: len(want)] != want:
            out.append(f"{cls.__name__}.{name}{_params(fn)}: adpo overrides it as {want}")
    for name, passed in CALLED.items():
        fn = getattr(cls, name, None)
        if fn is None:
            out.append(f"{cls.__name__}.{name} is gone (adpo calls it)")
            continue
        missing = [p for p in passed if p not in _params(fn)]
        if missing:
            out.append(f"{cls.__name__}.{name} no longer takes {missing} (adpo passes them)")
    init = inspect.getsource(cls.__init__)
    for attr in ATTRIBUTES:
        if f"self.{attr} =" not in init:
            out.append(f"{cls.__name__}.__init__ no longer sets self.{attr} (adpo reads it)")
    for name in HELPERS:
        if not hasattr(tu, name):
            out.append(f"trl.trainer.utils.{name} is gone (adpo uses it)")
    if hasattr(tu, "RepeatSampler"):
        want = ("data_source", "mini_repeat_count", "batch_size", "repeat_count")
        if _params(tu.RepeatSampler.__init__)[1:5] != want:
            out.append(f"RepeatSampler{_params(tu.RepeatSampler.__init__)}: adpo expects {want}")
    gen = getattr(cls, "_generate_and_score_completions", None)
    if gen is not None:
        src = inspect.getsource(gen)
        for key in (*ROUND_KEYS, *MULTIMODAL_KEYS):
            if f'"{key}"' not in src:
                out.append(f"{cls.__name__}._generate_and_score_completions no longer uses {key!r}")
        if "self._calculate_rewards(" not in src:
            out.append(
                f"{cls.__name__}._generate_and_score_completions no longer calls "
                "_calculate_rewards (adpo takes the raw rewards there)"
            )
    return out


def check_trl() -> None:
    """Refuse a TRL whose private code moved; warn on an untested version that still fits.

    Raises:
        RuntimeError: listing every :func:`seam_problems` message.
    """
    version = Version(trl.__version__)
    if TESTED_TRL[0] <= version < TESTED_TRL[1]:
        return
    problems = seam_problems()
    if problems:
        raise RuntimeError(
            f"adpo's online trainers were tested with trl>={TESTED_TRL[0]},<{TESTED_TRL[1]}; "
            f"trl {trl.__version__} changed private code they use:\n- " + "\n- ".join(problems)
        )
    warnings.warn(
        f"adpo's online trainers were tested with trl>={TESTED_TRL[0]},<{TESTED_TRL[1]}; found "
        f"trl {trl.__version__}, whose private names still match. Check the results.",
        stacklevel=2,
    )


# --------------------------------------------------------------------------- wrappers


def token_logps_and_entropies(
    trainer: Any,
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    logits_to_keep: int,
    *,
    batch: dict[str, Any],
    batch_size: int | None = None,
    compute_entropy: bool = False,
    compute_aux_loss: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``GRPOTrainer._get_per_token_logps_and_entropies``: ``[N, T]`` log-probs (and entropies).

    The multimodal inputs of ``batch`` (those present) are passed along.
    """
    mm = {k: batch[k] for k in MULTIMODAL_KEYS if batch.get(k) is not None}
    return trainer._get_per_token_logps_and_entropies(
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=batch_size,
        compute_entropy=compute_entropy,
        compute_aux_loss=compute_aux_loss,
        **mm,
    )


def split_round(batch: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """A round's rows (already grouped) as ``n`` consecutive mini-batches, images kept with rows."""
    from trl.trainer.utils import split_tensor_dict, unsplit_pixel_values_by_grid

    return [unsplit_pixel_values_by_grid(b) for b in split_tensor_dict(batch, n)]


def split_images(batch: dict[str, Any]) -> dict[str, Any]:
    """Per-row image tensors (before permuting rows), TRL's ``split_pixel_values_by_grid``."""
    from trl.trainer.utils import split_pixel_values_by_grid

    return split_pixel_values_by_grid(batch)


def patch_frozen_forward(trainer: Any, module: nn.Module) -> None:
    """Give a frozen (copy of a) model TRL's fused LM head, as TRL gives the policy.

    ``add_fused_lm_head`` patches ``forward`` on the instance with a closure over the
    *original* model; a deep copy carries that closure, so drop it and patch the copy
    itself (the base model under PEFT).
    """
    from trl.trainer.utils import add_fused_lm_head

    target = module.get_base_model() if hasattr(module, "get_base_model") else module
    target.__dict__.pop("forward", None)
    add_fused_lm_head(
        target,
        temperature=trainer.temperature,
        cast_lm_head_to_fp32=trainer.args.cast_lm_head_to_fp32,
    )


@contextmanager
def reference_adapter(model: nn.Module) -> Iterator[None]:
    """PEFT: the reference adapter (``"ref"``) if the model has one, else adapters disabled."""
    from trl.trainer.utils import use_adapter

    with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
        yield


def checkpoint_folder(trainer: Any, trial: Any) -> str:
    """The folder transformers writes this step's checkpoint to (created if missing)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = os.path.join(
        trainer._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
    )
    os.makedirs(folder, exist_ok=True)
    return folder


def replace_logged_advantages(trainer: Any, values: list[float]) -> None:
    """Overwrite the last ``len(values)`` entries of the completions table's advantage column.

    TRL logs its own GRPO advantage per completion (``log_completions``); ADPO and OPO never
    use it, so the table would show a number that played no part in the update.
    """
    column = trainer._logs["advantages"]
    for _ in range(min(len(values), len(column))):
        column.pop()
    column.extend(values)


class RewardHandOff:
    """The per-function rewards of one round, from ``_calculate_rewards`` to its caller.

    ``put`` in the ``_calculate_rewards`` override, ``take`` in the
    ``_generate_and_score_completions`` override after TRL's own has returned; a round's
    rewards are taken exactly once. The value is whatever the override puts (the online
    trainers put the rewards and which of them failed).
    """

    def __init__(self) -> None:
        self._value: Any = None

    def put(self, rewards_per_func: Any) -> None:
        self._value = rewards_per_func

    def take(self) -> Any:
        if self._value is None:
            raise RuntimeError(
                "adpo: TRL's _generate_and_score_completions returned without calling "
                "_calculate_rewards; the TRL seam changed (see adpo._compat.trl)"
            )
        value, self._value = self._value, None
        return value


def is_peft(model: nn.Module) -> bool:
    """Is ``model`` a PEFT model (adapters on a base model)?"""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is part of the hf extra
        return False
    return isinstance(model, PeftModel)
