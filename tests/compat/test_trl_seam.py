"""The TRL seam: every private name adpo uses still exists, with the signature we call."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

import trl
from trl import GRPOTrainer

from adpo._compat import trl as seam


def test_installed_trl_has_every_private_name_we_use():
    assert seam.seam_problems() == []


def test_seam_names_a_moved_method_a_changed_signature_and_a_lost_keyword():
    class Moved(GRPOTrainer):
        pass

    # a TRL where _prepare_inputs is renamed, _compute_loss takes other parameters and the
    # log-prob helper lost `compute_aux_loss`
    Moved._prepare_inputs = None
    Moved._compute_loss = lambda self, inputs: None

    def logps(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None):
        return None

    Moved._get_per_token_logps_and_entropies = logps
    problems = "\n".join(seam.seam_problems(Moved))
    assert "Moved._prepare_inputs is gone" in problems
    assert "Moved._compute_loss('self', 'inputs')" in problems
    assert "no longer takes ['compute_entropy', 'compute_aux_loss'" in problems


def test_an_untested_trl_version_with_a_moved_seam_is_refused(monkeypatch):
    monkeypatch.setattr(trl, "__version__", "9.0.0")
    monkeypatch.setattr(seam, "seam_problems", lambda: ["GRPOTrainer._compute_loss is gone"])
    with pytest.raises(RuntimeError, match=r"(?s)trl 9\.0\.0 changed private code.*_compute_loss"):
        seam.check_trl()
    monkeypatch.setattr(seam, "seam_problems", lambda: [])
    with pytest.warns(UserWarning, match="still match"):
        seam.check_trl()


def test_repeat_sampler_lays_groups_out_as_consecutive_runs():
    from trl.trainer.utils import RepeatSampler

    G, prompts = 3, list(range(5))
    order = list(RepeatSampler(prompts, mini_repeat_count=G, batch_size=5, repeat_count=1, seed=0))
    runs = [order[i : i + G] for i in range(0, len(order), G)]
    assert all(len(set(r)) == 1 for r in runs) and sorted(r[0] for r in runs) == prompts


def test_fused_lm_head_patches_forward_on_the_instance_and_a_copy_gets_its_own():
    import copy
    from types import SimpleNamespace

    from adpo.testing import char_tokenizer, tiny_qwen3

    model = tiny_qwen3(len(char_tokenizer()), hidden_size=16, num_layers=1)
    trainer = SimpleNamespace(temperature=1.0, args=SimpleNamespace(cast_lm_head_to_fp32=False))
    seam.patch_frozen_forward(trainer, model)
    assert "forward" in model.__dict__  # TRL patches the instance, not the class
    snap = copy.deepcopy(model)
    patched = snap.__dict__["forward"]
    seam.patch_frozen_forward(trainer, snap)
    assert snap.__dict__["forward"] is not patched  # the copy's closure is its own


def test_reward_hand_off_is_taken_once():
    import torch

    h = seam.RewardHandOff()
    h.put(torch.ones(2, 1))
    assert h.take().shape == (2, 1)
    with pytest.raises(RuntimeError, match="without calling _calculate_rewards"):
        h.take()
