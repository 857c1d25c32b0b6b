"""Run verl 0.9.1's own PPO trainer on CPU: a CPU platform, gloo, and an HF ``generate()`` rollout.

verl 0.9.1 runs only on accelerators: its platform registry knows nvidia/huawei/amd, its
process group always asks for NCCL-style ``cpu:gloo,<device>:<backend>``, and its rollouts
are vLLM/SGLang/TensorRT-LLM servers. This module adds what a CPU run needs through verl's
own registries and plugin hook, so that ``verl.trainer.main_ppo`` (Ray, FSDP2, the agent
loop, checkpointing) runs unchanged on a laptop or in CI. It is imported in every verl
process by ``VERL_USE_EXTERNAL_MODULES=adpo.integrations.verl.cpu`` (``verl/__init__.py``
imports the listed modules), selected with ``VERL_PLATFORM=cpu``; the launcher's ``--cpu``
flag sets both (:data:`ENV`).

The rollout is Hugging Face ``generate()``, one request at a time, on a copy of the model in
a Ray actor: right for tiny models and tests, not a vLLM substitute. With verl's
``rollout.full_determinism=true`` (request ids ``det-<sample>``) each request samples from its
own generator, seeded by ``rollout.seed``, the training step of the last weight sync and the
sample's index, so a run's responses do not depend on the order its requests arrive in:
two runs with the same data and seed see the same batch.

verl names this module touches (pinned to verl ==0.9.1; ``tests/integrations/
test_verl_cpu.py::test_verl_seams`` fails with the name when one moves):

* ``verl.plugin.platform.PlatformRegistry.register("cpu")`` — public plugin registry:
  :class:`PlatformCPU` (device ``"cpu"``, backend gloo, Ray resource ``"GPU"`` so verl's
  ``ResourcePoolManager``, which always asks for GPUs, gets the logical GPUs declared with
  ``ray_kwargs.ray_init.num_gpus``). Its ``device_module`` is :data:`CPU_DEVICE`, whose
  ``current_device()`` is ``"cpu"`` because verl hands ``get_device_id()`` to torch as a
  device. :class:`PlatformCPU` subclasses ``verl.plugin.platform.PlatformBase``;
  ``get_platform``/``set_platform`` select it when verl resolved its platform before this
  module registered (``PlatformRegistry.get`` keeps registration idempotent).
* ``verl.utils.distributed.initialize_global_process_group_ray`` — **runtime patch** (the
  only one): verl builds ``backend=f"cpu:gloo,{device}:{backend}"``, which on CPU is
  ``"cpu:gloo,cpu:gloo"`` and torch refuses as a duplicate. :func:`_gloo_process_group`
  passes ``backend="gloo"`` when the platform is ours and the caller gave none; it wraps
  the name in ``verl.utils.distributed`` and, if already imported,
  ``verl.workers.engine_workers`` (which imports it by name).
* ``verl.workers.rollout.base._ROLLOUT_REGISTRY[("hf", "async")]`` — private dict read by
  ``get_rollout_class``: :class:`HFServerAdapter`, the trainer-side adapter that sends
  the actor's full weights to the rollout actor on every weight sync.
* ``verl.workers.rollout.replica.RolloutReplicaRegistry.register("hf")`` — public
  registry read by ``get_rollout_replica_class``: :class:`HFReplica`, which starts one
  :class:`HFServer` Ray actor per replica (named ``adpo_hf_server_<replica_rank>``).
* ``verl.workers.rollout.base.BaseRollout``, ``verl.workers.rollout.replica.RolloutReplica``
  and ``TokenOutput`` — base classes / return type of the two rollout classes; the
  keywords ``verl.workers.rollout.llm_server`` passes to ``server.generate.remote`` and the
  server methods ``RolloutReplica`` calls (``wake_up``, ``sleep``, ``clear_kv_cache``, …)
  are what :class:`HFServer` implements.
* environment variables verl reads: ``VERL_PLATFORM`` (``verl.plugin.platform``),
  ``VERL_USE_EXTERNAL_MODULES`` (``verl/__init__.py``), ``VERL_ENGINE_DEVICE``
  (``verl.workers.engine.base``).

:data:`SEAMS` and :data:`ENV_SEAMS` list the same names for the seam test, which also checks
that verl is :data:`VERL_VERSION`.

Settings that need no code (the launcher's ``--cpu`` adds them, :data:`CPU_OVERRIDES`):
``VERL_ENGINE_DEVICE=cuda`` (no engine is registered for ``device="cpu"``; this selects the
FSDP engine, which then places tensors with ``get_device_name()``, i.e. on CPU), ``num_gpus=1``
/ ``num_cpus=8`` logical Ray resources, ``attn_implementation=sdpa`` (verl forces
FlashAttention), ``strategy=fsdp2`` (FSDP1 refuses CPU parameters with
``sync_module_states=True``) and ``rollout.name=hf``; and, for speed only, one reward worker
and one agent-loop worker instead of verl's 8 each (every one is a Python process importing
torch and verl) and no Ray dashboard.

Set ``+actor_rollout_ref.rollout.custom.adpo_rollout_log=FILE`` (or the environment
variable ``ADPO_VERL_ROLLOUT_LOG=FILE``) to have each :class:`HFServer` append one JSON line
per weight sync (step, tensors received, a weight :func:`fingerprint`, requests served since
the last sync): the evidence that the rollout generates with the trainer's updated weights.
"""

