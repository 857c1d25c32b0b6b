"""A download-free verl task: the generated arithmetic problems of :mod:`adpo.data.arithmetic` as
verl RL parquet files, a verl reward function, and a tiny Qwen3 checkpoint built from a
config and briefly warm-started. Enough for a smoke run of
``examples/verl/smoke_tiny_arithmetic.yaml`` on one GPU, or on CPU with ``--cpu``::

    python -m adpo.integrations.verl.tasks --out runs/verl_tiny
    python -m adpo.integrations.verl --config examples/verl/smoke_tiny_arithmetic.yaml \
        adpo_tiny_dir=$PWD/runs/verl_tiny [--cpu]

Rows follow verl's RL dataset schema: ``data_source``, ``prompt`` (chat messages),
``ability``, ``reward_model.ground_truth``, ``extra_info.index``.

Why the warm start: a randomly initialised model emits random characters, so even the
partial-credit reward (:meth:`~adpo.data.arithmetic.ArithmeticTask.score`) is 0 for almost
every response (measured: about 1 group in 8 with any reward difference at G = 4), every
other group has zero advantages, and an RL step carries almost no gradient. A short
supervised warm start (:func:`adpo.trainers.warm_start.supervised_warm_start`, the one the
demo uses: ``adpo.losses.sft_loss`` on ``prompt → answer<eos>`` of the training problems,
with the prompt rendered by the tokenizer's chat template exactly as verl renders it)
makes the model answer with digits and stop, but rarely correctly, so rewards differ within
most groups and the RL steps move the weights (measured with the defaults, 40 steps:
about 7 groups in 10 with a reward difference). This is the usual reference policy of RL
fine-tuning, not a change of the reward; ``warm_start_steps=0`` skips it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from adpo.data.arithmetic import ArithmeticTask

__all__ = [
    "DATA_SOURCE",
    "arithmetic_rows",
    "chat_prompt",
    "compute_score",
    "main",
    "warm_start_rows",
    "write_tiny_task",
]

DATA_SOURCE = "adpo/arithmetic"


def arithmetic_rows(n: int, *, seed: int, split: str, digits: int = 1) -> list[dict[str, Any]]:
    """``n`` verl rows of ``ArithmeticTask(digits)`` (deterministic in ``seed``)."""
    rows = []
    for i, r in enumerate(ArithmeticTask(digits=digits).sample(n, seed)):
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "ability": "arithmetic",
                "reward_model": {"style": "rule", "ground_truth": r["answer"]},
                "extra_info": {"index": i, "split": split},
            }
        )
    return rows


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any
) -> float:
    """verl reward function (``reward.custom_reward_function``): partial credit in [0, 1].

    :meth:`adpo.data.arithmetic.ArithmeticTask.score`: 1.0 for the exact answer, a fraction of right
    digits otherwise, so a tiny random model still sees reward differences within a group.
    """
    if data_source != DATA_SOURCE:
        raise ValueError(f"compute_score: unknown data_source {data_source!r}")
    return ArithmeticTask.score(solution_str, str(ground_truth))


def chat_prompt(tokenizer: Any, content: str) -> str:
    """The prompt text verl generates from: the chat template with the generation prompt."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def warm_start_rows(tokenizer: Any, rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """``{"prompt", "answer"}`` rows for the warm start from verl rows: the prompt as verl
    renders it (:func:`chat_prompt`), the answer its ground truth."""
    return [
        {
            "prompt": chat_prompt(tokenizer, r["prompt"][0]["content"]),
            "answer": str(r["reward_model"]["ground_truth"]),
        }
        for r in rows
    ]


def write_tiny_task(
    out: str | Path,
    *,
    n_train: int = 512,
    n_test: int = 64,
    digits: int = 1,
    seed: int = 0,
    warm_start_steps: int = 40,
    warm_start_lr: float = 3e-3,
) -> dict[str, Path]:
    """Write ``train.parquet``, ``test.parquet``, a tiny Qwen3 + char tokenizer (``model/``),
    ``reward.py`` (re-exports :func:`compute_score`) and ``warm_start.json`` to ``out``.

    The model gets ``warm_start_steps`` supervised steps (batch 64, AdamW ``warm_start_lr``)
    on the training problems before it is saved (module doc: why); ``warm_start.json``
    records the settings and the first and last SFT loss.

    Returns:
        ``{"train": ..., "test": ..., "model": ..., "reward": ..., "warm_start": ...}`` paths.
    """
    import pandas as pd

    from adpo.testing import char_tokenizer, tiny_qwen3
    from adpo.trainers.warm_start import supervised_warm_start

    if warm_start_steps < 0:
        raise ValueError(
            f"write_tiny_task: `warm_start_steps` must be >= 0, got {warm_start_steps}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "train": out / "train.parquet",
        "test": out / "test.parquet",
        "model": out / "model",
        "reward": out / "reward.py",
        "warm_start": out / "warm_start.json",
    }
    train = arithmetic_rows(n_train, seed=seed, split="train", digits=digits)
    pd.DataFrame(train).to_parquet(paths["train"])
    pd.DataFrame(arithmetic_rows(n_test, seed=seed + 1, split="test", digits=digits)).to_parquet(
        paths["test"]
    )
    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=128, num_layers=2, num_heads=4, seed=seed)
    losses = supervised_warm_start(
        model, tok, warm_start_rows(tok, train), steps=warm_start_steps, lr=warm_start_lr, seed=seed
    )
    model.save_pretrained(paths["model"])
    tok.save_pretrained(paths["model"])
    paths["warm_start"].write_text(
        json.dumps(
            {
                "steps": warm_start_steps,
                "lr": warm_start_lr,
                "batch_size": 64,
                "sft_loss_first": losses[0] if losses else None,
                "sft_loss_last": losses[-1] if losses else None,
            },
            indent=2,
        )
    )
    # verl loads a reward function from a file path (reward.custom_reward_function.path)
    paths["reward"].write_text(
        "from adpo.integrations.verl.tasks import compute_score  # noqa: F401\n"
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m adpo.integrations.verl.tasks", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-test", type=int, default=64)
    p.add_argument("--digits", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--warm-start-steps", type=int, default=40, help="supervised steps before saving (0: none)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the warm start (1: fastest on a shared CPU, as measured)",
    )
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    paths = write_tiny_task(
        a.out,
        n_train=a.n_train,
        n_test=a.n_test,
        digits=a.digits,
        seed=a.seed,
        warm_start_steps=a.warm_start_steps,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
