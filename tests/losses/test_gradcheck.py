"""torch.autograd.gradcheck in float64 for every loss (finite differences vs autograd)."""

import pytest
import torch
from torch.autograd import gradcheck

from adpo.losses import (
    adpo_loss,
    dapo_loss,
    dpo_loss,
    grpo_loss,
    gspo_loss,
    ipo_loss,
    kd_loss,
    kl_penalty_loss,
    opo_loss,
    ppo_loss,
    reverse_adpo_loss,
    sft_loss,
)

D = torch.float64
g = torch.Generator().manual_seed(1)


def rand(*shape, scale=1.0):
    return (torch.randn(*shape, generator=g, dtype=D) * scale).requires_grad_()


B, G, T = 2, 4, 3
REF = torch.randn(B, G, T, generator=g, dtype=D)
REWARDS = torch.randn(B, G, generator=g, dtype=D)
TIED = torch.tensor([[1.0, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 1.0]], dtype=D)
MASK = torch.ones(B, G, T, dtype=torch.bool)
MASK[0, 1, 2] = False
Q = torch.softmax(torch.randn(B, G, generator=g, dtype=D), -1)

LISTWISE = {
    "adpo_softmax": lambda x: adpo_loss(x, REF, REWARDS, mask=MASK, tau=0.7, beta=0.5).loss,
    "adpo_top1": lambda x: adpo_loss(x, REF, TIED, mask=MASK, target="top1").loss,
    "adpo_pl_breslow": lambda x: adpo_loss(x, REF, TIED, mask=MASK, target="plackett_luce").loss,
    "adpo_pl_efron": lambda x: (
        adpo_loss(x, REF, TIED, mask=MASK, target="plackett_luce", ties="efron").loss
    ),
    "adpo_targets": lambda x: adpo_loss(x, REF, targets=Q, mask=MASK).loss,
    "reverse_adpo": lambda x: reverse_adpo_loss(x, REF, REWARDS, mask=MASK, tau=0.8).loss,
    "kd": lambda x: kd_loss(x, Q, mask=MASK, temperature=1.5).loss,
    "opo_log_group": lambda x: opo_loss(x, REF, REWARDS, mask=MASK).loss,
    "opo_exact_center": lambda x: (
        opo_loss(x, REF, REWARDS, mask=MASK, ratio="exact", weight_norm="center").loss
    ),
    "opo_batch_seqcorr": lambda x: (
        opo_loss(x, REF, REWARDS, mask=MASK, weight_norm="batch", ref_correction="sequence").loss
    ),
    "opo_none_tokmean": lambda x: (
        opo_loss(x, REF, REWARDS, mask=MASK, weight_norm="none", ref_correction="token_mean").loss
    ),
}


@pytest.mark.parametrize("name", list(LISTWISE))
def test_listwise_gradcheck(name):
    x = rand(B, G, T, scale=0.3)
    assert gradcheck(LISTWISE[name], (x,), eps=1e-6, atol=1e-7)


OLD = torch.randn(B, G, T, generator=g, dtype=D) * 0.05
ADV = torch.randn(B, G, generator=g, dtype=D)

TOKEN = {  # old ≈ current ± 0.05: ratios sit inside PPO's clip window, away from its kinks
    "ppo": lambda x: ppo_loss(OLD + x, OLD, ADV, MASK).loss,
    "grpo_kl": lambda x: grpo_loss(OLD + x, OLD, ADV, MASK, beta=0.1, ref_logps=REF * 0.1).loss,
    "dapo": lambda x: dapo_loss(OLD + x, OLD, ADV, MASK).loss,
    "gspo": lambda x: gspo_loss(OLD + x, OLD, ADV, MASK, clip_eps=0.5, clip_eps_high=0.5).loss,
    "kl_k3": lambda x: kl_penalty_loss(OLD + x, OLD, ADV, MASK, beta=0.5).loss,
    "kl_k2": lambda x: kl_penalty_loss(OLD + x, OLD, ADV, MASK, kl_estimator="k2").loss,
    "sft": lambda x: sft_loss(OLD + x, MASK).loss,
}


@pytest.mark.parametrize("name", list(TOKEN))
def test_token_gradcheck(name):
    x = rand(B, G, T, scale=0.02)
    assert gradcheck(TOKEN[name], (x,), eps=1e-6, atol=1e-7)


def test_pairwise_gradcheck():
    args = (rand(5), rand(5))  # policy log-probs; the reference ones are constants (detached)
    rc, rr = torch.randn(5, generator=g, dtype=D), torch.randn(5, generator=g, dtype=D)
    assert gradcheck(lambda a, b: dpo_loss(a, b, rc, rr, beta=0.3, label_smoothing=0.1).loss, args)
    assert gradcheck(lambda a, b: ipo_loss(a, b, rc, rr, beta=0.3).loss, args)


def test_reference_inputs_are_detached():
    x, ref = rand(B, G), rand(B, G)
    adpo_loss(x, ref, REWARDS).loss.backward()
    opo_loss(x, ref, REWARDS).loss.backward()
    assert ref.grad is None and x.grad is not None
