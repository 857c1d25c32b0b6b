"""Bad input gets a clear ValueError/TypeError naming the argument; nothing is broadcast."""

import pytest
import torch

from adpo.losses import (
    adpo_loss,
    dapo_loss,
    dpo_loss,
    group_advantages,
    grpo_loss,
    gspo_loss,
    ipo_loss,
    kd_loss,
    kl_penalty_loss,
    opo_loss,
    plackett_luce_nll,
    ppo_loss,
    reverse_adpo_loss,
    sft_loss,
    softmax_targets,
    top1_targets,
    zero_signal_groups,
)

B, G, T = 2, 4, 3
lp, ref, r = torch.randn(B, G), torch.randn(B, G), torch.randn(B, G)
nan = float("nan")


def with_nan(x, idx=(0, 1)):
    y = x.clone()
    y[idx] = nan
    return y


CASES = [
    # (function named first in the message, call, what else the message must name)
    ("adpo_loss", lambda: adpo_loss(lp, ref[:, :3], r), "`logps` and `ref_logps`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r[:, :3]), "`rewards`"),
    ("adpo_loss", lambda: adpo_loss(lp[None], ref[None], r), "`rewards`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r.T), "`rewards`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, with_nan(r)), "`rewards`"),
    ("adpo_loss", lambda: adpo_loss(with_nan(lp), ref, r), "`logps`"),
    ("adpo_loss", lambda: adpo_loss(lp, with_nan(ref), r), "`ref_logps`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r, tau=0.0), "`tau`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r, tau=-1.0), "`tau`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r, tau=float("inf")), "`tau`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r, tau=torch.ones(3)), "`tau`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r, beta=0.0), "`beta`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r, target="listnet"), "`target`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r, ties="random"), "`ties`"),
    (
        "adpo_loss",
        lambda: adpo_loss(lp, ref, r, seq_reduction="max"),
        "`seq_reduction` must be one of",
    ),
    (
        "reverse_adpo_loss",
        lambda: reverse_adpo_loss(lp, ref, r, seq_reduction="max"),
        "`seq_reduction` must be one of",
    ),
    (
        "adpo_loss",
        lambda: adpo_loss(lp, ref),
        "needs `rewards` [B, G] or an explicit `targets` distribution [B, G]",
    ),
    (
        "adpo_loss",
        lambda: adpo_loss(lp, ref, r, targets=torch.softmax(r, -1)),
        "pass either `rewards` (to build q) or `targets` (q itself), not both",
    ),
    ("adpo_loss", lambda: adpo_loss(lp, ref, targets=torch.rand(B, G)), "sum to 1"),
    (
        "adpo_loss",
        lambda: adpo_loss(lp, ref, targets=-torch.softmax(r, -1)),
        "`targets` must be non-negative",
    ),
    (
        "adpo_loss",
        lambda: adpo_loss(lp, ref, targets=torch.softmax(r, -1), target="top1"),
        "`target`",
    ),
    ("adpo_loss", lambda: adpo_loss(lp[:, :1], ref[:, :1], r[:, :1]), "G = 1"),
    ("adpo_loss", lambda: adpo_loss(lp[:0], ref[:0], r[:0]), "empty"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r, mask=torch.ones(B, G, dtype=torch.bool)), "`mask`"),
    (
        "adpo_loss",
        lambda: adpo_loss(torch.randn(B, G, T), torch.randn(B, G, T), r, mask=torch.ones(B, G)),
        "`mask`",
    ),
    (
        "adpo_loss",
        lambda: adpo_loss(
            torch.randn(B, G, T), torch.randn(B, G, T), r, mask=torch.full((B, G, T), 2)
        ),
        "`mask`",
    ),
    (
        "adpo_loss",
        lambda: adpo_loss(lp, ref, r, valid=torch.zeros(B, G, dtype=torch.bool)),
        "`valid`",
    ),
    (
        "adpo_loss",
        lambda: adpo_loss(lp, ref, r, valid=torch.ones(B, G + 1, dtype=torch.bool)),
        "`valid`",
    ),
    ("adpo_loss", lambda: adpo_loss(torch.randn(B), torch.randn(B), r), "`logps`"),
    ("adpo_loss", lambda: adpo_loss(lp.tolist(), ref, r), "`logps`"),
    (
        "reverse_adpo_loss",
        lambda: reverse_adpo_loss(lp, ref, targets=torch.tensor([[1.0, 0, 0, 0]] * B)),
        "reverse KL needs a target with full support: `targets` has zeros",
    ),
    ("kd_loss", lambda: kd_loss(lp, torch.rand(B, G)), "sum to 1"),
    ("kd_loss", lambda: kd_loss(lp, torch.softmax(r, -1), temperature=0), "`temperature`"),
    ("opo_loss", lambda: opo_loss(lp, ref, r, mu=0.0), "`mu`"),
    ("opo_loss", lambda: opo_loss(lp, ref, r, mu=-2.0), "`mu`"),
    ("opo_loss", lambda: opo_loss(lp, ref, r, alpha=1.5), "`alpha`"),
    ("opo_loss", lambda: opo_loss(lp, ref, r, alpha=-0.1), "`alpha`"),
    ("opo_loss", lambda: opo_loss(lp, ref, r, ratio="linear"), "`ratio`"),
    ("opo_loss", lambda: opo_loss(lp, ref, r, weight_norm="layer"), "`weight_norm`"),
    ("opo_loss", lambda: opo_loss(lp, ref, r, ref_correction="token_mean"), "token_mean"),
    ("group_advantages", lambda: opo_loss(lp, ref, with_nan(r)), "`rewards`"),
    ("opo_loss", lambda: opo_loss(lp, ref, r[:, :2]), "`rewards`"),
    ("opo_loss", lambda: opo_loss(lp[:, :1], ref[:, :1], r[:, :1]), "G = 1"),
    ("group_advantages", lambda: group_advantages(r[:, :1]), "G = 1"),
    ("group_advantages", lambda: group_advantages(with_nan(r)), "`rewards`"),
    ("group_advantages", lambda: group_advantages(r[0]), "`rewards`"),
    (
        "dpo_loss",
        lambda: dpo_loss(lp[0], lp[1], ref[0], ref[1, :3]),
        "`chosen_logps` and `ref_rejected_logps`",
    ),
    ("dpo_loss", lambda: dpo_loss(lp[0], lp[1], ref[0], ref[1], beta=0), "`beta`"),
    (
        "dpo_loss",
        lambda: dpo_loss(lp[0], lp[1], ref[0], ref[1], label_smoothing=0.5),
        "`label_smoothing`",
    ),
    (
        "dpo_loss",
        lambda: dpo_loss(with_nan(lp, (0, 0))[0], lp[1], ref[0], ref[1]),
        "`chosen_logps`",
    ),
    ("ppo_loss", lambda: ppo_loss(torch.randn(5), torch.randn(5), torch.randn(5)), "`logps`"),
    (
        "ppo_loss",
        lambda: ppo_loss(torch.randn(5, 3), torch.randn(5, 3), torch.randn(4)),
        "`advantages`",
    ),
    (
        "ppo_loss",
        lambda: ppo_loss(torch.randn(5, 3), torch.randn(5, 2), torch.randn(5)),
        "`logps` and `old_logps`",
    ),
    (
        "ppo_loss",
        lambda: ppo_loss(torch.randn(5, 3), torch.randn(5, 3), torch.randn(5), clip_eps=0),
        "`clip_eps`",
    ),
    (
        "ppo_loss",
        lambda: ppo_loss(
            torch.randn(2, 3),
            torch.randn(2, 3),
            torch.randn(2),
            torch.tensor([[1, 1, 0], [0, 0, 0]]),
        ),
        "`mask` empties",
    ),
    (
        "ppo_loss",
        lambda: ppo_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([1.0, nan])),
        "`advantages`",
    ),
    (
        "grpo_loss",
        lambda: grpo_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), beta=0.1),
        "grpo_loss: `beta` > 0 needs `ref_logps`",
    ),
    (
        "grpo_loss",
        lambda: grpo_loss(
            torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), loss_agg_mode="sum"
        ),
        "`loss_agg_mode`",
    ),
    (
        "dapo_loss",
        lambda: dapo_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), clip_eps_high=-0.1),
        "`clip_eps_high`",
    ),
    (
        "kl_penalty_loss",
        lambda: kl_penalty_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), beta=-1),
        "`beta`",
    ),
    (
        "kl_penalty_loss",
        lambda: kl_penalty_loss(
            torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), exact_kl=torch.ones(3)
        ),
        "`exact_kl`",
    ),
    ("sft_loss", lambda: sft_loss(torch.randn(3)), "`logps`"),
    ("sft_loss", lambda: sft_loss(torch.randn(2, 3), weights=torch.ones(3)), "`weights`"),
]

