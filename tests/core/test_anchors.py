"""Anchor strategies: what each one holds after training steps and refreshes."""

import pytest
import torch
from torch import nn

from adpo.anchors import (
    AnchorConfig,
    EMAAnchor,
    FixedAnchor,
    OnPolicyAnchor,
    SelfAnchor,
    make_anchor,
)


def policy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4))


def logps(module, x):
    return torch.log_softmax(module(x), -1)


X = torch.randn(5, 3)


def sgd_step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    logps(model, X)[:, 0].sum().backward()
    opt.step()
    opt.zero_grad()


def test_self_anchor_stays_at_initialisation():
    model = policy()
    before = logps(model, X).detach()
    anchor = SelfAnchor(model)
    sgd_step(model)
    anchor.refresh(model)  # no-op
    assert not torch.allclose(logps(model, X), before)
    torch.testing.assert_close(anchor.anchor_logps(logps, X), before)


def test_on_policy_anchor_snapshots_on_refresh_and_is_shared_within_a_round():
    model = policy()
    anchor = OnPolicyAnchor()
    anchor.refresh(model)
    round_start = logps(model, X).detach()
    for _ in range(3):  # three mini-batches of one round: the anchor does not move
        torch.testing.assert_close(anchor.anchor_logps(logps, X), round_start)
        sgd_step(model)
    anchor.refresh(model)  # next round
    torch.testing.assert_close(anchor.anchor_logps(logps, X), logps(model, X).detach())


def test_on_policy_every_n_is_the_dynamic_anchor():
    model = policy()
    anchor = OnPolicyAnchor(every=3)
    anchor.refresh(model)  # call 0: snapshot
    snap0 = logps(model, X).detach()
    for _ in range(2):  # calls 1, 2: keep
        sgd_step(model)
        anchor.refresh(model)
        torch.testing.assert_close(anchor.anchor_logps(logps, X), snap0)
    sgd_step(model)
    anchor.refresh(model)  # call 3: re-snapshot
    torch.testing.assert_close(anchor.anchor_logps(logps, X), logps(model, X).detach())


def test_ema_anchor_update_matches_the_formula():
    model = policy()
    anchor = EMAAnchor(model, decay=0.9)
    old = [p.detach().clone() for p in anchor.module.parameters()]
    sgd_step(model)
    anchor.refresh(model)
    for a, o, p in zip(anchor.module.parameters(), old, model.parameters(), strict=True):
        torch.testing.assert_close(a, 0.9 * o + 0.1 * p.detach())


def test_fixed_anchor_never_moves_and_anchor_has_no_grad():
    ref = policy()
    anchor = FixedAnchor(ref)
    out = anchor.anchor_logps(logps, X)
    assert not out.requires_grad
    assert all(not p.requires_grad for p in ref.parameters())
    anchor.refresh(policy())
    torch.testing.assert_close(anchor.anchor_logps(logps, X), out)


def test_anchor_restores_train_mode_and_is_independent_of_the_policy():
    model = policy()
    anchor = SelfAnchor(model)
    assert anchor.module is not model
    anchor.module.train()
    anchor.anchor_logps(logps, X)
    assert anchor.module.training


def test_make_anchor_and_config_checks():
    model = policy()
    assert isinstance(make_anchor("self", model), SelfAnchor)
    assert isinstance(make_anchor(AnchorConfig(kind="ema", ema_decay=0.5), model), EMAAnchor)
    assert isinstance(make_anchor("fixed", model, ref_model=policy()), FixedAnchor)
    on = make_anchor(AnchorConfig(kind="on_policy", refresh_every=2), model)
    assert isinstance(on, OnPolicyAnchor) and on.module is not None
    with pytest.raises(ValueError, match="ref_model"):
        make_anchor("fixed", model)
    with pytest.raises(ValueError, match="kind"):
        AnchorConfig(kind="bogus")
    with pytest.raises(ValueError, match="ema_decay"):
        AnchorConfig(kind="ema", ema_decay=1.0)
    with pytest.raises(ValueError, match="every"):
        OnPolicyAnchor(every=0)
    with pytest.raises(RuntimeError, match="refresh"):
        OnPolicyAnchor().anchor_logps(logps, X)


def test_state_dict_round_trip():
    model = policy()
    anchor = OnPolicyAnchor(every=2)
    anchor.refresh(model)
    sgd_step(model)
    anchor.refresh(model)
    state = anchor.state_dict()
    other = OnPolicyAnchor(every=2)
    other.refresh(policy())
    other.load_state_dict(state)
    assert other.calls == anchor.calls
    torch.testing.assert_close(other.anchor_logps(logps, X), anchor.anchor_logps(logps, X))


def test_anchor_vocabulary_and_deprecated_spellings():
    import warnings

    from adpo.anchors import ANCHOR_KINDS, canonical_anchor

    assert ANCHOR_KINDS == ("fixed", "self", "ema", "on_policy", "precomputed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # canonical names never warn
        assert [canonical_anchor(k) for k in ANCHOR_KINDS] == list(ANCHOR_KINDS)
    with pytest.warns(DeprecationWarning, match="'dynamic'.*'on_policy'"):
        assert canonical_anchor("dynamic") == "on_policy"
    with pytest.warns(DeprecationWarning, match="'teacher'.*'fixed'"):
        cfg = AnchorConfig(kind="teacher")
    assert cfg.kind == "fixed"
    with pytest.warns(DeprecationWarning):
        on = make_anchor(AnchorConfig(kind="dynamic", refresh_every=3), policy())
    assert isinstance(on, OnPolicyAnchor) and on.every == 3
    assert make_anchor("precomputed", policy()) is None
    with pytest.raises(ValueError, match="refresh_every"):
        AnchorConfig(refresh_every=True)
