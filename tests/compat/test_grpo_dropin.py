"""ADPOTrainer/OPOTrainer as drop-ins for TRL's GRPOTrainer: one test per feature a GRPO user
relies on (modelled on TRL's own tests/test_grpo_trainer.py), and every GRPOConfig field that
has no meaning for an anchored loss refused by name.

Everything runs on a 1-layer Qwen3 (or Qwen3-MoE) with a character tokenizer; no download.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from adpo.testing import char_tokenizer, tiny_qwen3, tiny_trl_args
from adpo.trainers import ADPOConfig, ADPOTrainer, OPOConfig, OPOTrainer, grpo_fields
from adpo.trainers.online import aggregate_rewards

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

PAIRS = {"adpo": (ADPOConfig, ADPOTrainer), "opo": (OPOConfig, OPOTrainer)}
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "grpo-to-adpo.md"


def _args(out, **kw):
    # TRL's default schedule (linear), as a GRPO user's run has
    return tiny_trl_args(out, **{"max_completion_length": 4, "lr_scheduler_type": "linear", **kw})


def _rows(n: int = 16, conversational: bool = False) -> list[dict]:
    rows = [{"prompt": f"{i}+{i % 3}=", "answer": str(i + i % 3)} for i in range(n)]
    if conversational:
        rows = [{**r, "prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows]
    return rows


def _dense(completions, **kw):
    """Dense, deterministic, arbitrary: every group carries signal."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [(sum(map(ord, t)) % 11) / 10 for t in texts]


def _trainer(kind, out, reward=_dense, rows=None, model=None, tok=None, **kw):
    Config, Trainer = PAIRS[kind]
    extra = {
        k: kw.pop(k) for k in ("peft_config", "eval_dataset", "tools", "rollout_func") if k in kw
    }
    tok = tok or char_tokenizer()
    model = model or tiny_qwen3(len(tok), hidden_size=32, num_layers=1)
    ds = rows if rows is not None else Dataset.from_list(_rows())
    return Trainer(model=model, reward_funcs=reward, args=Config(**_args(out, **kw)),
                   train_dataset=ds, processing_class=tok, **extra)  # fmt: skip


def _logged(trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]


def _spy_loss_inputs(trainer) -> list[dict]:
    seen = []
    inner = trainer._compute_loss

    def spy(model, inputs):
        seen.append(inputs)
        return inner(model, inputs)

    trainer._compute_loss = spy
    return seen


# ----------------------------------------------------------------------- GRPOConfig fields


def test_every_grpo_config_field_is_classified():
    kinds = grpo_fields.classify()
    assert not [k for k, v in kinds.items() if v == "unknown"], "sort these into grpo_fields"
    listed = [*grpo_fields.SAME, *grpo_fields.ADAPTED, *grpo_fields.REFUSED]
    assert len(listed) == len(set(listed)), "a field is in two lists"
    assert set(listed) <= set(kinds), "a listed field is not in GRPOConfig any more"


# a value a GRPO user could set for each refused field (GRPOConfig itself accepts them all)
REFUSED_VALUES = {
    "beta": 0.04,
    "loss_type": "grpo",
    "epsilon": 0.3,
    "epsilon_high": 0.28,
    "delta": 2.0,
    "importance_sampling_level": "sequence",
    "scale_rewards": "batch",
    "sapo_temperature_neg": 1.2,
    "sapo_temperature_pos": 1.1,
    "vespo_k_pos": 1.0,
    "vespo_lambda_pos": 1.0,
    "vespo_k_neg": 1.0,
    "vespo_lambda_neg": 1.0,
    "top_entropy_quantile": 0.2,
    "off_policy_mask_threshold": 0.5,
    "entropy_coef": 0.01,
    "use_adaptive_entropy": True,
    "entropy_coef_min": 0.001,
    "entropy_coef_max": 0.5,
    "entropy_coef_delta": 0.01,
    "entropy_target": 0.3,
    "use_bias_correction_kl": False,
    "sync_ref_model": True,
    "ref_model_mixup_alpha": 0.9,
    "ref_model_sync_steps": 64,
}


