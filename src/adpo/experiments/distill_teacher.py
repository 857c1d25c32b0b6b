"""MuJoCo teachers for policy distillation (ADPO paper §6.2): train, save, load, evaluate.

A teacher is a stable-baselines3 SAC policy: a tanh-squashed diagonal Gaussian actor
``a = tanh(z)``, ``z ~ N(μ_T(s), σ_T(s))``, and twin critics ``Q_1, Q_2(s, a)``. Only the
actor and critic weights are stored (no replay buffer, no optimiser state), in a
``torch.save`` file that loads with ``weights_only=True``, next to a JSON file that
records how it was trained (steps, wall time, load average, evaluation curve).

Shapes::

    N  states (observations) in a batch
    D  observation dimension (17 on HalfCheetah-v5, 11 on Hopper-v5)
    A  action dimension (6 on HalfCheetah-v5, 3 on Hopper-v5)
    K  candidate actions per state

Everything distillation needs is in *pre-tanh* ("Gaussian") coordinates ``z``: tanh is a
bijection, so the KL between two squashed Gaussians equals the KL between the Gaussians,
and the tanh Jacobian is the same for every policy and cancels in anchored logits.

Retrain the committed teachers (budgets, times and returns: the README's distillation
section and ``results/distill/teachers/<env>.json``)::

    adpo bench distill-teacher --env HalfCheetah-v5 --steps 100000
    adpo bench distill-teacher --env Hopper-v5 --steps 100000 --seed 1 --learning-starts 10000

(``--out`` defaults to ``results/distill/teachers``.)
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from torch import Tensor

from adpo._io import MUJOCO, console, prepare_out, provenance, write_json

__all__ = [
    "SUPPORTED_ENVS",
    "Teacher",
    "TeacherConfig",
    "check_env_id",
    "evaluate_returns",
    "make_env",
    "teacher_path",
    "train_teacher",
]

# The environments of the paper's table 2. Any gymnasium Box-action MuJoCo task works with
# the code below; this list only guards the CLI against typos.
SUPPORTED_ENVS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "InvertedPendulum-v5")

# SB3's clamp on the SAC actor's log std (sac/policies.py).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def check_env_id(env_id: str) -> None:
    """Raise a ``ValueError`` naming the choices when ``env_id`` is not a known environment."""
    import gymnasium as gym

    if env_id not in gym.registry:
        close = [e for e in SUPPORTED_ENVS if e.split("-")[0].lower() in env_id.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown environment id `env`={env_id!r}{hint}; supported: {list(SUPPORTED_ENVS)}"
        )


def make_env(env_id: str):
    """``gymnasium.make(env_id)`` with a clear error for unknown ids or non-Box actions."""
    import gymnasium as gym

    check_env_id(env_id)
    env = gym.make(env_id)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(
            f"`env`={env_id!r} has a {type(env.action_space).__name__} action space; "
            "distillation over candidate actions needs a continuous Box"
        )
    return env


def evaluate_returns(
    act: Callable[[np.ndarray], np.ndarray], env_id: str, episodes: int, seed: int
) -> list[float]:
    """Undiscounted return of ``episodes`` episodes; episode ``i`` resets with ``seed + i``.

    Args:
        act: maps one observation ``[D]`` to one action ``[A]`` in the env's bounds.
        env_id: gymnasium id.
        episodes: number of episodes (≥ 1).
        seed: base reset seed (the same seeds give every policy the same start states).
    """
    if episodes < 1:
        raise ValueError(f"evaluate_returns: `episodes` must be >= 1, got {episodes}")
    env = make_env(env_id)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return returns


def teacher_path(root: str | Path, env_id: str) -> Path:
    """Where the teacher for ``env_id`` lives under ``root``: ``root/<env_id>.pt``."""
    return Path(root) / f"{env_id}.pt"


class Teacher:
    """A trained SAC teacher: Gaussian parameters in pre-tanh space and critic values.

    Build with :meth:`load` (or :meth:`from_sb3` right after training). The wrapped SB3
    ``SACPolicy`` is in eval mode with gradients off.
    """

    def __init__(self, policy, meta: dict[str, Any]):
        self.policy = policy
        self.meta = meta
        self.policy.set_training_mode(False)
        self.policy.requires_grad_(False)

    @property
    def env_id(self) -> str:
        return self.meta["env_id"]

    @property
    def obs_dim(self) -> int:
        return int(self.meta["obs_dim"])

    @property
    def act_dim(self) -> int:
        return int(self.meta["act_dim"])

    @torch.no_grad()
    def dist_params(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-tanh Gaussian of the actor: ``obs [N, D] → (mean [N, A], log_std [N, A])``."""
        mean, log_std, _ = self.policy.actor.get_action_dist_params(obs.float())
        return mean, log_std

    @torch.no_grad()
    def q_values(self, obs: Tensor, z: Tensor) -> Tensor:
        """``min(Q_1, Q_2)(s, tanh z)``: ``obs [N, D]``, ``z [N, K, A]`` → ``[N, K]``."""
        N, K, A = z.shape
        o = obs.float()[:, None, :].expand(N, K, obs.shape[-1]).reshape(N * K, -1)
        qs = self.policy.critic(o, torch.tanh(z).reshape(N * K, A))  # tuple of (N·K, 1)
        return torch.cat(qs, dim=-1).min(-1).values.reshape(N, K)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action ``tanh(μ_T(s))`` for one observation ``[D]`` → ``[A]``."""
        mean, _ = self.dist_params(torch.as_tensor(obs, dtype=torch.float32)[None])
        return torch.tanh(mean)[0].numpy()

    def check_env(self, env) -> None:
        """Raise a ``ValueError`` if ``env``'s spaces do not match the teacher's."""
        obs_shape = tuple(env.observation_space.shape)
        act_space = env.action_space
        if tuple(act_space.shape) != (self.act_dim,):
            raise ValueError(
                f"teacher for {self.env_id!r} has action dimension {self.act_dim}, but the "
                f"environment's action space is {act_space} (shape {tuple(act_space.shape)})"
            )
        if not (
            np.allclose(act_space.low, self.meta["action_low"])
            and np.allclose(act_space.high, self.meta["action_high"])
        ):
            raise ValueError(
                f"teacher for {self.env_id!r} was trained with action bounds "
                f"[{self.meta['action_low']}, {self.meta['action_high']}], but the environment's "
                f"action space is {act_space}"
            )
        if obs_shape != (self.obs_dim,):
            raise ValueError(
                f"teacher for {self.env_id!r} expects observations of shape ({self.obs_dim},), "
                f"but the environment gives {obs_shape}"
            )

    # ---- persistence ---------------------------------------------------------------------

    @classmethod
    def from_sb3(cls, model, env_id: str, extra: dict[str, Any] | None = None) -> Teacher:
        """Wrap (a frozen copy of) a trained SB3 ``SAC`` model's policy."""
        env = model.get_env()
        meta = {
            "env_id": env_id,
            "algo": "SAC",
            "obs_dim": int(env.observation_space.shape[0]),
            "act_dim": int(env.action_space.shape[0]),
            "action_low": [float(x) for x in env.action_space.low],
            "action_high": [float(x) for x in env.action_space.high],
            "net_arch": list(model.policy.net_arch)
            if isinstance(model.policy.net_arch, list)
            else dict(model.policy.net_arch),
            **(extra or {}),
        }
        # a copy: the wrapper freezes its policy, and training must go on with the original
        return cls(copy.deepcopy(model.policy), meta)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (weights, float32) and ``path.with_suffix('.json')`` (metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "actor": {
                k: v.detach().float().clone() for k, v in self.policy.actor.state_dict().items()
            },
            "critic": {
                k: v.detach().float().clone() for k, v in self.policy.critic.state_dict().items()
            },
            "meta_json": json.dumps(self.meta),
        }
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # never leave a half-written teacher behind
        write_json(path.with_suffix(".json"), self.meta)
        return path

    @classmethod
    def load(cls, path: str | Path, env_id: str | None = None) -> Teacher:
        """Load a teacher saved by :meth:`save`; check it against ``env_id``'s spaces."""
        from gymnasium import spaces
        from stable_baselines3.sac.policies import SACPolicy

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no teacher at {path}; train one with `adpo bench distill-teacher --env "
                f"{env_id or '<ENV>'} --out {path.parent}`"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(state["meta_json"])
        low = np.asarray(meta["action_low"], dtype=np.float32)
        high = np.asarray(meta["action_high"], dtype=np.float32)
        obs_space = spaces.Box(-np.inf, np.inf, (meta["obs_dim"],), np.float64)
        policy = SACPolicy(
            obs_space,
            spaces.Box(low, high, dtype=np.float32),
            lr_schedule=lambda _: 0.0,
            net_arch=meta["net_arch"],
        )
        policy.actor.load_state_dict(state["actor"])
        policy.critic.load_state_dict(state["critic"])
        policy.critic_target.load_state_dict(state["critic"])
        teacher = cls(policy, meta)
        if env_id is not None:
            if env_id != meta["env_id"]:
                console.print(
                    f"[yellow]warning[/]: teacher {path} was trained on {meta['env_id']!r}, "
                    f"used on {env_id!r}"
                )
            env = make_env(env_id)
            teacher.check_env(env)
            env.close()
        return teacher


