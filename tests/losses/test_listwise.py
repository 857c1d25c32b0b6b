"""ADPO, reverse ADPO and KD against closed forms and brute-force references (float64)."""

import itertools
import math

import pytest
import torch

from adpo.losses import (
    adpo_loss,
    dpo_loss,
    group_advantages,
    kd_loss,
    plackett_luce_nll,
    reverse_adpo_loss,
    softmax_targets,
    top1_targets,
)

D = torch.float64


def rand(*shape):
    return torch.randn(*shape, dtype=D)


# ---------------------------------------------------------------- group advantages / targets


def test_group_advantages_matches_torch_std():
    r = rand(5, 7)
    ref = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(group_advantages(r), ref, rtol=0, atol=1e-12)


def test_group_advantages_constant_group_is_exactly_zero():
    r = torch.tensor([[0.1] * 6, [3.0, 1.0, 3.0, 1.0, 2.0, 2.0]], dtype=D)
    a = group_advantages(r)
    assert torch.equal(a[0], torch.zeros(6, dtype=D))
    assert a[1].abs().sum() > 0


def test_group_advantages_valid_mask_uses_counted_candidates_only():
    r = torch.tensor([[1.0, 2.0, 3.0, float("nan")]], dtype=D)
    valid = torch.tensor([[True, True, True, False]])
    a = group_advantages(r, valid=valid)
    torch.testing.assert_close(a[:, :3], group_advantages(r[:, :3]), rtol=0, atol=1e-12)
    assert a[0, 3] == 0


def test_softmax_and_top1_targets():
    r = torch.tensor([[1.0, 0.0, 1.0, -1.0]], dtype=D)
    torch.testing.assert_close(top1_targets(r), torch.tensor([[0.5, 0, 0.5, 0]], dtype=D))
    q = softmax_targets(r, beta=0.5)
    torch.testing.assert_close(q, torch.softmax(group_advantages(r) / 0.5, -1))
    torch.testing.assert_close(q.sum(-1), torch.ones(1, dtype=D))


def test_raw_score_targets_never_read_a_missing_candidate():
    r = torch.tensor([[3.0, 1.0, float("nan"), 0.0]])
    valid = torch.tensor([[True, True, False, True]])
    q = softmax_targets(r, beta=2.0, valid=valid, standardize=False)
    e = torch.exp(torch.tensor([1.5, 0.5, 0.0]))
    torch.testing.assert_close(q[0, [0, 1, 3]], e / e.sum())
    assert q[0, 2] == 0


def _explicit_target_loss(logps, ref, q):
    return -(q * torch.log_softmax(logps - ref, -1)).sum(-1).mean()


def test_explicit_targets_in_the_loss_precision_are_used_as_given():
    """A float64 q for a float64 loss is not renormalised (its rounding is the loss's own);
    it may miss 1 by 1e-8, not by 1e-6. A float32 q for a float32 loss may miss by 1e-4."""
    logps, ref = rand(2, 4), rand(2, 4)
    q = torch.softmax(rand(2, 4), -1)
    q_off = q * (1 - 5e-9)
    got = adpo_loss(logps, ref, targets=q_off).loss
    torch.testing.assert_close(got, _explicit_target_loss(logps, ref, q_off), rtol=1e-14, atol=0)
    assert got != _explicit_target_loss(logps, ref, q)
    with pytest.raises(ValueError, match="sum to 1"):
        adpo_loss(logps, ref, targets=q * (1 + 1e-6))
    with pytest.raises(ValueError, match="sum to 1"):
        adpo_loss(logps, ref, targets=q * 1.5)
    q32 = q.float() * (1 + 5e-5)
    got = adpo_loss(logps.float(), ref.float(), targets=q32).loss
    torch.testing.assert_close(got, _explicit_target_loss(logps.float(), ref.float(), q32))


