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
    sync_adv_estimator,
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


# ---------------------------------------- per-response weights (algorithm.adv_estimator)
W = av.WEIGHTS_ESTIMATOR
MODES = (*ADPO_MODES, "orthogonalized_po")


def weights_config(mode, *overrides):
    """A composed run config (the smoke example) in the per-response mode, as the launcher
    leaves it (``policy_loss.adv_estimator`` synced)."""
    cfg = compose_config(
        EXAMPLES / "smoke_tiny_arithmetic.yaml",
        [f"{A}.policy_loss.loss_mode={mode}", f"algorithm.adv_estimator={W}", *overrides],
    )
    sync_adv_estimator(cfg)
    return cfg


def verl_proto(B, G, seed, dtype=torch.float64, rewards=None, prompt_len=3):
    """The batch verl's driver holds before ``compute_advantage``: ``verl_batch`` plus the
    outcome reward on each response's last token, uids, an attention mask (prompt +
    response) and each row's position ``row`` (to map reordered rows back). The returned
    GRPO advantages (for the whole-group reference) are verl's, computed in ``dtype``."""
    from verl import DataProto

    old, new, _, mask, rewards = verl_batch(B, G, seed=seed, dtype=dtype, rewards=rewards)
    bs, T = mask.shape
    lengths = mask.sum(-1).long()
    token_rewards = torch.zeros(bs, T, dtype=dtype)
    token_rewards[torch.arange(bs), lengths - 1] = rewards.reshape(-1).to(dtype)
    index = np.repeat(np.array([f"uid{b}" for b in range(B)], dtype=object), G)
    adv, _ = compute_grpo_outcome_advantage(token_rewards, mask, index)
    attention = torch.cat([torch.ones(bs, prompt_len), mask], -1).long()  # (bs, prompt_len + T)
    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": token_rewards,
            "response_mask": mask,
            "old_log_probs": old,
            "attention_mask": attention,
            "input_ids": torch.zeros_like(attention, dtype=torch.long),
            "row": torch.arange(bs),
        },
        non_tensors={"uid": index},
    )
    return data, (old, new, adv, mask, rewards)


def split_like_verl(data, cfg, dp, max_token_len):
    """Cut the driver's batch the way verl 0.9.1 does with ``trainer.balance_batch``,
    ``actor.shuffle`` and ``actor.use_dynamic_bsz`` on, with verl's own functions:
    ``RayPPOTrainer._balance_batch`` (length-balanced reordering over ``dp`` ranks),
    ``compute_advantage`` (our estimator, on the reordered batch), the dispatch's
    contiguous chunks, ``tensordict_utils.make_iterator`` (the update's shuffled loader,
    seeded per rank) and ``rearrange_micro_batches`` (token-balanced micro-batches).

    Returns ``[[micro-batch TensorDict, ...] per rank]``.
    """
    from types import SimpleNamespace

    from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_advantage
    from verl.utils import tensordict_utils as tu
    from verl.utils.seqlen_balancing import rearrange_micro_batches

    trainer = SimpleNamespace(config=cfg, actor_rollout_wg=None, _get_dp_size=lambda wg, role: dp)
    RayPPOTrainer._balance_batch(trainer, data, metrics={})
    data = compute_advantage(data, adv_estimator=cfg.algorithm.adv_estimator, config=cfg.algorithm)
    ranks = []
    for rank, chunk in enumerate(data.chunk(dp)):
        td = chunk.batch
        (mini,) = tu.make_iterator(
            td,
            mini_batch_size=len(td),
            epochs=1,
            seed=42 + rank,
            dataloader_kwargs={"shuffle": True},
        )
        micro, _ = rearrange_micro_batches(mini, max_token_len=max_token_len)
        ranks.append(micro)
    return ranks


def accumulate(mode, ranks, new, G, dp, gbs, config_kwargs):
    """verl's update: each micro-batch's loss backward, summed per rank, averaged over ranks."""
    grads = torch.zeros_like(new)
    sizes = []
    for micro_batches in ranks:
        for mb in micro_batches:
            cfg = actor_config(G, loss_mode=mode, adv_estimator=W, **config_kwargs)
            cfg.global_batch_info.update(dp_size=dp, global_batch_size=gbs)
            rows = mb["row"]
            loss, _ = call(
                mode, mb["old_log_probs"], new[rows], mb["advantages"], mb["response_mask"], cfg
            )
            (g,) = torch.autograd.grad(loss, new)
            grads += g / dp  # the all-reduce mean over data-parallel ranks
            sizes.append(len(rows))
    return grads, sizes


