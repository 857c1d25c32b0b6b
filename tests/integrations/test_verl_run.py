"""Real verl training runs on CPU: verl 0.9.1's own PPO trainer (Ray, FSDP2, agent loop,
reward workers, checkpointing) driven by our launcher with ``--cpu``, on the tiny
arithmetic task, for ``adpo_pl``, ``orthogonalized_po`` and verl's GRPO (``vanilla``).

One module-scoped fixture runs everything in one subprocess (``verl_runs_script.py``), so
the runs share one Ray start-up:

* ``bad_balance`` / ``bad_micro``: ``trainer.balance_batch=true`` and a micro-batch of 6
  responses with G = 4, refused by the launcher before Ray starts;
* ``adpo_pl``: 3 steps, checkpoint at step 3;
* ``adpo_pl_resumed``: the same run to step 4 with ``resume_mode=auto``;
* ``orthogonalized_po`` and ``grpo``: 3 steps each;
* ``exact_group``, ``exact_off``, ``exact_on``: one ADPO-PL step each from the same data
  and seed (verl's ``rollout.full_determinism``, which the CPU rollout honours), with plain
  SGD and no clipping so that the update *is* the gradient, in float32: whole groups on
  GRPO advantages; per-response weights (``algorithm.adv_estimator=adpo_group_weights``)
  with the splitting settings off; and the same with ``trainer.balance_batch``,
  ``actor.shuffle`` and ``actor.use_dynamic_bsz`` on. Their saved parameters must agree;
* ``bad_epochs``: ADPO per response with ``ppo_epochs=2``, refused at start-up.

Each step is a full verl GRPO-loop step: 16 prompts × G = 4 responses from the HF
``generate()`` rollout, rewards from ``adpo.integrations.verl.tasks.compute_score``,
old log-probs, GRPO advantages, one actor update (two micro-batches of 32 responses), a
weight sync to the rollout. The tests read what only a real run leaves behind: verl's own
step metrics (its ``file`` logger), the rollout server's weight-sync log, the checkpoint
folder and the launcher's output.

Slow (4–6 minutes on 2 shared cores before the three one-step runs were added, which add
about a third; 27 minutes at load average 15–26; mostly process start-up): run with
``pytest -m slow tests/integrations/test_verl_run.py`` in the ``adpo[verl]`` environment;
``.ci/run`` runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("ADPO_REQUIRE_VERL"):  # .ci/run's verl environment: never skip silently
    import verl  # noqa: F401
else:
    pytest.importorskip("verl")

import torch

from adpo.integrations.verl.cpu import fingerprint

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "examples" / "verl"
A = "actor_rollout_ref.actor"
STEPS = 3
G = 4  # rollout.n of setting/tiny_arithmetic.yaml
RESPONSES_PER_STEP = 16 * G  # data.train_batch_size × rollout.n
GROUPS_PER_MICRO_BATCH = 32 // G  # ppo_micro_batch_size_per_gpu / rollout.n
#: run name -> prefix of its loss's metrics (None: verl's own loss)
TRAINED = {"adpo_pl": "adpo", "orthogonalized_po": "opo", "grpo": None}
W = "adpo_group_weights"
BAD = {
    "bad_balance": (["trainer.balance_batch=true"], "trainer.balance_batch"),
    "bad_micro": ([f"{A}.ppo_micro_batch_size_per_gpu=6"], f"{A}.ppo_micro_batch_size_per_gpu"),
    "bad_epochs": ([f"algorithm.adv_estimator={W}", f"{A}.ppo_epochs=2"], f"{A}.ppo_epochs"),
}
#: one step, same data and seed, SGD without clipping or weight decay, float32
LR = 1e-3
SAME_STEP = [
    "actor_rollout_ref.rollout.full_determinism=true",
    f"{A}.optim.optimizer=SGD",
    f"{A}.optim.lr={LR}",
    f"{A}.optim.weight_decay=0",
    f"{A}.optim.clip_grad=1e9",
    f"+{A}.fsdp_config.mixed_precision.param_dtype=fp32",
]
SPLIT = [
    "trainer.balance_batch=true",
    f"{A}.shuffle=true",
    f"{A}.use_dynamic_bsz=true",
    f"{A}.ppo_max_token_len_per_gpu=150",  # ~11 micro-batches of uneven size
]
EXACT = {
    "exact_group": ["algorithm.adv_estimator=grpo"],
    "exact_off": [f"algorithm.adv_estimator={W}"],
    "exact_on": [f"algorithm.adv_estimator={W}", *SPLIT],
}


def _run(root: Path, name: str, config: str, *extra: str, steps: int = STEPS, save: int = -1):
    ckpt = root / "ckpt" / ("adpo_pl" if name.startswith("adpo_pl") else name)
    return {
        "name": name,
        "argv": [
            "--config",
            str(EXAMPLES / config),
            "--cpu",
            f"adpo_tiny_dir={root / 'task'}",
            f"trainer.total_training_steps={steps}",
            "trainer.logger=[console,file]",
            "trainer.project_name=adpo_ci",
            f"trainer.experiment_name={name}",
            f"trainer.save_freq={save}",
            f"trainer.default_local_dir={ckpt}",
            f"+actor_rollout_ref.rollout.custom.adpo_rollout_log={root / 'rollout' / name}.jsonl",
            *extra,
        ],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the script once; return ``(root, summary)``."""
    root = tmp_path_factory.mktemp("verl_runs")
    (root / "rollout").mkdir()
    smoke = "smoke_tiny_arithmetic.yaml"
    spec = {
        "root": str(root),
        "runs": [
            *(_run(root, name, smoke, *override) for name, (override, _) in BAD.items()),
            _run(root, "adpo_pl", smoke, save=STEPS),
            _run(
                root,
                "adpo_pl_resumed",
                smoke,
                "trainer.resume_mode=auto",
                steps=STEPS + 1,
                save=STEPS,
            ),
            _run(root, "orthogonalized_po", "opo.yaml", "setting=tiny_arithmetic"),
            _run(root, "grpo", "grpo.yaml", "setting=tiny_arithmetic"),
            *(
                _run(root, name, smoke, *SAME_STEP, *o, steps=1, save=1)
                for name, o in EXACT.items()
            ),
        ],
    }
    (root / "spec.json").write_text(json.dumps(spec, indent=1))
    log = root / "script.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as f:
        proc = subprocess.run(
            [sys.executable, str(HERE / "verl_runs_script.py"), str(root / "spec.json")],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=2400,
        )
    summary_path = root / "summary.json"
    if proc.returncode != 0 or not summary_path.exists():
        pytest.fail(f"verl_runs_script.py exited {proc.returncode}:\n{log.read_text()[-6000:]}")
    return root, json.loads(summary_path.read_text())


