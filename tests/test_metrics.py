"""adpo.metrics: one NDCG / top-1 / mean ± std, equal to each old caller's formula."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from adpo.metrics import mean_ci, mean_std, ndcg, paired_differences, t_critical, top1_accuracy

# ---- frozen copies of the three NDCGs this module replaced (the references) ----------


def _old_ranking_ndcg(pred, scores, valid, atol=0.0):
    out = torch.ones(pred.shape[0], dtype=torch.float64)
    for r in range(pred.shape[0]):
        v = valid[r]
        p, s = pred[r][v].double(), scores[r][v].double()
        gain = s - s.min()
        disc = torch.tensor([1.0 / math.log2(i + 2) for i in range(len(p))], dtype=torch.float64)
        ideal = (gain.sort(descending=True).values * disc).sum()
        if ideal <= 0:
            continue
        order = p.argsort(descending=True)
        ps, gs = p[order], gain[order]
        dcg, start = 0.0, 0
        for i in range(1, len(ps) + 1):
            if i == len(ps) or ps[i - 1] - ps[i] > atol:
                dcg += float(gs[start:i].mean() * disc[start:i].sum())
                start = i
        out[r] = dcg / float(ideal)
    return out


def _old_bandits_ndcg(scores, utility):
    lo, hi = utility.amin(-1, keepdim=True), utility.amax(-1, keepdim=True)
    rel = (utility - lo) / (hi - lo).clamp_min(1e-12)
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    K = utility.shape[-1]
    disc = 1.0 / torch.log2(torch.arange(K, dtype=rel.dtype) + 2.0)
    dcg = (rel.gather(-1, order) * disc).sum(-1)
    idcg = (torch.sort(rel, dim=-1, descending=True).values * disc).sum(-1)
    return (dcg / idcg.clamp_min(1e-12)).mean(-1)


def _old_distill_ndcg(scores, gains):
    K = scores.shape[-1]
    disc = 1.0 / torch.log2(torch.arange(2, K + 2, dtype=gains.dtype))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    dcg = (gains.gather(-1, order) * disc).sum(-1)
    idcg = (gains.sort(dim=-1, descending=True).values * disc).sum(-1)
    return torch.where(idcg > 0, dcg / idcg.clamp_min(1e-30), torch.ones_like(idcg))


@pytest.mark.parametrize("seed", range(5))
def test_ranking_caller_bit_identical(seed):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, 4, (30, 6), generator=g).float() / 2  # many ties
    scores = torch.randn(30, 6, generator=g)
    scores[0] = 1.0  # constant row
    valid = torch.rand(30, 6, generator=g) > 0.3
    valid[:, 0] = True
    for atol in (0.0, 0.6):
        want = _old_ranking_ndcg(pred, scores, valid, atol)
        assert torch.equal(ndcg(pred, scores, valid, atol=atol), want)


@pytest.mark.parametrize("seed", range(5))
def test_bandits_caller_bit_identical(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 40, 10, generator=g)
    logits[0, :5] = 0.0  # tied scores
    u = torch.randn(3, 40, 10, generator=g)
    u[1, 3] = 2.0  # constant utility: the old code scored 0 there
    got = ndcg(logits, u, gain="minmax", ties="index", degenerate=0.0).mean(-1)
    assert torch.equal(got, _old_bandits_ndcg(logits, u))


@pytest.mark.parametrize("seed", range(5))
def test_distill_caller_bit_identical(seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(50, 8, generator=g)
    q = torch.softmax(torch.randn(50, 8, generator=g) * 3, -1)
    q[0] = 0.0
    assert torch.equal(ndcg(s, q, gain="linear", ties="index"), _old_distill_ndcg(s, q))


def test_ndcg_closed_forms():
    s = torch.tensor([[3.0, 2.0, 1.0, 0.0]])  # linear gains 3, 2, 1, 0
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    for ties in ("expected", "index"):
        assert ndcg(s, s, gain="linear", ties=ties).item() == pytest.approx(1.0, abs=1e-12)
        rev = (0 + 1 / math.log2(3) + 2 / 2 + 3 / math.log2(5)) / ideal
        assert ndcg(-s, s, gain="linear", ties=ties).item() == pytest.approx(rev, rel=1e-6)
    # k = 2: only the first two positions count
    rev2 = (0 + 1 / math.log2(3)) / (3 + 2 / math.log2(3))
    assert ndcg(-s, s, gain="linear", k=2).item() == pytest.approx(rev2, rel=1e-12)
    # exponential gains 2^s − 1 = 7, 3, 1, 0, a swap of the top two
    swap = torch.tensor([[2.0, 3.0, 1.0, 0.0]])
    want = (3 + 7 / math.log2(3) + 1 / 2) / (7 + 3 / math.log2(3) + 1 / 2)
    assert ndcg(swap, s, gain="exponential").item() == pytest.approx(want, rel=1e-12)
    # all tied: expected = mean gain at every position; index = the given order
    tied = torch.zeros(1, 4)
    disc = sum(1 / math.log2(i + 2) for i in range(4))
    assert ndcg(tied, s, gain="linear").item() == pytest.approx(1.5 * disc / ideal, rel=1e-12)
    assert ndcg(tied, s, gain="linear", ties="index").item() == pytest.approx(1.0, rel=1e-6)
    # shifted and minmax are scale-free; constant scores → `degenerate`
    assert ndcg(swap, 10 * s - 4).item() == pytest.approx(ndcg(swap, s, gain="linear").item())
    assert ndcg(swap, torch.ones(1, 4), degenerate=0.25).item() == 0.25


@pytest.mark.parametrize("ties", ["expected", "index"])
def test_ndcg_masking_equals_slicing(ties):
    g = torch.Generator().manual_seed(0)
    pred, scores = torch.randn(1, 6, generator=g), torch.randn(1, 6, generator=g)
    valid = torch.tensor([[True, False, True, True, False, True]])
    pad_pred = torch.where(valid, pred, torch.tensor(100.0))  # junk must not count
    got = ndcg(pad_pred, scores, valid, gain="minmax", ties=ties, k=3)
    want = ndcg(pred[valid][None], scores[valid][None], gain="minmax", ties=ties, k=3)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_ndcg_and_top1_bad_inputs_name_the_argument():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="`pred` and `scores`"):
        ndcg(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="`valid`"):
        ndcg(x, x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="`valid` leaves"):
        ndcg(x, x, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="`k`"):
        ndcg(x, x, k=0)
    with pytest.raises(ValueError, match="`gain`"):
        ndcg(x, x, gain="log")
    with pytest.raises(ValueError, match="`ties`"):
        ndcg(x, x, ties="first")
    with pytest.raises(ValueError, match="non-negative"):
        ndcg(x, -torch.ones(2, 3), gain="linear")
    with pytest.raises(ValueError, match="`pred` and `scores`"):
        top1_accuracy(x, torch.zeros(3))


def test_top1_accuracy_closed_forms():
    scores = torch.tensor([[1.0, 3.0, 2.0]])
    assert top1_accuracy(torch.tensor([[0.0, 1.0, 0.5]]), scores).item() == 1.0
    assert top1_accuracy(torch.tensor([[1.0, 0.0, 0.5]]), scores).item() == 0.0
    assert top1_accuracy(torch.zeros(1, 3), scores).item() == pytest.approx(1 / 3)
    valid = torch.tensor([[True, False, True]])  # best valid is index 2
    assert top1_accuracy(torch.tensor([[0.0, 9.0, 1.0]]), scores, valid).item() == 1.0


@pytest.mark.parametrize("seed", range(20))
def test_mean_std_keeps_each_callers_numbers(seed):
    rng = np.random.default_rng(seed)
    xs = list(rng.normal(size=int(rng.integers(2, 12))) * 10.0 ** rng.integers(-3, 3))
    a, t = np.asarray(xs), torch.tensor(xs, dtype=torch.float64)
    assert mean_std(xs) == (float(a.mean()), float(a.std(ddof=1)))  # distill
    assert mean_std(xs, arithmetic="torch") == (float(t.mean()), float(t.std()))  # bandits
    assert mean_std(xs, arithmetic="exact") == (statistics.fmean(xs), statistics.stdev(xs))
    assert mean_std(xs, ddof=0) == (float(a.mean()), float(a.std()))


def test_mean_std_closed_form_and_errors():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std
    assert mean_std([1.0, 3.0], ddof=0) == (2.0, 1.0)  # population std
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError, match="`values`"):
        mean_std([])
    with pytest.raises(ValueError, match="`ddof`"):
        mean_std([1.0, 2.0], ddof=2)
    with pytest.raises(ValueError, match="`arithmetic`"):
        mean_std([1.0, 2.0], arithmetic="float")


def test_mean_std_skip_nan():
    nan = float("nan")
    assert mean_std([1.0, nan, 3.0], skip_nan=True) == (2.0, math.sqrt(2.0))
    assert all(math.isnan(v) for v in mean_std([nan, nan], skip_nan=True))
    with pytest.raises(ValueError, match="finite"):
        mean_std([1.0, nan])  # NaN is an error unless it marks a missing value
    with pytest.raises(ValueError, match="finite"):
        mean_std([1.0, float("inf")], skip_nan=True)
    with pytest.raises(ValueError, match="`ddof`"):  # arguments are checked first
        mean_std([nan], ddof=5, skip_nan=True)
    with pytest.raises(ValueError, match="`values` is empty"):
        mean_std([], skip_nan=True)


def test_paired_differences_by_hand():
    rows = [
        {"loss": "grpo", "seed": 0, "acc": 0.50, "len": 10.0},
        {"loss": "opo", "seed": 0, "acc": 0.60, "len": 12.0},
        {"loss": "adpo", "seed": 0, "acc": 0.40},  # no `len`: left out of that metric
        {"loss": "grpo", "seed": 1, "acc": 0.70, "len": 11.0},
        {"loss": "opo", "seed": 1, "acc": 0.90, "len": 11.0},
        {"loss": "adpo", "seed": 1, "acc": 0.70, "len": float("nan")},
        {"loss": "opo", "seed": 2, "acc": 1.00, "len": 1.0},  # no grpo on seed 2: unpaired
        {"loss": "gspo", "seed": 3, "acc": 1.00},  # never paired: no entry
    ]
    out = paired_differences(rows, ("acc", "len"), base="grpo", by="loss", pair="seed")
    assert list(out) == ["opo", "adpo"]  # first-seen order; the base has none
    assert out["opo"]["n_seeds"] == 2
    # opo − grpo per seed: acc 0.1, 0.2; len 2, 0
    assert out["opo"]["acc"]["mean"] == pytest.approx(0.15)
    assert out["opo"]["acc"]["std"] == pytest.approx(statistics.stdev([0.1, 0.2]))
    assert out["opo"]["len"] == {
        "mean": 1.0,
        "std": pytest.approx(math.sqrt(2.0)),
        "ci95": pytest.approx(12.706204736174707 * math.sqrt(2.0) / math.sqrt(2)),
        "n_below": 0,
        "n_above": 1,  # +2 and 0: a tie counts on neither side
    }
    assert (out["opo"]["acc"]["n_below"], out["opo"]["acc"]["n_above"]) == (0, 2)
    assert out["adpo"]["acc"]["mean"] == pytest.approx(-0.05)
    assert math.isnan(out["adpo"]["len"]["mean"])
    # another pairing key and base
    by_task = [{"m": m, "task": t, "x": float(i)} for i, (m, t) in enumerate([("a", 1), ("b", 1)])]
    assert paired_differences(by_task, ("x",), base="a", by="m", pair="task") == {
        "b": {"x": {"mean": 1.0, "std": 0.0, "ci95": pytest.approx(math.nan, nan_ok=True),
                    "n_below": 0, "n_above": 1}, "n_tasks": 1}
    }  # fmt: skip
    with pytest.raises(ValueError, match="two runs with loss='grpo', seed=0"):
        paired_differences([rows[0], rows[0]], ("acc",), base="grpo", by="loss", pair="seed")
    with pytest.raises(ValueError, match="may not be named 'n_seeds'"):
        paired_differences(rows, ("n_seeds",), base="grpo", by="loss", pair="seed")


def test_t_critical_against_closed_forms_and_tables():
    # df 1 and 2 have closed forms: tan(π·level/2) and level·√(2 / (1 − level²))
    for level in (0.5, 0.9, 0.95, 0.99):
        assert t_critical(1, level) == pytest.approx(math.tan(math.pi * level / 2), rel=1e-12)
        assert t_critical(2, level) == pytest.approx(
            level * math.sqrt(2 / (1 - level**2)), rel=1e-12
        )
    # two-sided 95 % values of the standard tables (to the 6 decimals they print)
    table = {3: 3.182446, 4: 2.776445, 5: 2.570582, 9: 2.262157, 10: 2.228139, 29: 2.045230,
             30: 2.042272, 120: 1.979930}  # fmt: skip
    for df, t in table.items():
        assert t_critical(df) == pytest.approx(t, abs=5e-7)
    assert t_critical(10_000) == pytest.approx(1.959964, abs=3e-4)  # → the normal's 1.96
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="`df`"):
            t_critical(bad)
    with pytest.raises(ValueError, match="`level`"):
        t_critical(4, 1.0)


def test_mean_ci_is_t_times_the_standard_error():
    xs = [0.1, -0.3, 0.25, 0.05, 0.2]
    mean, half = mean_ci(xs)
    assert mean == pytest.approx(statistics.fmean(xs))
    assert half == pytest.approx(2.7764451051977934 * statistics.stdev(xs) / math.sqrt(5))
    assert mean_ci(xs, level=0.99)[1] > half  # a wider interval at a higher level
    m, h = mean_ci([1.0, float("nan"), 3.0], skip_nan=True)  # two values: df 1
    assert (m, h) == (2.0, pytest.approx(12.706204736174707 * math.sqrt(2) / math.sqrt(2)))
    assert math.isnan(mean_ci([4.0])[1])  # one value: no interval
