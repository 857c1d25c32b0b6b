"""``adpo.integrations.verl``: registered losses equal ``adpo.losses`` on whole groups, the
single-update regime is a sequence-level policy gradient, YAML hyperparameters reach the
loss, and every group-breaking configuration is refused with its key named.

Runs in the ``adpo[verl]`` environment (``.ci/run`` makes one); skipped where verl is
not installed (the main ``adpo[test]`` environment).

Shapes: ``B`` prompts, ``G`` responses per prompt, ``T`` tokens, ``bs = B·G``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("ADPO_REQUIRE_VERL"):  # .ci/run's verl environment: never skip silently
    import verl  # noqa: F401
else:
    pytest.importorskip("verl")

from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import (
    POLICY_LOSS_REGISTRY,
    compute_grpo_outcome_advantage,
    get_policy_loss_fn,
)
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import ActorConfig, PolicyLossConfig

import adpo.integrations.verl as av
from adpo.integrations.verl.launcher import (
    PACKAGE,
    compose_config,
    ensure_external_lib,
    main,
)
from adpo.integrations.verl.validation import problems, validate_verl_config
from adpo.losses import adpo_loss, opo_loss

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "verl"
ADPO_MODES = ("adpo_listwise", "adpo_pl", "adpo_top1")
TARGET = {"adpo_listwise": "softmax", "adpo_pl": "plackett_luce", "adpo_top1": "top1"}


# ----------------------------------------------------------------------------- helpers
def verl_batch(B=3, G=4, T=7, seed=0, dtype=torch.float64, rewards=None):
    """A verl-shaped batch: right-padded responses, GRPO advantages from verl's estimator.

    Returns ``(old_log_prob, log_prob, advantages, response_mask, rewards)`` with the first
    four ``[bs, T]`` (``log_prob`` a leaf that requires grad) and ``rewards`` ``[B, G]``.
    """
    g = torch.Generator().manual_seed(seed)
    bs = B * G
    lengths = torch.randint(1, T + 1, (bs,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (bs, T)
    old = -torch.rand(bs, T, generator=g, dtype=dtype) * 2
    new = (old + 0.3 * torch.randn(bs, T, generator=g, dtype=dtype)).requires_grad_()
    if rewards is None:
        rewards = torch.randint(0, 4, (B, G), generator=g).to(dtype) / 3
    token_rewards = torch.zeros(bs, T, dtype=torch.float32)
    token_rewards[torch.arange(bs), lengths - 1] = rewards.reshape(-1).float()
    index = np.repeat(np.array([f"uid{b}" for b in range(B)], dtype=object), G)
    adv, _ = compute_grpo_outcome_advantage(token_rewards, mask.float(), index)
    return old, new, adv.to(dtype), mask.float(), rewards


def actor_config(G=4, **loss_kwargs):
    return ActorConfig(
        strategy="fsdp",
        rollout_n=G,
        ppo_micro_batch_size_per_gpu=G,
        policy_loss=av.AdpoPolicyLossConfig(**loss_kwargs),
    )


def seq_sums(x, mask, B, G):
    return (x * mask).sum(-1).view(B, G)  # (B, G)


def call(mode, old, new, adv, mask, config, **kw):
    return get_policy_loss_fn(mode)(
        old_log_prob=old,
        log_prob=new,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode="token-mean",
        config=config,
        **kw,
    )


# ------------------------------------------------------------------------ registration
def test_losses_registered_under_unambiguous_names():
    for name in (*ADPO_MODES, "orthogonalized_po"):
        assert name in POLICY_LOSS_REGISTRY
        assert get_policy_loss_fn(name).__module__ == "adpo.integrations.verl.losses"
    assert "opo" not in POLICY_LOSS_REGISTRY  # verl's "opo" is an advantage estimator
    assert set(av.LOSS_MODES) == {*ADPO_MODES, "orthogonalized_po"}


def test_public_symbols_import():
    for name in av.__all__:
        assert getattr(av, name) is not None


# ------------------------------------------------------ losses equal adpo.losses (groups)
@pytest.mark.parametrize("mode", ADPO_MODES)
@pytest.mark.parametrize("tau, beta", [(0.8, 0.5), (0.3, 2.0)])
def test_adpo_losses_equal_library_on_reshaped_groups(mode, tau, beta):
    B, G = 3, 4
    old, new, adv, mask, rewards = verl_batch(B, G)
    config = actor_config(G, loss_mode=mode, tau=tau, beta=beta)
    loss, metrics = call(mode, old, new, adv, mask, config)
    (grad,) = torch.autograd.grad(loss, new)

    new2 = new.detach().clone().requires_grad_()
    ref = adpo_loss(
        seq_sums(new2, mask, B, G),
        seq_sums(old, mask, B, G),
        adv[:, 0].view(B, G),  # first token: always a response token (right padding)
        target=TARGET[mode],
        tau=tau,
        beta=beta,
    ).loss
    (grad_ref,) = torch.autograd.grad(ref, new2)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)
    assert metrics["actor/adpo/tau"] == pytest.approx(tau)
    assert all(isinstance(v, float) for v in metrics.values())

    # the raw rewards give the same loss: the ranking is the advantages' ranking, and the
    # softmax target re-standardises advantages that are already z-scores (up to eps)
    from_rewards = adpo_loss(
        seq_sums(new, mask, B, G),
        seq_sums(old, mask, B, G),
        rewards,
        target=TARGET[mode],
        tau=tau,
        beta=beta,
    ).loss
    torch.testing.assert_close(loss, from_rewards, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_norm", ["group", "center"])
@pytest.mark.parametrize("alpha, mu", [(0.4, 1.0), (0.0, 3.0)])
def test_opo_loss_equals_library_on_reshaped_groups(weight_norm, alpha, mu):
    B, G = 4, 3
    old, new, adv, mask, rewards = verl_batch(B, G, seed=1)
    config = actor_config(
        G, loss_mode="orthogonalized_po", alpha=alpha, mu=mu, weight_norm=weight_norm
    )
    loss, metrics = call("orthogonalized_po", old, new, adv, mask, config)
    ref = opo_loss(
        seq_sums(new, mask, B, G),
        seq_sums(old, mask, B, G),
        rewards,
        alpha=alpha,
        mu=mu,
        weight_norm=weight_norm,
    ).loss
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert "actor/opo/chi2" in metrics


def test_token_reduction_uses_the_response_mask():
    """Padding positions hold garbage (even NaN); only masked tokens count."""
    B, G = 2, 4
    old, new, adv, mask, _ = verl_batch(B, G, seed=2)
    config = actor_config(G, loss_mode="adpo_listwise")
    clean, _ = call("adpo_listwise", old, new, adv, mask, config)
    pad = mask == 0
    old_g = old.masked_fill(pad, float("nan"))
    new_g = (new.detach().masked_fill(pad, 123.0)).requires_grad_()
    adv_g = adv.masked_fill(pad, 0.0)  # verl's estimator multiplies by the mask
    dirty, _ = call("adpo_listwise", old_g, new_g, adv_g, mask, config)
    torch.testing.assert_close(clean, dirty, rtol=0, atol=0)


# ---------------------------------------------- single update: sequence-level policy gradient
@pytest.mark.parametrize("mode", ["adpo_listwise", "adpo_top1"])
def test_single_update_is_sequence_policy_gradient(mode):
    """old = current log-probs: ∂L/∂log πθ(y_i,t) = −(q_i − 1/G)/(τ·B) on every response token."""
    B, G, tau, beta = 3, 5, 0.7, 0.5
    old, new, adv, mask, _ = verl_batch(B, G, T=6, seed=3)
    new = old.clone().requires_grad_()
    config = actor_config(G, loss_mode=mode, tau=tau, beta=beta)
    loss, _ = call(mode, old, new, adv, mask, config)
    (grad,) = torch.autograd.grad(loss, new)

    A = adv[:, 0].view(B, G)  # one advantage per response (never masked: length >= 1)
    if mode == "adpo_listwise":
        z = (A - A.mean(-1, keepdim=True)) / (A.std(-1, keepdim=True) + 1e-6)
        z = torch.where(A.std(-1, keepdim=True) > 0, z, torch.zeros_like(z))
        q = torch.softmax(z / beta, -1)
    else:
        top = A == A.amax(-1, keepdim=True)
        q = top.double() / top.sum(-1, keepdim=True)
    w = (q - 1.0 / G) / tau  # (B, G) policy-gradient weights
    expected = (-w / B).reshape(-1, 1) * mask  # (bs, T)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_single_update_plackett_luce_gradient():
    """At u = 0 the PL gradient is Σ_i [i has a lower one] (1[j ∈ R_i]/|R_i| − δ_ij) / (τ·B)."""
    B, G, tau = 2, 4, 0.8
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 1.0, 0.2]], dtype=torch.float64)
    old, _, adv, mask, _ = verl_batch(B, G, seed=4, rewards=rewards)
    new = old.clone().requires_grad_()
    loss, _ = call("adpo_pl", old, new, adv, mask, actor_config(G, loss_mode="adpo_pl", tau=tau))
    (grad,) = torch.autograd.grad(loss, new)
    expected = torch.zeros(B, G, dtype=torch.float64)
    for b in range(B):
        r = rewards[b]
        for i in range(G):
            if not (r < r[i]).any():
                continue
            risk = r <= r[i]
            expected[b] += risk.double() / risk.sum()
            expected[b, i] -= 1.0
    expected = (expected / (tau * B)).reshape(-1, 1) * mask
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_single_update_opo_gradient_is_escort_weighted():
    """OPO at Δ = 0: ∂L/∂log πθ(y_i,t) = −ω̂_i/(B·G), ω̂ the group z-score of G·softmax((1−α)A)."""
    B, G, alpha = 3, 4, 0.4
    old, _, adv, mask, _ = verl_batch(B, G, seed=5)
    new = old.clone().requires_grad_()
    cfg = actor_config(G, loss_mode="orthogonalized_po", alpha=alpha, mu=2.0)
    loss, _ = call("orthogonalized_po", old, new, adv, mask, cfg)
    (grad,) = torch.autograd.grad(loss, new)
    A = adv[:, 0].view(B, G)
    z = (A - A.mean(-1, keepdim=True)) / (A.std(-1, keepdim=True) + 1e-6)
    z = torch.where(A.std(-1, keepdim=True) > 0, z, torch.zeros_like(z))
    w = G * torch.softmax((1 - alpha) * z, -1)
    w_hat = (w - w.mean(-1, keepdim=True)) / (w.std(-1, keepdim=True) + 1e-6)
    w_hat = torch.where(w.std(-1, keepdim=True) > 0, w_hat, torch.zeros_like(w_hat))
    expected = (-w_hat / (B * G)).reshape(-1, 1) * mask
    torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------- verl's global normalisation
@pytest.mark.parametrize("mode", ["adpo_pl", "orthogonalized_po"])
def test_micro_batches_and_ranks_add_up_to_the_mini_batch_mean(mode):
    """verl sums micro-batch losses and averages gradients over dp ranks: the result must be
    the gradient of the loss on the whole mini-batch (mean over its prompts)."""
    B, G, dp, micro_prompts = 8, 4, 2, 2
    old, new, adv, mask, _ = verl_batch(B, G, seed=6)
    whole, _ = call(mode, old, new, adv, mask, actor_config(G, loss_mode=mode))
    (g_whole,) = torch.autograd.grad(whole, new)

    grads = torch.zeros_like(new)
    per_rank = B // dp
    for rank in range(dp):
        for start in range(0, per_rank, micro_prompts):
            lo = (rank * per_rank + start) * G
            hi = lo + micro_prompts * G
            cfg = actor_config(G, loss_mode=mode)
            cfg.global_batch_info.update(dp_size=dp, global_batch_size=B * G)
            part = new[lo:hi]
            loss, _ = call(mode, old[lo:hi], part, adv[lo:hi], mask[lo:hi], cfg)
            (g,) = torch.autograd.grad(loss, new)
            grads += g / dp  # all-reduce mean over ranks
    torch.testing.assert_close(grads, g_whole, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------- run-time refusals (worker)
def test_run_time_refuses_split_groups():
    B, G = 3, 4
    old, new, adv, mask, _ = verl_batch(B, G, seed=7)
    cfg = actor_config(G, loss_mode="adpo_pl")
    perm = torch.tensor([0, 1, 2, 4, 3, 5, 6, 7, 8, 9, 10, 11])  # swap across groups 0 and 1
    with pytest.raises(ValueError, match="not one GRPO group"):
        call("adpo_pl", old[perm], new[perm], adv[perm], mask[perm], cfg)
    with pytest.raises(ValueError, match="not a positive multiple of the group size 4"):
        call("adpo_pl", old[:10], new[:10], adv[:10], mask[:10], cfg)


@pytest.mark.parametrize("mode, prefix", [("adpo_pl", "adpo"), ("orthogonalized_po", "opo")])
def test_groups_checked_metric_counts_the_verified_groups(mode, prefix):
    """The run-time check reports what it verified: B groups, or 0 when it is switched off."""
    B, G = 3, 4
    old, new, adv, mask, _ = verl_batch(B, G, seed=9)
    _, metrics = call(mode, old, new, adv, mask, actor_config(G, loss_mode=mode))
    assert metrics[f"actor/{prefix}/groups_checked"] == B
    off = actor_config(G, loss_mode=mode, check_groups=False)
    _, metrics = call(mode, old, new, adv, mask, off)
    assert metrics[f"actor/{prefix}/groups_checked"] == 0.0


def test_run_time_refuses_non_broadcast_advantages_and_is_weights():
    B, G = 2, 4
    old, new, adv, mask, _ = verl_batch(B, G, seed=8)
    cfg = actor_config(G, loss_mode="adpo_listwise")
    per_token = adv + 0.5 * torch.randn_like(adv) * mask
    with pytest.raises(ValueError, match="adv_estimator=grpo"):
        call("adpo_listwise", old, new, per_token, mask, cfg)
    with pytest.raises(ValueError, match="rollout_is=null"):
        call("adpo_listwise", old, new, adv, mask, cfg, rollout_is_weights=torch.ones_like(adv))


@pytest.mark.parametrize(
    "field, key",
    [
        ("shuffle", "actor_rollout_ref.actor.shuffle"),
        ("use_dynamic_bsz", "actor_rollout_ref.actor.use_dynamic_bsz"),
    ],
)
def test_run_time_refuses_reordering_actor_settings(field, key):
    B, G = 2, 4
    old, new, adv, mask, _ = verl_batch(B, G)
    kwargs = dict(
        strategy="fsdp",
        rollout_n=G,
        ppo_max_token_len_per_gpu=64,
        policy_loss=av.AdpoPolicyLossConfig(loss_mode="adpo_pl"),
        **{field: True},
    )
    if field != "use_dynamic_bsz":
        kwargs["ppo_micro_batch_size_per_gpu"] = G
    with pytest.raises(ValueError, match=key):
        call("adpo_pl", old, new, adv, mask, ActorConfig(**kwargs))


def test_run_time_refuses_plain_policy_loss_config_and_mismatches():
    B, G = 2, 4
    old, new, adv, mask, _ = verl_batch(B, G)
    plain = ActorConfig(
        strategy="fsdp",
        rollout_n=G,
        ppo_micro_batch_size_per_gpu=G,
        policy_loss=PolicyLossConfig(loss_mode="adpo_pl"),
    )
    with pytest.raises(ValueError, match=r"policy_loss\._target_=adpo\.integrations\.verl"):
        call("adpo_pl", old, new, adv, mask, plain)
    with pytest.raises(ValueError, match="group_size=2 differs"):
        call("adpo_pl", old, new, adv, mask, actor_config(G, loss_mode="adpo_pl", group_size=2))
    with pytest.raises(ValueError, match="loss_mode is 'adpo_top1'"):
        call("adpo_pl", old, new, adv, mask, actor_config(G, loss_mode="adpo_top1"))
    with pytest.raises(ValueError, match=r"`log_prob` must be \[bs, T\]|must be \[bs, T\]"):
        call("adpo_pl", old, new, adv[:, :3], mask, actor_config(G, loss_mode="adpo_pl"))


def test_loss_config_checks_its_fields():
    with pytest.raises(ValueError, match="`tau` must be finite and > 0"):
        av.AdpoPolicyLossConfig(tau=0.0)
    with pytest.raises(ValueError, match="`alpha` must lie in"):
        av.AdpoPolicyLossConfig(alpha=1.5)
    with pytest.raises(ValueError, match="fixes target='plackett_luce'"):
        av.AdpoPolicyLossConfig(loss_mode="adpo_pl", target="softmax")
    with pytest.raises(ValueError, match="orthogonalized_po"):
        av.AdpoPolicyLossConfig(loss_mode="opo")
    with pytest.raises(ValueError, match="`group_size` must be an int >= 2"):
        av.AdpoPolicyLossConfig(group_size=1)
    assert av.AdpoPolicyLossConfig(loss_mode="adpo_listwise", target="top1").resolved_target == (
        "top1"
    )


# ------------------------------------------------------------ YAML hyperparameters reach it
def _loss_from_cfg(cfg, batch):
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)  # what verl's workers do
    mode = actor.policy_loss.loss_mode
    old, new, adv, mask, _ = batch
    loss, _ = call(mode, old, new, adv, mask, actor)
    return actor, loss


def test_example_yaml_hyperparameters_reach_the_loss(tmp_path):
    G = 8
    B = 2
    batch = verl_batch(B, G, seed=9)
    old, new, adv, mask, _ = batch
    cfg = compose_config(EXAMPLES / "adpo_pl.yaml")
    actor, loss = _loss_from_cfg(cfg, batch)
    assert isinstance(actor.policy_loss, av.AdpoPolicyLossConfig)
    assert actor.policy_loss.tau == 0.8 and actor.rollout_n == G
    ref = adpo_loss(
        seq_sums(new, mask, B, G),
        seq_sums(old, mask, B, G),
        adv[:, 0].view(B, G),
        target="plackett_luce",
        tau=0.8,
    ).loss
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)

    # a value written in a run's own YAML file (same setting, tau 0.25) changes the loss
    (tmp_path / "my_run.yaml").write_text(
        "hydra:\n  searchpath:\n    - pkg://verl.trainer.config\n"
        f"    - file://{EXAMPLES}\n"
        "defaults:\n  - ppo_trainer\n  - setting: adpo_math\n  - _self_\n"
        "actor_rollout_ref:\n  actor:\n    policy_loss:\n"
        "      _target_: adpo.integrations.verl.AdpoPolicyLossConfig\n"
        "      loss_mode: adpo_pl\n      tau: 0.25\n"
    )
    actor2, loss2 = _loss_from_cfg(compose_config(tmp_path / "my_run.yaml"), batch)
    assert actor2.policy_loss.tau == 0.25
    ref2 = adpo_loss(
        seq_sums(new, mask, B, G),
        seq_sums(old, mask, B, G),
        adv[:, 0].view(B, G),
        target="plackett_luce",
        tau=0.25,
    ).loss
    torch.testing.assert_close(loss2, ref2, rtol=1e-12, atol=1e-12)
    assert abs((loss2 - loss).item()) > 1e-3

    # and so does a command-line override
    _, loss3 = _loss_from_cfg(
        compose_config(EXAMPLES / "adpo_pl.yaml", ["actor_rollout_ref.actor.policy_loss.tau=0.25"]),
        batch,
    )
    torch.testing.assert_close(loss3, loss2, rtol=0, atol=0)


def test_opo_yaml_alpha_and_mu_reach_the_loss():
    G, B = 6, 2
    batch = verl_batch(B, G, seed=10)
    old, new, adv, mask, _ = batch
    base = compose_config(EXAMPLES / "opo.yaml")
    _, loss = _loss_from_cfg(base, batch)
    over = [
        "actor_rollout_ref.actor.policy_loss.alpha=0.0",
        "actor_rollout_ref.actor.policy_loss.mu=3.0",
    ]
    actor, loss2 = _loss_from_cfg(compose_config(EXAMPLES / "opo.yaml", over), batch)
    assert (actor.policy_loss.alpha, actor.policy_loss.mu) == (0.0, 3.0)
    ref = opo_loss(
        seq_sums(new, mask, B, G),
        seq_sums(old, mask, B, G),
        adv[:, 0].view(B, G),
        alpha=0.0,
        mu=3.0,
    ).loss
    torch.testing.assert_close(loss2, ref, rtol=1e-12, atol=1e-12)
    assert abs((loss2 - loss).item()) > 1e-3


# ------------------------------------------------------------ start-up validation (driver)
@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.yaml")))
def test_example_configs_compose_and_pass(name):
    cfg = compose_config(EXAMPLES / f"{name}.yaml")
    assert problems(cfg) == []
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert actor.shuffle is False and actor.use_dynamic_bsz is False
    assert cfg.trainer.balance_batch is False and cfg.trainer.use_v1 is False
    assert cfg.algorithm.adv_estimator == "grpo"
    assert actor.ppo_micro_batch_size_per_gpu % cfg.actor_rollout_ref.rollout.n == 0


def test_baselines_share_the_setting_of_their_family():
    """GRPO/GSPO/DAPO differ from ADPO-PL only in the actor's loss keys and the run name."""

    def flat(path, overrides=()):
        c = OmegaConf.to_container(compose_config(path, list(overrides)), resolve=False)
        c["trainer"].pop("experiment_name")
        actor = c["actor_rollout_ref"]["actor"]
        for k in (
            "policy_loss",
            "clip_ratio",
            "clip_ratio_low",
            "clip_ratio_high",
            "loss_agg_mode",
        ):
            actor.pop(k)
        return c

    for setting in ("adpo_math", "opo_math"):
        over = [f"setting={setting}"]
        ref = flat(EXAMPLES / "grpo.yaml", over)
        for name in ("gspo", "dapo", "adpo_pl", "opo"):
            assert flat(EXAMPLES / f"{name}.yaml", over) == ref, (name, setting)
    dapo = compose_config(EXAMPLES / "dapo.yaml").actor_rollout_ref.actor
    assert (dapo.clip_ratio_low, dapo.clip_ratio_high, dapo.loss_agg_mode) == (
        0.2,
        0.28,
        "token-mean",
    )
    adpo_cfg = compose_config(EXAMPLES / "adpo_pl.yaml")
    assert adpo_cfg.actor_rollout_ref.actor.optim.lr == 1.5e-5
    assert adpo_cfg.actor_rollout_ref.rollout.n == 8
    opo_cfg = compose_config(EXAMPLES / "opo.yaml")
    assert opo_cfg.actor_rollout_ref.actor.optim.lr == 2e-6
    assert opo_cfg.actor_rollout_ref.rollout.n == 6


