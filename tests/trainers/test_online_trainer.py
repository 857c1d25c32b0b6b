"""ADPO/OPO on TRL: loss parity, whole groups, anchors, resume, bad rewards, every trainer end to end.

Everything runs on a 1-layer, 32-wide Qwen3 with a character tokenizer (no download).
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from adpo.logprobs import causal_lm_logps
from adpo.losses import adpo_loss, opo_loss
from adpo.rewards import arithmetic_reward
from adpo.trainers import (
    ADPOConfig,
    ADPOTrainer,
    OPOConfig,
    OPOTrainer,
    shuffle_groups,
)

from ._tiny_setup import base_args, tiny_setup

# ----------------------------------------------------------------------------- configs


def test_config_takes_any_micro_batch_but_whole_groups_per_optimizer_step(tmp_path):
    """Micro-batches may split groups (issue 24); an optimizer step may not, where a round
    feeds several steps (one step per round, TRL's default, is whole groups by construction)."""
    for cls in (ADPOConfig, OPOConfig):
        for pdtbs, ga in ((1, 4), (2, 2), (3, 4)):  # 3·4 = 12 = three groups of 4
            cls(**base_args(str(tmp_path), per_device_train_batch_size=pdtbs, num_generations=4,
                            gradient_accumulation_steps=ga))  # fmt: skip
        cls(**base_args(str(tmp_path), per_device_train_batch_size=2, num_generations=4,
                        gradient_accumulation_steps=2, steps_per_generation=4))  # fmt: skip
        with pytest.raises(ValueError, match=r"per_device_train_batch_size × gradient_accumulation_"
                           r"steps \(6\) must be a multiple of num_generations \(4\)"):  # fmt: skip
            cls(**base_args(str(tmp_path), per_device_train_batch_size=3, num_generations=4,
                            gradient_accumulation_steps=2, steps_per_generation=4))  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "field", "value", "match"),
    [
        (ADPOConfig, "anchor", "precomputed", "anchor"),
        (ADPOConfig, "anchor_ema_decay", 1.0, "anchor_ema_decay"),
        (ADPOConfig, "target", "pairwise", "target"),
        (ADPOConfig, "tau", 0.0, "tau"),
        (ADPOConfig, "beta", 0.04, "beta"),
        (ADPOConfig, "tau_schedule", "cosine", "tau_schedule"),
        (OPOConfig, "alpha", 1.5, "alpha"),
        (OPOConfig, "mu", -1.0, "mu"),
        (OPOConfig, "weight_norm", "l2", "weight_norm"),
        (OPOConfig, "top_entropy_quantile", 0.2, "top_entropy_quantile"),
    ],
)
def test_config_rejects_bad_values(tmp_path, cls, field, value, match):
    kw = base_args(str(tmp_path))
    if cls is OPOConfig:
        kw.update(num_generations=4, per_device_train_batch_size=8)
    with pytest.raises(ValueError, match=match):
        cls(**{**kw, field: value})


def test_defaults_are_the_papers(tmp_path):
    a = ADPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert (a.target, a.tau, a.target_beta, a.num_generations, a.learning_rate, a.anchor) == (
        "plackett_luce",
        0.8,
        0.5,
        8,
        1.5e-5,
        "on_policy",
    )
    o = OPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert (o.alpha, o.mu, o.num_generations, o.learning_rate) == (0.4, 1.0, 6, 2e-6)


# ----------------------------------------------------------------------------- groups


def _whole_groups(prompt_ids: torch.Tensor, G: int) -> bool:
    """Rows b·G … b·G+G−1 share one prompt and no two groups share a prompt."""
    B = prompt_ids.shape[0] // G
    p = prompt_ids.view(B, G, -1)
    same = bool((p == p[:, :1]).all())
    firsts = {tuple(row.tolist()) for row in p[:, 0]}
    return same and len(firsts) == B


def test_shuffle_groups_keeps_runs_together_and_tensors_aligned():
    G, n_groups = 4, 6
    ids = torch.arange(n_groups).repeat_interleave(G)  # (N,)
    batch = {
        "prompt_ids": ids[:, None].expand(-1, 3).clone(),
        "rows": ids.tolist(),
        "row": torch.arange(n_groups * G),
        "num_items_in_batch": torch.tensor(7),
        "none": None,
    }
    torch.manual_seed(1)
    out = shuffle_groups(batch, G)
    assert _whole_groups(out["prompt_ids"], G)
    assert out["rows"] == out["prompt_ids"][:, 0].tolist()
    assert sorted(out["row"].tolist()) == list(range(n_groups * G))
    assert out["row"].view(n_groups, G).diff(dim=1).eq(1).all()  # in-group order kept
    assert out["prompt_ids"][::G, 0].tolist() != list(range(n_groups))  # it did shuffle
    assert out["num_items_in_batch"].item() == 7 and out["none"] is None
    with pytest.raises(ValueError, match="whole number of groups"):
        shuffle_groups({"x": torch.zeros(5)}, 4)


