"""DPO/IPO/SFT and the token-level policy-gradient baselines against plain reference code."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from adpo.losses import (
    aggregate_tokens,
    dapo_loss,
    dpo_loss,
    grpo_loss,
    gspo_loss,
    ipo_loss,
    kl_penalty_loss,
    ppo_loss,
    sft_loss,
)

D = torch.float64


def rand(*shape):
    return torch.randn(*shape, dtype=D)


# ---------------------------------------------------------------- DPO / IPO


def test_dpo_formula_and_soft_minimiser():
    cw, rl, rw, rr = rand(4, 10).unbind(0)
    beta, eps = 0.2, 0.1
    z = (cw - rw) - (rl - rr)
    expected = (-(1 - eps) * F.logsigmoid(beta * z) - eps * F.logsigmoid(-beta * z)).mean()
    out = dpo_loss(cw, rl, rw, rr, beta=beta, label_smoothing=eps)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.metrics["reward_accuracy"], (z > 0).to(D).mean())
    # soft DPO's optimum margin is finite: βz* = log((1−ε)/ε)
    zstar = torch.tensor([math.log((1 - eps) / eps) / beta], dtype=D, requires_grad=True)
    zero = torch.zeros(1, dtype=D)
    (g,) = torch.autograd.grad(
        dpo_loss(zstar, zero, zero, zero, beta=beta, label_smoothing=eps).loss, zstar
    )
    assert abs(g.item()) < 1e-12


def test_ipo_formula_and_minimiser():
    cw, rl, rw, rr = rand(4, 7).unbind(0)
    beta = 0.3
    z = (cw - rw) - (rl - rr)
    torch.testing.assert_close(
        ipo_loss(cw, rl, rw, rr, beta=beta).loss, ((z - 1 / (2 * beta)) ** 2).mean()
    )
    zero = torch.zeros(3, dtype=D)
    assert ipo_loss(zero + 1 / (2 * beta), zero, zero, zero, beta=beta).loss == 0


def test_sft_is_token_mean_nll():
    lp = -rand(3, 5).abs()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = sft_loss(lp, mask)
    torch.testing.assert_close(out.loss, -(lp * mask).sum() / mask.sum())
    w = torch.tensor([1.0, 0.0, 2.0], dtype=D)
    torch.testing.assert_close(
        sft_loss(lp, mask, weights=w).loss, -(lp * mask * w[:, None]).sum() / mask.sum()
    )


# ---------------------------------------------------------------- token-level baselines


def ppo_reference(lp, old, adv, mask, lo, hi):
    r = torch.exp(lp - old)
    a = adv[..., None].expand_as(lp)
    return -torch.minimum(r * a, r.clamp(1 - lo, 1 + hi) * a), r


def test_ppo_and_dapo_token_mean():
    lp, old = rand(2, 3, 6) * 0.3, rand(2, 3, 6) * 0.3
    adv = rand(2, 3)
    mask = torch.rand(2, 3, 6) > 0.3
    mask[..., 0] = True
    per, r = ppo_reference(lp, old, adv, mask, 0.2, 0.2)
    torch.testing.assert_close(ppo_loss(lp, old, adv, mask).loss, (per * mask).sum() / mask.sum())
    per_d, _ = ppo_reference(lp, old, adv, mask, 0.2, 0.28)
    out = dapo_loss(lp, old, adv, mask)
    torch.testing.assert_close(out.loss, (per_d * mask).sum() / mask.sum())
    a = adv[..., None].expand_as(lp)
    low = (r < 0.8) & (a < 0) & mask
    high = (r > 1.28) & (a > 0) & mask
    torch.testing.assert_close(out.metrics["clip_frac"], (low | high).sum().to(D) / mask.sum())


def test_grpo_is_sequence_mean_of_token_means_and_adds_k3_kl():
    lp, old, ref = rand(2, 4, 5) * 0.3, rand(2, 4, 5) * 0.3, rand(2, 4, 5) * 0.3
    adv = rand(2, 4)
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    mask[0, 0, 2:] = False
    per, _ = ppo_reference(lp, old, adv, mask, 0.2, 0.2)
    seq_mean = (per * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(grpo_loss(lp, old, adv, mask).loss, seq_mean.mean())
    k3 = torch.exp(ref - lp) - (ref - lp) - 1
    with_kl = ((per + 0.04 * k3) * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(
        grpo_loss(lp, old, adv, mask, beta=0.04, ref_logps=ref).loss, with_kl.mean()
    )


def test_token_mean_and_sequence_mean_differ_with_unequal_lengths():
    lp, old, adv = rand(1, 2, 4) * 0.1, rand(1, 2, 4) * 0.1, torch.tensor([[1.0, -1.0]], dtype=D)
    mask = torch.tensor([[[1, 1, 1, 1], [1, 0, 0, 0]]], dtype=torch.bool)
    a = grpo_loss(lp, old, adv, mask).loss
    b = dapo_loss(lp, old, adv, mask, clip_eps_high=0.2).loss
    assert not torch.isclose(a, b)


def test_gspo_uses_geometric_mean_sequence_ratio():
    lp, old = rand(3, 5) * 0.01, rand(3, 5) * 0.01
    adv = rand(3)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    eps_lo, eps_hi = 0.003, 0.004
    s = torch.exp(((lp - old) * mask).sum(-1) / mask.sum(-1))
    expected = -torch.minimum(s * adv, s.clamp(1 - eps_lo, 1 + eps_hi) * adv).mean()
    torch.testing.assert_close(
        gspo_loss(lp, old, adv, mask, clip_eps=eps_lo, clip_eps_high=eps_hi).loss, expected
    )
    # gradient equals the sequence-level one: −A·s·∇ mean_t log π (when unclipped)
    x = lp.clone().requires_grad_()
    big = 10.0  # no clipping
    (g,) = torch.autograd.grad(
        gspo_loss(x, old, adv, mask, clip_eps=0.9, clip_eps_high=big).loss, x
    )
    expected_g = -(adv * s)[:, None] * mask / mask.sum(-1, keepdim=True) / 3
    torch.testing.assert_close(g, expected_g)


def test_single_action_ppo_matches_t1():
    """Bandits: a single action is T = 1."""
    lp, old, adv = rand(8, 1) * 0.3, rand(8, 1) * 0.3, rand(8)
    per, _ = ppo_reference(lp, old, adv, None, 0.2, 0.2)
    torch.testing.assert_close(ppo_loss(lp, old, adv).loss, per.mean())


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_penalty_estimators(est):
    lp, old, adv = rand(4, 3) * 0.2, rand(4, 3) * 0.2, rand(4)
    lr = lp - old
    kl = {"k1": -lr, "k2": 0.5 * lr**2, "k3": lr.exp() - 1 - lr}[est]
    expected = (-lr.exp() * adv[:, None]).mean() + 0.5 * kl.mean()
    out = kl_penalty_loss(lp, old, adv, beta=0.5, kl_estimator=est)
    torch.testing.assert_close(out.loss, expected)
    exact = rand(4).abs()
    out = kl_penalty_loss(lp, old, adv, beta=0.5, exact_kl=exact)
    torch.testing.assert_close(out.loss, (-lr.exp() * adv[:, None]).mean() + 0.5 * exact.mean())


def test_aggregation_modes():
    x = rand(2, 3)
    m = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(aggregate_tokens(x, m, "token-mean"), (x * m).sum() / 5)
    torch.testing.assert_close(
        aggregate_tokens(x, m, "seq-mean-token-mean"), ((x * m).sum(-1) / m.sum(-1)).mean()
    )
    torch.testing.assert_close(aggregate_tokens(x, m, "seq-mean-token-sum"), (x * m).sum(-1).mean())
    torch.testing.assert_close(
        aggregate_tokens(x, m, "seq-mean-token-sum-norm"), (x * m).sum() / (2 * 3)
    )


def test_per_token_advantages_are_accepted():
    lp, old = rand(2, 4) * 0.1, rand(2, 4) * 0.1
    adv_tok = rand(2, 4)
    per = -torch.minimum(
        torch.exp(lp - old) * adv_tok, torch.exp(lp - old).clamp(0.8, 1.2) * adv_tok
    )
    torch.testing.assert_close(ppo_loss(lp, old, adv_tok).loss, per.mean())


def test_aggregate_tokens_unknown_mode_raises():
    x, m = torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"loss_agg_mode.*seq-mean-token-sum-norm.*'bogus'"):
        aggregate_tokens(x, m, "bogus")
    with pytest.raises(ValueError, match="loss_agg_mode"):
        grpo_loss(x, x, torch.ones(2), m, loss_agg_mode="bogus")


# ---- verl's dual clip and k3 clamp (options; TRL's behaviour by default) --------------


def _dual_clip_reference(lp, old, adv, eps, c):
    """verl's compute_policy_loss (dual-clip branch), written out per token in float64."""
    out = torch.empty_like(lp)
    for idx in itertools.product(*(range(n) for n in lp.shape)):
        r = math.exp(float(lp[idx] - old[idx]))
        a = float(adv[idx[:-1]])
        loss1 = max(-a * r, -a * min(max(r, 1 - eps), 1 + eps))
        out[idx] = min(loss1, -a * c) if a < 0 else loss1
    return out