A = "actor_rollout_ref.actor"
BAD = [
    (["trainer.balance_batch=true"], "trainer.balance_batch"),
    (["trainer.use_v1=true"], "trainer.use_v1"),
    ([f"{A}.shuffle=true"], f"{A}.shuffle"),
    ([f"{A}.use_dynamic_bsz=true"], f"{A}.use_dynamic_bsz"),
    ([f"{A}.ppo_micro_batch_size_per_gpu=12"], f"{A}.ppo_micro_batch_size_per_gpu"),
    ([f"{A}.ppo_micro_batch_size_per_gpu=48"], f"{A}.ppo_micro_batch_size_per_gpu"),
    ([f"{A}.ppo_mini_batch_size=100"], f"{A}.ppo_mini_batch_size"),
    (["data.train_batch_size=100"], "data.train_batch_size"),
    ([f"{A}.ppo_micro_batch_size=64"], f"{A}.ppo_micro_batch_size:"),
    (["algorithm.adv_estimator=gae"], "algorithm.adv_estimator"),
    (["actor_rollout_ref.rollout.n=1"], "actor_rollout_ref.rollout.n"),
    (
        [f"{A}.policy_loss._target_=verl.workers.config.PolicyLossConfig"],
        f"{A}.policy_loss._target_",
    ),
    ([f"+{A}.policy_loss.group_size=4"], f"{A}.policy_loss.group_size"),
    (["algorithm.rollout_correction.rollout_is=token"], "algorithm.rollout_correction.rollout_is"),
    ([f"{A}.policy_loss.loss_mode=opo"], f"{A}.policy_loss.loss_mode"),
    ([f"{A}.use_prefix_grouper=true"], f"{A}.use_prefix_grouper"),
    ([f"{A}.entropy_coeff=0.001"], f"{A}.entropy_coeff"),
    ([f"{A}.use_kl_loss=true"], f"{A}.use_kl_loss"),
    (["algorithm.use_kl_in_reward=true"], "algorithm.use_kl_in_reward"),
]


