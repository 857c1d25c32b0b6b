"""Chunked log-prob gathering equals the plain computation, forward and backward."""

import pytest
import torch

from adpo.logprobs import (
    causal_lm_logps,
    linear_logps,
    selective_log_softmax,
    sequence_logps,
    token_entropy,
)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_selective_log_softmax_matches_full(chunk):
    logits = torch.randn(2, 5, 11, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 11, (2, 5))
    full = torch.log_softmax(logits, -1).gather(-1, idx[..., None]).squeeze(-1)
    got = selective_log_softmax(logits, idx, chunk_size=chunk)
    torch.testing.assert_close(got, full.float().to(got.dtype), rtol=1e-6, atol=1e-6)
    w = torch.randn(2, 5, dtype=torch.float64)
    (g1,) = torch.autograd.grad((full * w).sum(), logits)
    (g2,) = torch.autograd.grad((got.double() * w).sum(), logits)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_linear_logps_matches_full_head():
    h = torch.randn(3, 4, 6, requires_grad=True)
    W = torch.randn(13, 6, requires_grad=True)
    b = torch.randn(13)
    idx = torch.randint(0, 13, (3, 4))
    full = torch.log_softmax((h @ W.T + b) / 0.7, -1).gather(-1, idx[..., None]).squeeze(-1)
    got = linear_logps(h, W, idx, bias=b, temperature=0.7, chunk_size=5)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(full.sum(), (h, W))
    g2 = torch.autograd.grad(got.sum(), (h, W))
    for a, c in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_token_entropy_and_sequence_logps():
    logits = torch.randn(2, 3, 5)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(token_entropy(logits, chunk_size=2), -(p * p.log()).sum(-1))
    x = torch.randn(2, 4)
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(sequence_logps(x, m), (x * m).sum(-1))
    with pytest.raises(ValueError, match="mask"):
        sequence_logps(x, m[:, :3])
    with pytest.raises(ValueError, match="index"):
        selective_log_softmax(logits, torch.zeros(2, 4, dtype=torch.long))


def test_causal_lm_logps_on_tiny_qwen3():
    pytest.importorskip("transformers")
    from adpo.testing import char_tokenizer, tiny_qwen3

    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=32, num_layers=1)
    enc = tok(["1+1=2", "12+3=15"], padding=True, return_tensors="pt")
    T = 3
    got = causal_lm_logps(model, enc["input_ids"], enc["attention_mask"], logits_to_keep=T)
    logits = model(**enc).logits[:, -T - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, enc["input_ids"][:, -T:, None]).squeeze(-1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="logits_to_keep"):
        causal_lm_logps(model, enc["input_ids"], enc["attention_mask"], logits_to_keep=0)