from __future__ import annotations

import json
import os
import sys
import types
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

__all__ = [
    "CPU_DEVICE",
    "CPU_OVERRIDES",
    "ENV",
    "ENV_SEAMS",
    "PLATFORM",
    "ROLLOUT",
    "SEAMS",
    "VERL_VERSION",
    "HFReplica",
    "HFServer",
    "HFServerAdapter",
    "PlatformCPU",
    "fingerprint",
    "register",
    "rollout_log_path",
    "server_name",
]

#: the verl release every name below was checked against (the ``verl`` extra pins it)
VERL_VERSION = "0.9.1"
#: ``(dotted name, why)`` for every verl name this module touches (module doc)
SEAMS: tuple[tuple[str, str], ...] = (
    ("verl.plugin.platform.PlatformRegistry.register", "registers PlatformCPU as 'cpu'"),
    ("verl.plugin.platform.PlatformRegistry.get", "idempotent registration"),
    ("verl.plugin.platform.PlatformBase", "base class of PlatformCPU"),
    ("verl.plugin.platform.get_platform", "is our platform the active one"),
    ("verl.plugin.platform.set_platform", "select PlatformCPU if resolved before registering"),
    (
        "verl.utils.distributed.initialize_global_process_group_ray",
        "runtime patch: backend='gloo' on our platform",
    ),
    (
        "verl.workers.engine_workers.initialize_global_process_group_ray",
        "imported there by name: patched there too",
    ),
    ("verl.workers.rollout.base._ROLLOUT_REGISTRY", "private: ('hf', 'async') -> HFServerAdapter"),
    ("verl.workers.rollout.base.get_rollout_class", "reads _ROLLOUT_REGISTRY"),
    ("verl.workers.rollout.base.BaseRollout", "base class of HFServerAdapter"),
    ("verl.workers.rollout.replica.RolloutReplicaRegistry.register", "registers HFReplica"),
    ("verl.workers.rollout.replica.get_rollout_replica_class", "reads RolloutReplicaRegistry"),
    ("verl.workers.rollout.replica.RolloutReplica", "base class of HFReplica"),
    ("verl.workers.rollout.replica.TokenOutput", "return type of HFServer.generate"),
    ("verl.workers.rollout.llm_server", "calls HFServer.generate with its keywords"),
)
#: environment variables verl reads, and the module that reads each
ENV_SEAMS: tuple[tuple[str, str], ...] = (
    ("VERL_PLATFORM", "verl.plugin.platform.platform_manager"),
    ("VERL_USE_EXTERNAL_MODULES", "verl"),
    ("VERL_ENGINE_DEVICE", "verl.workers.engine.base"),
)

#: ``VERL_PLATFORM`` value and ``rollout.name`` this module registers
PLATFORM = "cpu"
ROLLOUT = "hf"
MODULE = "adpo.integrations.verl.cpu"
#: environment every verl process of a CPU run needs (the driver's is inherited by Ray)
ENV = {
    "VERL_PLATFORM": PLATFORM,
    "VERL_USE_EXTERNAL_MODULES": MODULE,
    "VERL_ENGINE_DEVICE": "cuda",
}
#: Hydra overrides of a CPU run (see the module doc for why each is needed)
CPU_OVERRIDES = [
    "trainer.device=cpu",
    "trainer.n_gpus_per_node=1",
    "trainer.nnodes=1",
    "+ray_kwargs.ray_init.num_gpus=1",
    "ray_kwargs.ray_init.num_cpus=8",
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    "actor_rollout_ref.actor.strategy=fsdp2",
    "actor_rollout_ref.ref.strategy=fsdp2",
    f"actor_rollout_ref.rollout.name={ROLLOUT}",
    "actor_rollout_ref.rollout.agent.num_workers=1",
    "reward.num_workers=1",
    "+ray_kwargs.ray_init.include_dashboard=false",
]
_LOG_ENV = "ADPO_VERL_ROLLOUT_LOG"
_LOG_KEY = "adpo_rollout_log"