def test_the_refused_values_cover_every_refused_field_and_grpo_accepts_them(tmp_path):
    from trl import GRPOConfig

    assert set(REFUSED_VALUES) == set(grpo_fields.REFUSED)
    for name, value in REFUSED_VALUES.items():
        extra = {"entropy_coef": 0.01} if name == "use_adaptive_entropy" else {}
        GRPOConfig(**_args(tmp_path, **{name: value}, **extra))  # a real GRPO option


@pytest.mark.parametrize("kind", ["adpo", "opo"])
@pytest.mark.parametrize("name", sorted(REFUSED_VALUES))
def test_a_refused_grpo_field_is_named_with_the_reason(tmp_path, kind, name):
    Config, _ = PAIRS[kind]
    with pytest.raises(ValueError, match=rf"`{name}=.*`: .+"):
        Config(**_args(tmp_path, **{name: REFUSED_VALUES[name]}))


def test_grpo_defaults_and_legacy_spellings_are_accepted(tmp_path):
    for Config, _ in PAIRS.values():
        Config(**_args(tmp_path))
        Config(**_args(tmp_path, scale_rewards=True))  # TRL's legacy spelling of "group"


def test_the_grpo_guide_shows_the_generated_field_table():
    assert grpo_fields.markdown_table() in GUIDE.read_text()


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_groups_larger_than_the_micro_batch_are_accepted_as_in_grpo(tmp_path, kind):
    """Like GRPOConfig: G = 8 with micro-batches of 4 (the group is exact over two of them;
    tests/trainers/test_split_groups.py proves the update)."""
    Config, _ = PAIRS[kind]
    a = Config(**_args(tmp_path, num_generations=8, per_device_train_batch_size=4,
                       gradient_accumulation_steps=2))  # fmt: skip
    assert (a.per_device_train_batch_size, a.num_generations) == (4, 8)


# ----------------------------------------------------------------------- rewards


def test_normalize_then_sum_standardises_each_function_within_its_group():
    r = torch.tensor(
        [[1.0, 10.0], [0.0, 30.0], [1.0, float("nan")], [0.0, 20.0],
         [5.0, 1.0], [5.0, 2.0], [5.0, 3.0], [5.0, 4.0]]
    )  # fmt: skip
    w = torch.tensor([1.0, 0.5])
    got = aggregate_rewards(r, w, 4, "normalize_then_sum")
    expected = []
    for g in range(2):
        block = r[4 * g : 4 * g + 4].numpy()
        cols = []
        for f in range(2):
            x = [v for v in block[:, f] if not math.isnan(v)]
            m = sum(x) / len(x)
            s = (sum((v - m) ** 2 for v in x) / (len(x) - 1)) ** 0.5
            cols.append([0.0 if math.isnan(v) else (v - m) / (s + 1e-4) for v in block[:, f]])
        expected += [cols[0][i] + 0.5 * cols[1][i] for i in range(4)]
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    raw = aggregate_rewards(r, w, 4, "sum_then_normalize")
    torch.testing.assert_close(raw, torch.nansum(r * w, 1))
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        aggregate_rewards(r, w, 4, "mean")


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_normalize_then_sum_reaches_the_loss(tmp_path, kind):
    def big(completions, **kw):
        return [100.0 * v for v in _dense(completions)]

    tr = _trainer(
        kind, tmp_path, reward=[_dense, big], multi_objective_aggregation="normalize_then_sum"
    )
    seen = _spy_loss_inputs(tr)
    tr.train()
    rewards = seen[0]["rewards"].view(-1, 4)
    # each function standardised within the group, then summed: the group sum is ~0 and
    # the 100× function does not dominate (raw rewards would reach 100)
    assert rewards.sum(-1).abs().max() < 1e-3 and rewards.abs().max() < 5.0
    assert max(_logged(tr, "reward")) > 2.0  # TRL's logged reward stays the raw sum


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_weighted_sync_async_and_none_returning_reward_functions(tmp_path, kind):
    def one(completions, **kw):
        return [1.0] * len(completions)

    async def two(completions, **kw):
        await asyncio.sleep(0)
        return [2.0] * len(completions)

    def nothing(completions, **kw):
        return [None] * len(completions)

    tr = _trainer(
        kind, tmp_path, reward=[one, two, nothing, _dense], reward_weights=[1.0, 0.5, 3.0, 0.0]
    )
    tr.train()
    assert _logged(tr, "reward") == [pytest.approx(2.0)] * 2  # 1·1 + 0.5·2, None skipped
    assert all(v is None or math.isnan(v) for v in _logged(tr, "rewards/nothing/mean"))


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_extra_dataset_columns_and_trainer_state_reach_reward_functions(tmp_path, kind):
    seen = []

    def reward(prompts, completions, answer, trainer_state, log_metric, **kw):
        seen.append((prompts, answer, trainer_state.global_step))
        log_metric("my_metric", 0.25)
        return _dense(completions)

    tr = _trainer(kind, tmp_path, reward=reward)
    tr.train()
    by_prompt = {r["prompt"]: r["answer"] for r in _rows()}
    assert [step for *_, step in seen] == [0, 1]
    for prompts, answers, _ in seen:
        assert [by_prompt[p] for p in prompts] == answers
    assert _logged(tr, "my_metric") == [0.25, 0.25]


