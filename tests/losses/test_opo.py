"""OPO against its closed forms (theorem 3.4) and an independent escort-weight computation."""

import math
import warnings

import pytest
import torch

from adpo.losses import opo_loss

D = torch.float64


def rand(*shape):
    return torch.randn(*shape, dtype=D)


def escort_reference(r, alpha, norm, ref_log=None, eps=1e-6):
    """Escort weights written out plainly, row by row (no shared code with the library)."""
    out = torch.empty_like(r)
    rows = []
    for b in range(r.shape[0]):
        x = r[b]
        a = (x - x.mean()) / (x.std() + eps)
        logw = (1 - alpha) * a
        if ref_log is not None:
            logw = logw - (1 - alpha) * ref_log[b]
        w = torch.exp(logw - logw.max())
        w = w / w.mean()  # E_{π_k}[ω] = 1 estimated by the group
        rows.append(w)
    w = torch.stack(rows)
    for b in range(r.shape[0]):
        if norm == "group":
            out[b] = (w[b] - w[b].mean()) / (w[b].std() + eps)
        elif norm == "center":
            out[b] = w[b] - w[b].mean()
        else:
            out[b] = w[b]
    if norm == "batch":
        out = (w - w.mean()) / (w.std() + eps)
    return out


@pytest.mark.parametrize("norm", ["group", "center", "batch", "none"])
@pytest.mark.parametrize("mu", [0.5, 1.0, 3.0])
def test_minimiser_in_delta_is_omega_over_mu(norm, mu):
    """Theorem 3.4 / eq. 18: argmin_Δ [−ω̂Δ + μ/2 Δ²] = ω̂/μ, per candidate."""
    B, G, alpha = 3, 6, 0.4
    ref, r = rand(B, G), rand(B, G)
    w_hat = escort_reference(r, alpha, norm)
    delta = torch.zeros(B, G, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS(
        [delta], lr=1, max_iter=200, tolerance_grad=1e-14, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = opo_loss(ref + delta, ref, r, alpha=alpha, mu=mu, weight_norm=norm).loss
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(delta.detach(), w_hat / mu, rtol=0, atol=1e-8)


def test_exact_ratio_minimiser():
    """ratio='exact': the minimiser in v = e^Δ − 1 is ω̂/μ, i.e. Δ* = log(1 + ω̂/μ)."""
    ref, r = rand(2, 5), rand(2, 5)
    mu = 2.0  # μ ≥ max|ω̂| keeps 1 + ω̂/μ > 0 (prop. 6.4)
    w_hat = escort_reference(r, 0.4, "group")
    assert (1 + w_hat / mu > 0).all()
    star = torch.log1p(w_hat / mu).requires_grad_()

    def loss(delta):
        return opo_loss(ref + delta, ref, r, mu=mu, ratio="exact").loss

    (g,) = torch.autograd.grad(loss(star), star)
    assert g.abs().max() < 1e-12  # stationary ...
    for _ in range(20):  # ... and a minimum (the loss is convex in v, v monotone in Δ)
        assert loss(star.detach() + 0.05 * rand(2, 5)) > loss(star.detach())


def test_loss_formula_and_reference_correction():
    B, G, T = 2, 4, 5
    tok, ref_tok = rand(B, G, T), rand(B, G, T)
    mask = torch.ones(B, G, T, dtype=torch.bool)
    mask[0, 1, 3:] = False
    mask[1, 2, 1:] = False
    r = rand(B, G)
    seq, ref_seq = (tok * mask).sum(-1), (ref_tok * mask).sum(-1)
    delta = seq - ref_seq
    for corr, ref_log in (
        ("none", None),
        ("sequence", ref_seq),
        ("token_mean", ref_seq / mask.sum(-1)),
    ):
        w = escort_reference(r, 0.4, "group", ref_log)
        expected = (-w * delta + 0.5 * 1.0 * delta**2).mean()
        got = opo_loss(tok, ref_tok, r, mask=mask, ref_correction=corr).loss
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_reference_correction_does_not_overflow_with_long_sequences():
    """π_ref^{-(1-α)} of a 4k-token sequence is e^{+2000}: normalising in log space keeps it finite."""
    B, G = 2, 4
    ref_seq = torch.tensor([[-4000.0, -3500.0, -4200.0, -3900.0], [-10.0, -9.0, -8.0, -7.0]])
    logps = (ref_seq + 0.1 * torch.randn(B, G)).requires_grad_()
    out = opo_loss(logps, ref_seq, torch.randn(B, G), ref_correction="sequence")
    (g,) = torch.autograd.grad(out.loss, logps)
    assert torch.isfinite(out.loss) and torch.isfinite(g).all()


def test_alpha_one_gives_uniform_escort():
    """α → 1: ω_α → 1 (conservative end, OPO §3.1): no drive, only the χ² pull to the anchor."""
    logps, ref, r = rand(3, 4).requires_grad_(), rand(3, 4), rand(3, 4)
    out = opo_loss(logps, ref, r, alpha=1.0, weight_norm="none", mu=2.0)
    torch.testing.assert_close(out.loss, (0.5 * 2.0 * (logps - ref) ** 2 - (logps - ref)).mean())
    assert opo_loss(logps, ref, r, alpha=1.0, weight_norm="group").metrics["omega_abs_max"] == 0


def test_all_equal_rewards_and_huge_gaps_stay_finite():
    logps = torch.tensor([[0.0, -1e4, -5e3, 1e4]], requires_grad=True)
    ref = torch.zeros(1, 4)
    for ratio in ("log", "exact"):
        for r in (torch.ones(1, 4), torch.tensor([[1.0, 0.0, 0.5, 0.2]])):
            out = opo_loss(logps, ref, r, ratio=ratio)
            (g,) = torch.autograd.grad(out.loss, logps)
            assert torch.isfinite(out.loss) and torch.isfinite(g).all(), ratio
            assert all(torch.isfinite(v) for v in out.metrics.values())


def test_exact_ratio_linear_continuation_keeps_restoring_gradient():
    ref, r = torch.zeros(1, 2, dtype=D), torch.tensor([[1.0, 0.0]], dtype=D)
    big = torch.tensor([[50.0, 0.0]], dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad(opo_loss(big, ref, r, ratio="exact", max_log_ratio=10.0).loss, big)
    assert g[0, 0] > 0  # gradient descent pushes the runaway log-ratio back down
    c = 10.0  # continuity of value at the switch point
    at = opo_loss(torch.tensor([[c, 0.0]], dtype=D), ref, r, ratio="exact").loss
    just = opo_loss(torch.tensor([[c + 1e-9, 0.0]], dtype=D), ref, r, ratio="exact").loss
    assert math.isclose(at.item(), just.item(), rel_tol=1e-6)


def test_positivity_safeguard_clips_an_unreachable_target_to_minus_one_plus_eps():
    """OPO §6.5 (ii): a group of 6 with one wrong answer has ω̂ = −2.04 (group z-score); at
    μ = 1 its target v* = ω̂/μ < −1 is unreachable. The target is clipped to −1 + ε, so Δ has a
    finite minimiser log(ε) instead of falling for ever; reachable targets are untouched."""
    eps = 1e-3
    r = torch.tensor([[1.0, 1, 1, 1, 1, 0]], dtype=D)
    ref = torch.zeros(1, 6, dtype=D)
    w_hat = escort_reference(r, 0.4, "group", eps=eps)
    assert math.isclose(w_hat[0, 5].item(), -2.04, abs_tol=5e-3)  # the example

    star = torch.log1p(w_hat / 1.0).clamp_min(math.log(eps))  # reachable ones: log(1 + ω̂/μ)
    star[0, 5] = math.log(eps)
    star.requires_grad_()
    with pytest.warns(UserWarning, match="clipped to −1 \\+ eps"):
        out = opo_loss(star, ref, r, ratio="exact", eps=eps)
    (g,) = torch.autograd.grad(out.loss, star)
    assert g.abs().max() < 1e-12  # stationary at the clipped target, finite Δ
    assert out.metrics["target_clip_frac"].item() == 1 / 6
    with pytest.warns(UserWarning):  # and a minimum: any move from it raises the loss
        for _ in range(10):
            moved = star.detach() + 0.05 * rand(1, 6)
            assert opo_loss(moved, ref, r, ratio="exact", eps=eps).loss > out.loss

    # below the clipped target the gradient restores Δ (before the safeguard it kept falling),
    # and gradient descent from Δ = 0 approaches log(ε) from above without passing it
    below = star.detach().clone()
    below[0, 5] = math.log(eps) - 2.0
    below.requires_grad_()
    with pytest.warns(UserWarning):
        (g,) = torch.autograd.grad(opo_loss(below, ref, r, ratio="exact", eps=eps).loss, below)
    assert g[0, 5] < 0  # descent raises Δ back toward log(ε)
    delta = torch.zeros(1, 6, dtype=D, requires_grad=True)
    opt = torch.optim.SGD([delta], lr=0.5)
    with pytest.warns(UserWarning):
        for _ in range(2000):
            opt.zero_grad()
            opo_loss(delta, ref, r, ratio="exact", eps=eps).loss.backward()
            opt.step()
            assert delta[0, 5] >= math.log(eps)
    torch.testing.assert_close(delta.detach()[0, :5], star.detach()[0, :5], rtol=0, atol=1e-6)


def test_positivity_safeguard_is_silent_when_mu_covers_the_weights():
    r = torch.tensor([[1.0, 1, 1, 1, 1, 0]], dtype=D)
    ref = torch.zeros(1, 6, dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = opo_loss(ref, ref, r, ratio="exact", mu=2.1)  # μ ≥ max(−ω̂) = 2.04 (prop. 6.4)
        assert out.metrics["target_clip_frac"].item() == 0.0
        assert opo_loss(ref, ref, r, ratio="log").metrics["target_clip_frac"].item() == 0.0


def test_valid_mask_equals_slicing():
    logps, ref, r = rand(2, 5), rand(2, 5), rand(2, 5)
    valid = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    keep = [0, 1, 3, 4]
    got = opo_loss(logps, ref, r, valid=valid).loss
    l0 = opo_loss(logps[:1, keep], ref[:1, keep], r[:1, keep]).loss
    l1 = opo_loss(logps[1:], ref[1:], r[1:]).loss
    torch.testing.assert_close(got, (4 * l0 + 5 * l1) / 9, rtol=1e-12, atol=1e-12)