# ----------------------------------------------------------------------------- platform
def _mem_get_info(device: Any = None) -> tuple[int, int]:
    """``(free, total)`` bytes of host memory, for verl's memory logging."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _make_device_module() -> types.ModuleType:
    """A ``torch.cuda``-shaped namespace over ``torch.cpu``: what verl calls on
    ``get_torch_device()``. Names ``torch.cpu`` lacks are no-ops (caches, peak-memory
    counters) or host-memory figures; anything else falls through to ``torch.cpu``."""
    mod = types.ModuleType("adpo_verl_cpu_device")
    mod.current_device = lambda: "cpu"  # verl passes get_device_id() to torch as a device
    mod.device_count = lambda: 1
    mod.get_device_name = lambda device=None: "cpu"
    mod.is_available = lambda: True
    mod.set_device = _noop
    mod.synchronize = _noop
    mod.empty_cache = _noop
    mod.manual_seed = torch.manual_seed
    mod.manual_seed_all = torch.manual_seed
    # verl's checkpoint loader restores the "device" RNG state under get_device_name(),
    # i.e. "cpu": the host generator's state, which it saved under that key
    mod.get_rng_state = torch.get_rng_state
    mod.set_rng_state = torch.set_rng_state
    mod.mem_get_info = _mem_get_info
    for name in (
        "memory_allocated",
        "memory_reserved",
        "max_memory_allocated",
        "max_memory_reserved",
    ):
        setattr(mod, name, _zero)
    mod.reset_peak_memory_stats = _noop
    mod.ipc_collect = _noop

    def __getattr__(name: str) -> Any:
        return getattr(torch.cpu, name)

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return mod


#: the ``device_module`` of :class:`PlatformCPU`
CPU_DEVICE = _make_device_module()


def _platform_base():
    from verl.plugin.platform import PlatformBase

    return PlatformBase


class PlatformCPU(_platform_base()):
    """verl platform ``"cpu"``: torch on the host, gloo collectives, logical Ray GPUs."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return CPU_DEVICE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # never auto-detected: only VERL_PLATFORM=cpu selects it

    def current_device(self) -> str:  # type: ignore[override]
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[None, None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"  # what Ray sets for the logical GPUs

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None


def _is_cpu_platform() -> bool:
    from verl.plugin.platform import get_platform

    return isinstance(get_platform(), PlatformCPU)


def _gloo_process_group(original):
    """Wrap verl's ``initialize_global_process_group_ray``: plain ``"gloo"`` on our platform."""
    if getattr(original, "_adpo_cpu", False):
        return original

    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        if backend is None and _is_cpu_platform():
            backend = "gloo"
        return original(timeout_second=timeout_second, backend=backend)

    initialize_global_process_group_ray._adpo_cpu = True  # type: ignore[attr-defined]
    initialize_global_process_group_ray.__wrapped__ = original  # type: ignore[attr-defined]
    return initialize_global_process_group_ray


# ----------------------------------------------------------------------------- rollout
def server_name(replica_rank: int) -> str:
    """Ray actor name of the :class:`HFServer` of one rollout replica."""
    return f"adpo_hf_server_{replica_rank}"


def fingerprint(tensors: dict[str, torch.Tensor]) -> float:
    """A weight fingerprint: ``Σ_i (1 + i/n) Σ_j |w_ij|·(1 + j/m_i)`` in float64, over the
    ``n`` tensors in sorted-name order and the ``m_i`` entries of each, flattened.

    Equal state dicts give equal values, whatever the insertion order; a gradient update
    changes it (with probability 1), and so does moving values between positions or
    tensors, which an unweighted ``Σ|w|`` would miss. Not a hash: a test signal only.
    """
    names = sorted(tensors)
    n = max(len(names), 1)
    total = 0.0
    for i, name in enumerate(names):
        w = tensors[name].detach().reshape(-1).double().abs()  # (m_i,)
        pos = torch.linspace(1.0, 2.0, w.numel(), dtype=torch.float64) if w.numel() > 1 else 1.0
        total += float((w * pos).sum()) * (1.0 + i / n)
    return total


def _field(cfg: Any, key: str) -> Any:
    """``cfg.key`` for a dataclass or a (struct) DictConfig; None when absent."""
    getter = getattr(cfg, "get", None)
    return getter(key) if callable(getter) else getattr(cfg, key, None)


def rollout_log_path(config: Any) -> str | None:
    """Where :class:`HFServer` logs weight syncs: ``rollout.custom.adpo_rollout_log``, else
    ``$ADPO_VERL_ROLLOUT_LOG``, else nowhere (None).

    The config key is per run; the variable reaches Ray workers only if it is set before
    Ray starts, so runs that share one Ray session tell their logs apart with the key.
    """
    custom = _field(config, "custom") or {}
    return _field(custom, _LOG_KEY) or os.environ.get(_LOG_ENV) or None


class HFServer:
    """Ray actor holding an HF causal LM that serves verl's token-in/token-out ``generate``.

    Created by :class:`HFReplica`; receives full weights from :class:`HFServerAdapter`.
    Requests are served one at a time with ``model.generate`` (``max_new_tokens =
    rollout.response_length``, sampling from ``temperature``/``top_p``/``top_k``).
    """

    def __init__(self, config: Any, model_config: Any, replica_rank: int) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.replica_rank = replica_rank
        # verl hands replicas the model config as a DictConfig (no ``local_path`` key)
        path = _field(model_config, "local_path") or _field(model_config, "path")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(path)
        self.eos_id = tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.max_new_tokens = int(config.response_length)
        self.served = 0
        self.syncs = 0
        self.step = 0  # global_steps of the last weight sync
        self.seed = int(getattr(config, "seed", 0) or 0)
        torch.manual_seed(self.seed + replica_rank)

    def request_seed(self, request_id: str) -> int | None:
        """The seed of a ``det-<k>`` request (verl's ``full_determinism`` ids), else None:
        a function of ``rollout.seed``, the step of the last weight sync and ``k`` only."""
        k = request_id[4:] if request_id.startswith("det-") else ""
        if not k.isdigit():
            return None
        import numpy as np

        return int(np.random.SeedSequence([self.seed, self.step, int(k)]).generate_state(1)[0])

    def _sample_kwargs(self, sampling_params: dict[str, Any]) -> dict[str, Any]:
        temperature = float(sampling_params.get("temperature", 1.0) or 0.0)
        if temperature <= 0:
            return {"do_sample": False}
        top_k = int(sampling_params.get("top_k", -1) or -1)
        return {
            "do_sample": True,
            "temperature": temperature,
            "top_p": float(sampling_params.get("top_p", 1.0) or 1.0),
            "top_k": top_k if top_k > 0 else None,
        }

    @torch.no_grad()
    def _generate(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], seed: int | None = None
    ):
        from verl.workers.rollout.replica import TokenOutput

        ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
        max_new = int(sampling_params.get("max_tokens") or self.max_new_tokens)
        want_logprobs = bool(sampling_params.get("logprobs"))
        # a seeded request samples from its own stream, leaving the shared one untouched
        with torch.random.fork_rng(devices=[]) if seed is not None else nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
                return_dict_in_generate=True,
                output_logits=want_logprobs,
                **self._sample_kwargs(sampling_params),
            )
        new = out.sequences[0, ids.shape[1] :].tolist()  # (T_new,)
        if self.eos_id in new:  # keep the eos, drop the padding generate adds after it
            new = new[: new.index(self.eos_id) + 1]
        log_probs = None
        if want_logprobs:
            scores = self.model.compute_transition_scores(
                out.sequences, out.logits, normalize_logits=True
            )[0]  # (T_new,)
            log_probs = [float(x) for x in scores[: len(new)]]
        self.served += 1
        stop = "completed" if new and new[-1] == self.eos_id else "length"
        return TokenOutput(token_ids=new, log_probs=log_probs, stop_reason=stop)

    async def generate(
        self,
        request_id: str,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: Any = None,
        video_data: Any = None,
        **kwargs: Any,
    ):
        """verl's server ``generate``: prompt token ids in, a ``TokenOutput`` out (seeded per
        request under ``full_determinism``, :meth:`request_seed`)."""
        if image_data or video_data or kwargs.get("audio_data"):
            raise ValueError("HFServer.generate: the CPU HF rollout is text-only")
        return self._generate(prompt_ids, sampling_params, self.request_seed(request_id))

    async def update_weights(self, tensors: dict[str, torch.Tensor], global_steps: Any) -> dict:
        """Load the trainer's full weights (HF names); log the sync when asked to."""
        state = self.model.state_dict()
        unknown = sorted(set(tensors) - set(state))
        if unknown:
            raise ValueError(f"HFServer.update_weights: unknown parameter names {unknown[:5]}")
        with torch.no_grad():
            for name, t in tensors.items():
                state[name].copy_(t.to(state[name].dtype))
        self.syncs += 1
        self.step = int(global_steps or 0)
        record = {
            "replica": self.replica_rank,
            "global_steps": global_steps,
            "sync": self.syncs,
            "tensors": len(tensors),
            "fingerprint": fingerprint(dict(self.model.state_dict())),
            "served_since_last_sync": self.served,
        }
        self.served = 0
        path = rollout_log_path(self.config)
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    # verl's replica control calls: nothing to free or resume for an in-memory HF model
    async def wake_up(self) -> None: ...
    async def sleep(self) -> None: ...
    async def clear_kv_cache(self) -> None: ...
    async def release_kv_cache(self) -> None: ...
    async def resume_kv_cache(self) -> None: ...
    async def abort_all_requests(self, reject_request: bool = False) -> None: ...
    async def resume_generation(self) -> None: ...
    async def start_profile(self, **kwargs: Any) -> None: ...
    async def stop_profile(self) -> None: ...


