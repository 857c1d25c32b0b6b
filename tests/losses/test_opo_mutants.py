"""OPO pinned where mutation testing found it loose: every metric against a row-by-row
reference, the documented defaults, the range ends of ``alpha`` and ``eps``, ``escort_weights``
called directly, the ``omega`` override, and the errors (docs/development/mutation-testing.md)."""

import math
import warnings

import pytest
import torch

from adpo.losses import escort_weights, group_advantages, opo_loss

D = torch.float64


def rand(*shape):
    return torch.randn(*shape, dtype=D)


def _escort_rows(r, valid, alpha, norm, eps=1e-6, ref_log=None):
    """(ω̂, ω̃) written out row by row over the counted candidates, in float64 Python."""
    B, G = r.shape
    w_tilde = [[0.0] * G for _ in range(B)]
    for b in range(B):
        idx = [g for g in range(G) if valid[b, g]]
        x = [float(r[b, g]) for g in idx]
        m = sum(x) / len(x)
        sd = math.sqrt(sum((xi - m) ** 2 for xi in x) / max(len(x) - 1, 1))
        a = [0.0 if max(x) == min(x) else (xi - m) / (sd + eps) for xi in x]
        logw = [(1 - alpha) * ai for ai in a]
        if ref_log is not None:
            logw = [
                lw - (1 - alpha) * float(ref_log[b, g]) for lw, g in zip(logw, idx, strict=True)
            ]
        top = max(logw)
        e = [math.exp(lw - top) for lw in logw]
        for g, ei in zip(idx, e, strict=True):
            w_tilde[b][g] = len(idx) * ei / sum(e)

    def zscore(cells):
        vals = [w_tilde[b][g] for b, g in cells]
        m = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - m) ** 2 for v in vals) / max(len(vals) - 1, 1))
        flat = max(vals) == min(vals)
        return {c: 0.0 if flat else (w_tilde[c[0]][c[1]] - m) / (sd + eps) for c in cells}

    rows = [[(b, g) for g in range(G) if valid[b, g]] for b in range(B)]
    w_hat = [[0.0] * G for _ in range(B)]
    if norm == "batch":
        cells = zscore([c for row in rows for c in row])
    else:
        cells = {}
        for row in rows:
            if norm == "group":
                cells |= zscore(row)
            elif norm == "center":
                m = sum(w_tilde[b][g] for b, g in row) / len(row)
                cells |= {(b, g): w_tilde[b][g] - m for b, g in row}
            else:
                cells |= {(b, g): w_tilde[b][g] for b, g in row}
    for (b, g), w in cells.items():
        w_hat[b][g] = w
    return torch.tensor(w_hat, dtype=D), torch.tensor(w_tilde, dtype=D)


def _entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def _opo_metrics_reference(delta, r, valid, w_hat, w_tilde, x, clipped):
    B, G = delta.shape
    cells = [(b, g) for b in range(B) for g in range(G) if valid[b, g]]
    n = len(cells)
    ent = ent_norm = tgt = flat = 0.0
    for b in range(B):
        idx = [g for g in range(G) if valid[b, g]]
        d = [float(delta[b, g]) for g in idx]
        top = max(d)
        z = sum(math.exp(v - top) for v in d)
        h = _entropy([math.exp(v - top) / z for v in d])
        ent += h
        ent_norm += h / math.log(len(idx)) if len(idx) > 1 else 0.0
        tgt += _entropy([float(w_tilde[b, g]) / len(idx) for g in idx])
        flat += len({float(r[b, g]) for g in idx}) == 1
    return {
        "omega_mean": sum(float(w_hat[c]) for c in cells) / n,
        "omega_abs_max": max(abs(float(w_hat[c])) for c in cells),
        "target_entropy": tgt / B,
        "anchored_entropy": ent / B,
        "anchored_entropy_norm": ent_norm / B,
        "delta_abs_mean": sum(abs(float(delta[c])) for c in cells) / n,
        "delta_abs_max": max(abs(float(delta[c])) for c in cells),
        "chi2": sum(float(x[c]) ** 2 for c in cells) / n,
        "zero_signal_frac": flat / B,
        "target_clip_frac": sum(bool(clipped[c]) for c in cells) / n,
    }


def _assert_metrics(got, expected):
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == D, k
        torch.testing.assert_close(got[k], torch.tensor(v, dtype=D), msg=k)


