"""A download-free verl task: the generated arithmetic problems of :mod:`adpo.data.arithmetic` as
verl RL parquet files, a verl reward function, and a tiny Qwen3 checkpoint built from a
config. Enough for a smoke run of ``examples/verl/smoke_tiny_arithmetic.yaml`` on one GPU::

    python -m adpo.integrations.verl.tasks --out runs/verl_tiny
    python -m adpo.integrations.verl --config examples/verl/smoke_tiny_arithmetic.yaml \
        adpo_tiny_dir=runs/verl_tiny

Rows follow verl's RL dataset schema: ``data_source``, ``prompt`` (chat messages),
``ability``, ``reward_model.ground_truth``, ``extra_info.index``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adpo.data.arithmetic import ArithmeticTask

__all__ = ["DATA_SOURCE", "arithmetic_rows", "compute_score", "main", "write_tiny_task"]

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


def write_tiny_task(
    out: str | Path, *, n_train: int = 512, n_test: int = 64, digits: int = 1, seed: int = 0
) -> dict[str, Path]:
    """Write ``train.parquet``, ``test.parquet``, a tiny Qwen3 + char tokenizer (``model/``)
    and ``reward.py`` (re-exports :func:`compute_score`) to ``out``.

    Returns:
        ``{"train": ..., "test": ..., "model": ..., "reward": ...}`` paths.
    """
    import pandas as pd

    from adpo.testing import char_tokenizer, tiny_qwen3

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "train": out / "train.parquet",
        "test": out / "test.parquet",
        "model": out / "model",
        "reward": out / "reward.py",
    }
    pd.DataFrame(arithmetic_rows(n_train, seed=seed, split="train", digits=digits)).to_parquet(
        paths["train"]
    )
    pd.DataFrame(arithmetic_rows(n_test, seed=seed + 1, split="test", digits=digits)).to_parquet(
        paths["test"]
    )
    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=128, num_layers=2, num_heads=4, seed=seed)
    model.save_pretrained(paths["model"])
    tok.save_pretrained(paths["model"])
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
    a = p.parse_args(argv)
    paths = write_tiny_task(a.out, n_train=a.n_train, n_test=a.n_test, digits=a.digits, seed=a.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