@pytest.mark.parametrize("overrides, key", BAD, ids=[k for _, k in BAD])
def test_bad_configuration_refused_with_its_key(overrides, key):
    cfg = compose_config(EXAMPLES / "adpo_pl.yaml", overrides)
    with pytest.raises(av.VerlGroupConfigError) as info:
        validate_verl_config(cfg)
    assert key in str(info.value)
    assert len(info.value.problems) == 1, info.value.problems


def test_every_offending_key_named_at_once_and_launcher_refuses(capsys):
    overrides = [o for o, _ in BAD[:4]]
    cfg = compose_config(EXAMPLES / "adpo_pl.yaml", [x for o in overrides for x in o])
    keys = {k for k, _ in problems(cfg)}
    assert keys == {k for _, k in BAD[:4]}
    rc = main(["--config", str(EXAMPLES / "opo.yaml"), "--check", "trainer.balance_batch=true"])
    assert rc == 2
    assert "trainer.balance_batch" in capsys.readouterr().err


def test_verl_losses_are_not_checked():
    cfg = compose_config(EXAMPLES / "grpo.yaml", ["trainer.balance_batch=true"])
    assert problems(cfg) == []


def test_data_parallel_size_counts_sequence_parallel_ranks():
    over = [
        "trainer.n_gpus_per_node=8",
        f"{A}.ulysses_sequence_parallel_size=2",
        f"{A}.ppo_mini_batch_size=4",
        "data.train_batch_size=4",
    ]
    cfg = compose_config(EXAMPLES / "adpo_pl.yaml", over)
    assert problems(cfg) == []  # dp = 4: 4 prompts per mini-batch are whole groups per rank
    cfg = compose_config(
        EXAMPLES / "adpo_pl.yaml",
        [*over[:2], f"{A}.ppo_mini_batch_size=6", "data.train_batch_size=12"],
    )
    assert {k for k, _ in problems(cfg)} == {f"{A}.ppo_mini_batch_size"}