def _group():
    """B = 4, G = 4: row 1 misses a candidate and its counted rewards are flat (the missing
    one's would not be), row 2 counts two, row 3 is flat and its missing slot's reward, NaN,
    is never read."""
    logps, ref = rand(4, 4), rand(4, 4)
    r = torch.tensor(
        [[0.3, -1.0, 2.0, 0.5], [1.0, 1.0, 9.0, 1.0], [-2.0, 5.0, 5.0, 3.0], [1, 1, 1, math.nan]],
        dtype=D,
    )
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0]], dtype=torch.bool)
    return logps, ref, r, valid


@pytest.mark.parametrize("norm", ["group", "center", "batch", "none"])
def test_log_ratio_metrics_against_a_row_by_row_reference(norm):
    logps, ref, r, valid = _group()
    logps[0, 2] = ref[0, 2] + 12.0  # beyond max_log_ratio: χ² reads the clamped ratio
    w_hat, w_tilde = _escort_rows(r, valid, 0.3, norm, eps=1e-3)
    delta = logps - ref
    x = torch.expm1(delta.clamp_max(10.0))
    out = opo_loss(logps, ref, r, alpha=0.3, mu=1.7, valid=valid, weight_norm=norm, eps=1e-3)
    expected = _opo_metrics_reference(delta, r, valid, w_hat, w_tilde, x, torch.zeros_like(valid))
    _assert_metrics(out.metrics, expected)
    per = torch.where(valid, -w_hat * delta + 0.5 * 1.7 * delta**2, 0)
    torch.testing.assert_close(out.loss, per.sum() / valid.sum(), rtol=1e-12, atol=1e-12)


def test_exact_ratio_metrics_and_loss_against_a_row_by_row_reference():
    """ratio='exact' at μ = 1: a group z-score below −1 is clipped to −1 + eps; x is e^Δ − 1,
    continued linearly beyond Δ = max_log_ratio."""
    logps, ref, r, valid = _group()
    r[0] = torch.tensor([1.0, 1.0, 1.0, 0.0])  # one wrong answer in four: ω̂ = −1.5 < −1 + eps
    logps[0, 2] = ref[0, 2] + 3.5  # beyond max_log_ratio = 3
    eps = 1e-3
    w_hat, w_tilde = _escort_rows(r, valid, 0.4, "group", eps=eps)
    clipped = valid & (w_hat < -(1 - eps))
    assert clipped.any()
    target = torch.where(clipped, torch.full_like(w_hat, -(1 - eps)), w_hat)
    delta = logps - ref
    x = torch.where(delta <= 3.0, torch.expm1(delta), math.exp(3.0) * (1 + delta - 3.0) - 1)
    with pytest.warns(UserWarning, match="clipped") as rec:
        out = opo_loss(logps, ref, r, ratio="exact", valid=valid, eps=eps, max_log_ratio=3.0)
    # attributed to the caller, not to the library's own line (under mutmut the caller is its
    # trampoline, so the test asks only for "not opo.py")
    assert not rec[0].filename.endswith("opo.py")
    # ω̂'s metrics report the weights before the clip (max(−ω̂) is the μ that avoids it,
    # prop. 6.4, as the trainer's split path reports them); the clip is `target_clip_frac`
    _assert_metrics(
        out.metrics, _opo_metrics_reference(delta, r, valid, w_hat, w_tilde, x, clipped)
    )
    per = torch.where(valid, -target * x + 0.5 * x**2, 0)
    torch.testing.assert_close(out.loss, per.sum() / valid.sum(), rtol=1e-12, atol=1e-12)


def test_reference_corrections_against_a_row_by_row_reference():
    """``ref_correction`` = sequence log π_ref, or its token mean (a one-token sequence
    included: its mean is its one token)."""
    B, G, T = 2, 4, 3
    tok, ref_tok = rand(B, G, T), rand(B, G, T)
    mask = torch.ones(B, G, T, dtype=torch.bool)
    mask[0, 1, 1:] = False
    mask[1, 3, 2:] = False
    r = rand(B, G)
    seq, ref_seq = (tok * mask).sum(-1), (ref_tok * mask).sum(-1)
    delta = seq - ref_seq
    for corr, ref_log in (("sequence", ref_seq), ("token_mean", ref_seq / mask.sum(-1))):
        w_hat, _ = _escort_rows(
            r, torch.ones(B, G, dtype=torch.bool), 0.4, "group", ref_log=ref_log
        )
        got = opo_loss(tok, ref_tok, r, mask=mask, ref_correction=corr).loss
        torch.testing.assert_close(
            got, (-w_hat * delta + 0.5 * delta**2).mean(), rtol=1e-10, atol=1e-12
        )


