"""Group losses split over rows: score weights, per-candidate OPO terms, length-normalised
scores and long bfloat16 sequences (issue 24)."""

import math

import pytest
import torch

from adpo.losses import (
    adpo_loss,
    adpo_score_weights,
    escort_weights,
    group_advantages,
    opo_loss,
    opo_per_candidate,
    reverse_adpo_loss,
    softmax_targets,
)

D = torch.float64


def rand(*shape, g=None):
    return torch.randn(*shape, dtype=D, generator=g)


@pytest.mark.parametrize(
    ("target", "ties"),
    [("softmax", "breslow"), ("top1", "breslow"), ("plackett_luce", "breslow"),
     ("plackett_luce", "efron")],
)  # fmt: skip
def test_score_weights_are_the_gradient_of_the_summed_group_loss(target, ties):
    g = torch.Generator().manual_seed(0)
    B, G = 3, 5
    delta = rand(B, G, g=g)
    rewards = torch.tensor([[1.0, 0, 0, 1, 0.5], [0.2, 0.2, 0.9, 0, 0], [1, 1, 1, 1, 0]], dtype=D)
    valid = torch.ones(B, G, dtype=torch.bool)
    valid[1, 4] = False
    tau = torch.tensor([0.7, 1.1, 0.9], dtype=D)
    out, w = adpo_score_weights(delta, rewards, target=target, tau=tau, beta=0.5, valid=valid,
                                ties=ties)  # fmt: skip
    d = delta.clone().requires_grad_()
    ref = adpo_loss(d, torch.zeros_like(d), rewards, target=target, tau=tau, beta=0.5,
                    valid=valid, ties=ties)  # fmt: skip
    (grad,) = torch.autograd.grad(ref.loss * B, d)
    torch.testing.assert_close(w, grad, rtol=1e-12, atol=1e-14)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-12)
    assert w[1, 4] == 0 and not out.loss.requires_grad and not w.requires_grad


def test_score_weights_at_the_anchor_have_a_closed_form():
    """At u = 0 (on-policy, first update of a round) the softmax target's weights are
    ``(1/n − q_i)/τ``: they follow from the rewards alone, no forward pass needed."""
    r = torch.tensor([[1.0, 0.0, 0.5, 0.0]], dtype=D)
    _, w = adpo_score_weights(torch.zeros(1, 4, dtype=D), r, target="softmax", tau=0.8, beta=0.5)
    q = softmax_targets(r, beta=0.5)
    torch.testing.assert_close(w, (0.25 - q) / 0.8, rtol=1e-12, atol=1e-14)