def test_trl_row_shuffle_breaks_groups_which_the_check_detects():
    # why shuffle_groups exists: TRL's per-row shuffle scatters groups across micro-batches
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    G = 4
    torch.manual_seed(0)
    batch = {"prompt_ids": torch.arange(6).repeat_interleave(G)[:, None]}
    parts = split_tensor_dict(shuffle_sequence_dict(batch), 3)
    assert not all(_whole_groups(p["prompt_ids"], G) for p in parts)


class _Recording:
    """Mixin recording every micro-batch the loss sees."""

    def __init__(self, *a, **kw):
        self.micro_batches: list[dict] = []
        super().__init__(*a, **kw)

    def _compute_loss(self, model, inputs):
        self.micro_batches.append(
            {
                k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                for k, v in inputs.items()
            }
        )
        return super()._compute_loss(model, inputs)


class RecADPO(_Recording, ADPOTrainer):
    pass


class RecOPO(_Recording, OPOTrainer):
    pass


def test_micro_batches_hold_whole_groups_on_one_process(tmp_path):
    tok, model, ds = tiny_setup()
    # 3 micro-batches of 2 groups from each round of 6 groups, 2 rounds
    args = ADPOConfig(**base_args(str(tmp_path), steps_per_generation=3, max_steps=6))
    tr = RecADPO(
        model=model,
        reward_funcs=arithmetic_reward,
        args=args,
        train_dataset=ds,
        processing_class=tok,
    )
    tr.train()
    assert len(tr.micro_batches) == 6
    for mb in tr.micro_batches:
        assert _whole_groups(mb["prompt_ids"], 4)
        gid = mb["group_index"].view(2, 4)
        assert (gid == gid[:, :1]).all()
    per_round = [
        torch.cat([mb["group_index"][::4] for mb in tr.micro_batches[r * 3 : r * 3 + 3]])
        for r in range(2)
    ]
    for r, ids in enumerate(per_round):  # every group of a round used exactly once
        assert sorted(ids.tolist()) == list(range(r * 6, r * 6 + 6))
    assert any(ids.tolist() != sorted(ids.tolist()) for ids in per_round)  # groups were shuffled


def test_partial_group_in_a_micro_batch_raises(tmp_path):
    tok, model, ds = tiny_setup()
    tr = ADPOTrainer(
        model=model,
        reward_funcs=arithmetic_reward,
        args=ADPOConfig(**base_args(str(tmp_path))),
        train_dataset=ds,
        processing_class=tok,
    )
    inputs = _fixed_batch(tok, B=2, G=4)
    inputs["group_index"] = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    tr.current_gradient_accumulation_steps = 1
    with pytest.raises(RuntimeError, match="partial group"):
        tr.compute_loss(tr.model, inputs)


# ----------------------------------------------------------------------------- loss parity


def _fixed_batch(tok, B: int = 2, G: int = 4, seed: int = 0) -> dict:
    """A hand-made micro-batch: B prompts × G completions of varied length (right-padded)."""
    g = torch.Generator().manual_seed(seed)
    prompts = ["3+4=", "12+9="][:B]
    enc = tok(prompts, padding=True, return_tensors="pt")
    prompt_ids = enc["input_ids"].repeat_interleave(G, 0)  # (N, P)
    prompt_mask = enc["attention_mask"].repeat_interleave(G, 0)
    N, T = B * G, 4
    digits = torch.tensor(tok.convert_tokens_to_ids(list("0123456789")))
    completion_ids = digits[torch.randint(0, 10, (N, T), generator=g)]
    lengths = torch.randint(1, T + 1, (N,), generator=g)
    completion_mask = (torch.arange(T)[None] < lengths[:, None]).long()  # (N, T)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tok.pad_token_id)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 1.0, 0.2])[:N]
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "rewards": rewards,
        "raw_rewards": rewards,
        "reward_valid": torch.ones(N, dtype=torch.bool),
        "reward_correct": rewards >= 1.0,
        "group_index": torch.arange(B).repeat_interleave(G),
        "advantages": torch.zeros(N),
        "num_items_in_batch": completion_mask.sum(),
    }