def test_coarse_targets_tolerance_is_twice_their_epsilon():
    """bfloat16 targets (ε = 2⁻⁷) may miss 1 by 2ε, then are renormalised; 2.5ε is refused."""
    logps, ref = rand(1, 4), rand(1, 4)
    eps = torch.finfo(torch.bfloat16).eps
    ok = torch.tensor([[0.25, 0.25, 0.25, 0.25 + 1.5 * eps]]).bfloat16()
    bad = torch.tensor([[0.25, 0.25, 0.25, 0.25 + 2.5 * eps]]).bfloat16()
    assert ok.double().sum() - 1 == 1.5 * eps and bad.double().sum() - 1 == 2.5 * eps
    q = ok.double() / ok.double().sum()
    torch.testing.assert_close(
        adpo_loss(logps, ref, targets=ok).loss, _explicit_target_loss(logps, ref, q)
    )
    with pytest.raises(ValueError, match="sum to 1"):
        adpo_loss(logps, ref, targets=bad)


def test_integer_targets_are_hard_labels():
    """An integer one-hot row is a distribution like its float copy; a row of two ones is not."""
    logps, ref = rand(2, 3), rand(2, 3)
    hard = torch.tensor([[0, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(
        adpo_loss(logps, ref, targets=hard).loss,
        adpo_loss(logps, ref, targets=hard.to(D)).loss,
        rtol=0,
        atol=0,
    )
    with pytest.raises(ValueError, match=r"row 1 sums to 2"):
        adpo_loss(logps, ref, targets=torch.tensor([[0, 1, 0], [1, 1, 0]]))


def test_a_missing_candidates_target_is_never_read():
    logps = rand(2, 4)
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    q = torch.softmax(torch.where(valid, rand(2, 4), -math.inf), -1)
    want = kd_loss(logps, q, valid=valid).loss
    torch.testing.assert_close(
        kd_loss(logps, q.masked_fill(~valid, math.nan), valid=valid).loss, want
    )


def test_a_bad_target_row_is_named():
    q = torch.softmax(rand(3, 4), -1)
    q[1] *= 2
    with pytest.raises(ValueError, match=r"row 1 sums to 2"):
        kd_loss(rand(3, 4), q)


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0, 3.0])
def test_top1_with_two_candidates_and_tau_one_over_beta_is_dpo(beta):
    """ADPO paper, app. D: top-1 target, G = 2, τ = 1/β is exactly DPO (value and grad)."""
    cw, rl = rand(8).requires_grad_(), rand(8).requires_grad_()
    ref_w, ref_l = rand(8), rand(8)
    dpo = dpo_loss(cw, rl, ref_w, ref_l, beta=beta).loss
    g_dpo = torch.autograd.grad(dpo, (cw, rl))
    rewards = torch.tensor([[1.0, 0.0]], dtype=D).expand(8, 2)
    adpo = adpo_loss(
        torch.stack([cw, rl], -1),
        torch.stack([ref_w, ref_l], -1),
        rewards,
        target="top1",
        tau=1 / beta,
    ).loss
    g_adpo = torch.autograd.grad(adpo, (cw, rl))
    torch.testing.assert_close(adpo, dpo, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_adpo, g_dpo, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_softmax_target_minimiser_is_ref_times_q_to_the_tau(tau):
    """App. C: over a free categorical on the candidate set, the optimum is π ∝ π_ref·q^τ."""
    G = 5
    ref = torch.log_softmax(rand(3, G), -1)
    q = torch.softmax(rand(3, G), -1)
    theta = torch.zeros(3, G, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS(
        [theta],
        lr=1,
        max_iter=500,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = adpo_loss(torch.log_softmax(theta, -1), ref, targets=q, tau=tau).loss
        loss.backward()
        return loss

    opt.step(closure)
    expected = ref.exp() * q.pow(tau)
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(torch.softmax(theta, -1), expected, rtol=0, atol=1e-7)


def _listmle_bruteforce(u, r):
    """Sort by reward (descending) and sum position-wise softmax NLLs (Xia et al., 2008)."""
    total = 0.0
    for b in range(u.shape[0]):
        order = torch.argsort(r[b], descending=True)
        s = u[b][order]
        total = total + sum(torch.logsumexp(s[k:], 0) - s[k] for k in range(len(s)))
    return total / u.shape[0]


def test_plackett_luce_untied_equals_listmle_bruteforce():
    u, ref = rand(6, 5), rand(6, 5)
    r = rand(6, 5)  # continuous: no ties
    got = adpo_loss(u, ref, r, target="plackett_luce").loss
    torch.testing.assert_close(got, _listmle_bruteforce(u - ref, r), rtol=1e-12, atol=1e-12)
    efron = adpo_loss(u, ref, r, target="plackett_luce", ties="efron").loss
    torch.testing.assert_close(efron, got, rtol=1e-12, atol=1e-12)


def test_plackett_luce_ties_against_explicit_loops():
    u = rand(4, 6)
    r = torch.tensor(
        [[2, 1, 1, 0, 2, 1], [1, 1, 1, 1, 1, 1], [3, 2, 1, 0, -1, -2], [0, 0, 1, 0, 0, 1]], dtype=D
    )
    valid = torch.ones(4, 6, dtype=torch.bool)
    breslow = efron = 0.0
    for b in range(4):
        for i in range(6):
            if not (r[b] < r[b, i]).any():
                continue
            risk = r[b] <= r[b, i]
            tied = r[b] == r[b, i]
            k = int(tied[:i].sum())  # members before i in the block
            d = int(tied.sum())
            s_r, s_d = u[b][risk].exp().sum(), u[b][tied].exp().sum()
            breslow += torch.log(s_r) - u[b, i]
            efron += torch.log(s_r - k / d * s_d) - u[b, i]
    torch.testing.assert_close(
        plackett_luce_nll(u, r, valid).sum(), breslow, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(
        plackett_luce_nll(u, r, valid, ties="efron").sum(), efron, rtol=1e-12, atol=1e-12
    )
    assert efron < breslow  # Efron shrinks tied risk sets


def test_breslow_with_binary_rewards_is_k_times_top1():
    u, ref = rand(5, 8), rand(5, 8)
    r = (rand(5, 8) > 0).to(D)
    r[0] = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0], dtype=D)
    k = r.sum(-1)
    zero_signal = (k == 0) | (k == 8)
    pl = plackett_luce_nll(u - ref, r, torch.ones(5, 8, dtype=torch.bool))
    q = top1_targets(r)
    top1 = -(q * torch.log_softmax(u - ref, -1)).sum(-1)
    torch.testing.assert_close(pl[~zero_signal], (k * top1)[~zero_signal], rtol=1e-12, atol=1e-12)
    assert (pl[zero_signal] == 0).all()


def test_softmax_target_cross_entropy_formula():
    logps, ref, r = rand(3, 4), rand(3, 4), rand(3, 4)
    tau, beta = 0.7, 0.5
    q = torch.softmax(group_advantages(r) / beta, -1)
    expected = -(q * torch.log_softmax((logps - ref) / tau, -1)).sum(-1).mean()
    out = adpo_loss(logps, ref, r, tau=tau, beta=beta)
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)
    p = torch.softmax((logps - ref) / tau, -1)
    torch.testing.assert_close(out.metrics["anchored_entropy"], -(p * p.log()).sum(-1).mean())
    torch.testing.assert_close(out.metrics["target_entropy"], -(q * q.log()).sum(-1).mean())
    torch.testing.assert_close(out.metrics["delta_abs_max"], (logps - ref).abs().max())


def test_per_prompt_tau():
    logps, ref, r = rand(3, 4), rand(3, 4), rand(3, 4)
    tau = torch.tensor([0.5, 1.0, 2.0], dtype=D)
    out = adpo_loss(logps, ref, r, tau=tau).loss
    rows = [
        adpo_loss(logps[i : i + 1], ref[i : i + 1], r[i : i + 1], tau=float(tau[i])).loss
        for i in range(3)
    ]
    torch.testing.assert_close(out, torch.stack(rows).mean())


def test_token_inputs_equal_their_sequence_sums():
    B, G, T = 3, 4, 6
    tok, ref_tok = rand(B, G, T), rand(B, G, T)
    mask = torch.rand(B, G, T) > 0.3
    mask[..., 0] = True
    tok_garbage = tok.masked_fill(~mask, float("nan"))  # padding is never read
    ref_garbage = ref_tok.masked_fill(~mask, float("-inf"))
    seq = (tok * mask).sum(-1)
    ref_seq = (ref_tok * mask).sum(-1)
    r = rand(B, G)
    for target in ("softmax", "plackett_luce", "top1"):
        a = adpo_loss(tok_garbage, ref_garbage, r, mask=mask, target=target).loss
        b = adpo_loss(seq, ref_seq, r, target=target).loss
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_token_gradients_flow_only_to_counted_tokens():
    tok = rand(2, 3, 4).requires_grad_()
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[..., -1] = False
    adpo_loss(tok, rand(2, 3, 4), rand(2, 3), mask=mask).loss.backward()
    assert (tok.grad[..., -1] == 0).all() and (tok.grad[..., :-1] != 0).any()


# ---------------------------------------------------------------- KD and reverse ADPO


def test_kd_is_forward_kl_in_absolute_coordinates():
    logits, q = rand(4, 5), torch.softmax(rand(4, 5), -1)
    T = 2.0
    p = torch.softmax(logits / T, -1)
    kl = (q * (q.log() - p.log())).sum(-1).mean()
    out = kd_loss(logits, q, temperature=T)
    torch.testing.assert_close(out.loss, kl * T**2)
    # same gradient as ADPO with a zero anchor and τ = T (they differ by −H(q) and T²)
    x = logits.clone().requires_grad_()
    g_kd = torch.autograd.grad(kd_loss(x, q, temperature=T).loss, x)[0]
    g_adpo = torch.autograd.grad(adpo_loss(x, torch.zeros_like(x), targets=q, tau=T).loss, x)[0]
    torch.testing.assert_close(g_kd, g_adpo * T**2)
    assert kd_loss(torch.log(q) * T, q, temperature=T).loss.abs() < 1e-12


def test_reverse_adpo_is_reverse_kl():
    logps, ref, r = rand(3, 5), rand(3, 5), rand(3, 5)
    tau, beta = 0.8, 0.5
    p = torch.softmax((logps - ref) / tau, -1)
    q = torch.softmax(group_advantages(r) / beta, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(reverse_adpo_loss(logps, ref, r, tau=tau, beta=beta).loss, expected)
    # zero exactly when the anchored distribution equals q
    at_q = reverse_adpo_loss(ref + tau * q.log(), ref, targets=q, tau=tau).loss
    assert at_q.abs() < 1e-12


# ---------------------------------------------------------------- variable group size


def test_valid_mask_equals_slicing():
    logps, ref, r = rand(2, 5), rand(2, 5), rand(2, 5)
    valid = torch.tensor([[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    for target in ("softmax", "plackett_luce", "top1"):
        got = adpo_loss(logps, ref, r, valid=valid, target=target).loss
        row0 = adpo_loss(
            logps[:1, [0, 1, 2, 4]], ref[:1, [0, 1, 2, 4]], r[:1, [0, 1, 2, 4]], target=target
        ).loss
        row1 = adpo_loss(logps[1:], ref[1:], r[1:], target=target).loss
        torch.testing.assert_close(got, (row0 + row1) / 2, rtol=1e-12, atol=1e-12)


def test_stability_small_tau_and_huge_gaps():
    G = 6
    logps = torch.tensor([[0.0, -1e4, -5e3, -1.0, -2e4, -3.0]], requires_grad=True)
    ref = torch.zeros(1, G)
    r = torch.tensor([[0.0, 1.0, 0.5, 0.2, 1.0, 0.0]])
    for target in ("softmax", "plackett_luce", "top1"):
        for ties in ("breslow", "efron"):
            out = adpo_loss(logps, ref, r, target=target, tau=1e-3, ties=ties)
            (g,) = torch.autograd.grad(out.loss, logps)
            assert torch.isfinite(out.loss) and torch.isfinite(g).all(), (target, ties)
            assert all(torch.isfinite(v) for v in out.metrics.values())
    out = reverse_adpo_loss(logps, ref, r, tau=1e-3)
    assert (
        torch.isfinite(out.loss) and torch.isfinite(torch.autograd.grad(out.loss, logps)[0]).all()
    )


def test_all_equal_rewards():
    logps, ref = rand(3, 4).requires_grad_(), rand(3, 4)
    r = torch.ones(3, 4, dtype=D)
    pl = adpo_loss(logps, ref, r, target="plackett_luce")
    assert pl.loss == 0 and pl.metrics["zero_signal_frac"] == 1
    sm = adpo_loss(logps, ref, r)
    # uniform target: the loss is log G minus... it is the CE to uniform, finite, no NaN
    expected = -torch.log_softmax(logps - ref, -1).mean(-1).mean()
    torch.testing.assert_close(sm.loss, expected)
    assert math.isfinite(adpo_loss(logps, ref, r, target="top1").loss.item())


def test_permutation_equivariance_bruteforce_small():
    logps, ref, r = rand(1, 4), rand(1, 4), torch.tensor([[1.0, 0.0, 1.0, 0.5]], dtype=D)
    base = adpo_loss(logps, ref, r, target="plackett_luce", ties="breslow").loss
    for perm in itertools.permutations(range(4)):
        p = list(perm)
        got = adpo_loss(
            logps[:, p], ref[:, p], r[:, p], target="plackett_luce", ties="breslow"
        ).loss
        torch.testing.assert_close(got, base, rtol=1e-12, atol=1e-12)


def test_softmax_targets_on_raw_scores():
    r = torch.tensor([[3.0, 1.0, 0.0, 9.0]])
    valid = torch.tensor([[True, True, True, False]])
    q = softmax_targets(r, beta=2.0, valid=valid, standardize=False)
    e = torch.exp(torch.tensor([1.5, 0.5, 0.0]))
    assert torch.allclose(q[0, :3], e / e.sum(), atol=1e-7) and q[0, 3] == 0
    # a shift of the scores changes nothing, a scale does (unlike the standardized target)
    assert torch.allclose(softmax_targets(r + 5, beta=2.0, valid=valid, standardize=False), q)
    assert not torch.allclose(softmax_targets(3 * r, beta=2.0, valid=valid, standardize=False), q)
    assert torch.allclose(
        softmax_targets(3 * r, beta=2.0, valid=valid),
        softmax_targets(r, beta=2.0, valid=valid),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="rewards"):
        softmax_targets(torch.tensor([[1.0, float("nan")]]), standardize=False)


# ---------------------------------------------------------------- metrics, options, dtypes


def _listwise_metrics_reference(delta, valid, tau, q, rewards=None):
    """The listwise losses' metrics row by row in float64 Python (``q``: the target)."""
    B = delta.shape[0]
    ent = ent_norm = tgt = agree = flat = 0.0
    absd = []
    for b in range(B):
        idx = [g for g in range(delta.shape[1]) if valid[b, g]]
        u = [float(delta[b, g]) / tau[b] for g in idx]
        top = max(u)
        z = sum(math.exp(x - top) for x in u)
        p = [math.exp(x - top) / z for x in u]
        h = -sum(pi * math.log(pi) for pi in p if pi > 0)
        ent += h
        ent_norm += h / math.log(len(idx)) if len(idx) > 1 else 0.0
        qb = [float(q[b, g]) for g in idx]
        tgt -= sum(x * math.log(x) for x in qb if x > 0)
        agree += qb[p.index(max(p))] >= max(qb)
        absd += [abs(float(delta[b, g])) for g in idx]
        if rewards is not None:
            flat += len({float(rewards[b, g]) for g in idx}) == 1
    out = {
        "anchored_entropy": ent / B,
        "anchored_entropy_norm": ent_norm / B,
        "target_entropy": tgt / B,
        "delta_abs_mean": sum(absd) / len(absd),
        "delta_abs_max": max(absd),
        "tau": sum(tau) / B,
        "anchored_top1_agreement": agree / B,
    }
    if rewards is not None:
        out["zero_signal_frac"] = flat / B
    return out


def _assert_metrics(got, expected):
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == D, k
        torch.testing.assert_close(got[k], torch.tensor(v, dtype=D), msg=k)


def _masked_group():
    """B = 3, G = 4: row 0 all counted; row 1 drops a slot and its counted rewards are all
    equal (no signal, though the dropped slot's would differ); row 2 counts one candidate
    whose reward is below the dropped slots' (a top-1 over all slots would pick those)."""
    logps, ref = rand(3, 4), rand(3, 4)
    r = torch.tensor([[0.3, -1.0, 2.0, 0.5], [1.0, 1.0, 9.0, 1.0], [-2.0, 5.0, 5.0, -3.0]], dtype=D)
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 1], [1, 0, 0, 0]], dtype=torch.bool)
    return logps, ref, r, valid


@pytest.mark.parametrize("target", ["softmax", "plackett_luce", "top1"])
def test_adpo_metrics_against_a_row_by_row_reference(target):
    logps, ref, r, valid = _masked_group()
    tau = [0.5, 1.0, 2.0]
    out = adpo_loss(
        logps, ref, r, target=target, tau=torch.tensor(tau, dtype=D), beta=0.7, valid=valid
    )
    rv = torch.where(valid, r, torch.tensor(float("-inf"), dtype=D))
    if target == "softmax":
        q = torch.softmax(torch.where(valid, group_advantages(r, valid=valid) / 0.7, rv), -1)
    else:  # the top-1 target; also the reported target of Plackett–Luce
        q = (rv == rv.amax(-1, keepdim=True)).to(D)
        q = q / q.sum(-1, keepdim=True)
    _assert_metrics(out.metrics, _listwise_metrics_reference(logps - ref, valid, tau, q, r))


def test_reverse_adpo_and_kd_metrics_against_a_row_by_row_reference():
    logps, ref, r, valid = _masked_group()
    q = torch.softmax(torch.where(valid, group_advantages(r, valid=valid) / 0.5, -math.inf), -1)
    out = reverse_adpo_loss(logps, ref, r, tau=0.8, beta=0.5, valid=valid)
    _assert_metrics(out.metrics, _listwise_metrics_reference(logps - ref, valid, [0.8] * 3, q, r))
    out = reverse_adpo_loss(logps, ref, targets=q, tau=0.8, valid=valid)  # no rewards: no frac
    _assert_metrics(out.metrics, _listwise_metrics_reference(logps - ref, valid, [0.8] * 3, q))
    out = kd_loss(logps, q, temperature=1.5, valid=valid)
    expected = _listwise_metrics_reference(logps, valid, [1.5] * 3, q)
    p = torch.softmax(torch.where(valid, logps / 1.5, -math.inf), -1)
    kl = torch.where(valid & (q > 0), q * (q.log() - p.log()), 0).sum(-1).mean()
    expected |= {"kl": kl.item(), "student_entropy": expected["anchored_entropy"]}
    _assert_metrics(out.metrics, expected)
    torch.testing.assert_close(out.loss, kl * 1.5**2)  # Hinton's T² (T = 1.5: T² ≠ 2T)


def test_top1_target_is_cross_entropy_to_the_arg_max_set():
    """Continuous rewards with a tie at the top: q is uniform on the tied best candidates
    (eq. 11), not a ranking (Plackett–Luce would add every lower position)."""
    logps, ref = rand(2, 5), rand(2, 5)
    r = torch.tensor([[0.1, 0.9, -0.3, 0.9, 0.4], [2.0, 1.0, 0.0, -1.0, -2.0]], dtype=D)
    logp = torch.log_softmax((logps - ref) / 0.6, -1)
    expected = torch.stack([-(logp[0, 1] + logp[0, 3]) / 2, -logp[1, 0]]).mean()
    got = adpo_loss(logps, ref, r, target="top1", tau=0.6).loss
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_efron_ties_reach_adpo_loss():
    u, ref = rand(3, 6), rand(3, 6)
    r = torch.tensor([[2, 1, 1, 0, 2, 1], [0, 0, 1, 0, 0, 1], [3, 3, 3, 1, 1, 0]], dtype=D)
    valid = torch.ones(3, 6, dtype=torch.bool)
    for ties in ("breslow", "efron"):
        expected = plackett_luce_nll(u - ref, r, valid, ties=ties).mean()
        got = adpo_loss(u, ref, r, target="plackett_luce", ties=ties).loss
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert not torch.isclose(
        adpo_loss(u, ref, r, target="plackett_luce", ties="efron").loss,
        adpo_loss(u, ref, r, target="plackett_luce").loss,
    )


def test_documented_defaults():
    """tau = 1 and beta = 1 (adpo_loss, reverse_adpo_loss, softmax_targets); T = 1 (kd_loss);
    Breslow ties."""
    logps, ref, r = rand(2, 4), rand(2, 4), torch.tensor([[1.0, 0, 0, 1], [2, 1, 1, 0]], dtype=D)
    q = torch.softmax(rand(2, 4), -1)
    same = [
        (adpo_loss(logps, ref, r), adpo_loss(logps, ref, r, tau=1.0, beta=1.0)),
        (
            adpo_loss(logps, ref, r, target="plackett_luce"),
            adpo_loss(logps, ref, r, target="plackett_luce", ties="breslow"),
        ),
        (reverse_adpo_loss(logps, ref, r), reverse_adpo_loss(logps, ref, r, tau=1.0, beta=1.0)),
        (kd_loss(logps, q), kd_loss(logps, q, temperature=1.0)),
    ]
    for a, b in same:
        torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    for other in (
        adpo_loss(logps, ref, r, beta=2.0),
        adpo_loss(logps, ref, r, tau=2.0),
        reverse_adpo_loss(logps, ref, r, tau=2.0),
        reverse_adpo_loss(logps, ref, r, beta=2.0),
    ):
        assert not torch.isclose(other.loss, same[0][0].loss)
    assert not torch.isclose(kd_loss(logps, q, temperature=2.0).loss, same[3][0].loss)
    torch.testing.assert_close(softmax_targets(r), softmax_targets(r, beta=1.0, eps=1e-6))
    assert not torch.allclose(softmax_targets(r, eps=0.5), softmax_targets(r))


@pytest.mark.parametrize("fn", ["reverse", "kd"])
def test_reverse_and_kd_token_inputs_and_valid_mask(fn):
    """Token-level inputs reduce to their masked sums; a missing candidate is as if sliced."""
    B, G, T = 2, 4, 3
    tok, ref_tok = rand(B, G, T), rand(B, G, T)
    mask = torch.ones(B, G, T, dtype=torch.bool)
    mask[0, 1, 1:] = False
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    q = torch.softmax(torch.where(valid, rand(B, G), -math.inf), -1)
    r = rand(B, G)

    def loss(lp, rf, rows=slice(None), **kw):
        if fn == "kd":
            return kd_loss(lp, q[rows], temperature=0.7, **kw).loss
        return reverse_adpo_loss(lp, rf, r[rows], tau=0.7, **kw).loss

    seq, ref_seq = (tok * mask).sum(-1), (ref_tok * mask).sum(-1)
    got = loss(tok.masked_fill(~mask, math.nan), ref_tok, mask=mask, valid=valid)
    torch.testing.assert_close(got, loss(seq, ref_seq, valid=valid), rtol=1e-12, atol=1e-12)
    row0 = loss(seq[:1, :3], ref_seq[:1, :3], (slice(0, 1), slice(0, 3)))
    row1 = loss(seq[1:], ref_seq[1:], slice(1, 2))
    torch.testing.assert_close(got, (row0 + row1) / 2, rtol=1e-12, atol=1e-12)


def test_the_loss_dtype_follows_the_log_probs():
    """Float32 log-probs give a float32 loss and metrics even with float64 rewards or targets
    (those are constants); bfloat16 log-probs are computed in float32."""
    logps, ref = torch.randn(2, 4), torch.randn(2, 4)
    r, q = rand(2, 4), torch.softmax(rand(2, 4), -1)
    outs = [
        *(adpo_loss(logps, ref, r, target=t) for t in ("softmax", "plackett_luce", "top1")),
        adpo_loss(logps, ref, targets=q),
        reverse_adpo_loss(logps, ref, r),
        kd_loss(logps, q),
        adpo_loss(logps.bfloat16(), ref.bfloat16(), r),
    ]
    for out in outs:
        assert out.loss.dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in out.metrics.values())
    torch.testing.assert_close(
        outs[-1].loss, adpo_loss(logps.bfloat16().float(), ref.bfloat16().float(), r).loss
    )