@pytest.mark.parametrize(
    "mode, kwargs",
    [
        ("adpo_listwise", {}),
        ("adpo_listwise", {"tau": 0.3, "beta": 2.0, "seq_reduction": "mean"}),
        ("adpo_pl", {}),
        ("adpo_pl", {"ties": "efron"}),
        ("adpo_top1", {}),
        ("orthogonalized_po", {}),
        ("orthogonalized_po", {"weight_norm": "center", "alpha": 0.0, "seq_reduction": "mean"}),
        ("orthogonalized_po", {"weight_norm": "none", "ratio": "exact", "mu": 3.0}),
    ],
)
def test_rows_balanced_shuffled_and_packed_add_up_to_the_whole_group_gradient(mode, kwargs):
    """``balance_batch`` + ``shuffle`` + ``use_dynamic_bsz`` over 2 ranks, with verl's own
    functions cutting the batch: the accumulated gradient equals the whole-group gradient
    of the mean over prompts (ADPO, at the anchor: one step per batch) or responses (OPO,
    anywhere), computed by the whole-group loss on the batch in its original order."""
    B, G, dp = 6, 4, 2
    ties = [[1.0, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.2, 0.2]]
    rewards = torch.tensor(
        [*ties, [0.0, 1.0, 0.5, 0.25], [1.0, 0.0, 0.0, 0.0], [0.3, 0.9, 0.1, 0.6]]
    )
    data, (old, new, adv, mask, _) = verl_proto(B, G, seed=12, rewards=rewards.double())
    if mode in ADPO_MODES:  # the update of the one optimizer step: πθ = π_old
        new = old.clone().requires_grad_()
    ref_cfg = actor_config(G, loss_mode=mode, **kwargs)
    whole, _ = call(mode, old, new, adv, mask, ref_cfg)
    (g_whole,) = torch.autograd.grad(whole, new)

    cfg = weights_config(mode, *(f"++{A}.policy_loss.{k}={v}" for k, v in kwargs.items()))
    ranks = split_like_verl(data, cfg, dp, max_token_len=20)
    grads, sizes = accumulate(mode, ranks, new, G, dp, B * G, kwargs)
    # the cuts really split groups: micro-batches of uneven sizes, not whole groups
    assert len(sizes) > B and any(s % G for s in sizes), sizes
    assert sum(sizes) == B * G
    torch.testing.assert_close(grads, g_whole, rtol=1e-9, atol=1e-12)
    assert g_whole.abs().max() > 1e-3  # a real signal, not 0 = 0


def test_estimator_is_registered_under_an_unambiguous_name():
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    assert get_adv_estimator_fn(W) is av.compute_adpo_group_weights
    assert W == "adpo_group_weights"


def _closed_form_weights(mode, A, tau=0.8, beta=0.5, alpha=0.4):
    """``a = −∂L_b/∂s`` at ``s = 0`` (ADPO) or ``ω̂`` (OPO), written out per target; and the
    group loss at ``s = 0``. ``A``: ``[B, G]`` GRPO advantages."""
    B, G = A.shape
    z = (A - A.mean(-1, keepdim=True)) / (A.std(-1, keepdim=True) + 1e-6)
    z = torch.where(A.std(-1, keepdim=True) > 0, z, torch.zeros_like(z))
    if mode == "orthogonalized_po":
        w = G * torch.softmax((1 - alpha) * z, -1)
        w_hat = (w - w.mean(-1, keepdim=True)) / (w.std(-1, keepdim=True) + 1e-6)
        return torch.where(w.std(-1, keepdim=True) > 0, w_hat, torch.zeros_like(w_hat)), 0.0
    if mode == "adpo_pl":  # Σ over positions with a lower one: 1[j ∈ R_i]/|R_i| − δ_ij
        grad, loss = torch.zeros(B, G, dtype=A.dtype), 0.0
        for b in range(B):
            for i in range(G):
                if not (A[b] < A[b, i]).any():
                    continue
                risk = A[b] <= A[b, i]
                grad[b] += risk.double() / risk.sum()
                grad[b, i] -= 1.0
                loss += float(torch.log(risk.sum().double()))
        return -grad / tau, loss / B
    if mode == "adpo_listwise":
        q = torch.softmax(z / beta, -1)
    else:
        top = A == A.amax(-1, keepdim=True)
        q = top.double() / top.sum(-1, keepdim=True)
    return (q - 1.0 / G) / tau, float(np.log(G))  # cross-entropy with softmax(0) = 1/G