def step_metrics(root: Path, name: str) -> list[dict]:
    """verl's own step metrics of one run (its ``file`` logger), in step order."""
    path = root / "logs" / "adpo_ci" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def syncs(root: Path, name: str) -> list[dict]:
    """The rollout server's weight-sync records of one run."""
    path = root / "rollout" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def checkpoint_fingerprint(step_dir: Path) -> float:
    """:func:`fingerprint` of the actor weights verl saved (FSDP2 DTensors, one rank)."""
    state = torch.load(
        step_dir / "actor" / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False
    )
    return fingerprint({k: v.to_local() if hasattr(v, "to_local") else v for k, v in state.items()})


def test_every_real_run_finished(runs):
    root, summary = runs
    for name in [*TRAINED, "adpo_pl_resumed", *EXACT]:
        rc = summary["runs"][name]["rc"]
        assert rc == 0, f"{name}: {rc}\n{(root / 'out' / f'{name}.stderr').read_text()[-4000:]}"


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_configuration_fails_at_start_up_naming_the_key(runs, name):
    root, summary = runs
    _, key = BAD[name]
    assert summary["runs"][name]["rc"] == 2
    err = (root / "out" / f"{name}.stderr").read_text()
    assert "refusing to start" in err and key in err, err
    # refused before verl started anything: no step metrics, no rollout server
    assert not (root / "logs" / "adpo_ci" / f"{name}.jsonl").exists()
    assert not (root / "rollout" / f"{name}.jsonl").exists()


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_our_loss_metrics_are_in_verl_step_metrics(runs, name):
    root, _ = runs
    prefix = TRAINED[name]
    metrics = step_metrics(root, name)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    for m in metrics:
        keys = set(m["data"])
        ours = {k for k in keys if k.startswith(("actor/adpo/", "actor/opo/"))}
        if prefix is None:  # verl's GRPO: none of ours, verl's PPO-clip metrics instead
            assert not ours and "actor/pg_clipfrac" in keys
            continue
        expected = {"loss_prompt_mean", "groups_checked", "zero_signal_frac", "delta_abs_mean"}
        expected |= {"chi2", "omega_mean"} if prefix == "opo" else {"target_entropy", "tau"}
        assert {f"actor/{prefix}/{k}" for k in expected} <= ours, sorted(ours)
        # verl's pg_loss is what our loss returned (the per-prompt mean, one mini-batch)
        assert m["data"]["actor/pg_loss"] == pytest.approx(
            m["data"][f"actor/{prefix}/loss_prompt_mean"], rel=1e-5, abs=1e-7
        )
    if prefix == "adpo":
        assert all(m["data"]["actor/adpo/tau"] == pytest.approx(0.8) for m in metrics)


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_group_validation_ran_and_passed(runs, name):
    """At start-up (the launcher's line) and in every micro-batch (``groups_checked``)."""
    root, _ = runs
    prefix = TRAINED[name]
    out = (root / "out" / f"{name}.stdout").read_text()
    if prefix is None:
        assert "verl's own loss; group checks do not apply" in out
        return
    assert f"G={G}; group layout OK" in out
    for m in step_metrics(root, name):
        # mean over the step's micro-batches: every one held 8 whole groups and passed
        assert m["data"][f"actor/{prefix}/groups_checked"] == GROUPS_PER_MICRO_BATCH


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_rewards_differ_within_groups_and_gradients_flow(runs, name):
    """The warm-started tiny model gives partial-credit rewards that differ within groups,
    so every update has a non-zero gradient.

    Thresholds from measurements: the untrained model ran past the 8-token limit in 95% of
    responses and left 14–16 of 16 groups without a reward difference (zero_signal_frac
    0.875–1.0); the warm-started one stops (0% clipped) and leaves 6–8 of 16 (0.375–0.5).
    0.75 separates the two with room for sampling noise.
    """
    root, _ = runs
    prefix = TRAINED[name]
    for m in step_metrics(root, name):
        d = m["data"]
        assert d["critic/score/max"] > d["critic/score/min"], d
        assert d["response_length/clip_ratio"] < 0.5, d
        assert d["actor/grad_norm"] > 0, d
        if prefix is not None:
            assert d[f"actor/{prefix}/zero_signal_frac"] <= 0.75, d


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_actor_weights_changed_and_the_rollout_received_them(runs, name):
    from transformers import AutoModelForCausalLM

    root, _ = runs
    records = syncs(root, name)
    # one sync before the first step, one after each actor update
    assert [r["global_steps"] for r in records] == list(range(STEPS + 1))
    assert all(r["tensors"] == records[0]["tensors"] > 0 for r in records)
    model = AutoModelForCausalLM.from_pretrained(root / "task" / "model", dtype=torch.float32)
    assert records[0]["fingerprint"] == pytest.approx(fingerprint(model.state_dict()), rel=1e-12)
    prints = [r["fingerprint"] for r in records]
    assert len(set(prints)) == len(prints), prints  # every update changed the weights
    # the rollout generated each step's responses between two syncs
    assert [r["served_since_last_sync"] for r in records[1:]] == [RESPONSES_PER_STEP] * STEPS


