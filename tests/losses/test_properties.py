"""Property tests (hypothesis): translation invariance, permutation equivariance, masking."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adpo.losses import adpo_loss, group_advantages, opo_loss, reverse_adpo_loss

D = torch.float64
TARGETS = ("softmax", "plackett_luce", "top1")


@st.composite
def groups(draw, min_g=2, max_g=6, ties=True):
    B = draw(st.integers(1, 4))
    G = draw(st.integers(min_g, max_g))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    logps = torch.randn(B, G, generator=gen, dtype=D) * draw(st.sampled_from([0.1, 1.0, 10.0]))
    ref = torch.randn(B, G, generator=gen, dtype=D)
    if ties and draw(st.booleans()):
        rewards = torch.randint(0, 3, (B, G), generator=gen).to(D)  # many ties
    else:
        rewards = torch.randn(B, G, generator=gen, dtype=D)
    return logps, ref, rewards, gen


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(groups(), st.sampled_from(TARGETS), st.floats(0.05, 5.0))
def test_anchored_logits_are_translation_invariant(data, target, tau):
    """Adding a per-prompt constant to log πθ (or to both πθ and π_ref) leaves ADPO unchanged."""
    logps, ref, r, gen = data
    c = torch.randn(logps.shape[0], 1, generator=gen, dtype=D) * 100
    base = adpo_loss(logps, ref, r, target=target, tau=tau).loss
    close(adpo_loss(logps + c, ref, r, target=target, tau=tau).loss, base)
    close(adpo_loss(logps + c, ref + c, r, target=target, tau=tau).loss, base)
    close(
        reverse_adpo_loss(logps + c, ref, r, tau=tau).loss,
        reverse_adpo_loss(logps, ref, r, tau=tau).loss,
    )


@settings(max_examples=60, deadline=None)
@given(groups(), st.floats(-50, 50), st.floats(0.01, 10))
def test_rewards_affine_invariance_of_advantages(data, shift, scale):
    _, _, r, _ = data
    # exact with eps = 0 (the default eps = 1e-6 shifts advantages by ~eps/std)
    close(group_advantages(r * scale + shift, eps=0.0), group_advantages(r, eps=0.0))


@settings(max_examples=60, deadline=None)
@given(groups(), st.sampled_from((*TARGETS, "opo")))
def test_permutation_equivariance(data, target):
    """Permuting the candidates permutes the gradient and leaves the loss unchanged."""
    logps, ref, r, gen = data
    perm = torch.randperm(logps.shape[1], generator=gen)

    def loss_and_grad(lp, rf, rw):
        x = lp.clone().requires_grad_()
        if target == "opo":
            loss = opo_loss(x, rf, rw).loss
        else:
            loss = adpo_loss(x, rf, rw, target=target).loss
        (gr,) = torch.autograd.grad(loss, x)
        return loss, gr

    l0, g0 = loss_and_grad(logps, ref, r)
    l1, g1 = loss_and_grad(logps[:, perm], ref[:, perm], r[:, perm])
    close(l1, l0)
    close(g1, g0[:, perm])


@settings(max_examples=60, deadline=None)
@given(groups(min_g=3), st.sampled_from((*TARGETS, "opo")))
def test_masking_equals_slicing(data, target):
    """A candidate marked invalid behaves exactly as if it had been removed from its group."""
    logps, ref, r, gen = data
    B, G = logps.shape
    drop = torch.randint(0, G, (B,), generator=gen)
    valid = torch.ones(B, G, dtype=torch.bool)
    valid[torch.arange(B), drop] = False
    junk = torch.full_like(logps, float("nan"))  # whatever sits in a missing slot is never read
    lp = torch.where(valid, logps, junk)
    rw = torch.where(valid, r, junk)
    sliced = [
        (logps[b][valid[b]][None], ref[b][valid[b]][None], r[b][valid[b]][None]) for b in range(B)
    ]
    if target == "opo":
        got = opo_loss(lp, ref, rw, valid=valid).loss
        expected = sum(opo_loss(*s).loss for s in sliced) / B  # every row keeps G − 1 candidates
    else:
        got = adpo_loss(lp, ref, rw, valid=valid, target=target).loss
        expected = sum(adpo_loss(*s, target=target).loss for s in sliced) / B
    close(got, expected)


@settings(max_examples=40, deadline=None)
@given(groups(), st.integers(1, 6))
def test_token_masking_equals_sequence_sums(data, T):
    logps, _ref, r, gen = data
    B, G = logps.shape
    tok = torch.randn(B, G, T, generator=gen, dtype=D)
    ref_tok = torch.randn(B, G, T, generator=gen, dtype=D)
    mask = torch.rand(B, G, T, generator=gen) < 0.7
    mask[..., 0] = True
    for target in TARGETS:
        close(
            adpo_loss(tok, ref_tok, r, mask=mask, target=target).loss,
            adpo_loss((tok * mask).sum(-1), (ref_tok * mask).sum(-1), r, target=target).loss,
        )