def test_back_propagating_weighted_scores_over_any_split_equals_the_whole_group():
    """Σ_i w_i·Δ_i(θ), summed over arbitrary pieces of the rows, gives the whole-group
    gradient of Σ_b L_b: the trick that lets a micro-batch hold part of a group."""
    g = torch.Generator().manual_seed(1)
    B, G, T, H = 2, 4, 6, 3
    theta = rand(H, g=g).requires_grad_()
    feats = rand(B, G, T, H, g=g)
    ref = rand(B, G, T, g=g)
    rewards = rand(B, G, g=g)

    def token_logps(rows):  # a tiny "model": token log-probs linear in θ
        return torch.nn.functional.logsigmoid(feats.reshape(B * G, T, H)[rows] @ theta)

    all_rows = torch.arange(B * G)
    whole = adpo_loss(token_logps(all_rows).view(B, G, T), ref, rewards, target="plackett_luce",
                      tau=0.6)  # fmt: skip
    (g_whole,) = torch.autograd.grad(whole.loss * B, theta)

    with torch.no_grad():  # the pass: every row's current score, as numbers
        delta = (token_logps(all_rows) - ref.view(B * G, T)).sum(-1).view(B, G)
    out, w = adpo_score_weights(delta, rewards, target="plackett_luce", tau=0.6)
    assert out.loss.item() == pytest.approx(whole.loss.item(), rel=1e-12)
    grad = torch.zeros_like(theta)
    for piece in (torch.tensor([5, 0, 3]), torch.tensor([1]), torch.tensor([7, 2, 6, 4])):
        s = (token_logps(piece) - ref.view(B * G, T)[piece]).sum(-1)  # (rows,)
        (gp,) = torch.autograd.grad((w.view(-1)[piece] * s).sum(), theta)
        grad += gp
    torch.testing.assert_close(grad, g_whole, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("ratio", ["log", "exact"])
def test_opo_per_candidate_terms_are_the_loss(ratio):
    g = torch.Generator().manual_seed(2)
    lp, ref, r = rand(3, 6, g=g), rand(3, 6, g=g), rand(3, 6, g=g)
    w_hat, _ = escort_weights(group_advantages(r), torch.ones(3, 6, dtype=torch.bool), alpha=0.4)
    per, x, clipped = opo_per_candidate(lp - ref, w_hat, mu=2.5, ratio=ratio)
    loss = opo_loss(lp, ref, r, mu=2.5, ratio=ratio)
    assert per.mean().item() == pytest.approx(loss.loss.item(), rel=1e-12)
    expected_x = (lp - ref) if ratio == "log" else torch.expm1(lp - ref)
    torch.testing.assert_close(x, expected_x, rtol=1e-12, atol=1e-12)
    assert not clipped.any()  # μ = 2.5 > max(−ω̂)


def test_opo_omega_over_a_larger_batch_replaces_the_micro_batch_weights():
    g = torch.Generator().manual_seed(3)
    lp, ref, r = rand(2, 4, g=g), rand(2, 4, g=g), rand(2, 4, g=g)
    omega = rand(2, 4, g=g)
    out = opo_loss(lp, ref, r, omega=omega, mu=1.5)
    per, _, _ = opo_per_candidate(lp - ref, omega, mu=1.5)
    assert out.loss.item() == pytest.approx(per.mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match=r"`omega` must have shape \(2, 4\)"):
        opo_loss(lp, ref, r, omega=omega[:, :3])
    with pytest.raises(ValueError, match="`omega` must be finite"):
        opo_loss(lp, ref, r, omega=torch.full((2, 4), math.nan, dtype=D))


def test_opo_per_candidate_defaults_against_the_closed_form():
    """Defaults μ = 1, ratio 'log', eps = 1e-6, max_log_ratio = 10 (opo_loss's): with
    'exact', x = e^Δ − 1 up to Δ = 10 and e^10·(1 + Δ − 10) − 1 beyond, and a target
    ω̂ = −2 < −μ(1 − eps) is clipped to −(1 − 1e-6)."""
    delta = torch.tensor([0.3, -0.2, 10.5, 12.0], dtype=D)
    omega = torch.tensor([0.5, -2.0, 1.0, 0.0], dtype=D)
    per, x, clipped = opo_per_candidate(delta, omega)
    torch.testing.assert_close(per, -omega * delta + 0.5 * delta**2, rtol=1e-14, atol=0)
    assert torch.equal(x, delta) and not clipped.any()
    with pytest.warns(UserWarning) as rec:
        per, x, clipped = opo_per_candidate(delta, omega, ratio="exact")
    assert str(rec[0].message) == (
        "opo_loss: with ratio='exact', some targets ω̂/μ lie below −1, which no ratio "
        "π/π_k ≥ 0 reaches; they are clipped to −1 + eps (OPO §6.5 (ii)). A stiffness "
        "μ ≥ max(−ω̂) avoids this (prop. 6.4); see the metric `target_clip_frac`"
    )
    e10 = math.exp(10.0)
    want_x = torch.tensor(
        [math.expm1(0.3), math.expm1(-0.2), e10 * 1.5 - 1, e10 * 3.0 - 1], dtype=D
    )
    target = torch.tensor([0.5, -(1 - 1e-6), 1.0, 0.0], dtype=D)
    torch.testing.assert_close(x, want_x, rtol=1e-14, atol=0)
    torch.testing.assert_close(per, -target * want_x + 0.5 * want_x**2, rtol=1e-14, atol=0)
    assert clipped.tolist() == [False, True, False, False]
    # float32 weights are used in the scores' dtype: the clipped target is
    # −(1 − 1e-6) to float64 precision, not its float32 rounding
    with pytest.warns(UserWarning, match="clipped"):
        per32, _, _ = opo_per_candidate(delta, omega.float(), ratio="exact")
    assert per32.dtype == D
    torch.testing.assert_close(per32, per, rtol=1e-14, atol=0)


# ----------------------------------------------------------------------------- seq_reduction


def _tokens(B=2, G=4, T=7, seed=4):
    g = torch.Generator().manual_seed(seed)
    lp, ref = -rand(B, G, T, g=g).abs(), -rand(B, G, T, g=g).abs()
    lengths = torch.randint(1, T + 1, (B, G, 1), generator=g)
    mask = torch.arange(T)[None, None] < lengths
    return lp, ref, mask, lengths.squeeze(-1).to(D)


@pytest.mark.parametrize("target", ["softmax", "plackett_luce", "top1"])
def test_mean_seq_reduction_is_adpo_on_token_mean_log_ratios(target):
    """Closed form: s_i = Σ_t (log π − log π_ref)/T_i, then the ordinary loss on [B, G]."""
    lp, ref, mask, n = _tokens()
    r = torch.tensor([[1.0, 0, 0.5, 0], [0, 1, 1, 0.2]], dtype=D)
    got = adpo_loss(lp, ref, r, target=target, tau=0.7, mask=mask, seq_reduction="mean")
    s = ((lp - ref) * mask).sum(-1) / n  # (B, G)
    want = adpo_loss(s, torch.zeros_like(s), r, target=target, tau=0.7)
    assert got.loss.item() == pytest.approx(want.loss.item(), rel=1e-12)
    summed = adpo_loss(lp, ref, r, target=target, tau=0.7, mask=mask)
    assert abs(summed.loss.item() - got.loss.item()) > 1e-3  # the option changes the loss


def test_mean_seq_reduction_in_opo_scales_delta_and_keeps_the_reference_correction():
    lp, ref, mask, n = _tokens(seed=5)
    r = torch.tensor([[1.0, 0, 0.5, 0], [0, 1, 1, 0.2]], dtype=D)
    got = opo_loss(lp, ref, r, mask=mask, seq_reduction="mean", ref_correction="sequence")
    ref_seq = (ref * mask).sum(-1)
    w_hat, _ = escort_weights(group_advantages(r), torch.ones(2, 4, dtype=torch.bool), alpha=0.4,
                              ref_log_weight=ref_seq)  # fmt: skip
    delta = ((lp - ref) * mask).sum(-1) / n
    want = (-w_hat * delta + 0.5 * delta**2).mean()
    assert got.loss.item() == pytest.approx(want.item(), rel=1e-10)
    with pytest.raises(ValueError, match=r"^opo_loss: `seq_reduction` must be one of"):
        opo_loss(lp, ref, r, mask=mask, seq_reduction="max")


def test_mean_seq_reduction_in_reverse_adpo_is_reverse_adpo_on_token_mean_log_ratios():
    lp, ref, mask, n = _tokens(seed=6)
    r = torch.tensor([[1.0, 0, 0.5, 0], [0, 1, 1, 0.2]], dtype=D)
    got = reverse_adpo_loss(lp, ref, r, tau=0.7, mask=mask, seq_reduction="mean")
    s = ((lp - ref) * mask).sum(-1) / n  # (B, G)
    want = reverse_adpo_loss(s, torch.zeros_like(s), r, tau=0.7)
    assert got.loss.item() == pytest.approx(want.loss.item(), rel=1e-12)
    summed = reverse_adpo_loss(lp, ref, r, tau=0.7, mask=mask)
    assert abs(summed.loss.item() - got.loss.item()) > 1e-3  # the option changes the loss


# ----------------------------------------------------------------------------- long bf16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_long_sequences_sum_in_float32_or_wider_token_by_token(dtype):
    """8,192-token completions: the loss and its gradient match a float64 reference on the
    same values. A bf16 sum would lose the log-ratio entirely; the difference of two float32
    sums of ~−28,000 loses ~3e-3 of it (the sum of token differences keeps ~2e-7)."""
    g = torch.Generator().manual_seed(6)
    B, G, T = 1, 4, 8192
    ref = (-2.0 - 3.0 * torch.rand(B, G, T, generator=g, dtype=D)).to(dtype)
    lp = (ref.double() + 0.05 * torch.randn(B, G, T, generator=g, dtype=D)).to(dtype)
    r = torch.tensor([[1.0, 0.0, 0.5, 0.2]])
    mask = torch.ones(B, G, T, dtype=torch.bool)
    for fn, kw in ((adpo_loss, {"target": "softmax", "tau": 0.05, "beta": 0.5}),
                   (opo_loss, {"mu": 1.0})):  # fmt: skip
        x = lp.clone().requires_grad_()
        out = fn(x, ref, r, mask=mask, **kw)
        (gx,) = torch.autograd.grad(out.loss, x)
        x64 = lp.double().requires_grad_()
        want = fn(x64, ref.double(), r.double(), mask=mask, **kw)
        (g64,) = torch.autograd.grad(want.loss, x64)
        assert out.loss.dtype == torch.float32
        assert out.loss.item() == pytest.approx(want.loss.item(), rel=1e-5, abs=1e-6), fn
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-5  # the gradient's own dtype
        torch.testing.assert_close(gx.double(), g64, rtol=tol, atol=1e-6)


def test_score_weights_defaults_and_dtype():
    """Defaults are adpo_loss's (softmax target, τ = 1, β = 1), so
    ``w = softmax(Δ) − softmax(A)`` with ``A`` the group z-score of the rewards; the
    weights, loss and metrics come back detached in float64 whatever the scores' dtype."""
    g = torch.Generator().manual_seed(3)
    delta, r = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    out, w = adpo_score_weights(delta, r)  # float32 scores
    d64, r64 = delta.double(), r.double()
    a = (r64 - r64.mean(-1, keepdim=True)) / (r64.std(-1, keepdim=True) + 1e-6)
    expected = torch.softmax(d64, -1) - torch.softmax(a, -1)
    assert w.dtype == D and out.loss.dtype == D
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=1e-14)
    ref = adpo_loss(d64, torch.zeros_like(d64), r64)
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-12)
    assert set(out.metrics) == set(ref.metrics)
    for k, v in ref.metrics.items():
        assert not out.metrics[k].requires_grad, k
        torch.testing.assert_close(out.metrics[k], v.detach(), rtol=1e-12, atol=1e-14, msg=k)


def test_score_weights_refuse_bad_scores():
    with pytest.raises(TypeError, match=r"^adpo_score_weights: `delta` must be a torch\.Tensor"):
        adpo_score_weights([[0.0, 1.0]], torch.zeros(1, 2))
    with pytest.raises(
        ValueError,
        match=r"^adpo_score_weights: `delta` must be \[B, G\] sequence scores, got shape \(1, 2, 3\)",
    ):
        adpo_score_weights(torch.zeros(1, 2, 3), torch.zeros(1, 2))
