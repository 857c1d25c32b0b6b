"""What ``ADPOConfig``/``OPOConfig`` do with each field of TRL's ``GRPOConfig``.

A TRL user switches by changing one import and one config class, so every ``GRPOConfig``
field either keeps its meaning, or is refused with the reason when set to anything but
TRL's default. None is accepted and ignored: :func:`refused_fields` runs in the configs'
``__post_init__``, and a test checks that every field of the installed ``GRPOConfig`` is
classified here (a TRL release that adds a loss option fails it until it is sorted).

``SAME`` lists the fields with TRL's meaning (generation, vLLM, batching, logging, rewards,
MoE). ``REFUSED`` maps each GRPO-loss field to why it has no meaning for an anchored loss
and what replaces it. ``ADAPTED`` maps the fields that act, but not exactly as in GRPO, to
what they do here. ``TrainingArguments`` fields (optimizer, schedule, checkpoints,
precision, …) all keep their meaning and are not listed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["ADAPTED", "REFUSED", "SAME", "classify", "markdown_table", "refused_fields"]

SAME: tuple[str, ...] = (
    # model loading and forward
    "model_init_kwargs",
    "trust_remote_code",
    "disable_dropout",
    "cast_lm_head_to_fp32",
    # groups, batching, generation
    "num_generations",
    "max_completion_length",
    "ds3_gather_for_generation",
    "shuffle_dataset",
    "pad_to_multiple_of",
    "generation_batch_size",
    "steps_per_generation",
    "num_iterations",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "generation_kwargs",
    "chat_template_kwargs",
    "repetition_penalty",
    "cache_implementation",
    "use_transformers_continuous_batching",
    "transformers_continuous_batching_config",
    "use_transformers_paged",
    "max_tool_calling_iterations",
    # vLLM generation
    "use_vllm",
    "vllm_mode",
    "vllm_model_impl",
    "vllm_enable_sleep_mode",
    "vllm_structured_outputs_regex",
    "vllm_server_base_url",
    "vllm_server_host",
    "vllm_server_port",
    "vllm_server_timeout",
    "vllm_group_port",
    "vllm_gpu_memory_utilization",
    "vllm_max_model_length",
    "vllm_tensor_parallel_size",
    # rewards
    "reward_weights",
    # logging
    "log_completions",
    "log_multimodal",
    "num_completions_to_print",
    "log_unique_prompts",
    "log_completions_hub_repo",
)

ADAPTED: dict[str, str] = {
    "multi_objective_aggregation": "`normalize_then_sum` standardises each reward function "
    "within its group before the weighted sum (TRL's first step); the loss standardises the "
    "sum within the group, so TRL's batch-level second step has no counterpart",
    "router_aux_loss_coef": "MoE router loss added to the anchored loss and logged as "
    "`aux_loss`, as in GRPO",
    "num_generations_eval": "evaluation group size; with 1, rewards and accuracy are logged "
    "and `eval_loss` is NaN (a listwise loss needs 2 candidates)",
    "mask_truncated_completions": "a truncated completion has an empty mask and leaves its "
    "group (GRPO: zero loss weight)",
    "vllm_importance_sampling_correction": "`sequence_mask` applied: an out-of-bounds "
    "completion leaves its group; the other modes are refused",
    "vllm_importance_sampling_mode": "only `sequence_mask` (see above)",
    "vllm_importance_sampling_clip_min": "bounds of the sequence mask",
    "vllm_importance_sampling_clip_max": "bounds of the sequence mask",
    "vllm_importance_sampling_cap": "TRL's deprecated name of the clip bound",
}

_LOSS = "a GRPO-loss option; the loss is `adpo_loss`/`opo_loss`"
REFUSED: dict[str, str] = {
    "beta": "the KL penalty to a reference model: the anchor is the regulariser "
    "(`anchor='fixed'` anchors to the initial model)",
    "loss_type": f"{_LOSS} (token/sequence aggregation is part of the anchored loss)",
    "epsilon": f"{_LOSS}: no ratio clipping (the trust region is τ for ADPO, μ for OPO)",
    "epsilon_high": f"{_LOSS}: no ratio clipping (the trust region is τ for ADPO, μ for OPO)",
    "delta": f"{_LOSS}: no ratio clipping",
    "importance_sampling_level": f"{_LOSS}: the anchored losses are per sequence already",
    "scale_rewards": "the ADPO targets and OPO's escort weights standardise within the "
    "group themselves",
    "sapo_temperature_neg": _LOSS,
    "sapo_temperature_pos": _LOSS,
    "vespo_k_pos": _LOSS,
    "vespo_lambda_pos": _LOSS,
    "vespo_k_neg": _LOSS,
    "vespo_lambda_neg": _LOSS,
    "top_entropy_quantile": f"{_LOSS} (token masking by entropy)",
    "off_policy_mask_threshold": f"{_LOSS} (off-policy sequence masking)",
    "entropy_coef": "an entropy bonus in the GRPO loss",
    "use_adaptive_entropy": "an entropy bonus in the GRPO loss",
    "entropy_coef_min": "an entropy bonus in the GRPO loss",
    "entropy_coef_max": "an entropy bonus in the GRPO loss",
    "entropy_coef_delta": "an entropy bonus in the GRPO loss",
    "entropy_target": "an entropy bonus in the GRPO loss",
    "use_bias_correction_kl": "acts on the `beta` KL term only, which is refused",
    "sync_ref_model": "the reference-model sync of the `beta` term; use `anchor='ema'` for a "
    "moving anchor",
    "ref_model_mixup_alpha": "the reference-model sync of the `beta` term; use "
    "`anchor_ema_decay` with `anchor='ema'`",
    "ref_model_sync_steps": "the reference-model sync of the `beta` term",
}


def _grpo_defaults() -> dict[str, Any]:
    from transformers import TrainingArguments
    from trl import GRPOConfig

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    out = {}
    for f in dataclasses.fields(GRPOConfig):
        if f.name in base:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = None
    return out


def classify() -> dict[str, str]:
    """Every own field of the installed ``GRPOConfig`` → ``same``/``adapted``/``refused``/``unknown``."""
    kinds = {}
    for name in _grpo_defaults():
        if name in REFUSED:
            kinds[name] = "refused"
        elif name in ADAPTED:
            kinds[name] = "adapted"
        elif name in SAME:
            kinds[name] = "same"
        else:
            kinds[name] = "unknown"
    return kinds


def refused_fields(cfg: Any) -> dict[str, Any]:
    """The refused fields of ``cfg`` that differ from ``GRPOConfig``'s default → their value."""
    defaults = _grpo_defaults()
    return {
        name: getattr(cfg, name)
        for name in REFUSED
        if name in defaults and getattr(cfg, name, defaults[name]) != defaults[name]
    }


def refusal_message(owner: str, bad: dict[str, Any]) -> str:
    """One line per refused field: its value and why it has no meaning here."""
    lines = [f"  `{k}={v!r}`: {REFUSED[k]}" for k, v in bad.items()]
    return (
        f"{owner}: these GRPOConfig fields do not apply to an anchored loss; leave them at "
        "TRL's defaults:\n" + "\n".join(lines)
    )


def markdown_table() -> str:
    """The README/config-docs table: field → what ADPOConfig/OPOConfig does with it."""
    rows = ["| `GRPOConfig` field | in `ADPOConfig`/`OPOConfig` |", "|---|---|"]
    rows.append(
        "| generation, vLLM, batching, logging, `reward_weights`"
        " (" + ", ".join(f"`{n}`" for n in ("num_generations", "steps_per_generation",
                                              "num_iterations", "temperature", "use_vllm"))
        + ", …) | same meaning as in TRL |"
    )  # fmt: skip
    for name, what in ADAPTED.items():
        rows.append(f"| `{name}` | {what} |")
    for name, why in REFUSED.items():
        rows.append(f"| `{name}` | refused unless TRL's default: {why} |")
    return "\n".join(rows)