def _hand_logps(model, inputs) -> torch.Tensor:
    """Token log-probs by adpo.logprobs (the model's plain forward, not TRL's fused head)."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    return causal_lm_logps(model, ids, att, logits_to_keep=inputs["completion_ids"].shape[1])


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("target", ["plackett_luce", "softmax", "top1"])
def test_adpo_trainer_loss_equals_adpo_loss_by_hand(tmp_path, target):
    tok, model, ds = tiny_setup()
    args = ADPOConfig(
        **base_args(str(tmp_path), target=target, tau=0.7, target_beta=0.3),
        tau_schedule="constant",
    )
    tr = ADPOTrainer(
        model=model,
        reward_funcs=arithmetic_reward,
        args=args,
        train_dataset=ds,
        processing_class=tok,
    )
    tr.current_gradient_accumulation_steps = 1
    inputs = _fixed_batch(tok)
    mask = inputs["completion_mask"].bool()
    with torch.no_grad():
        anchor = _hand_logps(model, inputs) + 0.3 * torch.randn(mask.shape)  # a moved anchor
    inputs["anchor_per_token_logps"] = anchor

    loss = tr.compute_loss(tr.model, inputs)
    loss.backward()
    g_trainer = _grads(model)
    model.zero_grad()

    B, G, T = 2, 4, mask.shape[1]
    ref = adpo_loss(
        _hand_logps(model, inputs).view(B, G, T),
        anchor.view(B, G, T),
        inputs["rewards"].view(B, G),
        target=target,
        tau=0.7,
        beta=0.3,
        mask=mask.view(B, G, T),
    )
    ref.loss.backward()
    g_hand = _grads(model)
    assert loss.item() != 0.0
    torch.testing.assert_close(loss, ref.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_trainer, g_hand, rtol=1e-4, atol=1e-6)
    assert tr._metrics["train"]["tau"][-1] == pytest.approx(0.7)


def _hand_entropies(model, inputs) -> torch.Tensor:
    """Per-token entropy ``[N, T]`` of the model's next-token distribution (temperature 1)."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    T = inputs["completion_ids"].shape[1]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att).logits[:, -T - 1 : -1].double()
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize(
    ("coefs", "lo", "hi"),
    [
        ({}, 0.2, 1.5),
        (
            {
                "tau": 0.6,
                "tau_entropy_coef": 0.7,
                "tau_wrong_coef": 1.5,
                "tau_min": 0.65,
                "tau_max": 1.3,
            },
            0.65,
            1.3,
        ),
    ],
)
def test_entropy_reward_schedule_is_the_default_and_sets_tau_per_prompt(tmp_path, coefs, lo, hi):
    """The paper's LLM setting (§6.3): τ_b = clip(0.8·(1 + 0.2·H̄_b + 0.5·(1 − H̄_b)·(1 − R̄_b)))
    with H̄_b the group's mean token entropy over the first optimizer step's (H̄ = 1 during
    that step) and R̄_b its accuracy; and the same formula with every coefficient changed."""
    tau0 = coefs.get("tau", 0.8)
    a_, b_ = coefs.get("tau_entropy_coef", 0.2), coefs.get("tau_wrong_coef", 0.5)
    tok, model, ds = tiny_setup()
    with torch.no_grad():  # a policy with context-dependent entropy (not near-uniform)
        model.model.embed_tokens.weight.mul_(6.0)
    args = ADPOConfig(**base_args(str(tmp_path), target="softmax"), **coefs)
    assert args.tau_schedule == "entropy_reward"
    tr = ADPOTrainer(model=model, reward_funcs=arithmetic_reward, args=args, train_dataset=ds,
                     processing_class=tok)  # fmt: skip
    tr.current_gradient_accumulation_steps = 1  # one micro-batch per optimizer step
    first = _fixed_batch(tok, seed=0)
    with torch.no_grad():
        tr.compute_loss(tr.model, first)  # step 0: the initial policy reads H̄ = 1
    assert tr._metrics["train"]["tau"][-1] == pytest.approx(min(hi, tau0 * (1 + a_)), rel=1e-6)
    m0 = first["completion_mask"].double()
    h0 = float((_hand_entropies(model, first) * m0).sum() / m0.sum())
    tr._close_step_stats()  # the step boundary (_begin_step does this in training)

    with torch.no_grad():  # the policy sharpens (as training would make it)
        model.model.embed_tokens.weight.mul_(2.0)
    inputs = _fixed_batch(tok, seed=1)
    inputs["reward_valid"][3] = False  # an unscored completion counts in neither mean
    inputs["reward_correct"] = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    with torch.no_grad():
        loss = tr.compute_loss(tr.model, inputs)
    assert tr.entropy_reference == pytest.approx(h0, rel=1e-5)  # closed with step 0
    B, G = 2, 4
    mask = inputs["completion_mask"].bool()
    T = mask.shape[1]
    v = inputs["reward_valid"].view(B, G).double()
    m = mask.double().view(B, G, T)
    ent = _hand_entropies(model, inputs).view(B, G, T)
    h = (((ent * m).sum(-1) * v).sum(-1) / ((m.sum(-1)) * v).sum(-1) / h0).clamp(0, 1)  # (B,)
    acc = (inputs["reward_correct"].view(B, G).double() * v).sum(-1) / v.sum(-1)  # (B,)
    tau = (tau0 * (1 + a_ * h + b_ * (1 - h) * (1 - acc))).clamp(lo, hi)
    assert 0.05 < float(h.min()) and float(h.max()) < 0.95  # H̄ reads the sharpening
    assert (tau - tau.mean()).abs().max() > 1e-2  # per prompt: a single τ fails this test
    lp = _hand_logps(model, inputs).view(B, G, T)
    ref = adpo_loss(lp, lp, inputs["rewards"].view(B, G), target="softmax", tau=tau, beta=0.5,
                    mask=mask.view(B, G, T), valid=inputs["reward_valid"].view(B, G))  # fmt: skip
    torch.testing.assert_close(loss.double(), ref.loss.double(), rtol=1e-4, atol=1e-6)
    assert tr._metrics["train"]["tau"][-1] == pytest.approx(float(tau.mean()), rel=1e-4)


