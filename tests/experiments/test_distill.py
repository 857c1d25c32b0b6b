"""Tests of the MuJoCo distillation benchmark (``adpo bench distill``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")
pytest.importorskip("stable_baselines3")

from adpo.anchors import FixedAnchor, SelfAnchor
from adpo.experiments import distill as D
from adpo.experiments.distill_teacher import (
    Teacher,
    check_env_id,
    evaluate_returns,
    make_env,
    teacher_path,
)

REPO = Path(__file__).resolve().parents[2]
COMMITTED_TEACHERS = REPO / "results" / "distill" / "teachers"


@pytest.fixture(scope="module")
def tiny_teacher() -> Teacher:
    """An untrained SAC policy on Hopper-v5 (16-16 nets): fast, with real SB3 modules."""
    from stable_baselines3 import SAC

    env = make_env("Hopper-v5")
    model = SAC("MlpPolicy", env, buffer_size=1_000, policy_kwargs={"net_arch": [16, 16]}, seed=0)
    return Teacher.from_sb3(model, "Hopper-v5")


class Const(nn.Module):
    """A state-independent Gaussian ``(μ, log σ)`` with learnable parameters."""

    def __init__(self, mean, log_std):
        super().__init__()
        self.mean = nn.Parameter(torch.as_tensor(mean, dtype=torch.float64).clone())
        self.log_std = nn.Parameter(torch.as_tensor(log_std, dtype=torch.float64).clone())

    def forward(self, obs):
        B = obs.shape[0]
        return self.mean.expand(B, -1), self.log_std.expand(B, -1)


# ---- Gaussian math against torch.distributions (independent reference) -------------------


def test_gaussian_logp_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g) * 0.5
    z = torch.randn(5, 7, 3, generator=g)
    ref = (
        torch.distributions.Normal(mean[:, None, :], log_std.exp()[:, None, :]).log_prob(z).sum(-1)
    )
    torch.testing.assert_close(D.gaussian_logp(mean, log_std, z), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="gaussian_logp"):
        D.gaussian_logp(mean, log_std, z[:, :, :2])


def test_gaussian_kl_matches_torch_distributions_and_is_zero_on_itself():
    g = torch.Generator().manual_seed(1)
    mp, lp, mq, lq = (torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(4))
    P = torch.distributions.Independent(torch.distributions.Normal(mp, lp.exp()), 1)
    Q = torch.distributions.Independent(torch.distributions.Normal(mq, lq.exp()), 1)
    torch.testing.assert_close(
        D.gaussian_kl(mp, lp, mq, lq), torch.distributions.kl_divergence(P, Q)
    )
    assert D.gaussian_kl(mp, lp, mp, lp).abs().max() < 1e-12


# ---- candidates -----------------------------------------------------------------------


def test_candidates_layout_spread_and_reproducibility():
    B, A, K, S = 4000, 3, 16, 7
    mean = torch.linspace(-2, 2, B * A).reshape(B, A)
    log_std = torch.full((B, A), math.log(0.1))
    g = torch.Generator().manual_seed(0)
    z = D.make_candidates(mean, log_std, K, samples=S, perturb_std=0.5, generator=g)
    assert z.shape == (B, K, A)
    torch.testing.assert_close(z[:, 0], mean)  # slot 0: the teacher's deterministic action
    dev = z - mean[:, None, :]
    # slots 1..S: teacher samples (std σ_T = 0.1); the rest: perturbations (std 0.5).
    # B·S·A = 84000 draws: the sample std is within 1% of its true value with margin.
    assert dev[:, 1 : 1 + S].std().item() == pytest.approx(0.1, rel=0.02)
    assert dev[:, 1 + S :].std().item() == pytest.approx(0.5, rel=0.02)
    assert abs(dev[:, 1:].mean().item()) < 0.01
    z2 = D.make_candidates(
        mean, log_std, K, samples=S, perturb_std=0.5, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(z, z2)
    only_samples = D.make_candidates(mean[:2], log_std[:2], 4, samples=3, perturb_std=0.0)
    assert only_samples.shape == (2, 4, A)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 1, "samples": 0}, "`k` must be >= 2"),
        ({"k": 4, "samples": 4}, "`samples`"),
        ({"k": 4, "samples": -1}, "`samples`"),
        ({"k": 4, "samples": 1, "perturb_std": 0.0}, "`perturb_std`"),
    ],
)
def test_candidates_reject_bad_arguments(kwargs, match):
    kw = {"perturb_std": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        D.make_candidates(torch.zeros(2, 3), torch.zeros(2, 3), kw.pop("k"), **kw)


def test_candidates_reject_shape_mismatch():
    with pytest.raises(ValueError, match="`mean` and `log_std`"):
        D.make_candidates(torch.zeros(2, 3), torch.zeros(2, 2), 4, samples=1, perturb_std=0.5)


# ---- NDCG and KL on hand-made policies --------------------------------------------------


def test_ndcg_hand_computed():
    gains = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    disc = [1 / math.log2(r + 1) for r in range(1, 5)]
    idcg = 0.5 * disc[0] + 0.3 * disc[1] + 0.2 * disc[2]
    assert D.ndcg(torch.tensor([[4.0, 3.0, 2.0, 1.0]]), gains).item() == pytest.approx(1.0)
    # reversed ranking: order 4, 3, 2, 1 → gains 0, .2, .3, .5
    rev = (0.2 * disc[1] + 0.3 * disc[2] + 0.5 * disc[3]) / idcg
    assert D.ndcg(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), gains).item() == pytest.approx(rev)
    # one swap at the top
    swap = (0.3 * disc[0] + 0.5 * disc[1] + 0.2 * disc[2]) / idcg
    assert D.ndcg(torch.tensor([[3.0, 4.0, 2.0, 1.0]]), gains).item() == pytest.approx(swap)
    assert D.ndcg(torch.randn(3, 4), torch.zeros(3, 4)).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="non-negative"):
        D.ndcg(torch.zeros(1, 4), -gains)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        D.ndcg(torch.zeros(1, 3), gains)


def test_candidate_kl_hand_computed():
    q = torch.tensor([[0.5, 0.25, 0.25]])
    assert D.candidate_kl(q.log() + 3.0, q).item() == pytest.approx(0.0, abs=1e-7)
    uniform = torch.zeros(1, 3)
    expected = sum(p * math.log(p * 3) for p in (0.5, 0.25, 0.25))
    assert D.candidate_kl(uniform, q).item() == pytest.approx(expected, rel=1e-6)


def test_held_out_metrics_on_hand_made_policies():
    """A student equal to the teacher has KL 0 and NDCG 1; a shifted mean has the closed-form
    KL Σ Δμ²/(2σ²) and a lower NDCG."""
    N, A, K = 64, 2, 8
    t_mean, t_log_std = torch.tensor([0.3, -0.2]), torch.tensor([math.log(0.2), math.log(0.4)])
    val = D.Batch(torch.zeros(N, 5), t_mean.expand(N, A).clone(), t_log_std.expand(N, A).clone())
    z = D.make_candidates(
        val.mean,
        val.log_std,
        K,
        samples=3,
        perturb_std=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    q = torch.softmax(D.teacher_scores(val, z, "logp"), -1)
    same = D.held_out_metrics(Const(t_mean, t_log_std).float(), val, z, q)
    assert same["kl_to_teacher"] == pytest.approx(0.0, abs=1e-6)
    assert same["kl_candidates"] == pytest.approx(0.0, abs=1e-6)
    assert same["ndcg"] == pytest.approx(1.0)
    assert same["action_mse"] == pytest.approx(0.0, abs=1e-12)
    shift = torch.tensor([0.1, 0.4])
    off = D.held_out_metrics(Const(t_mean + shift, t_log_std).float(), val, z, q)
    closed = float((shift**2 / (2 * t_log_std.exp() ** 2)).sum())
    assert off["kl_to_teacher"] == pytest.approx(closed, rel=1e-5)
    assert off["ndcg"] < 0.99
    assert off["kl_candidates"] > 0.01


# ---- what each listwise student converges to (the minimisers of the losses) -------------


def _fit(name: str, anchor_module: nn.Module | None, steps: int = 800) -> Const:
    """Fit a free 1-D Gaussian student with method ``name`` on fixed candidate sets."""
    cfg = D.DistillConfig(env="Hopper-v5", candidates=16, teacher_samples=7, perturb_std=1.0)
    torch.manual_seed(0)
    B = 64
    teacher = D.Batch(torch.zeros(B, 1), torch.full((B, 1), 1.0), torch.full((B, 1), math.log(0.5)))
    student = Const([0.0], [0.0])  # anchor at init: N(0, 1)
    spec = D.METHODS[name]
    anchor = FixedAnchor(anchor_module) if anchor_module is not None else SelfAnchor(student)
    opt = torch.optim.Adam(student.parameters(), lr=0.03)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        z = D.make_candidates(
            teacher.mean, teacher.log_std, 16, samples=7, perturb_std=1.0, generator=g
        ).double()
        scores = D.teacher_scores(
            D.Batch(teacher.obs, teacher.mean.double(), teacher.log_std.double()), z, "logp"
        )
        loss, _ = D.student_loss(spec, student, anchor, teacher, z, scores, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


def test_listwise_minimisers_match_closed_forms():
    """Teacher N(1, 0.5²), self anchor N(0, 1), τ = β = 1 (ADPO app. C: π ∝ π_ref·q^τ):

    * KD and ADPO-self-residual recover the teacher N(1, 0.5²);
    * ADPO-self (soft teacher target) the product N(0,1)·N(1,0.25): mean 0.8, var 0.2;
    * ADPO with the teacher as anchor the squared teacher: mean 1, var 0.125.
    """
    kd = _fit("KD", None)
    assert kd.mean.item() == pytest.approx(1.0, abs=0.03)
    assert kd.log_std.exp().item() == pytest.approx(0.5, rel=0.05)
    res = _fit("ADPO-self-residual", None)
    assert res.mean.item() == pytest.approx(1.0, abs=0.03)
    assert res.log_std.exp().item() == pytest.approx(0.5, rel=0.05)
    prod = _fit("ADPO-self", None)
    assert prod.mean.item() == pytest.approx(0.8, abs=0.03)
    assert prod.log_std.exp().item() ** 2 == pytest.approx(0.2, rel=0.08)
    t_anchor = _fit("ADPO-teacher", Const([1.0], [math.log(0.5)]).requires_grad_(False))
    assert t_anchor.mean.item() == pytest.approx(1.0, abs=0.03)
    assert t_anchor.log_std.exp().item() ** 2 == pytest.approx(0.125, rel=0.08)


# ---- teacher checkpoints and environments ------------------------------------------------


def test_teacher_checkpoint_round_trip(tiny_teacher, tmp_path):
    path = tiny_teacher.save(tmp_path / "Hopper-v5.pt")
    assert json.loads(path.with_suffix(".json").read_text())["env_id"] == "Hopper-v5"
    loaded = Teacher.load(path, "Hopper-v5")
    obs = torch.randn(9, 11)
    z = torch.randn(9, 5, 3)
    for a, b in zip(tiny_teacher.dist_params(obs), loaded.dist_params(obs), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(
        tiny_teacher.q_values(obs, z), loaded.q_values(obs, z), rtol=0, atol=0
    )
    assert loaded.q_values(obs, z).shape == (9, 5)
    # the policy acts identically in the environment
    r1 = evaluate_returns(tiny_teacher.act, "Hopper-v5", 1, seed=3)
    r2 = evaluate_returns(loaded.act, "Hopper-v5", 1, seed=3)
    assert r1 == r2


def test_teacher_with_mismatched_action_space_is_rejected(tiny_teacher, tmp_path):
    path = tiny_teacher.save(tmp_path / "Hopper-v5.pt")
    with pytest.raises(ValueError, match="action dimension 3"):
        Teacher.load(path, "HalfCheetah-v5")
    with pytest.raises(FileNotFoundError, match="distill-teacher"):
        Teacher.load(tmp_path / "missing.pt", "Hopper-v5")


@pytest.mark.parametrize("bad", ["HalfCheetah-v9", "Cheetah", ""])
def test_unknown_environment_id(bad):
    with pytest.raises(ValueError, match="unknown environment id"):
        check_env_id(bad)
    with pytest.raises(ValueError, match="unknown environment id"):
        D.DistillConfig(env=bad)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown `methods`"):
        D.DistillConfig(env="Hopper-v5", methods=("KD", "SFT"))
    with pytest.raises(ValueError, match="teacher_samples"):
        D.DistillConfig(env="Hopper-v5", candidates=4, teacher_samples=4)
    with pytest.raises(ValueError, match="tau"):
        D.DistillConfig(env="Hopper-v5", tau=0.0)
    quick = D.DistillConfig(env="Hopper-v5", quick=True, steps=50)
    assert quick.steps == 50 and quick.seeds == 1 and quick.methods == D.QUICK_METHODS


def test_collect_states_and_dagger(tiny_teacher):
    data = D.collect_states(tiny_teacher, "Hopper-v5", 120, seed=0)
    assert data.obs.shape == (120, 11) and data.mean.shape == (120, 3)
    mean, _ = tiny_teacher.dist_params(data.obs)
    torch.testing.assert_close(data.mean, mean)  # every state labelled by the teacher
    again = D.collect_states(tiny_teacher, "Hopper-v5", 120, seed=0)
    torch.testing.assert_close(data.obs, again.obs)  # seeded
    cfg = D.DistillConfig(
        env="Hopper-v5", steps=6, dagger_rounds=2, dagger_states=30, batch_size=8, log_every=3
    )
    val = data[:16]
    z = D.make_candidates(val.mean, val.log_std, 16, samples=7, perturb_std=0.5)
    q = torch.softmax(D.teacher_scores(val, z, "logp"), -1)
    _, log, used = D.train_student("ADPO-EMA", tiny_teacher, data, val, z, q, cfg, seed=0)
    assert len(used) == 120 + 2 * 30
    assert [r["step"] for r in log] == [3, 6]


# ---- end to end ------------------------------------------------------------------------


@pytest.mark.skipif(
    not teacher_path(COMMITTED_TEACHERS, "Hopper-v5").is_file(), reason="committed teacher missing"
)
def test_quick_end_to_end_beats_random_policy(tmp_path):
    from adpo.cli import main

    rc = main(
        [
            "bench", "distill", "--env", "Hopper-v5", "--quick", "--out", str(tmp_path),
            "--teacher", str(teacher_path(COMMITTED_TEACHERS, "Hopper-v5")),
            "--methods", "KD", "ADPO-teacher", "--no-plot",
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= {"env", "teacher_return", "methods"}
    assert summary["env"] == "Hopper-v5"
    assert summary["teacher_return"] > 3 * summary["random_return"]
    for name in ("KD", "ADPO-teacher"):
        m = summary["methods"][name]
        assert set(m) >= {"return_mean", "return_std", "ndcg", "kl_to_teacher"}
        assert m["return_mean"] > 2 * summary["random_return"], name
        assert 0 <= m["ndcg"] <= 1 and m["kl_to_teacher"] >= 0
    assert (tmp_path / "runs.csv").is_file() and (tmp_path / "train_log.csv").is_file()


def test_method_spec_anchor_vocabulary():
    import warnings as _w

    from adpo.anchors import FixedAnchor as _Fixed

    assert D.METHODS["ADPO-teacher"].anchor == "fixed" and D.METHODS["OPO"].anchor == "fixed"
    with pytest.warns(DeprecationWarning, match="'teacher'.*'fixed'"):
        old = D.MethodSpec("adpo", "teacher")
    assert old == D.MethodSpec("adpo", "fixed")
    with _w.catch_warnings():
        _w.simplefilter("error")
        D.MethodSpec("adpo", "ema")
    with pytest.raises(ValueError, match="`anchor`"):
        D.MethodSpec("adpo", "on_policy")
    assert _Fixed is not None
