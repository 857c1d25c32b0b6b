"""``adpo.losses._common``: the checks and the early reduction every loss shares.

Each error is checked word for word (the message is what a user reads, naming the calling
function and the argument), each helper against a closed form. Mutation testing
(docs/development/mutation-testing.md) found these reachable only through losses that
never looked at the message or at the helpers' edge cases.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from adpo.losses._common import (
    as_bool_mask,
    check_choice,
    check_finite,
    check_group,
    check_positive,
    compute_dtype,
    delta_metrics,
    entropy_from_logp,
    masked_log_softmax,
    masked_mean,
    normalized_entropy,
    prepare_group,
)

CPU = torch.device("cpu")


def _raises(exc, message, fn, *args, **kwargs):
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        fn(*args, **kwargs)


# --------------------------------------------------------------------------- checks


def test_check_positive_messages_and_range_ends():
    _raises(ValueError, "f: `tau` must be finite and > 0, got 0", check_positive, "f", "tau", 0)
    _raises(
        ValueError, "f: `tau` must be finite and > 0, got -1.5", check_positive, "f", "tau", -1.5
    )
    _raises(
        ValueError, "f: `tau` must be finite and > 0, got inf", check_positive, "f", "tau", math.inf
    )
    _raises(ValueError, "f: `tau` must be finite and > 0, got 'a'", check_positive, "f", "tau", "a")
    check_positive("f", "tau", 1e-300)  # the smallest positive values pass
    check_positive("f", "tau", 5)
    check_positive("f", "tau", torch.tensor([1e-30, 2.0]))
    _raises(ValueError, "f: `tau` must be finite and > 0, got tensor([1., 0.])", check_positive,
            "f", "tau", torch.tensor([1.0, 0.0]))  # fmt: skip
    _raises(ValueError, "f: `tau` must be finite and > 0, got tensor([1., inf])", check_positive,
            "f", "tau", torch.tensor([1.0, math.inf]))  # fmt: skip
    _raises(ValueError, "f: `tau` must be finite and > 0, got tensor([nan])", check_positive,
            "f", "tau", torch.tensor([math.nan]))  # fmt: skip


def test_check_choice_message():
    check_choice("f", "ties", "efron", ("breslow", "efron"))
    _raises(ValueError, "f: `ties` must be one of ('breslow', 'efron'), got 'cox'", check_choice,
            "f", "ties", "cox", ("breslow", "efron"))  # fmt: skip


def test_check_finite_names_the_first_bad_index_and_ignores_positions_outside_where():
    x = torch.tensor([[0.0, 1.0], [math.inf, math.nan]])
    _raises(ValueError, "f: `x` holds non-finite values (first at index (1, 0))", check_finite,
            "f", "x", x)  # fmt: skip
    where = torch.tensor([[True, True], [False, True]])
    _raises(ValueError, "f: `x` holds non-finite values (first at index (1, 1))", check_finite,
            "f", "x", x, where)  # fmt: skip
    check_finite("f", "x", x, torch.tensor([[True, True], [False, False]]))


def test_as_bool_mask_accepts_bool_and_0_1_of_any_dtype_and_names_what_is_wrong():
    shape = torch.Size([2, 3])
    b = torch.tensor([[True, False, True], [False, True, True]])
    assert as_bool_mask("f", "mask", b, shape) is b
    for dtype in (torch.int64, torch.float32, torch.uint8):
        got = as_bool_mask("f", "mask", b.to(dtype), shape)
        assert got.dtype == torch.bool and torch.equal(got, b)
    _raises(ValueError, "f: `mask` must have shape (2, 3), got (3,)", as_bool_mask,
            "f", "mask", torch.ones(3), shape)  # fmt: skip
    _raises(ValueError, "f: `mask` must be boolean or hold only 0/1 values", as_bool_mask,
            "f", "mask", torch.full((2, 3), 0.5), shape)  # fmt: skip
    _raises(TypeError, "f: `mask` must be a torch.Tensor, got list", as_bool_mask,
            "f", "mask", [[1, 0, 1]], shape)  # fmt: skip


def test_check_group_layouts():
    full = check_group("f", torch.Size([2, 3]), None, CPU)
    assert full.dtype == torch.bool and full.shape == (2, 3) and bool(full.all())
    assert full.device == CPU
    _raises(
        ValueError, "f: the batch is empty (B = 0)", check_group, "f", torch.Size([0, 3]), None, CPU
    )
    _raises(ValueError, "f: groups need at least 2 candidates per prompt, got G = 1 (leading "
            "shape (2, 1)); a listwise loss has no signal in a group of one", check_group,
            "f", torch.Size([2, 1]), None, CPU)  # fmt: skip
    _raises(ValueError, "f: groups need at least 3 candidates per prompt, got G = 2 (leading "
            "shape (1, 2)); a listwise loss has no signal in a group of one", check_group,
            "f", torch.Size([1, 2]), None, CPU, min_group=3)  # fmt: skip
    assert check_group("f", torch.Size([1, 1]), None, CPU, min_group=1).shape == (1, 1)
    valid = torch.tensor([[1, 0, 1], [0, 0, 0]])
    _raises(ValueError, "f: `valid` leaves prompt b=1 with no candidate", check_group,
            "f", torch.Size([2, 3]), valid, CPU)  # fmt: skip
    _raises(ValueError, "f: `valid` must have shape (2, 3), got (2, 2)", check_group,
            "f", torch.Size([2, 3]), torch.ones(2, 2, dtype=torch.bool), CPU)  # fmt: skip
    got = check_group("f", torch.Size([2, 3]), torch.tensor([[1, 0, 1], [0, 1, 0]]), CPU)
    assert torch.equal(got, torch.tensor([[True, False, True], [False, True, False]]))


# --------------------------------------------------------------------------- prepare_group


def test_prepare_group_refuses_bad_inputs_naming_them():
    lp = torch.zeros(2, 3)
    _raises(TypeError, "f: `logps` must be a torch.Tensor, got list", prepare_group,
            "f", [[0.0]], lp, None, None)  # fmt: skip
    _raises(TypeError, "f: `ref_logps` must be a torch.Tensor, got float", prepare_group,
            "f", lp, 0.0, None, None)  # fmt: skip
    _raises(ValueError, "f: `logps` and `ref_logps` must have the same shape, got (2, 3) and "
            "(2, 4) (nothing is broadcast)", prepare_group,
            "f", lp, torch.zeros(2, 4), None, None)  # fmt: skip
    _raises(ValueError, "f: `logps` must be [B, G] or [B, G, T], got shape (3,)", prepare_group,
            "f", torch.zeros(3), torch.zeros(3), None, None)  # fmt: skip
    _raises(
        ValueError,
        "f: `logps` must be [B, G] or [B, G, T], got shape (1, 2, 3, 4)",
        prepare_group,
        "f",
        torch.zeros(1, 2, 3, 4),
        torch.zeros(1, 2, 3, 4),
        None,
        None,
    )
    _raises(ValueError, "f: `mask` is only for token-level [B, G, T] inputs; got sequence-level "
            "logps of shape (2, 3)", prepare_group, "f", lp, lp, torch.ones(2, 3), None)  # fmt: skip
    _raises(ValueError, "f: groups need at least 2 candidates per prompt, got G = 1 (leading "
            "shape (2, 1)); a listwise loss has no signal in a group of one", prepare_group,
            "f", torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), None, None)  # fmt: skip
    bad = torch.zeros(2, 3)
    bad[1, 2] = math.nan
    _raises(ValueError, "f: `logps` holds non-finite values (first at index (1, 2))",
            prepare_group, "f", bad, lp, None, None)  # fmt: skip
    _raises(ValueError, "f: `ref_logps` holds non-finite values (first at index (1, 2))",
            prepare_group, "f", lp, bad, None, None)  # fmt: skip
    tok = torch.zeros(2, 3, 4)
    bad_tok = tok.clone()
    bad_tok[0, 1, 3] = -math.inf
    _raises(ValueError, "f: `logps` holds non-finite values (first at index (0, 1, 3))",
            prepare_group, "f", bad_tok, tok, None, None)  # fmt: skip
    _raises(ValueError, "f: `ref_logps` holds non-finite values (first at index (0, 1, 3))",
            prepare_group, "f", tok, bad_tok, None, None)  # fmt: skip
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 0] = False
    _raises(ValueError, "f: `mask` empties the sequence of candidate (b=1, g=0); every counted "
            "candidate needs at least one token (mark missing candidates with `valid`)",
            prepare_group, "f", tok, tok, mask, None)  # fmt: skip
    _raises(ValueError, "f: `mask` must have shape (2, 3, 4), got (2, 3)", prepare_group,
            "f", tok, tok, torch.ones(2, 3), None)  # fmt: skip
    _raises(ValueError, "f: `mask` must be boolean or hold only 0/1 values", prepare_group,
            "f", tok, tok, torch.full((2, 3, 4), 2), None)  # fmt: skip


def test_prepare_group_never_reads_masked_tokens_or_invalid_candidates():
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(2, 3, 4, generator=g)
    ref = -torch.rand(2, 3, 4, generator=g)
    mask = torch.rand(2, 3, 4, generator=g) > 0.3
    mask[..., 0] = True
    valid = torch.tensor([[True, True, False], [True, True, True]])
    # garbage where nothing may be read: padding, -inf, NaN; an invalid candidate's empty mask
    lp_bad, ref_bad = lp.clone(), ref.clone()
    lp_bad[~mask] = math.nan
    ref_bad[~mask] = -math.inf
    lp_bad[0, 2] = math.nan
    mask_bad = mask.clone()
    mask_bad[0, 2] = False
    seq, ref_seq, v, m, delta = prepare_group("f", lp_bad, ref_bad, mask_bad.long(), valid)
    live = mask & valid[..., None]
    want_seq = torch.where(live, lp, 0.0).sum(-1)
    want_ref = torch.where(live, ref, 0.0).sum(-1)
    torch.testing.assert_close(seq, want_seq, rtol=0, atol=1e-6)
    torch.testing.assert_close(ref_seq, want_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(delta, want_seq - want_ref, rtol=0, atol=1e-6)
    assert torch.equal(v, valid) and torch.equal(m, mask_bad) and m.dtype == torch.bool
    assert float(seq[0, 2]) == 0.0 and float(delta[0, 2]) == 0.0
    # token means: each sum over its own count of tokens
    seq_m, ref_m, _, _, mean = prepare_group("f", lp, ref, mask, valid, seq_reduction="mean")
    n = mask.sum(-1)
    torch.testing.assert_close(mean, torch.where(valid, (want_seq - want_ref) / n, 0.0))
    torch.testing.assert_close(seq_m, torch.where(valid, want_seq / n, 0.0))
    torch.testing.assert_close(ref_m, torch.where(valid, want_ref / n, 0.0))


def test_prepare_group_sequence_inputs_pass_through_with_invalid_candidates_zeroed():
    lp = torch.tensor([[-1.0, -2.0, math.nan], [-0.5, -0.25, -4.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, math.inf], [-0.5, -1.0, -2.0]], requires_grad=True)
    valid = torch.tensor([[1, 1, 0], [1, 1, 1]])
    seq, ref_seq, v, m, delta = prepare_group("f", lp, ref, None, valid, seq_reduction="mean")
    assert m is None and v.dtype == torch.bool
    torch.testing.assert_close(seq, torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.25, -4.0]]))
    torch.testing.assert_close(ref_seq, torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -1.0, -2.0]]))
    torch.testing.assert_close(delta, torch.tensor([[0.5, -1.0, 0.0], [0.0, 0.75, -2.0]]))
    assert seq.requires_grad and not ref_seq.requires_grad  # the anchor carries no gradient
    delta.sum().backward()
    assert ref.grad is None
    torch.testing.assert_close(lp.grad, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))


def test_prepare_group_without_a_mask_reads_every_token_and_computes_in_float32_or_wider():
    lp = torch.full((1, 2, 3), -0.5, dtype=torch.bfloat16)
    ref = torch.full((1, 2, 3), -0.25, dtype=torch.bfloat16)
    seq, ref_seq, _, m, delta = prepare_group("f", lp, ref, None, None)
    assert seq.dtype == ref_seq.dtype == delta.dtype == torch.float32
    assert m.dtype == torch.bool and bool(m.all()) and m.shape == (1, 2, 3)
    torch.testing.assert_close(delta, torch.full((1, 2), -0.75))
    seq64, *_ = prepare_group("f", lp.double(), ref.double(), None, None)
    assert seq64.dtype == torch.float64
    # either input in float64 makes the whole computation float64, token- or sequence-level
    for a, b in ((lp.double(), ref), (lp, ref.double())):
        got = prepare_group("f", a, b, None, None)
        assert got[0].dtype == got[1].dtype == got[4].dtype == torch.float64
        got = prepare_group("f", a.sum(-1), b.sum(-1), None, None)
        assert got[0].dtype == got[1].dtype == got[4].dtype == torch.float64
    seq2, ref2, *_ = prepare_group("f", lp.sum(-1), ref.sum(-1), None, None)
    assert seq2.dtype == ref2.dtype == torch.float32  # bfloat16 sequence scores widened
    one = prepare_group("f", torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), None, None, min_group=1)
    assert one[0].shape == (1, 1)


def test_compute_dtype():
    assert compute_dtype() == torch.float32
    assert compute_dtype(None, torch.ones(2, dtype=torch.int64)) == torch.float32
    assert compute_dtype(torch.ones(2, dtype=torch.bfloat16)) == torch.float32
    assert compute_dtype(torch.ones(2, dtype=torch.float16), torch.ones(2)) == torch.float32
    assert compute_dtype(None, torch.ones(2, dtype=torch.float64)) == torch.float64


# --------------------------------------------------------------------------- helpers


def test_masked_mean_over_all_or_one_axis_and_empty_rows():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[True, False, True], [False, False, False]])
    assert float(masked_mean(x, m)) == 2.0
    torch.testing.assert_close(masked_mean(x, m, dim=-1), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(masked_mean(x, m, dim=0), torch.tensor([1.0, 0.0, 3.0]))
    assert float(masked_mean(x, torch.zeros_like(m))) == 0.0
    one = torch.zeros_like(m)
    one[1, 1] = True
    assert float(masked_mean(x, one)) == 5.0  # a single counted entry is its own mean


def test_masked_log_softmax_entropy_and_normalized_entropy_closed_forms():
    u = torch.tensor([[0.0, math.log(3.0), 5.0], [1.0, 1.0, 1.0], [2.0, -7.0, 0.0]])
    valid = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    logp = masked_log_softmax(u, valid)
    want = torch.tensor([[math.log(0.25), math.log(0.75), 0.0], [-math.log(3.0)] * 3,
                         [0.0, 0.0, 0.0]])  # fmt: skip
    torch.testing.assert_close(logp, want)
    h = entropy_from_logp(logp, valid)
    h0 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(h, torch.tensor([h0, math.log(3.0), 0.0]))
    torch.testing.assert_close(
        normalized_entropy(logp, valid), torch.tensor([h0 / math.log(2.0), 1.0, 0.0])
    )


def test_delta_metrics_over_counted_candidates_only():
    delta = torch.tensor([[-3.0, 1.0, 100.0], [0.5, -0.5, 2.0]], requires_grad=True)
    valid = torch.tensor([[True, True, False], [True, True, True]])
    got = delta_metrics(delta, valid)
    assert set(got) == {"delta_abs_mean", "delta_abs_max"}
    assert float(got["delta_abs_mean"]) == pytest.approx(7.0 / 5.0)
    assert float(got["delta_abs_max"]) == 3.0
    assert not got["delta_abs_mean"].requires_grad and not got["delta_abs_max"].requires_grad


# --------------------------------------------------------------------------- targets and rewards


def test_target_and_reward_errors_word_for_word():
    from adpo.losses import adpo_loss, group_advantages, reverse_adpo_loss

    lp = torch.zeros(1, 3)
    r = torch.tensor([[1.0, 0.0, 0.5]])
    q = torch.tensor([[0.5, 0.5, 0.0]])
    _raises(ValueError, "adpo_loss: pass either `rewards` (to build q) or `targets` (q itself), "
            "not both", adpo_loss, lp, lp, r, targets=q)  # fmt: skip
    _raises(ValueError, "adpo_loss: needs `rewards` [B, G] or an explicit `targets` "
            "distribution [B, G]", adpo_loss, lp, lp)  # fmt: skip
    _raises(ValueError, "reverse_adpo_loss: reverse KL needs a target with full support: "
            "`targets` has zeros", reverse_adpo_loss, lp, lp, targets=q)  # fmt: skip
    _raises(ValueError, "adpo_loss: `targets` must be non-negative", adpo_loss, lp, lp,
            targets=torch.tensor([[1.5, -0.5, 0.0]]))  # fmt: skip
    _raises(TypeError, "group_advantages: `rewards` must be a torch.Tensor, got list",
            group_advantages, [[1.0, 0.0]])  # fmt: skip


def test_group_advantages_reads_flatness_over_counted_candidates_in_float32_or_wider():
    from adpo.losses import group_advantages

    # equal counted rewards: a flat group, exactly 0 (7 copies of x sum to a mean that is not
    # x in float32, so without the flatness test the residue 4.8e-7 / eps would show)
    x = 7.682217955589294
    rewards = torch.tensor([[x] * 7 + [0.0]])
    valid = torch.tensor([[1] * 7 + [0]])
    assert torch.equal(group_advantages(rewards, valid=valid), torch.zeros(1, 8))
    half = group_advantages(torch.tensor([[1.0, 0.0]], dtype=torch.bfloat16))
    assert half.dtype == torch.float32