def test_entropy_reward_temperature_reads_accuracy_not_the_aggregated_reward(tmp_path):
    """Under normalize_then_sum the aggregated reward has mean 0 in every group; τ must still
    tell an all-correct group from an all-wrong one (finding 5: it did not)."""
    tok, model, ds = tiny_setup()
    args = ADPOConfig(**base_args(str(tmp_path)), multi_objective_aggregation="normalize_then_sum")
    tr = ADPOTrainer(model=model, reward_funcs=arithmetic_reward, args=args, train_dataset=ds,
                     processing_class=tok)  # fmt: skip
    rows = {
        "entropy_sum": torch.ones(2, 4),
        "token_count": torch.ones(2, 4),
        "reward_correct": torch.tensor([[True] * 4, [False] * 4]),
    }
    tr._entropy_ref = 4.0  # H̄ = 1/4: a fairly confident policy
    tau = tr._group_tau(torch.ones(2, 4, dtype=torch.bool), rows)
    h = 0.25
    torch.testing.assert_close(
        tau, torch.tensor([0.8 * (1 + 0.2 * h), 0.8 * (1 + 0.2 * h + 0.5 * (1 - h))])
    )


def test_vllm_sequence_mask_is_trls_bound_in_log_space():
    from adpo.trainers.online import vllm_sequence_mask

    T = 600
    old = torch.full((4, T), -2.0)
    sampling = old.clone()
    sampling[0] += 0.2  # top-p: vLLM's truncated log-probs are higher; ratio e^-120 underflows
    sampling[1, :5] -= 0.5  # ratio e^2.5 > 3: out of TRL's default bound
    sampling[2, 0] = float("nan")  # unavailable log-prob counts 0 (ratio 1)
    mask = torch.ones(4, T)
    mask[3, 100:] = 0
    sampling[3, 100:] -= 50.0  # padding does not count
    got = vllm_sequence_mask(old, sampling, mask, clip_min=None, clip_max=3.0)
    assert got.tolist() == [False, True, False, False]
    ratio = torch.exp(torch.nan_to_num((old - sampling) * mask).sum(-1))
    assert ratio[0] == 0.0  # reading the mask from `ratio == 0` would drop row 0
    assert vllm_sequence_mask(old, sampling, mask, clip_min=0.5, clip_max=None).tolist() == [
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize("cls", ["adpo", "opo"])
def test_vllm_masked_completions_leave_their_group_and_the_accuracy(tmp_path, cls):
    """The round's sequence mask (here forced: vLLM is not installed) removes completions from
    the loss, from `accuracy` and from the guarded schedule's reward (finding 8)."""
    Cfg, Tr = (ADPOConfig, ADPOTrainer) if cls == "adpo" else (OPOConfig, OPOTrainer)

    class Masked(_RoundWeights, Tr):
        def _vllm_masked(self, out):
            return torch.arange(out["completion_ids"].shape[0]) % 4 == 0  # row 0 of each group

    tok, model, ds = tiny_setup()
    kw = base_args(str(tmp_path), max_steps=1)
    if cls == "adpo":
        kw.update(tau_schedule="guarded")

    def wrong_where_masked(completions, **k):
        return [0.0 if i % 4 == 0 else 1.0 for i in range(len(completions))]

    tr = Masked(model=model, reward_funcs=wrong_where_masked, args=Cfg(**kw), train_dataset=ds,
                processing_class=tok)  # fmt: skip
    tr.train()
    mb = tr.micro_batches[0]
    G = 4
    assert (
        not mb["reward_valid"].view(-1, G)[:, 0].any()
        and mb["reward_valid"].view(-1, G)[:, 1:].all()
    )
    assert not mb["reward_correct"].view(-1, G)[:, 0].any()
    assert float(mb["raw_rewards"].view(-1, G)[:, 0].abs().sum()) == 0.0
    log = tr.state.log_history[0]
    assert log["sampling/is_masked_frac"] == pytest.approx(0.25)
    assert log["accuracy"] == pytest.approx(1.0)  # 6 of 6 unmasked ones (6 of 8 counting all)


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate"])
def test_vllm_importance_sampling_modes_that_do_not_apply_are_refused(tmp_path, mode):
    kw = base_args(str(tmp_path), use_vllm=True, vllm_importance_sampling_mode=mode)
    with pytest.raises(
        ValueError, match=rf"`vllm_importance_sampling_mode` '{mode}' is not supported"
    ):
        ADPOConfig(**kw)
    ADPOConfig(**{**kw, "vllm_importance_sampling_correction": False})  # the way out works
    ADPOConfig(**{**kw, "vllm_importance_sampling_mode": "sequence_mask"})


def test_opo_trainer_loss_equals_opo_loss_by_hand(tmp_path):
    tok, model, ds = tiny_setup()
    args = OPOConfig(
        **base_args(
            str(tmp_path), num_generations=4, per_device_train_batch_size=8, alpha=0.3, mu=2.0
        )
    )
    tr = OPOTrainer(
        model=model,
        reward_funcs=arithmetic_reward,
        args=args,
        train_dataset=ds,
        processing_class=tok,
    )
    tr.current_gradient_accumulation_steps = 2  # the trainer scales for accumulation
    inputs = _fixed_batch(tok)
    mask = inputs["completion_mask"].bool()
    with torch.no_grad():
        anchor = _hand_logps(model, inputs) + 0.2 * torch.randn(mask.shape)
    inputs["anchor_per_token_logps"] = anchor
    loss = tr.compute_loss(tr.model, inputs)
    B, G, T = 2, 4, mask.shape[1]
    ref = opo_loss(
        _hand_logps(model, inputs).view(B, G, T),
        anchor.view(B, G, T),
        inputs["rewards"].view(B, G),
        alpha=0.3,
        mu=2.0,
        mask=mask.view(B, G, T),
    )
    torch.testing.assert_close(loss, ref.loss / 2, rtol=1e-5, atol=1e-6)


def test_unscored_completions_leave_their_group(tmp_path):
    tok, model, ds = tiny_setup()
    args = ADPOConfig(**base_args(str(tmp_path), target="softmax"))
    tr = ADPOTrainer(
        model=model,
        reward_funcs=arithmetic_reward,
        args=args,
        train_dataset=ds,
        processing_class=tok,
    )
    tr.current_gradient_accumulation_steps = 1
    inputs = _fixed_batch(tok)
    # group 0 loses one completion, group 1 loses all four (no reward at all)
    inputs["reward_valid"] = torch.tensor([True, False, True, True, False, False, False, False])
    inputs["rewards"] = torch.where(inputs["reward_valid"], inputs["rewards"], 0.0)
    loss = tr.compute_loss(tr.model, inputs)
    mask = inputs["completion_mask"].bool()
    T = mask.shape[1]
    lp = _hand_logps(model, inputs).detach()  # on-policy anchor = detached current log-probs
    ref = adpo_loss(
        lp.view(2, 4, T)[:1],
        lp.view(2, 4, T)[:1],
        inputs["rewards"].view(2, 4)[:1],
        target="softmax",
        tau=args.tau,
        beta=args.target_beta,
        mask=mask.view(2, 4, T)[:1],
        valid=inputs["reward_valid"].view(2, 4)[:1],
    )
    torch.testing.assert_close(loss, ref.loss, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- anchors


class _RoundWeights:
    """Mixin keeping the policy's weights at the start of every training round."""

    def __init__(self, *a, **kw):
        self.round_start: list[dict] = []
        self.micro_batches: list[dict] = []
        super().__init__(*a, **kw)

    def _generate_and_score_completions(self, inputs):
        if self.model.training:
            self.round_start.append(copy.deepcopy(self.model.state_dict()))
        return super()._generate_and_score_completions(inputs)

    def _compute_loss(self, model, inputs):
        rec = {
            k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()
        }
        rec["round"] = self._round - 1
        rec["weights"] = copy.deepcopy(self.model.state_dict())
        self.micro_batches.append(rec)
        return super()._compute_loss(model, inputs)


class AnchorADPO(_RoundWeights, ADPOTrainer):
    pass


def _model_with(state_dict, tok):
    from adpo.testing import tiny_qwen3

    m = tiny_qwen3(len(tok), hidden_size=32, num_layers=1)
    m.load_state_dict(state_dict)
    return m


def _logps_under(state_dict, tok, inputs) -> torch.Tensor:
    with torch.no_grad():
        return _hand_logps(_model_with(state_dict, tok), inputs)


def _masked_close(a, b, mask, atol=2e-5) -> bool:
    return bool(((a - b).abs() * mask).max() <= atol)


def _run_anchor(tmp_path, anchor: str, **kw):
    tok, model, ds = tiny_setup()
    args = ADPOConfig(
        **base_args(
            str(tmp_path),
            steps_per_generation=2,
            max_steps=4,
            anchor=anchor,
            learning_rate=3e-2,
            **kw,
        )
    )
    tr = AnchorADPO(
        model=model, reward_funcs=_graded, args=args, train_dataset=ds, processing_class=tok
    )
    init = copy.deepcopy(model.state_dict())
    tr.train()
    return tok, tr, init


def _graded(completions, **kwargs):
    """A dense, arbitrary but deterministic reward: an untrained model's groups all get
    signal from it, so weights move from the first step."""
    return [(sum(map(ord, c)) % 11) / 10 for c in completions]


def test_on_policy_anchor_is_the_round_start_policy_for_every_mini_batch(tmp_path):
    tok, tr, _ = _run_anchor(tmp_path, "on_policy")
    assert len(tr.round_start) == 2 and len(tr.micro_batches) == 4
    for i, mb in enumerate(tr.micro_batches):
        mask = mb["completion_mask"]
        expected = _logps_under(tr.round_start[mb["round"]], tok, mb)
        assert _masked_close(mb["anchor_per_token_logps"], expected, mask)
        current = _logps_under(mb["weights"], tok, mb)
        if i % 2 == 1:  # second mini-batch of a round: the policy moved, the anchor did not
            assert not _masked_close(current, expected, mask, atol=1e-3)
        else:
            assert _masked_close(current, expected, mask)
    assert tr.state.log_history[1]["delta_abs_max"] > 0  # Δ ≠ 0 on the round's second mini-batch


def test_online_configs_speak_the_anchor_vocabulary(tmp_path):
    with pytest.warns(DeprecationWarning, match="'dynamic' is deprecated, use 'on_policy'"):
        assert ADPOConfig(**base_args(str(tmp_path)), anchor="dynamic").anchor == "on_policy"
    with pytest.raises(ValueError, match="no reference log-probs come with the data"):
        OPOConfig(**base_args(str(tmp_path)), anchor="precomputed")
    with pytest.raises(ValueError, match=r"must be one of"):
        ADPOConfig(**base_args(str(tmp_path)), anchor="bogus")
    tok, model, ds = tiny_setup()
    with pytest.raises(ValueError, match="pass `ref_model` with anchor='fixed'"):
        ADPOTrainer(model=model, reward_funcs=_graded, train_dataset=ds, processing_class=tok,
                    args=ADPOConfig(**base_args(str(tmp_path)), anchor="self"),
                    ref_model=copy.deepcopy(model))  # fmt: skip


@pytest.mark.parametrize("anchor", ["fixed", "self"])
def test_fixed_anchor_is_the_initial_policy(tmp_path, anchor):
    tok, tr, init = _run_anchor(tmp_path, anchor, log_kl_to_init=True)
    for mb in tr.micro_batches:
        expected = _logps_under(init, tok, mb)
        assert _masked_close(mb["anchor_per_token_logps"], expected, mb["completion_mask"])
    assert _masked_close(  # KL to init is measured against the same policy
        mb["init_per_token_logps"], expected, mb["completion_mask"]
    )
    last = tr.micro_batches[-1]
    assert not _masked_close(
        _logps_under(last["weights"], tok, last), expected, last["completion_mask"], atol=1e-3
    )


def test_ema_anchor_folds_the_policy_in_once_per_round(tmp_path):
    tok, tr, init = _run_anchor(tmp_path, "ema", anchor_ema_decay=0.5)
    ema = {k: v.clone() for k, v in init.items()}
    for r, start in enumerate(tr.round_start):
        ema = {
            k: (0.5 * ema[k] + 0.5 * start[k]) if start[k].is_floating_point() else start[k]
            for k in ema
        }
        for mb in tr.micro_batches:
            if mb["round"] == r:
                expected = _logps_under(ema, tok, mb)
                assert _masked_close(mb["anchor_per_token_logps"], expected, mb["completion_mask"])


class _RisingReward:
    """The same reward for every completion, growing by ``step`` each round: reward keeps
    beating its EMA baseline whatever the policy does."""

    __name__ = "rising"

    def __init__(self, step: float = 0.1):
        self.calls, self.step = 0, step

    def __call__(self, completions, **kw):
        self.calls += 1
        return [min(1.0, self.step * self.calls)] * len(completions)


def _share_of_ones(completions, **kw):
    """What the tiny policy can collapse onto: the share of '1' characters in its answer."""
    return [c.count("1") / max(len(c), 1) for c in completions]


def _guarded(out, reward, *, peaky: bool = False, **kw):
    """An ADPO trainer with the guarded schedule at its defaults (τ 1.5 → 0.2, σ_R 0.1)."""
    tok, model, ds = tiny_setup()
    if peaky:  # context-dependent, lower entropy, as a trained model has (not near-uniform)
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(6.0)
    args = ADPOConfig(**base_args(str(out), **kw), tau_schedule="guarded")
    return ADPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok
    )


def _tau_logs(tr) -> list[dict]:
    return [h for h in tr.state.log_history if "tau" in h]


def test_guarded_temperature_falls_at_least_half_way_once_the_policy_collapses(tmp_path):
    """Finding 1: at the defaults τ moved 1.5 → 1.27 at best, and went back to τ_max when the
    policy collapsed. Now: once it has collapsed onto what the reward wants and the reward is
    still rising, τ sits at least half-way from τ_max to τ_min."""
    tr = _guarded(tmp_path, _share_of_ones, max_steps=14, learning_rate=3e-2,
                  max_completion_length=8)  # fmt: skip
    tr.train()
    logs = _tau_logs(tr)
    assert logs[0]["tau"] == 1.5  # the first step has no reading yet
    collapsed = [
        (a, b) for a, b in itertools.pairwise(logs) if b["entropy"] < 0.25 * logs[0]["entropy"]
    ]
    rising = [b for a, b in collapsed if b["reward"] > a["reward"]]
    assert rising, "the tiny policy did not collapse while its reward rose"
    assert all(h["tau"] <= (1.5 + 0.2) / 2 for h in rising)
    assert all(h["tau_policy_entropy"] < 0.5 for h in rising)  # H̄ reads the collapse


@pytest.mark.parametrize("length", [3, 32])
def test_guarded_temperature_stays_near_tau_max_for_a_policy_that_never_sharpens(tmp_path, length):
    """lr 0: however the reward moves (here it rises every round), τ stays within a tenth of
    τ_max, for 3- and 32-token completions alike (summed log-probs sent τ to 0.31)."""
    tr = _guarded(tmp_path, _RisingReward(), peaky=True, max_steps=10, learning_rate=0.0,
                  max_completion_length=length)  # fmt: skip
    tr.train()
    logs = _tau_logs(tr)
    assert [h["reward"] for h in logs] == pytest.approx([0.1 * (i + 1) for i in range(10)])
    assert all(h["tau"] >= 0.9 * 1.5 for h in logs), [h["tau"] for h in logs]


def test_guarded_temperature_stays_at_tau_max_under_flat_reward(tmp_path):
    tr = _guarded(tmp_path, lambda completions, **kw: [0.5] * len(completions), max_steps=6,
                  learning_rate=3e-2, max_completion_length=8)  # fmt: skip
    tr.train()
    assert [h["tau"] for h in _tau_logs(tr)] == [1.5] * 6


def test_guarded_temperature_is_eq_12_of_the_previous_optimizer_steps_batch(tmp_path):
    """τ of step t is eq. 12 of the previous step's whole batch (two micro-batches): its mean
    token entropy over the first reading, and its mean reward, over an EMA baseline."""

    class Recorded(_RoundWeights, ADPOTrainer):
        pass

    tok, model, ds = tiny_setup()
    args = ADPOConfig(
        **base_args(str(tmp_path), max_steps=4, gradient_accumulation_steps=2,
                    steps_per_generation=2, learning_rate=3e-2, max_completion_length=8),
        tau_schedule="guarded", tau_min=0.3, tau_max=1.2, tau_sigma_r=0.05, tau_momentum=0.8,
    )  # fmt: skip
    tr = Recorded(model=model, reward_funcs=_share_of_ones, args=args, train_dataset=ds,
                  processing_class=tok)  # fmt: skip
    tr.train()
    mbs = tr.micro_batches
    assert len(mbs) == 8

    def step_stats(pair):
        ent = tok_n = rew = n = 0.0
        for mb in pair:
            m = mb["completion_mask"].double()
            m_model = _model_with(mb["weights"], tok)
            ent += float((_hand_entropies(m_model, mb) * m).sum())
            tok_n += float(m.sum())
            v = mb["reward_valid"].double()
            rew += float((mb["raw_rewards"].double() * v).sum())
            n += float(v.sum())
        return ent / tok_n, rew / n

    h0, _ = step_stats(mbs[0:2])  # H_0: the first step's whole batch
    assert tr.entropy_reference == pytest.approx(h0, rel=1e-5)
    taus, b = [1.2], None
    for t in range(1, 4):
        h, r = step_stats(mbs[2 * t - 2 : 2 * t])
        c = 1 - min(max(h / h0, 0.0), 1.0)
        b = r if b is None else b
        taus.append(1.2 - 0.9 * c * max(0.0, math.tanh((r - b) / 0.05)))
        b = 0.8 * b + 0.2 * r
    logged = [h["tau"] for h in _tau_logs(tr)]
    assert logged == pytest.approx(taus, rel=1e-4)
    assert min(logged) < 1.2 - 1e-3  # it moved (c_t > 0 and p_t > 0 at least once)


def test_evaluation_leaves_the_guarded_schedule_untouched(tmp_path):
    _, _, ds = tiny_setup()
    tr = _guarded(tmp_path, _RisingReward(), max_steps=2, per_device_eval_batch_size=8)
    tr.train()

    def state():
        stats = None if tr._step_stats is None else tr._step_stats.tolist()
        return (dict(tr._tau_schedule.state_dict()), tr.entropy_reference, stats)

    before = state()
    metrics = tr.evaluate(eval_dataset=ds.select(range(8)))
    assert "eval_reward" in metrics  # evaluation did generate and score a round
    assert state() == before


def test_default_trainer_holds_no_model_copy_and_fixed_anchor_holds_one(tmp_path):
    def held_parameters(tr) -> int:
        """Parameters of every module the trainer holds (itself, its anchors), counted once."""
        modules = [v for v in vars(tr).values() if isinstance(v, torch.nn.Module)]
        modules += [a.module for a in (tr._init_anchor, tr._ema_anchor) if a is not None]
        seen = {id(p): p.numel() for m in modules for p in m.parameters()}
        return sum(seen.values())

    for cls in (ADPOConfig, OPOConfig):
        tok, model, ds = tiny_setup()
        n = sum(p.numel() for p in model.parameters())
        Tr = ADPOTrainer if cls is ADPOConfig else OPOTrainer
        tr = Tr(model=model, reward_funcs=_graded, args=cls(**base_args(str(tmp_path))),
                train_dataset=ds, processing_class=tok)  # fmt: skip
        assert tr._init_anchor is None and tr.ref_model is None
        assert held_parameters(tr) == n
        tok, model, ds = tiny_setup()
        tr = Tr(model=model, reward_funcs=_graded, args=cls(**base_args(str(tmp_path)), anchor="fixed"),
                train_dataset=ds, processing_class=tok)  # fmt: skip
        assert held_parameters(tr) == 2 * n  # the user's choice: a frozen initial model


# ----------------------------------------------------------------------------- resume


def _losses(trainer) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}


