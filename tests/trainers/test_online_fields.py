"""Options ADPOConfig and OPOConfig share (and ADPO's own), pinned on both trainers.

A config-field mutant (``../shared/tools/field-mutants``) makes the library read one field's
default on one config class; each test here fails for such a library. Everything runs on
a 1-layer, 32-wide Qwen3 with a character tokenizer (no download).
"""

from __future__ import annotations

import copy

import pytest
import torch

from adpo.losses import adpo_loss, opo_loss
from adpo.trainers import ADPOConfig, ADPOTrainer, OPOConfig, OPOTrainer

from ._tiny_setup import base_args, tiny_setup
from .test_online_trainer import (
    _fixed_batch,
    _graded,
    _hand_logps,
    _logps_under,
    _masked_close,
    _RoundWeights,
)

KINDS = ["adpo", "opo"]


def _classes(kind):
    if kind == "adpo":

        class Recorded(_RoundWeights, ADPOTrainer):
            pass

        return ADPOConfig, Recorded
    else:

        class Recorded(_RoundWeights, OPOTrainer):
            pass

        return OPOConfig, Recorded


def _make(kind, out, reward=_graded, **kw):
    Cfg, Tr = _classes(kind)
    tok, model, ds = tiny_setup()
    extra = {k: kw.pop(k) for k in list(kw) if k not in base_args(str(out))}
    args = Cfg(**base_args(str(out), **kw), **extra)
    return Tr(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok)


# ----------------------------------------------------------------------------- accuracy


def _format(completions, **kw):
    """A second reward: 1 for a completion of digits only, else 0.4 (never the first's)."""
    return [1.0 if c.strip().isdigit() else 0.4 for c in completions]


def _exact(completions, answer, **kw):
    return [float(c.strip() == a) for c, a in zip(completions, answer, strict=True)]


@pytest.mark.parametrize("kind", KINDS)
def test_accuracy_counts_the_named_reward_against_the_threshold(tmp_path, kind):
    tr = _make(kind, tmp_path, reward=[_exact, _format], max_steps=1,
                           accuracy_reward="_format", accuracy_threshold=0.3)  # fmt: skip
    tr.train()
    log = tr.state.log_history[0]
    assert log["accuracy"] == 1.0  # every completion scores ≥ 0.3 on `_format`
    tr = _make(kind, tmp_path / "b", reward=[_exact, _format], max_steps=1,
                           accuracy_reward="_format", accuracy_threshold=0.9)  # fmt: skip
    tr.train()
    share = tr.state.log_history[0]["rewards/_format/mean"]  # 0.4 + 0.6·share of digit-only
    assert tr.state.log_history[0]["accuracy"] == pytest.approx((share - 0.4) / 0.6, abs=1e-6)
    assert tr.state.log_history[0]["accuracy"] < 1.0


# ----------------------------------------------------------------------------- reward guard


def _raises_once(completions, **kw):
    if len(completions) > 1:
        raise RuntimeError("reward checker crashed")
    return [0.0]


@pytest.mark.parametrize("kind", KINDS)
def test_unguarded_rewards_raise_as_in_trl(tmp_path, kind):
    """guard_rewards=False: the user's own error handling; a crash stops the run (TRL's way)."""
    tr = _make(kind, tmp_path, reward=_raises_once, max_steps=1, guard_rewards=False)
    with pytest.raises(RuntimeError, match="reward checker crashed"):
        tr.train()
    tr = _make(kind, tmp_path / "b", reward=_raises_once, max_steps=1)
    tr.train()  # guarded (the default): every sample retried alone, scored 0.0
    assert tr.state.log_history[0]["rewards/_raises_once/failures"] == 0


# ----------------------------------------------------------------------------- anchors


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("anchor", ["fixed", "self"])
def test_fixed_and_self_anchors_are_the_initial_policy_on_both_trainers(tmp_path, kind, anchor):
    tr = _make(kind, tmp_path, anchor=anchor, max_steps=2, learning_rate=3e-2,
                           steps_per_generation=2)  # fmt: skip
    tok, init = tr.processing_class, copy.deepcopy(tr.model.state_dict())
    tr.train()
    for mb in tr.micro_batches:
        assert _masked_close(mb["anchor_per_token_logps"], _logps_under(init, tok, mb),
                             mb["completion_mask"])  # fmt: skip
    assert "kl_to_init" not in set().union(*tr.state.log_history)  # log_kl_to_init off


@pytest.mark.parametrize("kind", KINDS)
def test_ema_anchor_decay_on_both_trainers(tmp_path, kind):
    tr = _make(kind, tmp_path, anchor="ema", anchor_ema_decay=0.25, max_steps=2,
                           learning_rate=3e-2)  # fmt: skip
    tok, init = tr.processing_class, copy.deepcopy(tr.model.state_dict())
    tr.train()
    ema = init
    for r, start in enumerate(tr.round_start):
        ema = {k: (0.25 * ema[k] + 0.75 * start[k]) if start[k].is_floating_point() else start[k]
               for k in ema}  # fmt: skip
        for mb in (m for m in tr.micro_batches if m["round"] == r):
            assert _masked_close(mb["anchor_per_token_logps"], _logps_under(ema, tok, mb),
                                 mb["completion_mask"])  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_kl_to_init_is_measured_against_the_initial_policy(tmp_path, kind):
    tr = _make(kind, tmp_path, log_kl_to_init=True, max_steps=2,
                           learning_rate=3e-2)  # fmt: skip
    tok, init = tr.processing_class, copy.deepcopy(tr.model.state_dict())
    tr.train()
    last = tr.micro_batches[-1]
    init_lp = _logps_under(init, tok, last)
    assert _masked_close(last["init_per_token_logps"], init_lp, last["completion_mask"])
    m = last["completion_mask"].bool()
    d = init_lp - _logps_under(last["weights"], tok, last)
    k3 = float(((d.exp() - d - 1) * m).sum() / m.sum())
    assert tr.state.log_history[-2]["kl_to_init"] == pytest.approx(k3, rel=1e-3, abs=1e-7)
    assert k3 > 0


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("kind", KINDS)
def test_resume_without_adpo_state_on_both_trainers(tmp_path, kind):
    import os

    kw = dict(max_steps=2, save_strategy="steps", save_steps=1)
    _make(kind, tmp_path / "a", **kw).train()
    ckpt = tmp_path / "a" / "checkpoint-1"
    os.remove(ckpt / "adpo_trainer_state_rank0.pt")
    with pytest.raises(ValueError, match="is missing"):
        _make(kind, tmp_path / "b", **kw).train(resume_from_checkpoint=str(ckpt))
    tr = _make(kind, tmp_path / "c", resume_without_adpo_state=True, **kw)
    with pytest.warns(UserWarning, match="resuming without"):
        tr.train(resume_from_checkpoint=str(ckpt))


