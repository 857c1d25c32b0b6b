"""Forward+backward time of the registered verl losses vs verl's own `vanilla` (PPO-clip)
on one verl-shaped micro-batch (CPU). Prints a table of ratios measured in one run, with
the load average and thread count next to it (other jobs share the machine).

    .venv-verl/bin/python benchmarks/verl_loss_overhead.py [--bs 64] [--T 1024] [--G 8]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_policy_loss_fn
from verl.workers.config import ActorConfig

import adpo.integrations.verl as av
from adpo._io import code_version, describe_commit


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    torch.manual_seed(0)
    bs, T, G = a.bs, a.T, a.G
    lengths = torch.randint(T // 4, T + 1, (bs,))
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    old = -torch.rand(bs, T)
    rewards = torch.zeros(bs, T)
    rewards[torch.arange(bs), lengths - 1] = torch.randint(0, 2, (bs,)).float()
    index = np.repeat(np.arange(bs // G), G)
    adv, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    rows = []
    for mode in ("vanilla", "adpo_listwise", "adpo_pl", "adpo_top1", "orthogonalized_po"):
        cfg = ActorConfig(
            strategy="fsdp",
            rollout_n=G,
            ppo_micro_batch_size_per_gpu=bs,
            policy_loss=av.AdpoPolicyLossConfig(loss_mode=mode),
        )
        fn = get_policy_loss_fn(mode)
        times = []
        for i in range(a.reps + 3):
            new = (old + 0.01 * torch.randn(bs, T)).requires_grad_()
            t0 = time.perf_counter()
            loss, _ = fn(old, new, adv, mask, "token-mean", cfg)
            loss.backward()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        rows.append((mode, float(np.median(times)) * 1e3))
    base = rows[0][1]
    code = code_version()  # the version and commit adpo env and every summary report
    print(f"adpo {code['adpo']}, commit {describe_commit(code)}")
    print(
        f"bs={bs} T={T} G={G}, median of {a.reps}, loadavg={os.getloadavg()}, "
        f"threads={torch.get_num_threads()}"
    )
    print("| loss | ms (fwd+bwd) | / vanilla |\n|---|---|---|")
    for mode, ms in rows:
        print(f"| {mode} | {ms:.2f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