@pytest.mark.parametrize("cls", ["adpo", "opo"])
def test_resume_continues_exactly_from_mid_round_and_round_boundary(tmp_path, cls):
    Cfg, Tr = (ADPOConfig, ADPOTrainer) if cls == "adpo" else (OPOConfig, OPOTrainer)

    def make(out):
        tok, model, ds = tiny_setup()
        kw = base_args(
            str(out),
            steps_per_generation=2,
            max_steps=4,
            save_strategy="steps",
            save_steps=1,
            learning_rate=3e-2,
        )
        if cls == "opo":
            kw.update(num_generations=4, per_device_train_batch_size=8)
        else:  # the guarded τ schedule must come back exactly too
            kw.update(tau_schedule="guarded", tau_sigma_r=0.05)
        return Tr(
            model=model,
            reward_funcs=_graded,
            args=Cfg(**kw),
            train_dataset=ds,
            processing_class=tok,
        )

    full = make(tmp_path / "full")
    full.train()
    ref_losses = _losses(full)
    ref_taus = {h["step"]: h["tau"] for h in full.state.log_history if "tau" in h}
    ref_params = torch.cat([p.detach().flatten() for p in full.model.parameters()])
    assert len(ref_losses) == 4 and len(set(ref_losses.values())) > 1
    for ckpt in (1, 2):  # 1: mid-round (the round buffer must come back), 2: round boundary
        resumed = make(tmp_path / f"resumed{ckpt}")
        resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{ckpt}"))
        got = {s: v for s, v in _losses(resumed).items() if s > ckpt}  # (history includes the past)
        assert set(got) == {s for s in ref_losses if s > ckpt}
        for s, v in got.items():
            assert v == pytest.approx(ref_losses[s], rel=1e-6, abs=1e-7), (ckpt, s)
        params = torch.cat([p.detach().flatten() for p in resumed.model.parameters()])
        torch.testing.assert_close(params, ref_params, rtol=1e-6, atol=1e-7)
        if cls == "adpo":
            taus = {h["step"]: h["tau"] for h in resumed.state.log_history if "tau" in h}
            for s in got:
                assert taus[s] == pytest.approx(ref_taus[s], rel=1e-6), (ckpt, s)
            assert resumed._tau_schedule.state_dict() == pytest.approx(
                full._tau_schedule.state_dict(), rel=1e-6
            )


