"""``adpo.integrations.verl.cpu``: the verl names it touches still exist (the seam test),
its registrations take effect, and its parts work without Ray (platform, device module,
process-group patch, the HF rollout server and its weight-sync log, ``--cpu``).

The real runs that use all of it are in ``test_verl_run.py`` (slow).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
from pathlib import Path

import pytest
import torch

if os.environ.get("ADPO_REQUIRE_VERL"):  # .ci/run's verl environment: never skip silently
    import verl
else:
    verl = pytest.importorskip("verl")

from adpo.integrations.verl import cpu
from adpo.integrations.verl.launcher import compose_config, main, use_cpu
from adpo.integrations.verl.validation import problems

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "verl" / "smoke_tiny_arithmetic.yaml"


def resolve(dotted: str):
    """Import the longest importable module prefix of ``dotted``, then getattr the rest."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for attr in parts[n:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.fixture
def keep_platform(monkeypatch):
    """Restore verl's active platform and the CPU environment variables after the test."""
    from verl.plugin.platform import get_platform, set_platform

    before = get_platform()
    for key in cpu.ENV:
        monkeypatch.delenv(key, raising=False)
    yield
    set_platform(before)


# ------------------------------------------------------------------------- the seam test
def test_verl_is_the_version_the_seams_were_checked_against():
    assert verl.__version__ == cpu.VERL_VERSION, (
        f"verl {verl.__version__} is installed; adpo.integrations.verl.cpu was checked "
        f"against {cpu.VERL_VERSION}: rerun this file and the real runs before moving the pin"
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    verl_extra = re.search(r"^verl = \[(.*?)^\]", pyproject, re.S | re.M).group(1)
    assert f'"verl=={cpu.VERL_VERSION}"' in verl_extra, verl_extra


@pytest.mark.parametrize("name, why", cpu.SEAMS, ids=[n for n, _ in cpu.SEAMS])
def test_verl_seams(name, why):
    try:
        resolve(name)
    except (ImportError, AttributeError) as e:
        pytest.fail(
            f"verl name `{name}` moved or is gone ({type(e).__name__}: {e}); "
            f"adpo.integrations.verl.cpu uses it: {why}"
        )
    last = name.rsplit(".", 1)[-1]
    assert last in cpu.__doc__, f"`{name}` is in cpu.SEAMS but not in the module docstring"


@pytest.mark.parametrize("var, module", cpu.ENV_SEAMS)
def test_verl_still_reads_the_environment_variables(var, module):
    source = inspect.getsource(importlib.import_module(module))
    assert var in source, f"verl's {module} no longer reads ${var}: adpo's --cpu sets it"


def test_verl_signatures_the_module_relies_on():
    from verl.utils.distributed import initialize_global_process_group_ray
    from verl.workers.rollout.base import BaseRollout
    from verl.workers.rollout.replica import RolloutReplica, TokenOutput

    def params(fn):
        return list(inspect.signature(fn).parameters)

    assert params(initialize_global_process_group_ray)[:2] == ["timeout_second", "backend"]
    assert params(BaseRollout.__init__)[:4] == ["self", "config", "model_config", "device_mesh"]
    assert params(RolloutReplica.__init__)[:4] == ["self", "replica_rank", "config", "model_config"]
    assert {"token_ids", "log_probs", "stop_reason"} <= set(TokenOutput.model_fields)
    for cls in (cpu.PlatformCPU, cpu.HFServerAdapter, cpu.HFReplica):
        assert not cls.__abstractmethods__, (cls, sorted(cls.__abstractmethods__))


def _remote_calls(module) -> dict[str, list[ast.Call]]:
    """``X`` → the calls ``<anything>.X.remote(...)`` in a module's source."""
    out: dict[str, list[ast.Call]] = {}
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "remote"
            and isinstance(node.func.value, ast.Attribute)
        ):
            out.setdefault(node.func.value.attr, []).append(node)
    return out


def test_hf_server_accepts_what_verl_calls_it_with():
    """The keywords verl's LLM server manager passes to ``server.generate.remote`` bind to
    :meth:`HFServer.generate`; every ``server.X.remote`` of ``RolloutReplica`` exists."""
    import verl.workers.rollout.llm_server as llm_server
    import verl.workers.rollout.replica as replica

    calls = _remote_calls(llm_server)["generate"]
    assert calls, "verl.workers.rollout.llm_server no longer calls server.generate.remote"
    sig = inspect.signature(cpu.HFServer.generate)
    for call in calls:
        sig.bind(None, **{k.arg: None for k in call.keywords if k.arg is not None})
    replica_calls = set(_remote_calls(inspect.getmodule(replica.RolloutReplica)))
    missing = {m for m in replica_calls if not hasattr(cpu.HFServer, m)} - {"update_weights"}
    assert not missing, f"RolloutReplica calls server methods HFServer lacks: {missing}"