@pytest.mark.parametrize("fn", [ppo_loss, grpo_loss])
def test_dual_clip_caps_negative_advantage_tokens_at_c_times_abs_a(fn):
    g = torch.Generator().manual_seed(3)
    B, G, T = 2, 4, 5
    old = -torch.rand(B, G, T, generator=g, dtype=torch.float64)
    lp = (old + 2.0 * torch.randn(B, G, T, generator=g, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(B, G, generator=g, dtype=torch.float64)
    mask = torch.ones(B, G, T, dtype=torch.bool)
    mode = "token-mean" if fn is ppo_loss else "seq-mean-token-mean"
    out = fn(lp, old, adv, mask, clip_eps=0.2, clip_ratio_c=3.0)
    per_tok = _dual_clip_reference(lp.detach(), old, adv, 0.2, 3.0)
    ref = per_tok.mean() if mode == "token-mean" else per_tok.mean(-1).mean()
    torch.testing.assert_close(out.loss.detach(), ref, rtol=1e-12, atol=1e-12)
    plain = fn(lp, old, adv, mask, clip_eps=0.2)
    assert out.loss.item() < plain.loss.item()  # the cap bound somewhere (ratios up to e^6)
    assert 0 < out.metrics["clip_frac_dual"].item() < 1
    out.loss.backward()  # capped tokens carry no gradient
    capped = (adv[..., None] < 0) & (per_tok > 0) & torch.isclose(per_tok, -adv[..., None] * 3.0)
    assert capped.any() and (lp.grad[capped] == 0).all()
    with pytest.raises(ValueError, match=r"`clip_ratio_c` must be a finite number > 1"):
        fn(lp, old, adv, mask, clip_ratio_c=1.0)


def test_k3_clamp_bounds_the_kl_terms_as_verl_does():
    lp = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[0.0, 1.0, 3.0, 5.0]], dtype=torch.float64)  # e^5 − 6 ≈ 142
    k3 = (ref - lp).exp() - (ref - lp) - 1
    adv = torch.zeros(1, dtype=torch.float64)
    out = grpo_loss(lp, lp.detach(), adv, beta=1.0, ref_logps=ref, kl_clamp=10.0)
    torch.testing.assert_close(out.metrics["ref_kl"], k3.detach().clamp(max=10).mean())
    free = grpo_loss(lp, lp.detach(), adv, beta=1.0, ref_logps=ref)
    torch.testing.assert_close(free.metrics["ref_kl"], k3.detach().mean())
    # kl_penalty_loss: k3 of KL(π_old‖πθ) from d = log(πθ/π_old)
    new = torch.tensor([[0.0, -1.0, 4.0]], dtype=torch.float64)
    old = torch.zeros(1, 3, dtype=torch.float64)
    d = new - old
    got = kl_penalty_loss(new, old, torch.zeros(1, dtype=torch.float64), kl_clamp=10.0)
    torch.testing.assert_close(got.metrics["kl"], (d.exp() - d - 1).clamp(max=10).mean())
    with pytest.raises(ValueError, match=r"`kl_clamp` must be > 0"):
        grpo_loss(lp, lp.detach(), adv, beta=1.0, ref_logps=ref, kl_clamp=0.0)