# --------------------------------------------------- registration inside verl's workers
def test_external_lib_is_added_once():
    cfg = compose_config(EXAMPLES / "adpo_pl.yaml", ["actor_rollout_ref.model.external_lib=null"])
    ensure_external_lib(cfg)
    assert cfg.actor_rollout_ref.model.external_lib == PACKAGE
    ensure_external_lib(cfg)
    assert cfg.actor_rollout_ref.model.external_lib == PACKAGE
    cfg = compose_config(EXAMPLES / "adpo_pl.yaml", ["actor_rollout_ref.model.external_lib=foo"])
    ensure_external_lib(cfg)
    assert list(cfg.actor_rollout_ref.model.external_lib) == ["foo", PACKAGE]


WORKER = """
import sys
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
assert "adpo_pl" not in POLICY_LOSS_REGISTRY
assert not any(m.startswith("adpo") for m in sys.modules), "adpo imported too early"
cfg = OmegaConf.load(sys.argv[1])
if sys.argv[2] == "target":  # what every verl worker does with the actor config
    from verl.utils.config import omega_conf_to_dataclass
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert type(actor.policy_loss).__name__ == "AdpoPolicyLossConfig"
else:  # HFModelConfig.__post_init__ imports model.external_lib
    from verl.utils.import_utils import import_external_libs
    import_external_libs(cfg.actor_rollout_ref.model.external_lib)
assert {"adpo_listwise", "adpo_pl", "adpo_top1", "orthogonalized_po"} <= set(POLICY_LOSS_REGISTRY)
print("registered")
"""