def test_checkpoint_written_and_a_resumed_run_continues_from_it(runs):
    root, _ = runs
    ckpt = root / "ckpt" / "adpo_pl"
    step3 = ckpt / f"global_step_{STEPS}"
    assert (step3 / "actor" / "optim_world_size_1_rank_0.pt").is_file()
    assert (step3 / "data.pt").is_file()  # the dataloader's position
    # the checkpoint holds the weights the rollout received after the last update
    saved = checkpoint_fingerprint(step3)
    pl_syncs = syncs(root, "adpo_pl")
    assert saved == pytest.approx(pl_syncs[-1]["fingerprint"], rel=1e-12)
    assert saved != pytest.approx(pl_syncs[0]["fingerprint"], rel=1e-9)  # the actor moved

    resumed = step_metrics(root, "adpo_pl_resumed")
    assert [m["step"] for m in resumed] == [STEPS + 1]  # continued, not restarted
    assert resumed[0]["data"]["training/global_step"] == STEPS + 1
    records = syncs(root, "adpo_pl_resumed")
    # its first sync sends the restored weights, not the initial model's
    assert records[0]["fingerprint"] == pytest.approx(saved, rel=1e-12)
    assert records[-1]["fingerprint"] != pytest.approx(saved, rel=1e-12)
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == str(STEPS + 1)
    assert (ckpt / f"global_step_{STEPS + 1}" / "actor").is_dir()