# ---- every metric against a plain reference (the keys are public: trainers log them) --


def _binary_entropy(p):
    return 0.0 if p in (0.0, 1.0) else -(p * math.log(p) + (1 - p) * math.log(1 - p))


@pytest.mark.parametrize("fn", [dpo_loss, ipo_loss])
def test_pair_metrics_against_a_per_pair_reference(fn):
    beta = 0.7
    cw, rl, rw, rr = rand(4, 6).unbind(0)
    rl[2], rr[2] = cw[2], rw[2]  # z = 0 exactly: a tie is not a correct ranking
    kw = {"label_smoothing": 0.2} if fn is dpo_loss else {}
    out = fn(cw, rl, rw, rr, beta=beta, **kw)
    dw, dl = (cw - rw).tolist(), (rl - rr).tolist()
    z = [a - b for a, b in zip(dw, dl, strict=True)]
    assert z[2] == 0.0
    p = [1 / (1 + math.exp(-beta * zi)) for zi in z]
    expected = {
        "reward_accuracy": sum(zi > 0 for zi in z) / 6,
        "margin": beta * sum(z) / 6,
        "chosen_reward": beta * sum(dw) / 6,
        "rejected_reward": beta * sum(dl) / 6,
        "anchored_entropy": sum(_binary_entropy(pi) for pi in p) / 6,
        "delta_abs_mean": sum(abs(d) for d in dw + dl) / 12,
        "delta_abs_max": max(abs(d) for d in dw + dl),
    }
    if fn is dpo_loss:
        expected["target_entropy"] = _binary_entropy(0.2)
    assert set(out.metrics) == set(expected)
    for k, v in expected.items():
        assert out.metrics[k].dtype == D, k
        torch.testing.assert_close(out.metrics[k], torch.tensor(v, dtype=D), msg=k)
    # a hard label has no entropy
    assert dpo_loss(cw, rl, rw, rr).metrics["target_entropy"] == 0