# ----------------------------------------------------------------------- prompts and data


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_conversational_prompts_with_chat_template_kwargs(tmp_path, kind):
    tok = char_tokenizer()
    tok.chat_template = (
        "{% if shout %}!!{% endif %}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    kinds = []

    def reward(completions, **kw):
        kinds.append(type(completions[0]).__name__)
        return _dense(completions)

    tr = _trainer(kind, tmp_path, reward=reward, tok=tok, rows=Dataset.from_list(_rows(conversational=True)),
                  chat_template_kwargs={"shout": True})  # fmt: skip
    seen = _spy_loss_inputs(tr)
    tr.train()
    assert kinds == ["list", "list"]  # completions arrive as messages
    text = tok.decode(seen[0]["prompt_ids"][0], skip_special_tokens=True)
    assert text.startswith("!!user: ") and text.endswith("assistant: ")


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_iterable_dataset_and_dataloader_workers(tmp_path, kind):
    rows = Dataset.from_list(_rows()).to_iterable_dataset()
    tr = _trainer(kind, tmp_path, rows=rows, dataloader_num_workers=1)
    tr.train()
    assert tr.state.global_step == 2 and len(_logged(tr, "reward")) == 2


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_pad_to_multiple_of(tmp_path, kind):
    tr = _trainer(kind, tmp_path, pad_to_multiple_of=8)
    seen = _spy_loss_inputs(tr)
    tr.train()
    for b in seen:
        assert b["prompt_ids"].shape[1] % 8 == 0 and b["completion_ids"].shape[1] % 8 == 0
        assert b["completion_mask"][:, 4:].sum() == 0  # the padding is masked out


# ----------------------------------------------------------------------- rounds


@pytest.mark.parametrize("kind", ["adpo", "opo"])
@pytest.mark.parametrize("option", [{"num_iterations": 2}, {"steps_per_generation": 2}])
def test_one_generation_round_feeds_several_optimizer_steps(tmp_path, kind, option):
    per_device = 8 if "num_iterations" in option else 4  # spg 2: a round of 8 in two halves
    tr = _trainer(kind, tmp_path, max_steps=4, per_device_train_batch_size=per_device, **option)
    rounds = []
    inner = tr._generate

    def counted(*a, **k):
        rounds.append(tr.state.global_step)
        return inner(*a, **k)

    tr._generate = counted
    seen = _spy_loss_inputs(tr)
    tr.train()
    assert rounds == [0, 2] and tr.state.global_step == 4
    assert all(b["old_per_token_logps"] is not None for b in seen)  # the anchor is π_old
    for b in seen:  # whole groups in every micro-batch
        gid = b["group_index"].view(-1, 4)
        assert (gid == gid[:, :1]).all()


# ----------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_evaluation_and_eval_on_start(tmp_path, kind):
    ds = Dataset.from_list(_rows(8))
    tr = _trainer(kind, tmp_path, eval_dataset=ds, eval_strategy="steps", eval_steps=2,
                  eval_on_start=True, per_device_eval_batch_size=8)  # fmt: skip
    tr.train()
    evals = [h for h in tr.state.log_history if "eval_reward" in h]
    assert [h["step"] for h in evals] == [0, 2]
    assert all(math.isfinite(h["eval_loss"]) for h in evals)


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_evaluation_with_one_generation_logs_rewards_and_a_nan_loss(tmp_path, kind):
    ds = Dataset.from_list(_rows(8))
    tr = _trainer(
        kind, tmp_path, eval_dataset=ds, num_generations_eval=1, per_device_eval_batch_size=4
    )
    tr.train()
    metrics = tr.evaluate()
    assert 0.0 <= metrics["eval_reward"] <= 1.0 and "eval_accuracy" in metrics
    assert math.isfinite(metrics["eval_entropy"]) and math.isnan(metrics["eval_loss"])


# ----------------------------------------------------------------------- models


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_peft_with_gradient_checkpointing_trains_only_the_adapters(tmp_path, kind):
    from peft import LoraConfig

    tok = char_tokenizer()
    model = tiny_qwen3(len(tok), hidden_size=32, num_layers=1)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    tr = _trainer(kind, tmp_path, model=model, tok=tok, gradient_checkpointing=True,
                  peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))  # fmt: skip
    tr.train()
    after = tr.model.state_dict()
    lora = [k for k in after if "lora_B" in k]
    assert lora and any(after[k].abs().sum() > 0 for k in lora)  # lora_B starts at 0
    for k, v in after.items():
        if "lora_" not in k:
            name = k.replace("base_model.model.", "").replace(".base_layer", "")
            torch.testing.assert_close(v, base[name])


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_moe_router_loss_is_added_and_logged_as_aux_loss(tmp_path, kind):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    tok = char_tokenizer()
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(Qwen3MoeConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=32, moe_intermediate_size=16,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        num_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, router_aux_loss_coef=0.01,
    ))  # fmt: skip
    tr = _trainer(kind, tmp_path, model=model, tok=tok)
    assert tr.aux_loss_enabled
    tr.train()
    aux = _logged(tr, "aux_loss")
    assert len(aux) == 2 and all(math.isfinite(a) and a > 0 for a in aux)


