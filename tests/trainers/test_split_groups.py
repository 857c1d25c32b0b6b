"""Groups exact at any micro-batch size (issue 24): the update of a run whose micro-batches
split groups equals the update of a run with whole groups per micro-batch.

Plain SGD, no clipping, a constant learning rate: the update *is* the gradient, so a wrong
weight or a wrong scale shows (Adam's first step would hide a scale). Both runs see the
same rows in every optimizer step (the same generation batch, sampled with the same seed,
shuffled by the same group permutation); only how the step is cut into micro-batches
differs. Everything runs on a 1-layer, 32-wide Qwen3 (no download).
"""

from __future__ import annotations

import pytest
import torch

from adpo.trainers import ADPOConfig, ADPOTrainer, OPOConfig, OPOTrainer

from ._tiny_setup import base_args, tiny_setup
from .test_online_trainer import _graded, _RoundWeights

G = 4


class _Recorded(_RoundWeights):
    """Also keeps the completions of every round, to check both runs sampled the same, and
    counts the no-grad passes over training rows."""

    passes = 0

    def _no_grad_forward(self, module, batch, *, entropy):
        if self.model.training:
            self.passes += 1
        return super()._no_grad_forward(module, batch, entropy=entropy)

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.rounds = [*getattr(self, "rounds", []), out["completion_ids"].clone()]
        return out


class RecADPO(_Recorded, ADPOTrainer):
    pass


class RecOPO(_Recorded, OPOTrainer):
    pass


def _run(kind, out, *, rows, micro, steps=2, rounds_per_step=1, **cfg):
    """Train ``steps`` SGD steps of ``rows`` completions each, cut into micro-batches of
    ``micro`` rows. Returns the trainer and the final parameters."""
    Cfg, Tr = (ADPOConfig, RecADPO) if kind == "adpo" else (OPOConfig, RecOPO)
    ga = rows // micro
    tok, model, ds = tiny_setup()
    kw = base_args(
        str(out),
        num_generations=G,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=ga,
        steps_per_generation=ga * rounds_per_step,
        max_steps=steps,
        optim="sgd",
        learning_rate=0.2,
        max_grad_norm=0.0,
        max_completion_length=4,
    )
    tr = Tr(model=model, reward_funcs=_graded, args=Cfg(**kw, **cfg), train_dataset=ds,
            processing_class=tok)  # fmt: skip
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    tr.train()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return tr, before, after


def _same_update(kind, tmp_path, *, rows=8, micro=2, whole=None, **cfg):
    whole = whole or rows
    tw, b0, a_whole = _run(kind, tmp_path / "whole", rows=rows, micro=whole, **cfg)
    ts, b1, a_split = _run(kind, tmp_path / "split", rows=rows, micro=micro, **cfg)
    torch.testing.assert_close(b0, b1)
    assert len(tw.rounds) == len(ts.rounds)
    for x, y in zip(tw.rounds, ts.rounds, strict=True):  # the same samples in both runs
        assert torch.equal(x, y)
    assert not tw._split and ts._split
    step = (a_whole - b0).abs().max().item()
    assert step > 1e-3, "the run did not move: nothing to compare"
    torch.testing.assert_close(a_split, a_whole, rtol=0, atol=2e-5 * max(step, 1.0))
    return tw, ts


# ----------------------------------------------------------------------------- ADPO


@pytest.mark.parametrize(
    ("target", "ties"),
    [("plackett_luce", "breslow"), ("plackett_luce", "efron"), ("softmax", "breslow"),
     ("top1", "breslow")],
)  # fmt: skip
def test_adpo_targets_split_over_micro_batches_of_two(tmp_path, target, ties):
    """The default setting (on-policy anchor, one step per round, the entropy-reward τ that
    reads each group's entropy, so the step needs its no-grad pass)."""
    _same_update("adpo", tmp_path, target=target, ties=ties)


@pytest.mark.parametrize("anchor", ["fixed", "self", "ema"])
def test_adpo_anchors_split(tmp_path, anchor):
    _same_update("adpo", tmp_path, anchor=anchor, tau_schedule="constant")


@pytest.mark.parametrize("schedule", ["constant", "guarded"])
def test_adpo_without_a_pass_right_after_generation(tmp_path, schedule):
    """On-policy, first step of its round, τ not per prompt: Δ ≡ 0 and the weights come from
    the rewards alone (no forward pass); the update is still the whole-group one."""
    tw, ts = _same_update("adpo", tmp_path, tau_schedule=schedule, steps=3)
    assert ts.passes == tw.passes == 0


def test_a_step_that_needs_current_scores_makes_one_pass_over_its_rows(tmp_path):
    tw, ts = _same_update("adpo", tmp_path, anchor="fixed", tau_schedule="constant", steps=3)
    # beyond the anchor's own pass at generation (both runs): every micro-batch of every
    # step, once, without gradient
    assert ts.passes - tw.passes == 3 * 4


def test_adpo_two_optimizer_steps_per_round_and_two_iterations(tmp_path):
    """The policy moved since the round was generated: the step's pass reads the current
    scores of every group member, across micro-batches."""
    _same_update("adpo", tmp_path, steps=4, rounds_per_step=2, tau_schedule="constant")
    _same_update("adpo", tmp_path / "it", steps=4, num_iterations=2, tau_schedule="constant")


def test_adpo_micro_batches_of_one_and_of_three(tmp_path):
    """Micro-batch 1 (every completion alone) and 3 (groups cut at varying offsets)."""
    _same_update("adpo", tmp_path / "one", micro=1, tau_schedule="constant")
    _same_update("adpo", tmp_path / "three", rows=12, micro=3, whole=4, anchor="fixed")


def test_adpo_length_normalised_scores_split(tmp_path):
    _same_update("adpo", tmp_path, seq_reduction="mean", anchor="fixed", tau_schedule="constant")


# ----------------------------------------------------------------------------- OPO


@pytest.mark.parametrize("weight_norm", ["group", "center", "batch", "none"])
def test_opo_weight_norms_split(tmp_path, weight_norm):
    _same_update("opo", tmp_path, weight_norm=weight_norm)


def test_opo_exact_ratio_reference_correction_and_a_moved_policy_split(tmp_path):
    _same_update("opo", tmp_path, ratio="exact", ref_correction="sequence", mu=3.0)
    _same_update("opo", tmp_path / "moved", steps=4, rounds_per_step=2, anchor="ema",
                 seq_reduction="mean")  # fmt: skip


# ----------------------------------------------------------------------------- logs


def test_split_runs_log_the_true_group_loss(tmp_path):
    tw, ts = _same_update("adpo", tmp_path, anchor="fixed", tau_schedule="constant")
    for a, b in zip(_logs(tw), _logs(ts), strict=True):
        assert b["policy_loss"] == pytest.approx(a["policy_loss"], rel=1e-4, abs=1e-6)
        assert b["anchored_entropy"] == pytest.approx(a["anchored_entropy"], rel=1e-4)


def _logs(tr):
    return [h for h in tr.state.log_history if "policy_loss" in h]