def _pg_metrics_reference(lp, old, adv, mask, lo=None, hi=None, c=None, clip_ratio=None):
    """The token baselines' metrics, token by token in float64 Python. ``adv`` is per token;
    ``clip_ratio`` (default πθ/π_old) is the ratio the clip reads (GSPO: the sequence one)."""
    lead = lp.shape[:-1]
    n_tok, sums = 0, {}
    acc = {"ratio": 0.0, "kl": 0.0, "low": 0, "high": 0, "dual": 0}
    for idx in itertools.product(*(range(n) for n in lp.shape)):
        sums.setdefault(idx[:-1], 0.0)
        if not mask[idx]:
            continue
        d = float(lp[idx] - old[idx])
        r = math.exp(d) if clip_ratio is None else float(clip_ratio[idx])
        a = float(adv[idx])
        n_tok += 1
        sums[idx[:-1]] += d
        acc["ratio"] += math.exp(d)
        acc["kl"] += math.exp(d) - 1 - d
        if lo is not None:
            acc["low"] += r < 1 - lo and a < 0
            acc["high"] += r > 1 + hi and a > 0
        if c is not None:
            loss = max(-a * r, -a * min(max(r, 1 - lo), 1 + hi))
            acc["dual"] += a < 0 and loss > -a * c
    s = [abs(v) for v in sums.values()]
    out = {
        "ratio_mean": acc["ratio"] / n_tok,
        "approx_kl": acc["kl"] / n_tok,
        "delta_abs_mean": sum(s) / len(s),
        "delta_abs_max": max(s),
    }
    if lo is not None:
        out["clip_frac_low"] = acc["low"] / n_tok
        out["clip_frac_high"] = acc["high"] / n_tok
        out["clip_frac"] = (acc["low"] + acc["high"]) / n_tok
    if c is not None:
        out["clip_frac_dual"] = acc["dual"] / n_tok
    if len(lead) == 2 and lead[1] > 1:  # [B, G]: entropy of softmax over the group's Δ sums
        ent = 0.0
        for b in range(lead[0]):
            row = [sums[(b, g)] for g in range(lead[1])]
            top = max(row)
            z = sum(math.exp(x - top) for x in row)
            ent -= sum(math.exp(x - top) / z * (x - top - math.log(z)) for x in row)
        out["anchored_entropy"] = ent / lead[0]
    return out


