"""Launch verl's PPO trainer with ADPO/OPO registered and the group layout checked.

::

    python -m adpo.integrations.verl --config examples/verl/adpo_pl_qwen3_1p7b_math.yaml \
        [key=value ...] [--check]
    adpo verl --config ... [key=value ...]            # the same, through the adpo CLI

The config file is a Hydra primary config that extends verl's ``ppo_trainer.yaml``
(``hydra.searchpath: [pkg://verl.trainer.config]``, ``defaults: [ppo_trainer, ...]``);
``key=value`` are Hydra overrides (``+key=value`` adds a key). The launcher

1. composes the config exactly as ``verl.trainer.main_ppo`` would,
2. adds this package to ``actor_rollout_ref.model.external_lib`` so every verl worker
   imports it (and so registers the losses) when it builds its model config,
3. validates the group layout (:func:`~adpo.integrations.verl.validate_verl_config`),
   builds the policy-loss config and runs verl's own ``validate_config``, refusing to
   start with every offending key named,
4. runs ``verl.trainer.main_ppo.main`` on the composed config (Ray, rollouts, updates).

``--check`` stops after step 3 and prints the loss settings: no Ray, no GPU.
``--cpu`` runs the same trainer on CPU (:mod:`adpo.integrations.verl.cpu`): it sets that
module's environment (:data:`~adpo.integrations.verl.cpu.ENV`, inherited by every Ray
worker) and puts its overrides (:data:`~adpo.integrations.verl.cpu.CPU_OVERRIDES`: logical
Ray GPU, FSDP2, SDPA attention, the HF ``generate()`` rollout) before yours.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from adpo.integrations._verl_args import DESCRIPTION, add_launcher_arguments

from .config import LOSS_MODES
from .validation import VerlGroupConfigError, validate_verl_config

__all__ = [
    "PACKAGE",
    "compose_config",
    "ensure_external_lib",
    "main",
    "policy_loss_config",
    "run",
    "use_cpu",
    "verl_checks",
]

#: what ``external_lib`` must import in each worker
PACKAGE = "adpo.integrations.verl"


def compose_config(config_file: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Compose a Hydra primary config file (plus overrides) into verl's PPO config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    path = Path(config_file).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(path.parent), version_base=None):
        return compose(config_name=path.stem, overrides=list(overrides or []))


def ensure_external_lib(cfg: DictConfig) -> None:
    """Add :data:`PACKAGE` to ``actor_rollout_ref.model.external_lib`` (kept if present)."""
    current = OmegaConf.select(cfg, "actor_rollout_ref.model.external_lib")
    if current is None:
        libs: list[str] = []
    elif isinstance(current, str):
        libs = [current]
    else:
        libs = list(current)
    if PACKAGE in libs:
        return
    libs.append(PACKAGE)
    with open_dict(cfg):
        cfg.actor_rollout_ref.model.external_lib = libs[0] if len(libs) == 1 else libs


def policy_loss_config(cfg: DictConfig):
    """Instantiate ``actor_rollout_ref.actor.policy_loss`` as verl's workers will."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)


def verl_checks(cfg: DictConfig) -> None:
    """verl's own start-up checks (``verl.utils.config.validate_config``), run early."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(
        config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
    )


def use_cpu(overrides: list[str]) -> list[str]:
    """Prepare this process for a CPU run; return the overrides with the CPU ones first.

    Sets :data:`adpo.integrations.verl.cpu.ENV` in ``os.environ`` (Ray workers inherit the
    driver's environment and import the module through ``VERL_USE_EXTERNAL_MODULES``) and
    imports the module here, in the driver.
    """
    from . import cpu

    os.environ.update(cpu.ENV)
    cpu.register()
    return [*cpu.CPU_OVERRIDES, *overrides]


def main(argv: list[str] | None = None) -> int:
    """``python -m adpo.integrations.verl``: parse the flags, then :func:`run`."""
    parser = argparse.ArgumentParser(
        prog="python -m adpo.integrations.verl", description=DESCRIPTION
    )
    return run(add_launcher_arguments(parser).parse_args(sys.argv[1:] if argv is None else argv))


def run(args: argparse.Namespace) -> int:
    """Compose, check and (unless ``args.check``) run; ``args`` as :func:`main` parses them."""
    overrides = use_cpu(args.overrides) if args.cpu else list(args.overrides)
    cfg = compose_config(args.config, overrides)
    ensure_external_lib(cfg)
    try:
        validate_verl_config(cfg)
        loss_cfg = policy_loss_config(cfg)
        verl_checks(cfg)
    except (VerlGroupConfigError, ValueError, TypeError, AssertionError) as e:
        print(f"adpo verl: {e}", file=sys.stderr)
        return 2
    mode = loss_cfg.loss_mode
    print(f"adpo verl: policy loss {mode!r}", end="")
    if mode in LOSS_MODES:
        if mode == "orthogonalized_po":
            fields = ("alpha", "mu", "ratio", "weight_norm", "ref_correction")
        else:
            fields = ("tau", "beta", "resolved_target", "ties")
        print(" " + ", ".join(f"{k}={getattr(loss_cfg, k)!r}" for k in fields), end="")
        print(f", G={cfg.actor_rollout_ref.rollout.n}; group layout OK")
    else:
        print(" (verl's own loss; group checks do not apply)")
    if args.check:
        return 0

    from verl.trainer.main_ppo import main as verl_main

    import adpo.integrations.verl  # noqa: F401  (registers the losses in the driver)

    verl_main(cfg)  # hydra's wrapper runs the task function directly on a given config
    return 0