# ----------------------------------------------------------------------- tools and environments


def _tool_batch(tok):
    """Two groups of 4 right-padded completions whose last two tokens are a tool's output."""
    g = torch.Generator().manual_seed(0)
    N, T = 8, 6
    enc = tok(["3+4=", "1+9="], padding=True, return_tensors="pt")
    ids = torch.tensor(tok.convert_tokens_to_ids(list("0123456789")))
    completion_ids = ids[torch.randint(0, 10, (N, T), generator=g)]
    tool_mask = torch.ones(N, T, dtype=torch.long)
    tool_mask[:, 2:4] = 0  # tokens the tool wrote
    return {
        "prompt_ids": enc["input_ids"].repeat_interleave(4, 0),
        "prompt_mask": enc["attention_mask"].repeat_interleave(4, 0),
        "completion_ids": completion_ids,
        "completion_mask": torch.ones(N, T, dtype=torch.long),
        "tool_mask": tool_mask,
        "rewards": torch.tensor([1.0, 0.0, 0.5, 0.2, 0.0, 1.0, 0.3, 0.2]),
        "raw_rewards": torch.tensor([1.0, 0.0, 0.5, 0.2, 0.0, 1.0, 0.3, 0.2]),
        "reward_valid": torch.ones(N, dtype=torch.bool),
        "reward_correct": torch.tensor([1, 0, 0, 0, 0, 1, 0, 0], dtype=torch.bool),
        "group_index": torch.arange(2).repeat_interleave(4),
        "advantages": torch.zeros(N),
        "num_items_in_batch": torch.tensor(N * T),
        "anchor_per_token_logps": -2.0 - torch.rand(N, T, generator=g),
    }


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_tool_mask_keeps_tool_output_out_of_the_loss(tmp_path, kind):
    tr = _trainer(kind, tmp_path)
    tr.current_gradient_accumulation_steps = 1
    batch = _tool_batch(char_tokenizer())
    moved = dict(batch)  # the anchor moved only on the tool's tokens
    moved["anchor_per_token_logps"] = batch["anchor_per_token_logps"].clone()
    moved["anchor_per_token_logps"][:, 2:4] += 1.5
    loss = tr.compute_loss(tr.model, batch)
    torch.testing.assert_close(tr.compute_loss(tr.model, moved), loss)  # tool tokens ignored
    no_mask = {k: v for k, v in moved.items() if k != "tool_mask"}
    assert not torch.isclose(tr.compute_loss(tr.model, no_mask), loss)  # … only by tool_mask


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_environment_rollouts_keep_whole_groups_and_their_env_mask(tmp_path, kind):
    """A ``rollout_func`` (TRL's environment hook) whose completions carry an env_mask."""
    tok = char_tokenizer()
    calls = []

    def rollout(prompts, trainer):
        calls.append(list(prompts))
        ids = [tok(p)["input_ids"] for p in prompts]
        completion = tok("12")["input_ids"] + tok("ok")["input_ids"] + tok("3")["input_ids"]
        return {
            "prompt_ids": ids,
            "completion_ids": [completion] * len(prompts),
            "logprobs": [[-1.0] * len(completion)] * len(prompts),
            "env_mask": [[1, 1, 0, 0, 1]] * len(prompts),  # "ok" came from the environment
        }

    tr = _trainer(kind, tmp_path, tok=tok, rollout_func=rollout, max_completion_length=5)
    seen = _spy_loss_inputs(tr)
    tr.train()
    assert len(calls) == 2 and all(len(c) == 8 for c in calls)
    for prompts in calls:  # runs of G identical prompts reached the environment
        assert all(len(set(prompts[g * 4 : g * 4 + 4])) == 1 for g in range(2))
    for b in seen:
        assert b["tool_mask"][:, 2:4].sum() == 0 and b["tool_mask"][:, [0, 1, 4]].all()
    assert _logged(tr, "completions/mean_length")[0] == 3.0  # model tokens only