def _aggregate_reference(x, mask, mode):
    """``loss_agg_mode`` written out sequence by sequence."""
    seqs = [(x[i][mask[i]]) for i in itertools.product(*(range(n) for n in x.shape[:-1]))]
    if mode == "token-mean":
        return (sum(s.sum() for s in seqs) / sum(len(s) for s in seqs)).item()
    if mode == "seq-mean-token-mean":
        return (sum(s.mean() for s in seqs) / len(seqs)).item()
    if mode == "seq-mean-token-sum":
        return (sum(s.sum() for s in seqs) / len(seqs)).item()
    return (sum(s.sum() for s in seqs) / (len(seqs) * x.shape[-1])).item()


def _assert_metrics(got, expected):
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == D, k
        torch.testing.assert_close(got[k], torch.tensor(v, dtype=D), msg=k)


def _boundary_tokens():
    """[B=2, G=3, T=4] token inputs whose ratios hit the clip bounds exactly (0.75 = 1 − 0.25,
    1.5 = 1 + 0.5 and the dual-clip constant 2 are exact in float64), tokens with A = 0 outside
    the window, and a one-token sequence; the other tokens are random."""
    g = torch.Generator().manual_seed(7)
    old = torch.zeros(2, 3, 4, dtype=D)
    lp = 0.8 * torch.randn(2, 3, 4, generator=g, dtype=D)
    adv = torch.randn(2, 3, 4, generator=g, dtype=D)
    exact = {  # (b, g, t): (ratio, advantage)
        (0, 0, 0): (0.75, -1.0),  # on the low bound: the clip does not bind yet
        (0, 0, 1): (1.5, 1.0),  # on the high bound
        (0, 0, 2): (2.0, -0.5),  # on the dual-clip cap c = 2
        (0, 1, 0): (0.5, 0.0),  # outside the window but no advantage: nothing to clip
        (0, 1, 1): (2.0, 0.0),
        (1, 2, 0): (0.5, -1.0),  # clipped low
        (1, 2, 1): (3.0, 2.0),  # clipped high
    }
    for idx, (ratio, a) in exact.items():
        lp[idx] = math.log(ratio)
        adv[idx] = a
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 0, 1:] = False  # a one-token sequence
    mask[0, 2, 2:] = False
    return lp, old, adv, mask


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_token_baselines_metrics_against_a_per_token_reference(mode):
    lp, old, adv, mask = _boundary_tokens()
    ref = 0.3 * rand(2, 3, 4)
    kw = {"clip_eps": 0.25, "clip_eps_high": 0.5, "loss_agg_mode": mode}
    ppo = ppo_loss(lp, old, adv, mask, clip_ratio_c=2.0, **kw)
    _assert_metrics(ppo.metrics, _pg_metrics_reference(lp, old, adv, mask, 0.25, 0.5, 2.0))
    assert ppo.metrics["clip_frac_dual"] > 0
    grpo = grpo_loss(lp, old, adv, mask, beta=0.1, ref_logps=ref, **kw)
    expected = _pg_metrics_reference(lp, old, adv, mask, 0.25, 0.5)
    k3 = ((ref - lp).exp() - (ref - lp) - 1)[mask]
    _assert_metrics(grpo.metrics, {**expected, "ref_kl": k3.mean().item()})
    dapo = dapo_loss(lp, old, adv, mask, clip_eps_low=0.25, clip_eps_high=0.5, loss_agg_mode=mode)
    _assert_metrics(dapo.metrics, expected)
    kl = kl_penalty_loss(lp, old, adv, mask, loss_agg_mode=mode)
    d = lp - old
    k3 = _aggregate_reference(d.exp() - 1 - d, mask, mode)
    _assert_metrics(kl.metrics, {**_pg_metrics_reference(lp, old, adv, mask), "kl": k3})
    # GSPO clips the sequence ratio s = exp(mean_t Δ), the same for every token of a sequence
    s = (((lp - old) * mask).sum(-1) / mask.sum(-1)).exp()
    gspo = gspo_loss(lp, old, adv, mask, **kw)
    expected = _pg_metrics_reference(
        lp, old, adv, mask, 0.25, 0.5, clip_ratio=s[..., None].expand_as(lp)
    )
    _assert_metrics(gspo.metrics, {**expected, "seq_ratio_mean": s.mean().item()})