# every check site of every public function: a mistake in the name the function hands its
# checks would otherwise go unnoticed (the user would read another function's name)
X, X0 = torch.randn(2, 3), torch.randn(2, 3)  # token log-probs [N = 2, T = 3]
A = torch.randn(2)
TOK, TOK0 = torch.randn(2, 3, 4), torch.randn(2, 3, 4)  # [B, G, T]
TOKEN_FNS = {"ppo_loss": ppo_loss, "grpo_loss": grpo_loss, "dapo_loss": dapo_loss}
TOKEN_FNS |= {"gspo_loss": gspo_loss, "kl_penalty_loss": kl_penalty_loss}


def _token_cases(name, fn):
    empty_seq = torch.ones(2, 3, 4, dtype=torch.bool)
    empty_seq[1, 2] = False
    return [
        (name, lambda: fn(X.tolist(), X0, A), "`logps`"),
        (name, lambda: fn(X, X0.tolist(), A), "`old_logps`"),
        (name, lambda: fn(X, X0, A.tolist()), "`advantages`"),
        (name, lambda: fn(X, X0[:, :2], A), "`logps` and `old_logps`"),
        (
            name,
            lambda: fn(torch.randn(0, 3), torch.randn(0, 3), torch.randn(0)),
            "`logps` is empty",
        ),
        (name, lambda: fn(X, X0, A, torch.ones(2, 2, dtype=torch.bool)), "`mask`"),
        (
            name,
            lambda: fn(TOK, TOK0, torch.randn(2, 3), empty_seq),
            "`mask` empties sequence (1, 2)",
        ),
        (name, lambda: fn(TOK, TOK0, torch.randn(3)), "`advantages` must have shape (2, 3)"),
        (name, lambda: fn(with_nan(X), X0, A), "`logps`"),
        (name, lambda: fn(X, with_nan(X0), A), "`old_logps`"),
        (name, lambda: fn(X, X0, with_nan(A, 1)), "`advantages`"),
    ]


