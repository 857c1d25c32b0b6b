"""A short supervised warm start and greedy held-out accuracy, for any causal LM.

The warm start (``adpo.losses.sft_loss`` on ``prompt → answer<eos>`` rows) makes the
reference policy of the demo, the benchmarks and ``adpo train-offline``'s embedded
default; :func:`greedy_accuracy` measures it before and after RL.

Shapes: ``N`` sequences, ``L`` tokens per sequence, ``T`` answer tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["greedy_accuracy", "supervised_warm_start"]


def _sft_batch(
    tokenizer, rows: Sequence[dict[str, str]], device, *, bos: bool = False
) -> tuple[torch.Tensor, ...]:
    """Left-padded ``[bos] + prompt + answer + eos`` ids ``[N, L]``, attention ``[N, L]``, and
    the answer mask over the last ``T`` positions ``[N, T]`` (answers right-aligned, so the
    last ``T`` tokens hold every answer)."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    first = [tokenizer.bos_token_id] if bos and tokenizer.bos_token_id is not None else []
    seqs, n_answer = [], []
    for r in rows:
        p = first + tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
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
    bos: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Supervised fine-tuning on ``prompt → answer<eos>`` rows (``adpo.losses.sft_loss``).

    Batches are drawn uniformly from ``rows`` with a seeded RNG; AdamW, constant ``lr``.
    ``bos=True`` starts every prompt with the tokenizer's BOS token, as
    :func:`adpo.data.listwise.tokenize_row` does (the listwise trainer's layout); TRL's
    online trainers feed prompts as the tokenizer gives them (``bos=False``).

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
        ids, att, ans = _sft_batch(tokenizer, batch, device, bos=bos)
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