@dataclass
class TeacherConfig:
    """Train one SAC teacher with stable-baselines3. Every field is a CLI flag."""

    env: str = "HalfCheetah-v5"
    """gymnasium environment id"""
    steps: int = 150_000
    """environment steps (SB3 `total_timesteps`); one gradient step per env step after
    `learning_starts`"""
    out: str = "results/distill/teachers"
    """folder for `<env>.pt` (weights) and `<env>.json` (how it was trained)"""
    seed: int = 0
    """seed of SB3 (network init, replay sampling) and of the env"""
    learning_starts: int = 5_000
    """uniform-random steps before the first update (SB3 default 100; the RL zoo uses 10k
    for MuJoCo)"""
    eval_every: int = 10_000
    """evaluate (deterministic) and checkpoint every this many steps"""
    eval_episodes: int = 5
    """episodes per evaluation during training"""
    eval_seed: int = 10_000
    """reset seeds of training-time evaluations (disjoint from the distillation benchmark's)"""
    keep: str = "best"
    """'best': keep the checkpoint with the best training-time evaluation; 'last': the final"""
    threads: int = 1
    """torch threads (the machine has 2 shared cores)"""

    def __post_init__(self) -> None:
        if self.steps <= self.learning_starts:
            raise ValueError(
                f"TeacherConfig: `steps` ({self.steps}) must exceed `learning_starts` "
                f"({self.learning_starts})"
            )
        if self.eval_every < 1 or self.eval_episodes < 1:
            raise ValueError("TeacherConfig: `eval_every` and `eval_episodes` must be >= 1")
        if self.keep not in ("best", "last"):
            raise ValueError(f"TeacherConfig: `keep` must be 'best' or 'last', got {self.keep!r}")


