"""Token → sequence log-probs, with memory-bounded gathering.

Shapes: ``N`` sequences (B·G flattened), ``L`` input length, ``T`` scored (completion)
tokens, ``V`` vocabulary, ``H`` hidden size, ``R`` flattened rows (N·T).

The expensive tensor in RL on language models is ``[N, T, V]``: a float32 log-softmax
over it costs ``4·N·T·V`` bytes (8 GB for N=64, T=1024, V=32k), and autograd keeps it
for backward. The functions here process rows in chunks under activation
checkpointing, so at most one chunk of float32 log-softmax is alive at a time, in the
forward and in the backward pass. :func:`linear_logps` goes further and never
materialises the logits at all (it applies the LM head per chunk).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "causal_lm_logps",
    "linear_logps",
    "selective_log_softmax",
    "sequence_logps",
    "token_entropy",
]


def _gather_lse(logits: Tensor, index: Tensor) -> Tensor:
    """``logits [R, V]``, ``index [R]`` → ``log softmax(logits)[index]`` in float32 ``[R]``."""
    x = logits.float()
    return x.gather(-1, index[:, None]).squeeze(-1) - torch.logsumexp(x, dim=-1)


def _chunked(fn: Callable[..., Tensor], chunk_size: int, *rows: Tensor) -> Tensor:
    """Apply ``fn`` to row chunks of ``rows`` (checkpointed when grad is needed)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    R = rows[0].shape[0]
    needs_grad = torch.is_grad_enabled() and any(r.requires_grad for r in rows)
    outs = []
    for s in range(0, R, chunk_size):
        part = [r[s : s + chunk_size] for r in rows]
        if needs_grad:
            outs.append(checkpoint(fn, *part, use_reentrant=False))
        else:
            outs.append(fn(*part))
    return torch.cat(outs) if outs else rows[0].new_zeros(0, dtype=torch.float32)


def selective_log_softmax(logits: Tensor, index: Tensor, *, chunk_size: int = 4096) -> Tensor:
    """``log softmax(logits, -1)`` gathered at ``index``, chunked over rows.

    Args:
        logits: ``[..., V]`` (any float dtype; computed in float32).
        index: ``[...]`` token ids (int64).
        chunk_size: rows per chunk; bounds the float32 working set to ``chunk_size·V``.

    Returns:
        ``[...]`` float32 log-probs.
    """
    if logits.shape[:-1] != index.shape:
        raise ValueError(
            f"selective_log_softmax: `index` must have shape {tuple(logits.shape[:-1])}, got "
            f"{tuple(index.shape)}"
        )
    flat = _chunked(
        _gather_lse, chunk_size, logits.reshape(-1, logits.shape[-1]), index.reshape(-1)
    )
    return flat.reshape(index.shape)


def _entropy_rows(logits: Tensor) -> Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def token_entropy(logits: Tensor, *, chunk_size: int = 4096) -> Tensor:
    """Entropy of the next-token distribution, ``[..., V] → [...]`` (for logging)."""
    flat = _chunked(_entropy_rows, chunk_size, logits.reshape(-1, logits.shape[-1]))
    return flat.reshape(logits.shape[:-1])


def sequence_logps(token_logps: Tensor, mask: Tensor) -> Tensor:
    """Masked sum over the last axis, ``[..., T] → [...]`` (the early reduction)."""
    if token_logps.shape != mask.shape:
        raise ValueError(
            f"sequence_logps: `mask` must have shape {tuple(token_logps.shape)}, got {tuple(mask.shape)}"
        )
    return torch.where(mask.bool(), token_logps, torch.zeros_like(token_logps)).sum(-1)


def linear_logps(
    hidden: Tensor,
    weight: Tensor,
    index: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> Tensor:
    """Log-probs of ``index`` under ``softmax((hidden @ weightᵀ + bias) / temperature)``.

    The LM head is applied per chunk of rows under checkpointing, so ``[R, V]`` logits
    never exist in full (peak extra memory ``chunk_size·V`` floats).

    Args:
        hidden: ``[..., H]`` final hidden states.
        weight: ``[V, H]`` LM-head weight; ``bias``: ``[V]`` or None.
        index: ``[...]`` target ids.

    Returns:
        ``[...]`` float32 log-probs.
    """
    if hidden.shape[:-1] != index.shape:
        raise ValueError(
            f"linear_logps: `index` must have shape {tuple(hidden.shape[:-1])}, got {tuple(index.shape)}"
        )

    def rows(h: Tensor, i: Tensor) -> Tensor:
        logits = nn.functional.linear(h, weight, bias)
        return _gather_lse(logits / temperature if temperature != 1.0 else logits, i)

    flat = _chunked(rows, chunk_size, hidden.reshape(-1, hidden.shape[-1]), index.reshape(-1))
    return flat.reshape(index.shape)


def causal_lm_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    logits_to_keep: int,
    temperature: float = 1.0,
    chunk_size: int = 4096,
) -> Tensor:
    """Per-token log-probs of the last ``logits_to_keep`` tokens of ``input_ids``.

    The usual layout of group RL: ``input_ids = [prompt | completion]`` (left-padded
    prompts, right-padded completions), ``logits_to_keep = T`` completion positions.
    Equivalent to TRL's ``_get_per_token_logps``, with chunked float32 log-softmax.

    Args:
        model: a Hugging Face causal LM (anything returning ``.logits``).
        input_ids: ``[N, L]`` token ids.
        attention_mask: ``[N, L]`` (1 = a real token).
        logits_to_keep: ``T`` ≤ L − 1.
        temperature: sampling temperature the completions were drawn with.

    Returns:
        ``[N, T]`` float32 log-probs (mask them with the completion mask).
    """
    L = input_ids.shape[1]
    if not 0 < logits_to_keep < L:
        raise ValueError(f"causal_lm_logps: need 0 < logits_to_keep < {L}, got {logits_to_keep}")
    try:
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1
        )
    except TypeError:  # models without `logits_to_keep`
        out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out.logits[:, -(logits_to_keep + 1) : -1, :]  # (N, T, V) predicts the next token
    if temperature != 1.0:
        logits = logits / temperature
    return selective_log_softmax(logits, input_ids[:, -logits_to_keep:], chunk_size=chunk_size)