@pytest.mark.parametrize("how", ["target", "external_lib"])
def test_a_fresh_worker_process_registers_the_losses(tmp_path, how):
    cfg = compose_config(EXAMPLES / "adpo_pl.yaml")
    OmegaConf.save(cfg, tmp_path / "resolved.yaml", resolve=True)
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none"}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(tmp_path / "resolved.yaml"), how],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "registered" in out.stdout


# ------------------------------------------------------------------- the tiny verl task
def test_tiny_task_files(tmp_path):
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl.trainer.ppo.reward import get_custom_reward_fn

    from adpo.integrations.verl.tasks import DATA_SOURCE, chat_prompt, write_tiny_task

    paths = write_tiny_task(tmp_path, n_train=12, n_test=4, warm_start_steps=3)
    warm = json.loads(paths["warm_start"].read_text())
    assert warm["steps"] == 3 and warm["sft_loss_last"] < warm["sft_loss_first"]
    df = pd.read_parquet(paths["train"])
    assert len(df) == 12 and set(df.columns) >= {"data_source", "prompt", "reward_model"}
    row = df.iloc[0]
    answer = row["reward_model"]["ground_truth"]
    assert row["prompt"][0]["content"].endswith("=")

    cfg = compose_config(EXAMPLES / "smoke_tiny_arithmetic.yaml", [f"adpo_tiny_dir={tmp_path}"])
    assert problems(cfg) == []
    score = get_custom_reward_fn(cfg)  # verl's loader of reward.custom_reward_function
    assert score(DATA_SOURCE, answer, answer) == 1.0
    assert score(DATA_SOURCE, "x", answer) == 0.0
    tok = AutoTokenizer.from_pretrained(paths["model"])
    # the warm start saw the prompt exactly as verl renders it (chat template, generation prompt)
    assert chat_prompt(tok, "3+4=") == "user: 3+4=\nassistant: "
    model = AutoModelForCausalLM.from_pretrained(paths["model"])
    ids = tok(row["prompt"][0]["content"], return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tok)


def test_dictconfig_actor_config_from_legacy_callers():
    """A plain OmegaConf actor config works when its policy_loss names our class."""
    B, G = 2, 4
    old, new, adv, mask, _ = verl_batch(B, G, seed=11)
    legacy = OmegaConf.create(
        {
            "rollout_n": G,
            "shuffle": False,
            "policy_loss": {"_target_": av.TARGET_PATH, "loss_mode": "adpo_pl", "tau": 0.3},
        }
    )
    loss, _ = call("adpo_pl", old, new, adv, mask, legacy)
    ref, _ = call("adpo_pl", old, new, adv, mask, actor_config(G, loss_mode="adpo_pl", tau=0.3))
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    legacy.policy_loss._target_ = "verl.workers.config.PolicyLossConfig"
    with pytest.raises(ValueError, match=r"policy_loss\._target_="):
        call("adpo_pl", old, new, adv, mask, legacy)
