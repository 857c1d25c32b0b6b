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


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_no_micro_batch_holds_a_partial_group_on_two_processes(tmp_path, kind):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        str(SCRIPT), str(tmp_path), kind,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