# ----------------------------------------------------------------------------- loss options


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_adpo_trainer_ties_reach_the_loss(tmp_path, ties):
    tr = _make("adpo", tmp_path, tau_schedule="constant", ties=ties)
    tr.current_gradient_accumulation_steps = 1
    tok, model = tr.processing_class, tr.model
    inputs = _fixed_batch(tok)  # rewards with ties: (0, 0) in group 0, (1, 1) in group 1
    with torch.no_grad():
        loss = tr.compute_loss(tr.model, inputs)
        B, G = 2, 4
        mask = inputs["completion_mask"].bool().view(B, G, -1)
        lp = _hand_logps(model, inputs).view(B, G, -1)
        r = inputs["rewards"].view(B, G)
        want = adpo_loss(lp, lp, r, target="plackett_luce", tau=0.8, mask=mask, ties=ties)
        other = adpo_loss(lp, lp, r, target="plackett_luce", tau=0.8, mask=mask,
                          ties="efron" if ties == "breslow" else "breslow")  # fmt: skip
    torch.testing.assert_close(loss, want.loss, rtol=1e-5, atol=1e-6)
    assert abs(want.loss.item() - other.loss.item()) > 1e-3


@pytest.mark.parametrize(
    ("ratio", "weight_norm", "ref_correction"),
    [("log", "group", "none"), ("exact", "center", "sequence"), ("log", "none", "token_mean")],
)
def test_opo_trainer_options_reach_the_loss(tmp_path, ratio, weight_norm, ref_correction):
    tr = _make("opo", tmp_path, ratio=ratio, weight_norm=weight_norm,
                           ref_correction=ref_correction, alpha=0.2, mu=3.0)  # fmt: skip
    tr.current_gradient_accumulation_steps = 1
    tok, model = tr.processing_class, tr.model
    inputs = _fixed_batch(tok)
    mask = inputs["completion_mask"].bool()
    with torch.no_grad():
        anchor = _hand_logps(model, inputs) + 0.3 * torch.randn(mask.shape)
    inputs["anchor_per_token_logps"] = anchor
    with torch.no_grad():
        loss = tr.compute_loss(tr.model, inputs)
        B, G, T = 2, 4, mask.shape[1]
        args = (_hand_logps(model, inputs).view(B, G, T), anchor.view(B, G, T),
                inputs["rewards"].view(B, G))  # fmt: skip
        kw = dict(alpha=0.2, mu=3.0, mask=mask.view(B, G, T), ratio=ratio,
                  weight_norm=weight_norm, ref_correction=ref_correction)  # fmt: skip
        want = opo_loss(*args, **kw).loss
        defaults = opo_loss(*args, alpha=0.2, mu=3.0, mask=mask.view(B, G, T)).loss
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    if (ratio, weight_norm, ref_correction) != ("log", "group", "none"):
        assert abs(want.item() - defaults.item()) > 1e-4  # the options changed the loss


@pytest.mark.parametrize("kind", KINDS)
def test_seq_reduction_mean_reaches_the_loss(tmp_path, kind):
    """A completion's score is its token-mean log-ratio: the loss by hand with
    ``seq_reduction="mean"``, and not the summed one."""
    tr = _make(kind, tmp_path, seq_reduction="mean",
               **({"tau_schedule": "constant"} if kind == "adpo" else {}))  # fmt: skip
    tr.current_gradient_accumulation_steps = 1
    tok, model = tr.processing_class, tr.model
    inputs = _fixed_batch(tok)  # completions of 1 to 4 tokens
    mask = inputs["completion_mask"].bool()
    with torch.no_grad():
        anchor = _hand_logps(model, inputs) + 0.3 * torch.randn(mask.shape)
    inputs["anchor_per_token_logps"] = anchor
    B, G, T = 2, 4, mask.shape[1]
    with torch.no_grad():
        loss = tr.compute_loss(tr.model, inputs)
        args = (_hand_logps(model, inputs).view(B, G, T), anchor.view(B, G, T),
                inputs["rewards"].view(B, G))  # fmt: skip
        fn, kw = (adpo_loss, {"target": "plackett_luce", "tau": 0.8}) if kind == "adpo" else (
            opo_loss, {})  # fmt: skip
        mean = fn(*args, mask=mask.view(B, G, T), seq_reduction="mean", **kw).loss
        summed = fn(*args, mask=mask.view(B, G, T), **kw).loss
    torch.testing.assert_close(loss, mean, rtol=1e-5, atol=1e-6)
    assert abs(mean.item() - summed.item()) > 1e-3
