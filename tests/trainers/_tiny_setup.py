"""Tiny model, tokenizer and dataset for the TRL-integration tests (no download)."""

from __future__ import annotations

import os
from typing import Any

from adpo.testing import tiny_trl_args

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def tiny_setup(n_rows: int = 64, seed: int = 0, hidden_size: int = 32):
    from datasets import Dataset

    from adpo.data.arithmetic import ArithmeticTask
    from adpo.testing import char_tokenizer, tiny_qwen3

    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=hidden_size, num_layers=1, seed=seed)
    rows = ArithmeticTask(digits=1).sample(n_rows * 4, seed=seed)
    unique = list({r["prompt"]: r for r in rows}.values())[:n_rows]
    return tok, model, Dataset.from_list(unique)


def base_args(output_dir: str, **overrides: Any) -> dict[str, Any]:
    """Small, fast, CPU-only TRL settings shared by the tests (:func:`adpo.testing.tiny_trl_args`)."""
    return tiny_trl_args(output_dir, **overrides)