@pytest.mark.parametrize("mode", MODES)
def test_estimator_gives_each_response_its_closed_form_weight_in_any_row_order(mode):
    """Through verl's own ``compute_advantage`` on a batch whose rows were permuted: each
    response gets ``−∂L_b/∂s_i`` (ADPO) or ``ω̂_i`` (OPO) of its own group, broadcast over
    its tokens; ``returns`` carry the group loss at the anchor on every token."""
    from verl.trainer.ppo.ray_trainer import compute_advantage

    B, G = 4, 4
    rewards = torch.tensor(
        [[1.0, 0.0, 1.0, 0.5], [0.0, 0.25, 0.5, 1.0], [0.2, 0.2, 0.2, 0.2], [0.0, 1.0, 0.0, 0.0]],
        dtype=torch.float64,
    )
    data, (_, _, adv, _, _) = verl_proto(B, G, seed=13, rewards=rewards)
    perm = torch.randperm(B * G, generator=torch.Generator().manual_seed(0))
    data.reorder(perm)
    cfg = weights_config(mode)
    out = compute_advantage(data, adv_estimator=W, config=cfg.algorithm)
    expected, loss = _closed_form_weights(mode, adv[:, 0].view(B, G))
    got = out.batch["advantages"]  # (bs, T), rows in the permuted order
    m = out.batch["response_mask"].bool()
    want = expected.reshape(-1)[perm][:, None].expand_as(got)
    torch.testing.assert_close(got[m], want[m], rtol=1e-9, atol=1e-12)
    assert (got[~m] == 0).all()
    returns = out.batch["returns"][m]
    torch.testing.assert_close(returns, torch.full_like(returns, loss), rtol=1e-12, atol=1e-12)
    assert expected.abs().max() > 0.1  # not a test of zeros


@pytest.mark.parametrize("mode", ["adpo_listwise", "orthogonalized_po"])
def test_estimator_follows_norm_adv_by_std_in_grpo(mode):
    """With ``algorithm.norm_adv_by_std_in_grpo=false`` the whole-group mode ranks Dr.GRPO's
    centred advantages; the estimator starts from the same numbers, so the weights equal
    the whole-group gradient to 1e-9, and differ (by GRPO's eps) from the normalised ones."""
    from verl.trainer.ppo.ray_trainer import compute_advantage

    B, G = 3, 4
    data, (old, new, _, mask, _) = verl_proto(B, G, seed=14)
    if mode != "orthogonalized_po":
        new = old.clone().requires_grad_()
    index = data.non_tensor_batch["uid"]
    centred, _ = compute_grpo_outcome_advantage(
        data.batch["token_level_rewards"], mask, index, norm_adv_by_std_in_grpo=False
    )
    whole, _ = call(mode, old, new, centred, mask, actor_config(G, loss_mode=mode))
    (g_whole,) = torch.autograd.grad(whole, new)
    per_cfg = actor_config(G, loss_mode=mode, adv_estimator=W)
    grads = {}
    for norm in ("true", "false"):
        cfg = weights_config(mode, f"algorithm.norm_adv_by_std_in_grpo={norm}")
        a = compute_advantage(data, adv_estimator=W, config=cfg.algorithm).batch["advantages"]
        loss, _ = call(mode, old, new, a.clone(), mask, per_cfg)
        (grads[norm],) = torch.autograd.grad(loss, new)
    torch.testing.assert_close(grads["false"], g_whole, rtol=1e-9, atol=1e-12)
    assert (grads["true"] - g_whole).abs().max() > 1e-9