def test_registrations_take_effect(keep_platform, monkeypatch):
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    monkeypatch.setenv("VERL_PLATFORM", cpu.PLATFORM)
    cpu.register()
    cpu.register()  # idempotent: the process-group wrapper is not stacked
    assert PlatformRegistry.get(cpu.PLATFORM) is cpu.PlatformCPU
    assert isinstance(get_platform(), cpu.PlatformCPU)
    assert get_rollout_class(cpu.ROLLOUT, "async") is cpu.HFServerAdapter
    assert get_rollout_replica_class(cpu.ROLLOUT) is cpu.HFReplica
    import verl.utils.distributed as vdist

    patched = vdist.initialize_global_process_group_ray
    assert patched._adpo_cpu and not getattr(patched.__wrapped__, "_adpo_cpu", False)


# ------------------------------------------------------------------ the parts, without Ray
def test_gloo_only_on_our_platform_and_only_when_the_caller_gave_none(monkeypatch):
    seen = []

    def original(timeout_second=None, backend=None):
        seen.append(backend)

    wrapped = cpu._gloo_process_group(original)
    assert cpu._gloo_process_group(wrapped) is wrapped
    monkeypatch.setattr(cpu, "_is_cpu_platform", lambda: True)
    wrapped()
    wrapped(backend="cpu:gloo")  # verl's checkpoint engine passes its own
    monkeypatch.setattr(cpu, "_is_cpu_platform", lambda: False)
    wrapped()
    assert seen == ["gloo", "cpu:gloo", None]


def test_device_module_is_torch_cuda_shaped_over_the_host():
    dev = cpu.CPU_DEVICE
    assert dev.current_device() == "cpu" and torch.device(dev.current_device()).type == "cpu"
    free, total = dev.mem_get_info()
    assert 0 < free <= total
    state = dev.get_rng_state()
    a = torch.rand(3)
    dev.set_rng_state(state)  # what verl's checkpoint loader does on resume
    torch.testing.assert_close(torch.rand(3), a, rtol=0, atol=0)
    assert dev.max_memory_allocated() == 0 and dev.synchronize() is None
    platform = cpu.PlatformCPU()
    assert platform.communication_backend_name() == "gloo"
    assert platform.ray_resource_name() == "GPU" and not platform.is_platform_available()


def test_fingerprint_sees_any_change_and_ignores_insertion_order():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}
    assert cpu.fingerprint(a) == cpu.fingerprint(dict(reversed(list(a.items()))))
    for name in a:
        changed = {k: v.clone() for k, v in a.items()}
        changed[name][0] += 1e-3
        assert cpu.fingerprint(changed) != cpu.fingerprint(a)
    swapped = {"w": a["w"], "b": a["b"].flip(0)}  # same values, other positions
    assert cpu.fingerprint(swapped) != cpu.fingerprint(a)
    moved = {"w": a["b"], "b": a["w"]}  # same tensors under other names
    assert cpu.fingerprint(moved) != cpu.fingerprint(a)


