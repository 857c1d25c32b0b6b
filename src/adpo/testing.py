"""Download-free building blocks for demos, benchmarks and tests: a tokenizer and a model.

Nothing in the library's core layers (losses … trainers) imports this module; the
experiments, the CLI's embedded defaults, the verl task and the tests do. The generated
task that goes with them is :class:`adpo.data.arithmetic.ArithmeticTask`.

* :func:`char_tokenizer` — a real Hugging Face fast tokenizer (``PreTrainedTokenizerFast``)
  over a fixed character set, with pad/bos/eos tokens and a minimal chat template, so
  TRL, ``datasets`` and ``save_pretrained`` treat it like any other tokenizer.
* :func:`tiny_qwen3` — a Qwen3-architecture causal LM built from a config (no weights
  downloaded), small enough to train on a laptop CPU.
* :func:`tiny_trl_args` — the keyword arguments of a small, fast, CPU-only TRL run
  (``ADPOConfig(**tiny_trl_args(tmp))``), for testing reward functions and datasets.

Requires the ``hf`` extra (``transformers``, ``tokenizers``).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["CHARSET", "char_tokenizer", "tiny_qwen3", "tiny_trl_args"]

#: every character the tiny tokenizer knows (digits, operators, a little text)
CHARSET = "0123456789+-*=()?., abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:;!\n#\\{}_^/"

_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def char_tokenizer(charset: str = CHARSET):
    """A character-level ``PreTrainedTokenizerFast`` (one token per character).

    Ids: ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``, then ``charset`` in order. Unknown
    characters map to ``<unk>``. Padding side is left (what generation wants); the
    tokenizer adds no special tokens on its own.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(charset))
    vocab = {tok: i for i, tok in enumerate([*_SPECIALS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=512,
    )
    hf.chat_template = _CHAT_TEMPLATE
    return hf


def tiny_qwen3(
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 256,
    attention_dropout: float = 0.0,
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
    seed: int = 0,
):
    """A randomly initialised ``Qwen3ForCausalLM`` built from a config (float32).

    ``attention_dropout`` is the dropout rate on the attention probabilities in training
    mode (0 by default, as in Qwen3's own config).
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if hidden_size % num_heads:
        raise ValueError(
            f"tiny_qwen3: hidden_size {hidden_size} is not divisible by num_heads {num_heads}"
        )
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        attention_dropout=attention_dropout,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        use_cache=True,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.bos_token_id = bos_token_id
    return model


def tiny_trl_args(output_dir: str | os.PathLike[str], **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a small, fast, CPU-only TRL run; ``overrides`` win.

    G = 4, 8 completions per micro-batch (two groups), 3 completion tokens, 2 steps at a
    constant lr 1e-2, no checkpoints, no reporting, no bf16, no progress bar, no activation
    checkpointing. Works for :class:`~adpo.trainers.ADPOConfig`,
    :class:`~adpo.trainers.OPOConfig` and TRL's ``GRPOConfig`` alike. transformers 5's old
    name ``gradient_checkpointing`` is accepted in ``overrides`` and passed on under the new
    one, ``activation_checkpointing`` (so the config does not warn about it).
    """
    if "gradient_checkpointing" in overrides:
        overrides["activation_checkpointing"] = overrides.pop("gradient_checkpointing")
    return {
        "output_dir": str(output_dir),
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 3,
        "max_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "save_strategy": "no",
        "report_to": [],
        "bf16": False,
        "use_cpu": True,
        "disable_tqdm": True,
        "activation_checkpointing": False,
        "seed": 0,
        **overrides,
    }