@pytest.mark.parametrize(
    "shape, grouped",
    [((5, 3), False), ((1, 3, 2), True), ((2, 2, 2), True), ((3, 1, 2), False)],
)
def test_anchored_entropy_only_for_groups_of_several(shape, grouped):
    """[N, T] rows are not a group, and a group of one has no distribution to measure."""
    lp, old, adv = rand(*shape) * 0.1, rand(*shape) * 0.1, rand(*shape[:-1])
    for fn in (ppo_loss, grpo_loss, dapo_loss, gspo_loss, kl_penalty_loss):
        out = fn(lp, old, adv)
        assert ("anchored_entropy" in out.metrics) is grouped, fn.__name__
    ones = torch.ones(shape, dtype=torch.bool)
    expected = _pg_metrics_reference(lp, old, adv[..., None].expand(shape), ones)
    metrics = dict(kl_penalty_loss(lp, old, adv).metrics)
    del metrics["kl"]
    _assert_metrics(metrics, expected)


def test_sft_metrics_are_the_unweighted_token_mean_nll():
    lp = -rand(3, 4).abs()
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    out = sft_loss(lp, mask, weights=torch.tensor([2.0, 0.0, 1.0], dtype=D))
    nll = -lp[mask].mean()
    _assert_metrics(out.metrics, {"nll": nll.item(), "perplexity": nll.exp().item()})


def test_low_precision_inputs_are_computed_in_float32_and_float64_wins():
    """bfloat16 log-probs give a float32 loss equal to the float32 loss of the same values;
    one float64 input makes the whole computation float64."""
    g = torch.Generator().manual_seed(5)
    x = [torch.randn(3, 4, generator=g) * 0.2 for _ in range(3)]
    adv = torch.randn(3, generator=g)
    calls = {
        "ppo": lambda a, b, c: ppo_loss(a, b, adv),
        "grpo": lambda a, b, c: grpo_loss(a, b, adv, beta=0.1, ref_logps=c),
        "dapo": lambda a, b, c: dapo_loss(a, b, adv),
        "gspo": lambda a, b, c: gspo_loss(a, b, adv, clip_eps=0.1, clip_eps_high=0.1),
        "kl": lambda a, b, c: kl_penalty_loss(a, b, adv),
        "sft": lambda a, b, c: sft_loss(a),
        "dpo": lambda a, b, c: dpo_loss(a[0], a[1], b[0], b[1]),
        "ipo": lambda a, b, c: ipo_loss(a[0], a[1], b[0], b[1]),
    }
    for name, call in calls.items():
        low = call(*(t.bfloat16() for t in x))
        want = call(*(t.bfloat16().float() for t in x))
        assert low.loss.dtype == torch.float32, name
        torch.testing.assert_close(low.loss, want.loss, rtol=0, atol=0, msg=name)
        mixed = call(x[0].double(), x[1], x[2])
        assert mixed.loss.dtype == D, name
        if name not in ("sft",):
            mixed = call(x[0], x[1].double(), x[2])
            assert mixed.loss.dtype == D, name


