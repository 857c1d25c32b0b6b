"""One name per objective, each with its paper's standard settings: runs compare on equal terms.

Same generation, batching and reward code for every objective; only the loss differs.

| name | trainer and settings |
|---|---|
| ``adpo-pl`` | :class:`~adpo.trainers.ADPOTrainer`, Plackett–Luce target, ``ADPOConfig``'s defaults (the ADPO paper's LLM setting: τ_base 0.8 with the entropy-reward schedule, a 0.2, b 0.5) |
| ``adpo`` | :class:`~adpo.trainers.ADPOTrainer`, softmax target, ``ADPOConfig``'s defaults (τ_base 0.8 and the same schedule, β_r 0.5) |
| ``opo`` | :class:`~adpo.trainers.OPOTrainer`, ``OPOConfig``'s defaults (α 0.4, μ 1.0) |
| ``grpo`` | TRL ``GRPOTrainer``, ``loss_type="grpo"``: PPO-clip ε 0.2, per-sequence token mean, group-std advantages, no KL (β 0) |
| ``gspo`` | TRL ``GRPOTrainer``, sequence-level ratio (``importance_sampling_level="sequence"``), ε 3e-4 / 4e-4, ``loss_type="grpo"`` (TRL's GSPO recipe) |
| ``dapo`` | TRL ``GRPOTrainer``, ``loss_type="dapo"`` (token-level sum over the batch), clip-higher ε 0.2 / 0.28, overlong filtering (``mask_truncated_completions``). DAPO's dynamic sampling (re-drawing zero-signal groups) is not in TRL and not here. |

ADPO and OPO take every setting but the target from their config's defaults, so
``ADPOConfig``/``OPOConfig`` are the one source of their defaults (``adpo train``, the
benchmarks and the docs' tables read them there); GRPO/GSPO/DAPO pin their papers' settings
against TRL's defaults, which move between TRL releases.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

__all__ = ["LOSSES", "Loss", "identity", "loss_config", "make_trainer", "preset"]

#: an objective's name: ``adpo train --loss``, the demo and the benchmarks take these
Loss = Literal["adpo-pl", "adpo", "opo", "grpo", "gspo", "dapo"]
#: every objective, in the order tables list them
LOSSES: tuple[str, ...] = get_args(Loss)

# each preset: (config class name, the settings that differ from the class's defaults)
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "adpo-pl": ("ADPOConfig", {"target": "plackett_luce"}),
    "adpo": ("ADPOConfig", {"target": "softmax"}),
    "opo": ("OPOConfig", {}),
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


# the settings that make a config *this* objective, as the values each may take (the rest
# of a preset may be overridden): `adpo` is ADPO with a target distribution built from the
# advantages (softmax, or top-1), `adpo-pl` ADPO with the ranking target
_IDENTITY: dict[str, dict[str, tuple[Any, ...]]] = {
    "adpo-pl": {"target": ("plackett_luce",)},
    "adpo": {"target": ("softmax", "top1")},
    "opo": {},
    "grpo": {"loss_type": ("grpo",), "importance_sampling_level": ("token",)},
    "gspo": {"importance_sampling_level": ("sequence",)},
    "dapo": {"loss_type": ("dapo",)},
}


def _config_class(name: str) -> type:
    if name == "GRPOConfig":
        from trl import GRPOConfig

        return GRPOConfig
    from adpo.trainers import online

    return getattr(online, name)


def preset(loss: str) -> tuple[type, dict[str, Any]]:
    """``(config class, settings)`` of objective ``loss``: what :func:`loss_config` starts from.

    The settings are those that differ from the class's own defaults (a copy; the class's
    defaults fill in the rest).
    """
    if loss not in _PRESETS:
        raise ValueError(f"loss_config: `loss` must be one of {LOSSES}, got {loss!r}")
    cls_name, settings = _PRESETS[loss]
    return _config_class(cls_name), dict(settings)


def identity(loss: str) -> dict[str, tuple[Any, ...]]:
    """The settings that make a config objective ``loss``, each with the values it may take
    (a copy): :func:`make_trainer` refuses a config outside them, ``adpo train`` the flags
    that would put it there."""
    preset(loss)  # a known objective
    return dict(_IDENTITY[loss])


def loss_config(loss: str, **overrides: Any):
    """The TRL config of objective ``loss`` (one of :data:`LOSSES`), preset then ``overrides``.

    ``activation_checkpointing`` follows ``gradient_checkpointing`` (TRL's default: on) when
    it is not given, so that transformers does not warn about the old name.

    Raises:
        ValueError: unknown ``loss``, or an override that is not a field of the config
            class (named in the message).
    """
    cls, settings = preset(loss)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"loss_config: {unknown} are not fields of {cls.__name__} (loss {loss!r}); check the "
            "spelling, or whether the option belongs to another objective"
        )
    kwargs = {**settings, **overrides}
    for old, new in (
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
    ):
        if new in fields and kwargs.get(new) is None:
            kwargs[new] = kwargs.get(old, fields[old].default)
            kwargs.pop(old, None)
    return cls(**kwargs)


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

    Raises:
        ValueError: ``args`` of another objective (another config class, or a setting
            that defines another objective, such as ``target`` for ``adpo-pl``/``adpo`` or
            ``loss_type`` for ``grpo``/``dapo``), or a ``ref_model`` the trainer would not
            use (GRPO/GSPO/DAPO; ADPO/OPO refuse it themselves unless ``anchor="fixed"`` or
            ``log_kl_to_init=True``).
    """
    from trl import GRPOTrainer

    from adpo.rewards import guard_reward_funcs
    from adpo.trainers.online import ADPOTrainer, OPOTrainer

    if loss not in _PRESETS:
        raise ValueError(f"make_trainer: `loss` must be one of {LOSSES}, got {loss!r}")
    cls_name = _PRESETS[loss][0]
    if type(args).__name__ != cls_name:  # GRPOConfig's subclasses are ADPO/OPO configs
        raise ValueError(
            f"make_trainer: loss {loss!r} trains with a {cls_name}, got `args` of type "
            f"{type(args).__name__}; build it with loss_config({loss!r}, ...)"
        )
    wrong = {k: getattr(args, k) for k, v in _IDENTITY[loss].items() if getattr(args, k) not in v}
    if wrong:
        raise ValueError(
            f"make_trainer: `args` has {wrong}, which is not the {loss!r} objective "
            f"({_IDENTITY[loss]}); build it with loss_config({loss!r}, ...) or pick the loss "
            "these settings belong to"
        )
    if ref_model is not None and cls_name == "GRPOConfig":
        raise ValueError(
            f"make_trainer: `ref_model` would be ignored by {loss!r}: TRL's GRPOTrainer builds "
            "its own reference model, and only with beta != 0 (the presets use beta = 0)"
        )
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