# ----------------------------------------------------------------------------- rewards that fail


def _fragile(completions, answer, prompts, **kwargs):
    """Raises for one prompt's completions, NaN for completions starting with '1'."""
    out = []
    for c, a, p in zip(completions, answer, prompts, strict=True):
        if p == _fragile.bad_prompt:
            raise ValueError("cannot score this one")
        out.append(math.nan if c.startswith("1") else float(c.strip() == a))
    return out


def test_failing_rewards_are_counted_and_training_goes_on(tmp_path):
    tok, model, ds = tiny_setup()
    _fragile.bad_prompt = ds[0]["prompt"]
    args = ADPOConfig(**base_args(str(tmp_path), max_steps=3, shuffle_dataset=False))
    tr = ADPOTrainer(
        model=model, reward_funcs=_fragile, args=args, train_dataset=ds, processing_class=tok
    )
    tr.train()
    logs = [h for h in tr.state.log_history if "rewards/_fragile/failures" in h]
    assert sum(h["rewards/_fragile/failures"] for h in logs) >= 4  # the whole bad group at least
    assert any(h["reward_unscorable_frac"] > 0 for h in logs)
    assert all(math.isfinite(h["loss"]) for h in tr.state.log_history if "loss" in h)
    assert tr.state.global_step == 3