def test_documented_defaults():
    """alpha 0.4, mu 1, log ratio, group norm, no reference correction, eps 1e-6, and
    max_log_ratio 10 (read where the exact ratio's continuation starts)."""
    logps, ref, r = rand(2, 4), rand(2, 4), rand(2, 4)
    explicit = {"alpha": 0.4, "mu": 1.0, "ratio": "log", "weight_norm": "group"}
    explicit |= {"ref_correction": "none", "eps": 1e-6, "max_log_ratio": 10.0}
    torch.testing.assert_close(
        opo_loss(logps, ref, r).loss, opo_loss(logps, ref, r, **explicit).loss, rtol=0, atol=0
    )
    far = ref.clone()
    far[0, 0] += 10.5
    exact = opo_loss(far, ref, r, ratio="exact", mu=3.0).loss
    torch.testing.assert_close(
        exact, opo_loss(far, ref, r, ratio="exact", mu=3.0, max_log_ratio=10.0).loss, rtol=0, atol=0
    )
    assert not torch.isclose(
        exact, opo_loss(far, ref, r, ratio="exact", mu=3.0, max_log_ratio=11.0).loss
    )


def test_alpha_and_eps_range_ends():
    """alpha = 0 (the escort weight is exp(A) itself) and eps = 0 are allowed; eps = 1 is not."""
    logps, ref, r = rand(2, 5), rand(2, 5), rand(2, 5)
    valid = torch.ones(2, 5, dtype=torch.bool)
    w_hat, _ = _escort_rows(r, valid, 0.0, "none", eps=0.0)
    delta = logps - ref
    got = opo_loss(logps, ref, r, alpha=0, weight_norm="none", eps=0.0).loss
    torch.testing.assert_close(
        got, (-w_hat * delta + 0.5 * delta**2).mean(), rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match=r"^opo_loss: `eps`"):
        opo_loss(logps, ref, r, eps=1.0)
    for bad in ("0.4", None, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"^opo_loss: `alpha`"):
            opo_loss(logps, ref, r, alpha=bad)


@pytest.mark.parametrize("norm", ["group", "center", "batch", "none"])
def test_escort_weights_directly(norm):
    """The public helper: (ω̂, ω̃) as documented, 0 outside ``valid``, ω̃ of mean 1 per group,
    the batch z-score across rows, and a reference correction that only enters times (1 − α)."""
    _, ref, r, valid = _group()
    r = torch.where(valid, r, 0.0)
    adv = group_advantages(r, eps=1e-4, valid=valid)
    w_hat, w_tilde = escort_weights(adv, valid, alpha=0.25, weight_norm=norm, eps=1e-4)
    exp_hat, exp_tilde = _escort_rows(r, valid, 0.25, norm, eps=1e-4)
    torch.testing.assert_close(w_tilde, exp_tilde, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w_hat, exp_hat, rtol=1e-12, atol=1e-12)
    assert (w_hat[~valid] == 0).all() and (w_tilde[~valid] == 0).all()
    torch.testing.assert_close(w_tilde.sum(-1), valid.sum(-1).to(D))
    w_hat, _ = escort_weights(
        adv, valid, alpha=0.25, ref_log_weight=ref, weight_norm=norm, eps=1e-4
    )
    exp_hat, _ = _escort_rows(r, valid, 0.25, norm, eps=1e-4, ref_log=ref)
    torch.testing.assert_close(w_hat, exp_hat, rtol=1e-12, atol=1e-12)