def _replica_base():
    from verl.workers.rollout.replica import RolloutReplica

    return RolloutReplica


class HFReplica(_replica_base()):
    """verl rollout replica ``"hf"``: one :class:`HFServer` actor, named per replica rank."""

    async def launch_servers(self) -> None:
        import ray

        server = (
            ray.remote(HFServer)
            .options(name=server_name(self.replica_rank), num_cpus=0, max_concurrency=8)
            .remote(self.config, self.model_config, self.replica_rank)
        )
        await server.wake_up.remote()  # waits for the model to load
        self.servers = [server]
        self._server_handle = server
        self._server_address = server_name(self.replica_rank)


def _rollout_base():
    from verl.workers.rollout.base import BaseRollout

    return BaseRollout


class HFServerAdapter(_rollout_base()):
    """Trainer-side rollout ``("hf", "async")``: forwards weight syncs to the :class:`HFServer`.

    Lives in each actor worker (verl's hybrid engine); rank 0 of each replica owns the
    server, as in verl's vLLM adapter.
    """

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self._has_server = rank % world == 0
        self._server = None

    def _handle(self):
        import ray

        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs: Any):
        """Collect the full tensors (``DTensor`` → full) and send them in one call."""
        if wire_format != "named_tensors":
            raise ValueError(f"HFServerAdapter: wire_format {wire_format!r} is not supported")
        tensors = {}
        for name, t in weights:
            if hasattr(t, "full_tensor"):
                t = t.full_tensor()
            tensors[name] = t.detach().to("cpu", copy=True)
        if self._has_server:
            await self._handle().update_weights.remote(tensors, kwargs.get("global_steps"))


# ----------------------------------------------------------------------------- registration
def register() -> None:
    """Register the platform, the rollout and the process-group patch (idempotent)."""
    import verl.utils.distributed as vdist
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    if PlatformRegistry.get(PLATFORM) is not PlatformCPU:
        PlatformRegistry.register(platform=PLATFORM)(PlatformCPU)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT, "async")] = f"{MODULE}.HFServerAdapter"
    RolloutReplicaRegistry.register(ROLLOUT, lambda: HFReplica)
    vdist.initialize_global_process_group_ray = _gloo_process_group(
        vdist.initialize_global_process_group_ray
    )
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM:
        from verl.plugin.platform import get_platform, set_platform

        if not isinstance(get_platform(), PlatformCPU):  # resolved before we registered
            set_platform(PlatformCPU())
    workers = sys.modules.get("verl.workers.engine_workers")
    if workers is not None:
        workers.initialize_global_process_group_ray = _gloo_process_group(
            workers.initialize_global_process_group_ray
        )


register()