def test_top1_and_pl_ties_survive_the_token_broadcast():
    """Whole-group mode: the two best responses tie; one has 7 tokens, where the mean of 7
    copies of its advantage differs from it in the last bit. The loss must read the
    tie, not that rounding: top-1 target q = (1/2, 0, 1/2, 0)."""
    G, T, tau = 4, 7, 0.8
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.5]], dtype=torch.float64)
    lengths = torch.tensor([7, 3, 2, 5])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()  # (4, 7)
    token_rewards = torch.zeros(G, T, dtype=torch.float64)
    token_rewards[torch.arange(G), lengths - 1] = rewards[0]
    adv, _ = compute_grpo_outcome_advantage(token_rewards, mask, np.array(["u"] * G, dtype=object))
    x = adv[0, 0]
    assert (x.repeat(7).sum() / 7) != x  # the rounding this test is about
    old = -torch.rand(G, T, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    new = old.clone().requires_grad_()
    for mode in ("adpo_top1", "adpo_pl"):
        loss, _ = call(mode, old, new, adv, mask, actor_config(G, loss_mode=mode, tau=tau))
        (grad,) = torch.autograd.grad(loss, new)
        expected, _ = _closed_form_weights(mode, adv[:, 0].view(1, G), tau=tau)
        torch.testing.assert_close(grad, (-expected.reshape(-1, 1)) * mask, rtol=1e-9, atol=1e-12)


def test_adpo_weights_are_the_gradient_only_at_the_anchor():
    """Why ADPO's per-response mode is refused for several steps per batch: once πθ has
    moved (Δ ≠ 0) the weights taken at Δ = 0 no longer give the whole-group gradient; OPO's
    ω̂ do (the rows-split test runs OPO at Δ ≠ 0)."""
    from verl.trainer.ppo.ray_trainer import compute_advantage

    B, G = 3, 4
    data, (old, new, adv, mask, _) = verl_proto(B, G, seed=15)  # new = old + noise
    whole, _ = call("adpo_pl", old, new, adv, mask, actor_config(G, loss_mode="adpo_pl"))
    (g_whole,) = torch.autograd.grad(whole, new)
    cfg = weights_config("adpo_pl")
    a = compute_advantage(data, adv_estimator=W, config=cfg.algorithm).batch["advantages"]
    per, metrics = call(
        "adpo_pl", old, new, a, mask, actor_config(G, loss_mode="adpo_pl", adv_estimator=W)
    )
    (g_per,) = torch.autograd.grad(per, new)
    assert (g_per - g_whole).abs().max() > 1e-2 * g_whole.abs().max()
    assert metrics["actor/adpo/delta_abs_max"] > 0.1  # the metric that shows it in a run


# ------------------------------------------------------------------------ seq_reduction
def _two_responses():
    """One prompt, G = 2: response 0 has 3 tokens with log-ratios (−0.5, −1.0, −1.5), response
    1 one token with −0.2 (the rest is padding holding garbage); rewards (1, 0)."""
    old = torch.tensor([[-1.0, -2.0, -1.0], [-0.7, 9.0, 9.0]], dtype=torch.float64)
    ratio = torch.tensor([[-0.5, -1.0, -1.5], [-0.2, 5.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([[0.7071], [-0.7071]], dtype=torch.float64) * mask  # GRPO of (1, 0)
    return old, (old + ratio).requires_grad_(), adv, mask


@pytest.mark.parametrize("how, delta", [("sum", (-3.0, -0.2)), ("mean", (-1.0, -0.2))])
def test_seq_reduction_changes_the_score_as_the_closed_form_says(how, delta):
    """ADPO, G = 2, softmax target: L = −q₀ log σ(d) − q₁ log σ(−d), d = (Δ₀ − Δ₁)/τ, with
    Δ the summed or the token-mean log-ratio; OPO: mean_i(−ω̂_i Δ_i + μ/2 Δ_i²), ω̂ = ±1/√2."""
    import math

    old, new, adv, mask = _two_responses()
    tau, beta, mu = 0.8, 0.5, 2.0
    z = 1 / math.sqrt(2)  # the group z-score of rewards (1, 0)
    q0 = 1 / (1 + math.exp(-2 * z / beta))
    d = (delta[0] - delta[1]) / tau
    sig = 1 / (1 + math.exp(-d))
    expected = -q0 * math.log(sig) - (1 - q0) * math.log(1 - sig)
    cfg = actor_config(2, loss_mode="adpo_listwise", tau=tau, beta=beta, seq_reduction=how)
    loss, _ = call("adpo_listwise", old, new, adv, mask, cfg)
    assert float(loss) == pytest.approx(expected, rel=1e-5)

    cfg = actor_config(2, loss_mode="orthogonalized_po", mu=mu, seq_reduction=how)
    loss, _ = call("orthogonalized_po", old, new, adv, mask, cfg)
    opo = sum(-w * x + mu / 2 * x * x for w, x in zip((z, -z), delta, strict=True)) / 2
    assert float(loss) == pytest.approx(opo, rel=1e-5)


def test_seq_reduction_in_the_per_response_loss_divides_each_weight_by_its_length():
    """Per response: ∂(−Σ a_i Δ_i)/∂log πθ(y_i,t) = −a_i (sum) or −a_i/n_i (mean), times 1/B."""
    old, new, _, mask = _two_responses()
    a = torch.tensor([[0.3], [-0.3]], dtype=torch.float64) * mask
    grads = {}
    for how in ("sum", "mean"):
        cfg = actor_config(2, loss_mode="adpo_pl", adv_estimator=W, seq_reduction=how)
        loss, _ = call("adpo_pl", old, new, a, mask, cfg)
        (grads[how],) = torch.autograd.grad(loss, new)
    torch.testing.assert_close(grads["sum"], -a, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(
        grads["mean"], -a / mask.sum(-1, keepdim=True), rtol=1e-12, atol=1e-15
    )


def test_seq_reduction_from_yaml_reaches_the_loss_and_is_checked():
    old, new, adv, mask = _two_responses()
    over = [
        "++actor_rollout_ref.actor.policy_loss.seq_reduction=mean",
        "actor_rollout_ref.rollout.n=2",
    ]
    cfg = compose_config(EXAMPLES / "adpo_listwise.yaml", over)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert actor.policy_loss.seq_reduction == "mean"
    loss, _ = call("adpo_listwise", old, new, adv, mask, actor)
    ref, _ = call(
        "adpo_listwise", old, new, adv, mask,
        actor_config(2, loss_mode="adpo_listwise", seq_reduction="mean"),
    )  # fmt: skip
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="`seq_reduction` must be one of"):
        av.AdpoPolicyLossConfig(seq_reduction="max")


# ------------------------------------------- the per-response mode: what it allows, refuses
SPLITTING = ["trainer.balance_batch=true", f"{A}.shuffle=true", f"{A}.use_dynamic_bsz=true"]
MICRO_2 = f"{A}.ppo_micro_batch_size_per_gpu=2"  # half a group of 4


@pytest.mark.parametrize("mode", MODES)
def test_per_response_mode_allows_what_splits_groups(mode):
    for splitting in (SPLITTING, [MICRO_2, "trainer.balance_batch=true", f"{A}.shuffle=true"]):
        cfg = weights_config(mode, *splitting)
        assert problems(cfg) == []
        assert omega_conf_to_dataclass(cfg.actor_rollout_ref.actor).policy_loss.per_response
        # the same settings on GRPO advantages: each refused, naming the way out
        cfg = compose_config(EXAMPLES / "smoke_tiny_arithmetic.yaml", splitting)
        found = dict(problems(cfg))
        assert set(found) == {k.split("=")[0] for k in splitting}
        assert all(W in why for why in found.values())


PER_RESPONSE_BAD = [
    ("adpo_pl", [f"{A}.ppo_epochs=2"], f"{A}.ppo_epochs"),
    ("adpo_top1", [f"{A}.ppo_mini_batch_size=8"], f"{A}.ppo_mini_batch_size"),
    (
        "adpo_listwise",
        ["++algorithm.rollout_correction.bypass_mode=true"],
        "algorithm.rollout_correction.bypass_mode",
    ),
    (
        "orthogonalized_po",
        [f"++{A}.policy_loss.ref_correction=sequence"],
        f"{A}.policy_loss.ref_correction",
    ),
    ("adpo_pl", ["critic.enable=true"], "critic.enable"),
    ("adpo_pl", [f"++{A}.policy_loss.adv_estimator=grpo"], f"{A}.policy_loss.adv_estimator"),
    ("orthogonalized_po", ["trainer.use_v1=true"], "trainer.use_v1"),
    # verl cuts a rank's 64 responses into equal micro-batches (dynamic batching aside)
    ("adpo_pl", [f"{A}.ppo_micro_batch_size_per_gpu=3"], f"{A}.ppo_micro_batch_size_per_gpu"),
]


@pytest.mark.parametrize(
    "mode, overrides, key", PER_RESPONSE_BAD, ids=[k for *_, k in PER_RESPONSE_BAD]
)
def test_per_response_mode_refuses_what_it_cannot_make_exact(mode, overrides, key):
    cfg = compose_config(
        EXAMPLES / "smoke_tiny_arithmetic.yaml",
        [f"{A}.policy_loss.loss_mode={mode}", f"algorithm.adv_estimator={W}", *overrides],
    )
    sync_adv_estimator(cfg)
    found = problems(cfg)
    assert [k for k, _ in found] == [key], found


def test_opo_per_response_is_exact_for_several_steps_per_batch():
    """OPO's terms are per response given ω̂: several epochs and mini-batches are allowed."""
    cfg = weights_config(
        "orthogonalized_po", f"{A}.ppo_epochs=2", f"{A}.ppo_mini_batch_size=8", *SPLITTING
    )
    assert problems(cfg) == []


def test_launcher_copies_the_estimator_into_the_loss_config(capsys):
    over = [f"algorithm.adv_estimator={W}", "trainer.balance_batch=true"]
    cfg = compose_config(EXAMPLES / "smoke_tiny_arithmetic.yaml", over)
    assert {k for k, _ in problems(cfg)} == {f"{A}.policy_loss.adv_estimator"}
    sync_adv_estimator(cfg)
    assert cfg.actor_rollout_ref.actor.policy_loss.adv_estimator == W and problems(cfg) == []
    assert main(["--config", str(EXAMPLES / "smoke_tiny_arithmetic.yaml"), "--check", *over]) == 0
    out = capsys.readouterr().out
    assert f"weights per response from {W}" in out and "seq_reduction='sum'" in out
    # verl's own losses are left alone; an explicit interpolation stays as written
    grpo = compose_config(EXAMPLES / "grpo.yaml")
    sync_adv_estimator(grpo)
    assert "adv_estimator" not in grpo.actor_rollout_ref.actor.policy_loss
    interp = compose_config(
        EXAMPLES / "smoke_tiny_arithmetic.yaml",
        [*over, f"++{A}.policy_loss.adv_estimator=${{algorithm.adv_estimator}}"],
    )
    sync_adv_estimator(interp)
    assert problems(interp) == []


def test_estimator_refuses_a_config_the_loss_would_misread():
    """Run through verl's ``compute_advantage`` without the launcher: the estimator reads
    the run config and refuses before any update; it needs that config to find the loss."""
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.ray_trainer import compute_advantage

    data, _ = verl_proto(2, 4, seed=16)
    raw = compose_config(EXAMPLES / "smoke_tiny_arithmetic.yaml", [f"algorithm.adv_estimator={W}"])
    with pytest.raises(av.VerlGroupConfigError, match=r"policy_loss\.adv_estimator"):
        compute_advantage(data, adv_estimator=W, config=raw.algorithm)
    adpo_two_steps = weights_config("adpo_pl", f"{A}.ppo_epochs=2")
    with pytest.raises(av.VerlGroupConfigError, match=f"{A}.ppo_epochs"):
        compute_advantage(data, adv_estimator=W, config=adpo_two_steps.algorithm)
    with pytest.raises(ValueError, match="needs the run's config"):
        compute_advantage(data, adv_estimator=W, config=AlgoConfig(adv_estimator=W))


def test_per_response_loss_at_run_time():
    """It takes any rows (no group-size multiple, actor shuffle/dynamic flags on), refuses
    ADPO over several epochs and advantages that vary along a response, and an empty
    micro-batch contributes a zero that is still part of the graph."""
    old, new, adv, mask, _ = verl_batch(2, 4, seed=17)
    cfg = ActorConfig(
        strategy="fsdp",
        rollout_n=4,
        shuffle=True,
        use_dynamic_bsz=True,
        ppo_max_token_len_per_gpu=64,
        policy_loss=av.AdpoPolicyLossConfig(loss_mode="adpo_pl", adv_estimator=W),
    )
    loss, metrics = call("adpo_pl", old[:3], new[:3], adv[:3], mask[:3], cfg)
    assert metrics["actor/adpo/responses"] == 3 and loss.requires_grad
    empty, _ = call("adpo_pl", old[:0], new[:0], adv[:0], mask[:0], cfg)
    assert float(empty.detach()) == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match=f"token-broadcast as the {W} estimator"):
        call("adpo_pl", old, new, adv + torch.randn_like(adv) * mask, mask, cfg)

    def two_epochs(mode):
        loss_cfg = av.AdpoPolicyLossConfig(loss_mode=mode, adv_estimator=W)
        return ActorConfig(
            strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=4, ppo_epochs=2,
            policy_loss=loss_cfg,
        )  # fmt: skip

    with pytest.raises(ValueError, match="ppo_epochs=2"):
        call("adpo_pl", old, new, adv, mask, two_epochs("adpo_pl"))
    # OPO's terms are per response given ω̂: exact at any step, allowed
    call("orthogonalized_po", old, new, adv, mask, two_epochs("orthogonalized_po"))