_TOOL_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m.get('tool_calls') %}"
    "{% for c in m['tool_calls'] %}call {{ c['function']['name'] }} "
    "{{ c['function']['arguments'] | tojson }}{% endfor %}{% else %}{{ m['content'] }}"
    "{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer
        b: the second integer
    """
    return a + b


@pytest.mark.parametrize("kind", ["adpo", "opo"])
def test_multi_turn_tool_rollouts_keep_whole_groups_and_mask_tool_output(
    tmp_path, kind, monkeypatch
):
    """TRL's own tool loop (``tools=[add]``): the model's first turn is parsed as a call of
    ``add`` (a stand-in for a model that has learnt the call syntax), TRL runs the tool,
    appends its result and generates the next turn; the tool's tokens must reach the loss
    masked, and every micro-batch must still hold whole groups."""
    import trl.trainer.grpo_trainer as grpo

    tok = char_tokenizer()
    tok.chat_template = _TOOL_TEMPLATE
    tok.response_schema = {"type": "object"}  # parsing is the stand-in below

    def parse(tokenizer, ids, prefix=None, tools=None):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if "tool: " in tokenizer.decode(prefix or [], skip_special_tokens=True):
            return {"role": "assistant", "content": text}  # the turn after the tool
        call = {"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
        return {"role": "assistant", "content": "", "tool_calls": [call]}

    monkeypatch.setattr(grpo, "parse_response", parse)
    tr = _trainer(kind, tmp_path, tok=tok, tools=[add], rows=Dataset.from_list(_rows(conversational=True)),
                  max_completion_length=40, generation_kwargs={"max_new_tokens": 3})  # fmt: skip
    seen = _spy_loss_inputs(tr)
    tr.train()
    assert [
        h["tools/call_frequency"] for h in tr.state.log_history if "tools/call_frequency" in h
    ] == [1.0, 1.0]
    for b in seen:
        gid = b["group_index"].view(-1, 4)
        assert (gid == gid[:, :1]).all()
        off = (b["tool_mask"] == 0) & (b["completion_mask"] == 1)
        for ids, o in zip(b["completion_ids"], off, strict=True):  # the tool's turn, masked
            assert tok.decode(ids[o]).startswith("tool: 3")
        model_tokens = (b["tool_mask"] == 1) & (b["completion_mask"] == 1)
        n = model_tokens.sum(-1)
        assert (
            (n >= 2) & (n <= 6)
        ).all()  # two model turns of ≤ 3 tokens (EOS may end one) stay in
    # and they are out of the loss: moving the anchor there changes nothing
    b = dict(seen[-1])
    tr.current_gradient_accumulation_steps = 1
    b["anchor_per_token_logps"] = torch.full(b["completion_ids"].shape, -3.0)
    loss = tr.compute_loss(tr.model, b)
    moved = dict(b)
    moved["anchor_per_token_logps"] = b["anchor_per_token_logps"] + 2.0 * (b["tool_mask"] == 0)
    torch.testing.assert_close(tr.compute_loss(tr.model, moved), loss)