def test_escort_weights_default_norm_is_group():
    adv, valid = rand(3, 4), torch.ones(3, 4, dtype=torch.bool)
    a, _ = escort_weights(adv, valid, alpha=0.4)
    b, _ = escort_weights(adv, valid, alpha=0.4, weight_norm="group", eps=1e-6)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_omega_replaces_the_escort_weights():
    """``omega=`` ω̂ computed elsewhere (the trainer's round-level batch norm) is the target
    as given, 0 outside ``valid``; the metrics still read ``rewards``."""
    logps, ref, r, valid = _group()
    omega = rand(4, 4)
    delta = logps - ref
    out = opo_loss(logps, ref, r, valid=valid, omega=omega, mu=2.0)
    w = torch.where(valid, omega, 0.0)
    per = torch.where(valid, -w * delta + 0.5 * 2.0 * delta**2, 0)
    torch.testing.assert_close(out.loss, per.sum() / valid.sum(), rtol=1e-12, atol=1e-12)
    _, w_tilde = _escort_rows(r, valid, 0.4, "group")
    x = torch.expm1(delta)
    expected = _opo_metrics_reference(delta, r, valid, w, w_tilde, x, torch.zeros_like(valid))
    _assert_metrics(out.metrics, expected)
    # float32 ω̂ for a float64 loss is cast, not promoted
    got = opo_loss(logps, ref, r, valid=valid, omega=omega.float(), mu=2.0).loss
    assert got.dtype == D
    for bad, needle in (
        (omega.tolist(), "`omega` must be a torch.Tensor"),
        (omega[:, :3], "`omega` must have shape"),
        (omega.masked_fill(~valid, math.inf), "`omega` must be finite"),
    ):
        with pytest.raises((TypeError, ValueError), match=rf"^opo_loss: {needle}"):
            opo_loss(logps, ref, r, valid=valid, omega=bad)


def test_safeguard_bound_is_strict():
    """A target exactly at −1 + eps (μ = 1, eps = 0.5: ω̂ = −0.5, given as ``omega``) is
    reachable: not clipped, no warning; just below it is clipped."""
    logps, ref, r = rand(1, 4), rand(1, 4), rand(1, 4)
    omega = torch.tensor([[-0.5, 0.5, -0.25, 0.25]], dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = opo_loss(logps, ref, r, ratio="exact", eps=0.5, omega=omega)
    assert out.metrics["target_clip_frac"] == 0
    with pytest.warns(UserWarning):
        out = opo_loss(logps, ref, r, ratio="exact", eps=0.5, omega=omega - 1e-9)
    assert out.metrics["target_clip_frac"] == 0.25


def test_errors_name_opo_loss_and_the_argument():
    lp, ref, r = rand(2, 4), rand(2, 4), rand(2, 4)
    tok = rand(2, 4, 3)
    cases = [
        (lambda: opo_loss(lp, ref, r.tolist()), "`rewards`"),
        (lambda: opo_loss(lp.tolist(), ref, r), "`logps`"),
        (lambda: opo_loss(lp, ref, r, mu=math.inf), "`mu`"),
        (lambda: opo_loss(lp, ref, r, max_log_ratio=0.0), "`max_log_ratio`"),
        (lambda: opo_loss(lp, ref, r, ref_correction="token"), "`ref_correction`"),
        (lambda: opo_loss(lp, ref, r, ratio="Log"), "`ratio`"),
        (lambda: opo_loss(lp, ref, r, eps=-0.1), "`eps`"),
        (lambda: opo_loss(lp, ref, r[:1]), "`rewards` must have shape (2, 4)"),
        (lambda: opo_loss(tok, tok, r, mask=torch.ones(2, 4, dtype=torch.bool)), "`mask`"),
        (
            lambda: opo_loss(lp, ref, r, ref_correction="token_mean"),
            "ref_correction='token_mean' needs token-level [B, G, T] inputs (with `mask`) to "
            "know sequence lengths",
        ),
    ]
    for call, needle in cases:
        with pytest.raises((TypeError, ValueError)) as err:
            call()
        assert str(err.value).startswith("opo_loss: "), str(err.value)
        assert needle in str(err.value), str(err.value)


def test_the_loss_dtype_follows_the_log_probs():
    """float32 log-probs give a float32 loss and metrics with float64 rewards or ``omega``."""
    logps, ref = torch.randn(2, 4), torch.randn(2, 4)
    r, omega = rand(2, 4), rand(2, 4)
    for out in (
        opo_loss(logps, ref, r),
        opo_loss(logps, ref, r, ratio="exact", mu=3.0),
        opo_loss(logps, ref, r, omega=omega),
    ):
        assert out.loss.dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in out.metrics.values())