def test_documented_defaults():
    """β = 0.1 (DPO, IPO); clip 0.2 (PPO, GRPO), 0.2/0.28 (DAPO), 3e-4/4e-4 (GSPO); KL
    penalty β = 1 with k3; the aggregation each docstring names."""
    g = torch.Generator().manual_seed(11)
    old = torch.randn(4, 3, 6, generator=g, dtype=D) * 0.1
    lp = old + torch.randn(4, 3, 6, generator=g, dtype=D) * 0.4
    adv = torch.randn(4, 3, generator=g, dtype=D)
    # GSPO-sized steps: sequence ratios 1 ± 3.5e-4 (between its default ranges 3e-4 and 4e-4)
    # and 1 ± 5e-4 (beyond both)
    step = torch.tensor([3.5e-4, 5e-4, 3.5e-4], dtype=D)[None, :] * adv.sign()
    lp_small = old + step[..., None] + torch.randn(4, 3, 6, generator=g) * 1e-5
    mask = torch.rand(4, 3, 6, generator=g) > 0.3
    mask[..., 0] = True
    pairs = [torch.randn(5, generator=g, dtype=D) * 3 for _ in range(4)]
    same = [
        (dpo_loss(*pairs), dpo_loss(*pairs, beta=0.1, label_smoothing=0.0)),
        (ipo_loss(*pairs), ipo_loss(*pairs, beta=0.1)),
        (
            ppo_loss(lp, old, adv, mask),
            ppo_loss(
                lp,
                old,
                adv,
                mask,
                clip_eps=0.2,
                clip_eps_high=0.2,
                clip_ratio_c=None,
                loss_agg_mode="token-mean",
            ),
        ),
        (
            grpo_loss(lp, old, adv, mask),
            grpo_loss(
                lp,
                old,
                adv,
                mask,
                clip_eps=0.2,
                clip_eps_high=0.2,
                beta=0.0,
                loss_agg_mode="seq-mean-token-mean",
            ),
        ),
        (
            dapo_loss(lp, old, adv, mask),
            dapo_loss(
                lp, old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.28, loss_agg_mode="token-mean"
            ),
        ),
        (
            gspo_loss(lp_small, old, adv, mask),
            gspo_loss(
                lp_small,
                old,
                adv,
                mask,
                clip_eps=3e-4,
                clip_eps_high=4e-4,
                loss_agg_mode="seq-mean-token-mean",
            ),
        ),
        (
            kl_penalty_loss(lp, old, adv, mask),
            kl_penalty_loss(
                lp, old, adv, mask, beta=1.0, kl_estimator="k3", loss_agg_mode="token-mean"
            ),
        ),
        (sft_loss(lp, mask), sft_loss(lp, mask, loss_agg_mode="token-mean")),
    ]
    for a, b in same:
        torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    # and each default binds on these inputs (another value gives another loss)
    differ = [
        (dpo_loss(*pairs, beta=1.1), same[0][0]),
        (ipo_loss(*pairs, beta=1.1), same[1][0]),
        (ppo_loss(lp, old, adv, mask, clip_eps_high=0.3), same[2][0]),
        (grpo_loss(lp, old, adv, mask, clip_eps_high=0.3), same[3][0]),
        (dapo_loss(lp, old, adv, mask, clip_eps_high=0.2), same[4][0]),
        (gspo_loss(lp_small, old, adv, mask, clip_eps_high=3e-4), same[5][0]),
        (gspo_loss(lp_small, old, adv, mask, clip_eps=4e-4), same[5][0]),
        (gspo_loss(lp_small, old, adv, mask, clip_eps_high=1e-3), same[5][0]),
        (kl_penalty_loss(lp, old, adv, mask, kl_estimator="k2"), same[6][0]),
    ]
    for a, b in differ:
        assert not torch.isclose(a.loss, b.loss, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["ppo", "grpo", "dapo", "gspo", "kl", "sft"])
