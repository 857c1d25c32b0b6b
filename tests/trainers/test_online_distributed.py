"""Whole groups under data parallelism: two CPU processes launched by accelerate.

``accelerate launch --num_processes 2 --cpu`` starts a single process unless MPI is set
up (accelerate's multi-CPU path goes through ``mpirun``); ``--multi_gpu`` on a machine
without GPUs starts two torchrun workers that talk over gloo, which is what this test
uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_groups_script.py")


def _launch(tmp_path, kind, mode):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        str(SCRIPT), str(tmp_path), kind, mode,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_no_micro_batch_holds_a_partial_group_on_two_processes(tmp_path, kind):
    _launch(tmp_path, kind, "whole")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    G = 4
    seen: dict[int, set] = {0: set(), 1: set()}  # group ids per rank
    prompt_of: dict[int, str] = {}
    for rank, data in enumerate(ranks):
        assert len(data["records"]) == 6  # 3 micro-batches × 2 rounds
        for rec in data["records"]:
            prompts, gid = rec["prompts"], rec["group_index"]
            assert len(prompts) == 8
            for b in range(len(prompts) // G):
                block = slice(b * G, b * G + G)
                assert len(set(prompts[block])) == 1, (rank, rec)  # one prompt per group
                assert len(set(gid[block])) == 1, (rank, rec)
                prompt_of[gid[b * G]] = prompts[b * G]
                seen[rank].add(gid[b * G])
            assert len({gid[b * G] for b in range(2)}) == 2  # two different groups
    assert not seen[0] & seen[1]  # the ranks never share a group
    assert len(seen[0]) == len(seen[1]) == 12  # 6 groups per rank per round, 2 rounds


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_groups_split_across_two_processes_give_the_whole_group_update(tmp_path, kind):
    """Micro-batches of 2, groups of 4, one group straddling the ranks: the SGD update equals
    the gradient of the whole-group loss, rebuilt here from both ranks' rows."""
    import torch

    from adpo.losses import adpo_loss, opo_loss
    from adpo.testing import char_tokenizer, tiny_qwen3

    from .test_online_trainer import _hand_logps

    _launch(tmp_path, kind, "split")
    saved = [torch.load(tmp_path / f"split{r}.pt", weights_only=False) for r in (0, 1)]
    assert all(s["world"] == 2 for s in saved)
    torch.testing.assert_close(saved[0]["after"], saved[1]["after"])  # DDP kept them equal
    model = tiny_qwen3(len(char_tokenizer()), hidden_size=32, num_layers=1)
    model.load_state_dict(saved[0]["before"])
    seq, anchor, rewards, valid, gids = [], [], [], [], []
    for rank in saved:
        for mb in rank["rows"]:  # each micro-batch with its own padding
            lp = _hand_logps(model, mb)  # (n, T), with gradient
            m = mb["completion_mask"].bool()
            a = mb.get("anchor_per_token_logps", lp.detach())
            seq.append((lp * m).sum(-1))
            anchor.append((a * m).sum(-1))
            rewards.append(mb["rewards"])
            valid.append(mb["reward_valid"])
            gids.append(mb["group_index"])
    gid = torch.cat(gids)
    order = torch.argsort(gid, stable=True)
    assert gid.numel() == 12 and (gid[order].view(3, 4) == gid[order].view(3, 4)[:, :1]).all()
    mixed = {int(g) for g in gid[:6]} & {int(g) for g in gid[6:]}
    assert mixed, "no group straddled the two ranks"
    S, A = torch.cat(seq)[order].view(3, 4), torch.cat(anchor)[order].view(3, 4)
    R, V = torch.cat(rewards)[order].view(3, 4), torch.cat(valid)[order].view(3, 4)
    if kind == "adpo":  # the first step reads H̄ = 1: τ = 0.8·(1 + 0.2) for every prompt
        loss = adpo_loss(S, A, R, target="plackett_luce", tau=0.96, valid=V).loss
    else:
        loss = opo_loss(S, A, R, valid=V).loss
    loss.backward()
    for name, p in model.named_parameters():
        want = saved[0]["before"][name] - 0.2 * p.grad
        torch.testing.assert_close(saved[0]["after"][name], want, rtol=1e-5, atol=1e-6)