# ------------------------------------- the same update with groups split, packed, shuffled
def saved_params(root: Path, name: str) -> dict[str, torch.Tensor]:
    """The actor's parameters verl saved after the run's one step, float64, one entry per
    parameter (a tied LM head is the embedding: counted once)."""
    state = torch.load(
        root / "ckpt" / name / "global_step_1" / "actor" / "model_world_size_1_rank_0.pt",
        map_location="cpu",
        weights_only=False,
    )
    state = {k: (v.to_local() if hasattr(v, "to_local") else v).double() for k, v in state.items()}
    if torch.equal(state.get("lm_head.weight", torch.zeros(0)), state["model.embed_tokens.weight"]):
        state.pop("lm_head.weight")
    return state


def _norm(tensors) -> float:
    return float(sum((t * t).sum() for t in tensors)) ** 0.5


def test_splitting_groups_leaves_the_update_unchanged(runs):
    """One SGD step (the update is −lr·gradient) from the same batch: whole groups on GRPO
    advantages, per-response weights, and per-response weights with balance_batch, shuffle
    and dynamic batching on give the same parameters. Measured: they differ by ~2·10⁻⁶ of
    the update (float32 sums in other orders); 10⁻⁴ leaves room for that and none for a
    wrong weight, scale or group, which moves the update by O(1)."""
    from transformers import AutoModelForCausalLM

    root, _ = runs
    init = AutoModelForCausalLM.from_pretrained(root / "task" / "model", dtype=torch.float32)
    theta0 = {k: v.double() for k, v in init.state_dict().items()}
    updates = {
        name: {k: v - theta0[k] for k, v in saved_params(root, name).items()} for name in EXACT
    }
    ref = updates["exact_off"]
    size = _norm(ref.values())
    grad_norm = step_metrics(root, "exact_off")[0]["data"]["actor/grad_norm"]
    assert size == pytest.approx(LR * grad_norm, rel=1e-4)  # SGD: the update is the gradient
    assert size > 1e-4
    for name in ("exact_on", "exact_group"):
        assert set(updates[name]) == set(ref)
        diff = _norm(updates[name][k] - ref[k] for k in ref)
        assert diff <= 1e-4 * size, (name, diff, size)


def test_same_batch_and_the_logged_group_loss(runs):
    """The three runs saw one batch (same scores and lengths); the two per-response runs the
    same weights. The estimator's group loss (``critic/returns/mean``) is the whole-group
    loss at the update point, the whole-group run's ``pg_loss``."""
    root, _ = runs
    d = {name: step_metrics(root, name)[0]["data"] for name in EXACT}
    for name in ("exact_on", "exact_group"):
        for key in ("critic/score/mean", "critic/score/max", "response_length/mean"):
            assert d[name][key] == pytest.approx(d["exact_off"][key], rel=1e-12), key
        assert d[name]["actor/grad_norm"] == pytest.approx(
            d["exact_off"]["actor/grad_norm"], rel=1e-5
        )
    for key in ("critic/advantages/mean", "critic/advantages/max", "critic/advantages/min"):
        assert d["exact_on"][key] == pytest.approx(d["exact_off"][key], rel=1e-6), key
    loss = d["exact_off"]["critic/returns/mean"]
    assert d["exact_off"]["critic/returns/max"] == pytest.approx(loss, rel=1e-6)
    assert d["exact_on"]["critic/returns/mean"] == pytest.approx(loss, rel=1e-6)
    assert d["exact_group"]["actor/pg_loss"] == pytest.approx(loss, rel=1e-5)
    assert loss > 0.5  # Plackett–Luce at the anchor: Σ log|risk set| over prompts, not 0


def test_split_run_cut_groups_and_scored_at_the_anchor(runs):
    """The split run balanced (``global_seqlen/*``), packed the 64 responses into several
    dynamic micro-batches, and its scores were the anchor's up to float32 noise (ADPO's
    weights are taken there); the launcher said which mode ran."""
    root, _ = runs
    on = step_metrics(root, "exact_on")[0]["data"]
    off = step_metrics(root, "exact_off")[0]["data"]
    assert "global_seqlen/mean" in on and "global_seqlen/mean" not in off
    micro_batches = RESPONSES_PER_STEP / on["actor/adpo/responses"]
    assert micro_batches >= 3 and off["actor/adpo/responses"] == 32
    assert on["actor/adpo/delta_abs_max"] < 1e-4 and off["actor/adpo/delta_abs_max"] < 1e-4
    assert "groups_checked" not in " ".join(on)  # no whole-group layout to check
    for name in ("exact_on", "exact_off"):
        assert f"weights per response from {W}" in (root / "out" / f"{name}.stdout").read_text()
    assert "group layout OK" in (root / "out" / "exact_group.stdout").read_text()
