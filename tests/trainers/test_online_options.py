"""ADPO/OPO trainer options that must do what their docs say (issue 22's findings 2–15).

Each test fails against a library that ignores the option or behaves as before the fix.
Everything runs on a 1-layer, 32-wide Qwen3 with a character tokenizer (no download).
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from adpo.losses import adpo_loss, escort_weights, group_advantages, opo_loss
from adpo.trainers import ADPOConfig, ADPOTrainer, OPOConfig, OPOTrainer

from ._tiny_setup import base_args, tiny_setup
from .test_online_trainer import _graded, _hand_logps, _model_with, _RoundWeights


class RecordedADPO(_RoundWeights, ADPOTrainer):
    pass


class RecordedOPO(_RoundWeights, OPOTrainer):
    pass


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("anchor", ["fixed", "ema"])
def test_evaluation_computes_the_anchor_as_training_does(tmp_path, anchor):
    """Finding 2: evaluation fell back to the current policy, so eval_loss was log G and every
    eval_delta 0 after training with a fixed anchor."""
    tok, model, ds = tiny_setup()
    init = copy.deepcopy(model)
    args = ADPOConfig(
        **base_args(str(tmp_path), max_steps=3, learning_rate=3e-2, per_device_eval_batch_size=8),
        target="softmax",
        tau_schedule="constant",
        anchor=anchor,
        anchor_ema_decay=0.0 if anchor == "ema" else 0.99,  # EMA = the round-start policy
        log_kl_to_init=True,
    )
    tr = RecordedADPO(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                      processing_class=tok)  # fmt: skip
    tr.train()
    n_train = len(tr.micro_batches)
    metrics = tr.evaluate(eval_dataset=ds.select(range(2)))  # one micro-batch of 2 groups
    assert len(tr.micro_batches) == n_train + 1
    mb = tr.micro_batches[n_train]
    ref_model = init if anchor == "fixed" else None
    with torch.no_grad():
        lp = _hand_logps(model, mb)
        if ref_model is not None:
            expected_anchor = _hand_logps(ref_model, mb)
        else:  # EMA with decay 0 holds the policy of the last round's start
            expected_anchor = _hand_logps(_model_with(tr.round_start[-1], tok), mb)
    mask = mb["completion_mask"].bool()
    torch.testing.assert_close(
        mb["anchor_per_token_logps"] * mask, expected_anchor * mask, rtol=1e-5, atol=1e-5
    )
    B, G, T = 2, 4, mask.shape[1]
    ref = adpo_loss(lp.view(B, G, T), expected_anchor.view(B, G, T), mb["rewards"].view(B, G),
                    target="softmax", tau=0.8, beta=0.5, mask=mask.view(B, G, T),
                    valid=mb["reward_valid"].view(B, G))  # fmt: skip
    assert metrics["eval_loss"] == pytest.approx(ref.loss.item(), rel=1e-4)
    assert metrics["eval_loss"] != pytest.approx(math.log(G), rel=1e-3)
    assert metrics["eval_delta_abs_mean"] > 1e-3
    assert metrics["eval_kl_to_init"] > 0


# ----------------------------------------------------------------------------- PEFT


def _trained_adapter_model():
    from peft import LoraConfig, get_peft_model

    tok, model, ds = tiny_setup()
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # an adapter trained before this run: not the identity
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    return tok, peft_model, ds


@pytest.mark.parametrize("option", ["fixed", "self", "kl_to_init"])
def test_peft_initial_policy_is_the_adapter_at_construction_not_the_base_model(tmp_path, option):
    """Finding 3: with a trained adapter, the anchor was the base model (adapters off)."""
    pytest.importorskip("peft")
    tok, model, ds = _trained_adapter_model()
    with torch.no_grad():
        probe = {k: v for k, v in _probe_batch(tok).items()}
        initial = _hand_logps(model, probe)
        with model.disable_adapter():
            base = _hand_logps(model, probe)
    assert (initial - base).abs().max() > 0.05  # the adapter matters
    kw = dict(anchor="on_policy", log_kl_to_init=True) if option == "kl_to_init" else {}
    if option != "kl_to_init":
        kw["anchor"] = option
    args = ADPOConfig(**base_args(str(tmp_path), max_steps=2, learning_rate=3e-2), **kw)
    tr = RecordedADPO(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                      processing_class=tok)  # fmt: skip
    tr.train()
    key = "init_per_token_logps" if option == "kl_to_init" else "anchor_per_token_logps"
    for mb in tr.micro_batches:
        with torch.no_grad():
            peft_model = tr.accelerator.unwrap_model(tr.model)
            with peft_model.disable_adapter():
                base_mb = _hand_logps(peft_model, mb)
        # the reference is the adapter as it was: recompute it from a copy of the start state
        mask = mb["completion_mask"].bool()
        got = mb[key]
        assert ((got - base_mb).abs() * mask).max() > 0.05  # not the bare base model
    # the snapshot is frozen and training moved the user's adapter, not the copy
    names = dict(tr.model.named_parameters())
    assert all(not p.requires_grad for n, p in names.items() if ".ref." in n)
    moved = [n for n, p in names.items() if ".default." in n and p.requires_grad]
    assert moved
    with torch.no_grad():
        first = tr.micro_batches[0]
        start = _hand_logps_under_state(tr, tok, first)
    mask = first["completion_mask"].bool()
    torch.testing.assert_close(first[key] * mask, start * mask, rtol=1e-4, atol=1e-4)


def _probe_batch(tok):
    from .test_online_trainer import _fixed_batch

    return _fixed_batch(tok)


def _hand_logps_under_state(tr, tok, mb):
    """Log-probs of ``mb`` under the policy recorded at the first micro-batch (the adapter at
    construction: nothing has updated it yet)."""
    _, model, _ = _trained_adapter_model()
    model.load_state_dict(
        {k: v for k, v in tr.micro_batches[0]["weights"].items() if ".ref." not in k},
        strict=False,
    )
    return _hand_logps(model, mb)


# ----------------------------------------------------------------------------- rewards


def _accuracy(completions, answer, **kw):
    return [float(c.strip() == a) for c, a in zip(completions, answer, strict=True)]


def _crashes_on_first(completions, **kw):
    """A second reward function whose checker crashes on the first completion of the round."""
    if len(completions) > 1:
        raise RuntimeError("checker crashed")  # the guard retries sample by sample
    _crashes_on_first.calls += 1
    if _crashes_on_first.calls % 8 == 1:
        raise RuntimeError("checker crashed")
    return [0.5]


def _abstains_on_first(completions, **kw):
    return [None] + [0.5] * (len(completions) - 1)


@pytest.mark.parametrize(
    ("second", "leaves"), [(_crashes_on_first, True), (_abstains_on_first, False)]
)
def test_a_sample_any_reward_function_failed_on_leaves_its_group(tmp_path, second, leaves):
    """Finding 4: with two functions, a crash in one counted as reward 0 (nansum); now the
    sample leaves its group. A deliberate None (TRL's "does not apply") still abstains."""
    _crashes_on_first.calls = 0
    tok, model, ds = tiny_setup()
    args = ADPOConfig(**base_args(str(tmp_path), max_steps=1, shuffle_dataset=False))
    tr = RecordedADPO(model=model, reward_funcs=[_accuracy, second], args=args,
                      train_dataset=ds, processing_class=tok)  # fmt: skip
    tr.train()
    valid = tr.micro_batches[0]["reward_valid"]
    group = tr.micro_batches[0]["group_index"]
    log = tr.state.log_history[0]
    if leaves:
        assert int((~valid).sum()) == 1  # exactly the crashed sample, from its group
        assert log["reward_unscorable_frac"] == pytest.approx(1 / 8)
        assert log[f"rewards/{second.__name__}/failures"] == 1
    else:
        assert bool(valid.all())
        assert log["reward_unscorable_frac"] == 0
    assert group.numel() == 8


# ----------------------------------------------------------------------------- presets


def test_make_trainer_refuses_args_and_ref_model_it_would_ignore(tmp_path):
    """Finding 7: a mismatched config built TRL's default loss or the wrong ADPO target."""
    from adpo.trainers import loss_config, make_trainer

    tok, model, ds = tiny_setup()
    kw = base_args(str(tmp_path))
    with pytest.raises(ValueError, match=r"loss 'grpo' trains with a GRPOConfig, got .*ADPOConfig"):
        make_trainer("grpo", model, _graded, loss_config("adpo", **kw), ds, tok)
    with pytest.raises(ValueError, match=r"\{'target': 'softmax'\}.*not the 'adpo-pl' objective"):
        make_trainer("adpo-pl", model, _graded, loss_config("adpo", **kw), ds, tok)
    with pytest.raises(ValueError, match=r"'loss_type': 'dapo'.*not the 'grpo' objective"):
        make_trainer("grpo", model, _graded, loss_config("dapo", **kw), ds, tok)
    with pytest.raises(ValueError, match="`ref_model` would be ignored by 'grpo'"):
        make_trainer("grpo", model, _graded, loss_config("grpo", **kw), ds, tok,
                     ref_model=copy.deepcopy(model))  # fmt: skip
    # what the presets build passes, overrides of non-identity settings included
    tr = make_trainer("adpo-pl", model, _graded, loss_config("adpo-pl", **kw, tau=0.5), ds, tok)
    assert tr.args.target == "plackett_luce" and tr.args.tau == 0.5


@pytest.mark.parametrize("anchor", ["on_policy", "ema"])
def test_a_ref_model_nothing_uses_is_refused(tmp_path, anchor):
    tok, model, ds = tiny_setup()
    args = ADPOConfig(**base_args(str(tmp_path)), anchor=anchor)
    with pytest.raises(ValueError, match=r"`ref_model` would be ignored.*anchor='(on_policy|ema)'"):
        ADPOTrainer(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                    processing_class=tok, ref_model=copy.deepcopy(model))  # fmt: skip
    # with log_kl_to_init it is the KL reference, and is used
    args = ADPOConfig(**base_args(str(tmp_path), max_steps=1), anchor=anchor, log_kl_to_init=True)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tr = RecordedADPO(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                      processing_class=tok, ref_model=ref)  # fmt: skip
    tr.train()
    mb = tr.micro_batches[0]
    mask = mb["completion_mask"].bool()
    with torch.no_grad():
        expected = _hand_logps(ref, mb)
    torch.testing.assert_close(mb["init_per_token_logps"] * mask, expected * mask,
                               rtol=1e-5, atol=1e-5)  # fmt: skip


# ----------------------------------------------------------------------------- OPO batch norm


def test_opo_batch_weight_norm_spans_the_whole_round(tmp_path):
    """Finding 11: weight_norm='batch' z-scored over one micro-batch (one group by default,
    where it equals 'group'). Now over the round: 4 groups in 4 micro-batches of one group."""
    tok, model, ds = tiny_setup()
    args = OPOConfig(
        **base_args(str(tmp_path), max_steps=1, per_device_train_batch_size=4,
                    gradient_accumulation_steps=4, learning_rate=0.0),
        weight_norm="batch",
    )  # fmt: skip
    tr = RecordedOPO(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                     processing_class=tok)  # fmt: skip
    tr.train()
    mbs = tr.micro_batches
    assert len(mbs) == 4
    r = torch.stack([mb["rewards"] for mb in mbs])  # (4 groups, G)
    v = torch.stack([mb["reward_valid"] for mb in mbs])
    w_round, _ = escort_weights(group_advantages(r, valid=v), v, alpha=0.4, weight_norm="batch")
    for i, mb in enumerate(mbs):
        torch.testing.assert_close(mb["omega_hat"], w_round[i], rtol=1e-5, atol=1e-6)
        one, _ = escort_weights(group_advantages(r[i : i + 1], valid=v[i : i + 1]), v[i : i + 1],
                                alpha=0.4, weight_norm="batch")  # fmt: skip
        lp = _hand_logps(model, mb)  # lr 0: the policy of every micro-batch
        mask = mb["completion_mask"].bool()
        got = opo_loss(lp.view(1, 4, -1), lp.view(1, 4, -1), mb["rewards"].view(1, 4),
                       mask=mask.view(1, 4, -1), omega=mb["omega_hat"].view(1, 4))  # fmt: skip
        assert torch.isfinite(got.loss)
    # the micro-batch-only normalisation differs from the round's: the option changed what ran
    assert not torch.allclose(one, w_round[-1:], atol=1e-3)


# ----------------------------------------------------------------------------- resume


def test_resume_without_adpo_state_is_refused_unless_asked_for(tmp_path):
    """Finding 12: a checkpoint without adpo's state silently restarted τ and the EMA anchor."""

    def make(out, **kw):
        tok, model, ds = tiny_setup()
        args = ADPOConfig(
            **base_args(str(out), max_steps=2, save_strategy="steps", save_steps=1), **kw
        )
        return ADPOTrainer(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                           processing_class=tok)  # fmt: skip

    make(tmp_path / "a").train()
    ckpt = tmp_path / "a" / "checkpoint-1"
    os.remove(ckpt / "adpo_trainer_state_rank0.pt")
    with pytest.raises(
        ValueError, match=r"adpo_trainer_state_rank0\.pt is missing.*resume_without"
    ):
        make(tmp_path / "b").train(resume_from_checkpoint=str(ckpt))
    tr = make(tmp_path / "c", resume_without_adpo_state=True)
    with pytest.warns(UserWarning, match="resuming without"):
        tr.train(resume_from_checkpoint=str(ckpt))
    assert tr.state.global_step == 2


# ----------------------------------------------------------------------------- completions table


def test_logged_completions_show_the_advantage_the_loss_uses(tmp_path):
    """Finding 15: the completions table showed TRL's GRPO advantage, which ADPO never uses."""
    tok, model, ds = tiny_setup()
    args = ADPOConfig(**base_args(str(tmp_path), max_steps=1), log_completions=True)
    tr = RecordedADPO(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                      processing_class=tok)  # fmt: skip
    tr.train()
    logged = torch.tensor(list(tr._logs["advantages"]))
    rewards = torch.tensor([r for r in tr._logs["rewards"]["_graded"]])
    expected = group_advantages(rewards.view(-1, 4)).reshape(-1)  # (r − mean)/(std + 1e-6)
    assert logged.abs().max() > 0.5
    # TRL's own is (r − mean)/(std + 1e-4): 1e-4 relative apart, which this tolerance sees
    torch.testing.assert_close(logged, expected, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- dropout


def test_disable_dropout_also_zeroes_attention_dropout_and_split_groups_warn_without_it(
    tmp_path,
):
    """TRL's helper only finds nn.Dropout layers; Qwen3 hands its attention dropout rate to
    SDPA. With it left on, a split group's pass and the training forward would draw
    different masks, so the trainer warns."""
    from adpo.testing import char_tokenizer, tiny_qwen3

    from ._tiny_setup import tiny_setup as setup

    tok, _, ds = setup()

    def forward_twice(model):
        from .test_online_trainer import _fixed_batch

        model.train()
        batch = _fixed_batch(tok)
        with torch.no_grad():
            return _hand_logps(model, batch), _hand_logps(model, batch)

    model = tiny_qwen3(len(char_tokenizer()), hidden_size=32, num_layers=1, attention_dropout=0.5)
    a, b = forward_twice(model)
    assert not torch.equal(a, b)  # dropout is on
    args = ADPOConfig(**base_args(str(tmp_path)), disable_dropout=True)
    tr = ADPOTrainer(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                     processing_class=tok)  # fmt: skip
    a, b = forward_twice(tr.model)
    assert torch.equal(a, b)

    model = tiny_qwen3(len(char_tokenizer()), hidden_size=32, num_layers=1, attention_dropout=0.5)
    args = ADPOConfig(**base_args(str(tmp_path), per_device_train_batch_size=2,
                                  gradient_accumulation_steps=4))  # fmt: skip
    with pytest.warns(UserWarning, match="split groups and the model has active dropout"):
        ADPOTrainer(model=model, reward_funcs=_graded, args=args, train_dataset=ds,
                    processing_class=tok)  # fmt: skip