def test_rollout_log_path_prefers_the_run_config(monkeypatch, tmp_path):
    from verl.workers.config import RolloutConfig

    monkeypatch.delenv("ADPO_VERL_ROLLOUT_LOG", raising=False)
    assert cpu.rollout_log_path(RolloutConfig(name="hf")) is None
    monkeypatch.setenv("ADPO_VERL_ROLLOUT_LOG", str(tmp_path / "env.jsonl"))
    assert cpu.rollout_log_path(RolloutConfig(name="hf")) == str(tmp_path / "env.jsonl")
    run = RolloutConfig(name="hf", custom={"adpo_rollout_log": str(tmp_path / "run.jsonl")})
    assert cpu.rollout_log_path(run) == str(tmp_path / "run.jsonl")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from adpo.testing import char_tokenizer, tiny_qwen3

    path = tmp_path_factory.mktemp("tiny_model")
    tok = char_tokenizer()
    tiny_qwen3(len(tok), seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_hf_server_generates_and_loads_synced_weights(tiny_model_dir, tmp_path):
    import asyncio

    from verl.workers.config import RolloutConfig
    from verl.workers.rollout.replica import TokenOutput

    log = tmp_path / "syncs.jsonl"
    config = RolloutConfig(name="hf", response_length=5, custom={"adpo_rollout_log": str(log)})
    server = cpu.HFServer(config, {"path": str(tiny_model_dir)}, replica_rank=0)
    out = asyncio.run(
        server.generate(
            "r0", prompt_ids=[5, 6, 7], sampling_params={"temperature": 1.0, "logprobs": True}
        )
    )
    assert isinstance(out, TokenOutput) and 1 <= len(out.token_ids) <= 5
    assert len(out.log_probs) == len(out.token_ids) and all(lp <= 0 for lp in out.log_probs)
    greedy = {"temperature": 0.0}
    first = asyncio.run(server.generate("r1", prompt_ids=[5, 6], sampling_params=greedy))

    before = cpu.fingerprint(dict(server.model.state_dict()))
    new = {k: v.detach().clone() + 0.5 for k, v in server.model.state_dict().items()}
    record = asyncio.run(server.update_weights(new, global_steps=1))
    assert record["fingerprint"] == pytest.approx(cpu.fingerprint(new), rel=1e-12)
    assert record["fingerprint"] != before and record["served_since_last_sync"] == 2
    assert json.loads(log.read_text().splitlines()[-1]) == record
    second = asyncio.run(server.generate("r2", prompt_ids=[5, 6], sampling_params=greedy))
    assert second.token_ids != first.token_ids  # generation uses the received weights
    with pytest.raises(ValueError, match="unknown parameter names"):
        asyncio.run(server.update_weights({"nope": torch.zeros(1)}, global_steps=2))
    with pytest.raises(ValueError, match="text-only"):
        asyncio.run(server.generate("r3", prompt_ids=[5], sampling_params={}, image_data=[1]))


def test_hf_server_samples_det_requests_independently_of_their_order(tiny_model_dir):
    """Under verl's ``rollout.full_determinism`` (request ids ``det-<sample>``) a request's
    response depends on the seed, the step of the last weight sync and its id, not on
    what was served before it; other ids keep the server's shared generator."""
    import asyncio

    from verl.workers.config import RolloutConfig

    config = RolloutConfig(name="hf", response_length=6, seed=3)
    sample = {"temperature": 1.0}

    def serve(ids, step=0):
        server = cpu.HFServer(config, {"path": str(tiny_model_dir)}, replica_rank=0)
        if step:
            asyncio.run(server.update_weights(dict(server.model.state_dict()), global_steps=step))
        return {
            i: asyncio.run(server.generate(i, prompt_ids=[5, 6], sampling_params=sample)).token_ids
            for i in ids
        }

    ids = [f"det-{k}" for k in range(6)]
    forward, backward = serve(ids), serve(ids[::-1])
    assert forward == backward
    assert len({tuple(t) for t in forward.values()}) > 1  # same prompt, different samples
    assert serve(ids, step=2) != forward  # a new step draws new samples
    assert serve(["x", *ids])["det-0"] == forward["det-0"]  # an unseeded request in between
    server = cpu.HFServer(config, {"path": str(tiny_model_dir)}, replica_rank=0)
    assert server.request_seed("det-4") == server.request_seed("det-4") is not None
    assert server.request_seed("0f3a") is None and server.request_seed("det-x") is None


def test_cpu_flag_puts_its_overrides_first_and_the_config_passes(keep_platform, capsys):
    overrides = use_cpu(["actor_rollout_ref.rollout.name=hf", "trainer.total_training_steps=2"])
    assert overrides[: len(cpu.CPU_OVERRIDES)] == cpu.CPU_OVERRIDES
    assert {k: os.environ[k] for k in cpu.ENV} == cpu.ENV
    cfg = compose_config(SMOKE, overrides)
    assert problems(cfg) == []
    assert cfg.actor_rollout_ref.rollout.name == cpu.ROLLOUT
    assert cfg.actor_rollout_ref.actor.strategy == "fsdp2"
    assert cfg.reward.num_workers == 1 and cfg.ray_kwargs.ray_init.num_gpus == 1
    assert main(["--config", str(SMOKE), "--cpu", "--check"]) == 0
    assert "group layout OK" in capsys.readouterr().out
    assert re.search(r"rollout\.name", " ".join(cpu.CPU_OVERRIDES))