def _clip_cases(name, fn, low="clip_eps", high="clip_eps_high"):
    return [
        (name, lambda: fn(X, X0, A, **{low: 0.0}), f"`{low}`"),
        (name, lambda: fn(X, X0, A, **{low: 1.0}), f"`{low}`"),
        (name, lambda: fn(X, X0, A, **{high: 0.0}), "`clip_eps_high`"),
        (name, lambda: fn(X, X0, A, loss_agg_mode="sum"), "`loss_agg_mode`"),
    ]


PAIR = (lp[0], lp[1], ref[0], ref[1])
NAMED_CASES = [
    *(c for name, fn in TOKEN_FNS.items() for c in _token_cases(name, fn)),
    *_clip_cases("ppo_loss", ppo_loss),
    *_clip_cases("grpo_loss", grpo_loss),
    *_clip_cases("dapo_loss", dapo_loss, low="clip_eps_low"),
    *_clip_cases("gspo_loss", gspo_loss),
    ("ppo_loss", lambda: ppo_loss(X, X0, A, clip_ratio_c=1.0), "`clip_ratio_c`"),
    ("grpo_loss", lambda: grpo_loss(X, X0, A, clip_ratio_c=float("inf")), "`clip_ratio_c`"),
    ("grpo_loss", lambda: grpo_loss(X, X0, A, beta=-0.1), "`beta`"),
    ("grpo_loss", lambda: grpo_loss(X, X0, A, beta=1.0, kl_clamp=0.0), "`kl_clamp`"),
    ("grpo_loss", lambda: grpo_loss(X, X0, A, beta=1.0, ref_logps=X.tolist()), "`ref_logps`"),
    (
        "grpo_loss",
        lambda: grpo_loss(X, X0, A, beta=1.0, ref_logps=X[:, :2]),
        "`logps` and `ref_logps`",
    ),
    ("grpo_loss", lambda: grpo_loss(X, X0, A, beta=1.0, ref_logps=with_nan(X)), "`ref_logps`"),
    ("kl_penalty_loss", lambda: kl_penalty_loss(X, X0, A, kl_estimator="k4"), "`kl_estimator`"),
    ("kl_penalty_loss", lambda: kl_penalty_loss(X, X0, A, loss_agg_mode="sum"), "`loss_agg_mode`"),
    ("kl_penalty_loss", lambda: kl_penalty_loss(X, X0, A, kl_clamp=-1.0), "`kl_clamp`"),
    ("kl_penalty_loss", lambda: kl_penalty_loss(X, X0, A, exact_kl=[0.1, 0.2]), "`exact_kl`"),
    ("kl_penalty_loss", lambda: kl_penalty_loss(X, X0, A, exact_kl=with_nan(A, 1)), "`exact_kl`"),
    ("sft_loss", lambda: sft_loss(X.tolist()), "`logps`"),
    ("sft_loss", lambda: sft_loss(X, weights=A.tolist()), "`weights`"),
    ("sft_loss", lambda: sft_loss(X, weights=with_nan(A, 1)), "`weights`"),
    ("sft_loss", lambda: sft_loss(TOK, weights=torch.ones(2)), "`weights` must have shape (2, 3)"),
    ("sft_loss", lambda: sft_loss(X, torch.ones(2, 2, dtype=torch.bool)), "`mask`"),
    ("dpo_loss", lambda: dpo_loss(lp[0].tolist(), *PAIR[1:]), "`chosen_logps`"),
    ("dpo_loss", lambda: dpo_loss(*PAIR[:3], ref[1].tolist()), "`ref_rejected_logps`"),
    ("dpo_loss", lambda: dpo_loss(lp[0, :3], *PAIR[1:]), "`chosen_logps` and `rejected_logps`"),
    ("dpo_loss", lambda: dpo_loss(*PAIR, beta=float("nan")), "`beta`"),
    ("dpo_loss", lambda: dpo_loss(*(t[:0] for t in PAIR)), "dpo_loss: got no pairs (empty inputs)"),
    ("ipo_loss", lambda: ipo_loss(*PAIR, beta=0.0), "`beta`"),
    ("ipo_loss", lambda: ipo_loss(*PAIR[:3], with_nan(ref[1], 0)), "`ref_rejected_logps`"),
    ("softmax_targets", lambda: softmax_targets(r, beta=0.0), "`beta`"),
    (
        "plackett_luce_nll",
        lambda: plackett_luce_nll(lp, r, torch.ones(B, G, dtype=torch.bool), ties="efrom"),
        "`ties`",
    ),
    ("softmax_targets", lambda: softmax_targets(with_nan(r), standardize=False), "`rewards`"),
    ("group_advantages", lambda: softmax_targets(with_nan(r)), "`rewards`"),
    ("top1_targets", lambda: top1_targets(with_nan(r)), "`rewards`"),
    ("zero_signal_groups", lambda: zero_signal_groups(with_nan(r)), "`rewards`"),
    ("group_advantages", lambda: group_advantages(r, eps=-1.0), "`eps`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, r.tolist()), "`rewards`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, targets=torch.softmax(r, -1).tolist()), "`targets`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, targets=torch.ones(B, G + 1) / (G + 1)), "`targets`"),
    ("adpo_loss", lambda: adpo_loss(lp, ref, targets=with_nan(torch.softmax(r, -1))), "`targets`"),
    ("reverse_adpo_loss", lambda: reverse_adpo_loss(lp, ref, r, tau=0.0), "`tau`"),
    ("reverse_adpo_loss", lambda: reverse_adpo_loss(lp, ref, r, beta=-1.0), "`beta`"),
    ("reverse_adpo_loss", lambda: reverse_adpo_loss(lp, ref), "`rewards`"),
    ("reverse_adpo_loss", lambda: reverse_adpo_loss(with_nan(lp), ref, r), "`logps`"),
    ("kd_loss", lambda: kd_loss(lp.tolist(), torch.softmax(r, -1)), "`logps`"),
    ("kd_loss", lambda: kd_loss(lp, torch.softmax(r, -1).tolist()), "`targets`"),
    ("kd_loss", lambda: kd_loss(with_nan(lp), torch.softmax(r, -1)), "`logps`"),
    (
        "kd_loss",
        lambda: kd_loss(lp, torch.softmax(r, -1), temperature=float("inf")),
        "`temperature`",
    ),
]