def train_teacher(cfg: TeacherConfig) -> Teacher:
    """Train SAC on ``cfg.env`` (SB3 defaults otherwise) and save the kept checkpoint."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(cfg.threads)
    out = prepare_out(cfg.out)
    path = teacher_path(out, cfg.env)
    env = make_env(cfg.env)
    model = SAC("MlpPolicy", env, seed=cfg.seed, learning_starts=cfg.learning_starts, verbose=0)
    t0 = time.perf_counter()
    curve: list[dict[str, float]] = []
    best = {"return": -math.inf}

    def meta(step: int, kept: dict[str, Any]) -> dict[str, Any]:
        return {
            "config": asdict(cfg),
            "steps_done": step,
            "train_seconds": round(time.perf_counter() - t0, 1),
            "kept_checkpoint": kept,
            "eval_curve": curve,
            **provenance(MUJOCO),
        }

    class Checkpoint(BaseCallback):
        def _on_step(self) -> bool:
            step = self.num_timesteps
            if step % cfg.eval_every and step != cfg.steps:
                return True
            teacher = Teacher.from_sb3(self.model, cfg.env)
            rets = evaluate_returns(teacher.act, cfg.env, cfg.eval_episodes, cfg.eval_seed)
            point = {
                "step": step,
                "return_mean": float(np.mean(rets)),
                "return_std": float(np.std(rets)),
                "seconds": round(time.perf_counter() - t0, 1),
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "threads": torch.get_num_threads(),
            }
            curve.append(point)
            console.print(
                f"[{cfg.env}] step {step:>7d}  return {point['return_mean']:9.1f} ± "
                f"{point['return_std']:7.1f}  {point['seconds']:7.0f}s  load {point['loadavg_1m']}"
            )
            if cfg.keep == "last" or point["return_mean"] > best["return"]:
                best["return"] = point["return_mean"]
                kept = {"step": step, "eval_return_mean": point["return_mean"]}
                Teacher.from_sb3(self.model, cfg.env, meta(step, kept)).save(path)
            else:  # keep the checkpoint, refresh its record of the training curve
                saved = json.loads(path.with_suffix(".json").read_text())
                write_json(
                    path.with_suffix(".json"), {**saved, **meta(step, saved["kept_checkpoint"])}
                )
            return True

    model.learn(total_timesteps=cfg.steps, callback=Checkpoint())
    console.print(f"[bold]teacher[/]: {path} ({time.perf_counter() - t0:.0f}s)")
    return Teacher.load(path, cfg.env)


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(
        TeacherConfig,
        args=argv,
        prog="adpo bench distill-teacher",
        description=__doc__.split("\n\n")[0],
    )
    train_teacher(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