def test_token_padding_is_never_read(name):
    """Positions outside ``mask`` may hold NaN or -inf (padding), in every input."""
    g = torch.Generator().manual_seed(2)
    lp, old, ref = (torch.randn(2, 3, 5, generator=g, dtype=D) * 0.2 for _ in range(3))
    adv = torch.randn(2, 3, 5, generator=g, dtype=D)  # per token, so padding can hold NaN
    mask = torch.rand(2, 3, 5, generator=g) > 0.3
    mask[..., 0] = True
    calls = {
        "ppo": lambda a, b, c, d: ppo_loss(a, b, d, mask),
        "grpo": lambda a, b, c, d: grpo_loss(a, b, d, mask, beta=0.1, ref_logps=c),
        "dapo": lambda a, b, c, d: dapo_loss(a, b, d, mask),
        "gspo": lambda a, b, c, d: gspo_loss(a, b, d, mask, clip_eps=0.1, clip_eps_high=0.1),
        "kl": lambda a, b, c, d: kl_penalty_loss(a, b, d, mask),
        "sft": lambda a, b, c, d: sft_loss(a, mask),
    }
    clean = calls[name](lp, old, ref, adv).loss
    junk = [
        t.masked_fill(~mask, v)
        for t, v in zip((lp, old, ref, adv), (math.nan, -math.inf, math.nan, math.nan), strict=True)
    ]
    torch.testing.assert_close(calls[name](*junk).loss, clean, rtol=0, atol=0)


def test_aggregation_of_a_single_token_and_of_groups():
    x = rand(2, 3, 4)
    one = torch.zeros(2, 3, 4, dtype=torch.bool)
    one[1, 2, 3] = True
    assert aggregate_tokens(x, one, "token-mean") == x[1, 2, 3]
    m = torch.rand(2, 3, 4) > 0.5
    m[..., 0] = True
    torch.testing.assert_close(
        aggregate_tokens(x, m, "seq-mean-token-sum-norm"), (x * m).sum() / (6 * 4)
    )
    lens = m.sum(-1, keepdim=True)
    torch.testing.assert_close(
        aggregate_tokens(x, m, "seq-mean-token-mean"), ((x * m) / lens).sum() / 6
    )
    lp = torch.tensor([[-0.3]], dtype=D)  # one sequence of one token
    torch.testing.assert_close(
        ppo_loss(lp, lp - 0.1, torch.tensor([2.0], dtype=D)).loss,
        -2.0 * torch.tensor(0.1, dtype=D).exp(),
    )


def test_the_token_losses_compute_in_the_log_probs_dtype():
    """float32 log-probs with float64 advantages, reference or exact KL: a float32 loss."""
    lp, old, ref = torch.randn(3, 4) * 0.1, torch.randn(3, 4) * 0.1, torch.randn(3, 4) * 0.1
    adv = torch.randn(3, dtype=D)
    outs = [
        ppo_loss(lp, old, adv),
        grpo_loss(lp, old, adv.float(), beta=0.1, ref_logps=ref.double()),
        kl_penalty_loss(lp, old, adv.float(), exact_kl=adv.abs()),
        sft_loss(lp, weights=adv),
    ]
    for out in outs:
        assert out.loss.dtype == torch.float32


def test_kl_options_at_their_range_ends():
    """kl_clamp may be any positive value (0.5 clamps at 0.5); beta = 0 removes the penalty;
    an exact KL per sequence of grouped inputs is [B, G]."""
    lp = torch.zeros(1, 3, dtype=D)
    ref = torch.tensor([[0.0, 1.0, 3.0]], dtype=D)
    k3 = (ref - lp).exp() - (ref - lp) - 1
    out = grpo_loss(lp, lp, torch.zeros(1, dtype=D), beta=1.0, ref_logps=ref, kl_clamp=0.5)
    torch.testing.assert_close(out.metrics["ref_kl"], k3.clamp(max=0.5).mean())
    x, old, adv = rand(2, 3, 4) * 0.1, rand(2, 3, 4) * 0.1, rand(2, 3)
    surrogate = (-(x - old).exp() * adv[..., None]).mean()
    torch.testing.assert_close(kl_penalty_loss(x, old, adv, beta=0.0).loss, surrogate)
    exact = rand(2, 3).abs()
    got = kl_penalty_loss(x, old, adv, beta=0.5, exact_kl=exact).loss
    torch.testing.assert_close(got, surrogate + 0.5 * exact.mean())
    with pytest.raises(ValueError, match=r"^kl_penalty_loss: `exact_kl` must have shape \(2, 3\)"):
        kl_penalty_loss(x, old, adv, exact_kl=exact[0])
