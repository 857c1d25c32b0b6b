"""Bad input gets a clear ValueError/TypeError naming the argument; nothing is broadcast."""

import pytest
import torch

from adpo.losses import (
    adpo_loss,
    dapo_loss,
    dpo_loss,
    group_advantages,
    grpo_loss,
    kd_loss,
    kl_penalty_loss,
    opo_loss,
    ppo_loss,
    reverse_adpo_loss,
    sft_loss,
)

B, G, T = 2, 4, 3
lp, ref, r = torch.randn(B, G), torch.randn(B, G), torch.randn(B, G)
nan = float("nan")


def with_nan(x, idx=(0, 1)):
    y = x.clone()
    y[idx] = nan
    return y


CASES = [
    # (callable, expected substring in the message)
    (lambda: adpo_loss(lp, ref[:, :3], r), "same shape"),
    (lambda: adpo_loss(lp, ref, r[:, :3]), "rewards"),
    (lambda: adpo_loss(lp[None], ref[None], r), "rewards"),
    (lambda: adpo_loss(lp, ref, r.T), "rewards"),
    (lambda: adpo_loss(lp, ref, with_nan(r)), "rewards"),
    (lambda: adpo_loss(with_nan(lp), ref, r), "logps"),
    (lambda: adpo_loss(lp, with_nan(ref), r), "ref_logps"),
    (lambda: adpo_loss(lp, ref, r, tau=0.0), "tau"),
    (lambda: adpo_loss(lp, ref, r, tau=-1.0), "tau"),
    (lambda: adpo_loss(lp, ref, r, tau=float("inf")), "tau"),
    (lambda: adpo_loss(lp, ref, r, tau=torch.ones(3)), "tau"),
    (lambda: adpo_loss(lp, ref, r, beta=0.0), "beta"),
    (lambda: adpo_loss(lp, ref, r, target="listnet"), "target"),
    (lambda: adpo_loss(lp, ref, r, ties="random"), "ties"),
    (lambda: adpo_loss(lp, ref), "rewards"),
    (lambda: adpo_loss(lp, ref, r, targets=torch.softmax(r, -1)), "not both"),
    (lambda: adpo_loss(lp, ref, targets=torch.rand(B, G)), "sum to 1"),
    (lambda: adpo_loss(lp, ref, targets=-torch.softmax(r, -1)), "non-negative"),
    (lambda: adpo_loss(lp, ref, targets=torch.softmax(r, -1), target="top1"), "targets"),
    (lambda: adpo_loss(lp[:, :1], ref[:, :1], r[:, :1]), "G = 1"),
    (lambda: adpo_loss(lp[:0], ref[:0], r[:0]), "empty"),
    (lambda: adpo_loss(lp, ref, r, mask=torch.ones(B, G, dtype=torch.bool)), "mask"),
    (
        lambda: adpo_loss(torch.randn(B, G, T), torch.randn(B, G, T), r, mask=torch.ones(B, G)),
        "mask",
    ),
    (
        lambda: adpo_loss(
            torch.randn(B, G, T), torch.randn(B, G, T), r, mask=torch.full((B, G, T), 2)
        ),
        "mask",
    ),
    (lambda: adpo_loss(lp, ref, r, valid=torch.zeros(B, G, dtype=torch.bool)), "valid"),
    (lambda: adpo_loss(lp, ref, r, valid=torch.ones(B, G + 1, dtype=torch.bool)), "valid"),
    (lambda: adpo_loss(torch.randn(B), torch.randn(B), r), "logps"),
    (lambda: adpo_loss(lp.tolist(), ref, r), "logps"),
    (
        lambda: reverse_adpo_loss(lp, ref, targets=torch.tensor([[1.0, 0, 0, 0]] * B)),
        "full support",
    ),
    (lambda: kd_loss(lp, torch.rand(B, G)), "sum to 1"),
    (lambda: kd_loss(lp, torch.softmax(r, -1), temperature=0), "temperature"),
    (lambda: opo_loss(lp, ref, r, mu=0.0), "mu"),
    (lambda: opo_loss(lp, ref, r, mu=-2.0), "mu"),
    (lambda: opo_loss(lp, ref, r, alpha=1.5), "alpha"),
    (lambda: opo_loss(lp, ref, r, alpha=-0.1), "alpha"),
    (lambda: opo_loss(lp, ref, r, ratio="linear"), "ratio"),
    (lambda: opo_loss(lp, ref, r, weight_norm="layer"), "weight_norm"),
    (lambda: opo_loss(lp, ref, r, ref_correction="token_mean"), "token_mean"),
    (lambda: opo_loss(lp, ref, with_nan(r)), "rewards"),
    (lambda: opo_loss(lp, ref, r[:, :2]), "rewards"),
    (lambda: opo_loss(lp[:, :1], ref[:, :1], r[:, :1]), "G = 1"),
    (lambda: group_advantages(r[:, :1]), "G = 1"),
    (lambda: group_advantages(with_nan(r)), "rewards"),
    (lambda: group_advantages(r[0]), "rewards"),
    (lambda: dpo_loss(lp[0], lp[1], ref[0], ref[1, :3]), "same shape"),
    (lambda: dpo_loss(lp[0], lp[1], ref[0], ref[1], beta=0), "beta"),
    (lambda: dpo_loss(lp[0], lp[1], ref[0], ref[1], label_smoothing=0.5), "label_smoothing"),
    (lambda: dpo_loss(with_nan(lp, (0, 0))[0], lp[1], ref[0], ref[1]), "chosen_logps"),
    (lambda: ppo_loss(torch.randn(5), torch.randn(5), torch.randn(5)), "last axis"),
    (lambda: ppo_loss(torch.randn(5, 3), torch.randn(5, 3), torch.randn(4)), "advantages"),
    (lambda: ppo_loss(torch.randn(5, 3), torch.randn(5, 2), torch.randn(5)), "same shape"),
    (
        lambda: ppo_loss(torch.randn(5, 3), torch.randn(5, 3), torch.randn(5), clip_eps=0),
        "clip_eps",
    ),
    (
        lambda: ppo_loss(
            torch.randn(2, 3),
            torch.randn(2, 3),
            torch.randn(2),
            torch.tensor([[1, 1, 0], [0, 0, 0]]),
        ),
        "empties",
    ),
    (
        lambda: ppo_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([1.0, nan])),
        "advantages",
    ),
    (
        lambda: grpo_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), beta=0.1),
        "ref_logps",
    ),
    (
        lambda: grpo_loss(
            torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), loss_agg_mode="sum"
        ),
        "loss_agg_mode",
    ),
    (
        lambda: dapo_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), clip_eps_high=-0.1),
        "clip_eps_high",
    ),
    (
        lambda: kl_penalty_loss(torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), beta=-1),
        "beta",
    ),
    (
        lambda: kl_penalty_loss(
            torch.randn(2, 3), torch.randn(2, 3), torch.randn(2), exact_kl=torch.ones(3)
        ),
        "exact_kl",
    ),
    (lambda: sft_loss(torch.randn(3)), "logps"),
    (lambda: sft_loss(torch.randn(2, 3), weights=torch.ones(3)), "weights"),
]


@pytest.mark.parametrize("case,needle", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_bad_input_is_refused_with_a_named_argument(case, needle):
    with pytest.raises((ValueError, TypeError)) as err:
        case()
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