@pytest.mark.parametrize(
    "fn,case,needle", NAMED_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(NAMED_CASES)]
)
def test_every_check_names_the_called_function_and_the_argument(fn, case, needle):
    test_bad_input_is_refused_with_a_named_argument(fn, case, needle)


def test_non_tensor_input_is_a_type_error():
    for call in (
        lambda: adpo_loss(lp.tolist(), ref, r),
        lambda: ppo_loss(X.tolist(), X0, A),
        lambda: dpo_loss(lp[0].tolist(), *PAIR[1:]),
        lambda: sft_loss(X, weights=A.tolist()),
    ):
        with pytest.raises(TypeError, match=r"must be a torch\.Tensor, got list"):
            call()


@pytest.mark.parametrize("fn,case,needle", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_bad_input_is_refused_with_a_named_argument(fn, case, needle):
    """The message starts with the function the user called (or the helper that checked:
    ``group_advantages`` for rewards) and names the argument in backticks."""
    with pytest.raises((ValueError, TypeError)) as err:
        case()
    assert str(err.value).startswith(f"{fn}: "), str(err.value)
    assert needle in str(err.value), str(err.value)


def test_mask_that_empties_a_sequence_names_the_candidate():
    tok, ref_tok = torch.randn(B, G, T), torch.randn(B, G, T)
    mask = torch.ones(B, G, T, dtype=torch.bool)
    mask[1, 2] = False
    with pytest.raises(ValueError, match=r"empties the sequence of candidate \(b=1, g=2\)"):
        adpo_loss(tok, ref_tok, r, mask=mask)
    # ... unless that candidate is declared missing
    valid = torch.ones(B, G, dtype=torch.bool)
    valid[1, 2] = False
    assert torch.isfinite(adpo_loss(tok, ref_tok, r, mask=mask, valid=valid).loss)


def test_no_silent_broadcast_of_reference():
    with pytest.raises(ValueError, match="same shape"):
        adpo_loss(lp, ref[:1], r)  # [1, G] would broadcast; it must not


def test_coarse_dtype_targets_are_accepted_to_their_rounding_and_renormalised():
    # a bf16 teacher softmax sums to 1 only within bf16 rounding (found on a GPU run)
    logits = torch.randn(B, 8, generator=torch.Generator().manual_seed(3))
    q16 = torch.softmax(logits, -1).to(torch.bfloat16)
    assert (q16.float().sum(-1) - 1).abs().max() > 1e-4  # would fail the float32 tolerance
    x = torch.randn(B, 8)
    exact = q16.float() / q16.float().sum(-1, keepdim=True)
    for fn in (
        lambda q: kd_loss(x, q).loss,
        lambda q: adpo_loss(x, torch.zeros(B, 8), targets=q).loss,
        lambda q: reverse_adpo_loss(x, torch.zeros(B, 8), targets=q).loss,
    ):
        torch.testing.assert_close(fn(q16), fn(exact))
    # float32 targets for a float64 loss: float32 rounding is accepted too
    q32 = torch.softmax(logits, -1)
    kd_loss(x.double(), q32)
    # but a bf16 row that is far from a distribution is still refused
    with pytest.raises(ValueError, match="sum to 1"):
        kd_loss(x, (q16.float() * 1.1).to(torch.bfloat16))


def test_coarse_targets_off_by_exactly_the_tolerance_are_accepted():
    """A float32 target in a float64 loss may be off by 2·eps(float32) = 2⁻²² and no more:
    a row summing to exactly 1 + 2⁻²² is renormalised, one at 1 + 2⁻²¹ is refused and named
    (not the row before it, which is at the tolerance)."""
    lp64, ref64 = torch.randn(2, 2, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    edge = torch.tensor([[0.5 + 2**-22, 0.5], [0.25, 0.75]])  # float32, both exact
    got = adpo_loss(lp64, ref64, targets=edge).loss
    exact = edge.double() / edge.double().sum(-1, keepdim=True)
    assert got.item() == pytest.approx(adpo_loss(lp64, ref64, targets=exact).loss.item(), rel=1e-15)
    beyond = torch.tensor([[0.5 + 2**-22, 0.5], [0.5 + 2**-21, 0.5]])
    with pytest.raises(ValueError, match=r"row 1 sums to 1\b"):
        adpo_loss(lp64, ref64, targets=beyond)


def test_integer_and_float_masks_mean_what_boolean_masks_mean():
    """Mask convention: True or 1 counts. A 0/1 mask of any dtype gives the boolean result."""
    tok, ref_tok = torch.randn(B, G, T), torch.randn(B, G, T)
    mask = torch.rand(B, G, T) > 0.4
    mask[..., 0] = True
    valid = torch.ones(B, G, dtype=torch.bool)
    valid[0, 1] = False
    want = adpo_loss(tok, ref_tok, r, mask=mask, valid=valid).loss
    want_ppo = ppo_loss(tok, ref_tok, r, mask).loss
    for dtype in (torch.int64, torch.uint8, torch.float32):
        got = adpo_loss(tok, ref_tok, r, mask=mask.to(dtype), valid=valid.to(dtype)).loss
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(ppo_loss(tok, ref_tok, r, mask.to(dtype)).loss, want_ppo)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_per_prompt_tau_tensor_is_checked_elementwise(bad):
    tau = torch.tensor([1.0, bad])
    with pytest.raises(ValueError, match=r"^adpo_loss: `tau` must be finite and > 0"):
        adpo_loss(lp, ref, r, tau=tau)
    with pytest.raises(ValueError, match=r"^reverse_adpo_loss: `tau` must be finite and > 0"):
        reverse_adpo_loss(lp, ref, r, tau=tau)


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), "1.0", None])
def test_positive_scalars_refuse_zero_nan_and_non_numbers(bad):
    with pytest.raises(ValueError, match=r"^adpo_loss: `beta` must be finite and > 0"):
        adpo_loss(lp, ref, r, beta=bad)


def test_logps_of_four_axes_are_refused():
    x = torch.randn(B, G, T, 2)
    with pytest.raises(ValueError, match=r"^adpo_loss: `logps` must be \[B, G\] or \[B, G, T\]"):
        adpo_loss(x, x, r)
    with pytest.raises(ValueError, match=r"^opo_loss: `logps` must be \[B, G\] or \[B, G, T\]"):
        opo_loss(x, x, r)