# ----------------------------------------------------------------------------- every trainer


@pytest.mark.parametrize("loss", ["adpo-pl", "adpo", "opo", "grpo", "gspo", "dapo"])
def test_each_objective_trains_end_to_end_on_the_tiny_model(tmp_path, loss):
    from adpo.trainers import loss_config, make_trainer

    tok, model, ds = tiny_setup()
    args = loss_config(loss, **base_args(str(tmp_path), steps_per_generation=2, max_steps=2))
    before = [p.detach().clone() for p in model.parameters()]
    tr = make_trainer(loss, model, _graded, args, ds, tok)
    tr.train()
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    keys = set().union(*tr.state.log_history)
    assert {"reward", "reward_std", "entropy", "grad_norm", "completions/mean_length"} <= keys
    if loss in ("adpo-pl", "adpo", "opo"):
        assert {"accuracy", "anchored_entropy", "zero_signal_frac"} <= keys
        assert "kl_to_init" not in keys  # off by default: no extra model, no extra forward
        if loss != "opo":
            assert "tau" in keys


def test_loss_config_names_a_bad_override():
    from adpo.trainers import loss_config

    with pytest.raises(ValueError, match=r"\['alpha'\] are not fields of ADPOConfig"):
        loss_config("adpo", output_dir="x", alpha=0.3)
    with pytest.raises(ValueError, match="must be one of"):
        loss_config("ppo", output_dir="x")
