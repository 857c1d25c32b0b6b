"""ListwiseTrainer: the loss it computes equals adpo_loss / dpo_loss on independently
computed log-probs; variable K, chat rows, anchors, precomputed reference log-probs, bad
rows, truncation, dropout, and a short run that raises held-out top-1 accuracy. Every
ListwiseConfig field is pinned at its default and at another value (issue 22)."""

import math
import random

import pytest
import torch

from adpo.losses import adpo_loss, dpo_loss
from adpo.testing import char_tokenizer, tiny_qwen3
from adpo.trainers import ListwiseConfig, ListwiseTrainer
from adpo.trainers.listwise import group_logps
from adpo.trainers.ranking import ndcg, top1_accuracy

TOK = char_tokenizer()

ROWS = [  # K = 3, 2, 4: variable group size in one batch
    {"prompt": "12+34=", "completions": ["46", "45", "56"], "scores": [1.0, 0.6, 0.3]},
    {"prompt": "7+8=", "completions": ["15", "16"], "scores": [1.0, 0.4]},
    {"prompt": "1+1=", "completions": ["2", "3", "11", "2"], "scores": [1.0, 0.0, 0.2, 1.0]},
]


def _model(seed=0):
    return tiny_qwen3(
        len(TOK), hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=seed
    )


def _args(tmp_path, **kw):
    base = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
        "logging_steps": 1,
        "seed": 0,
    }
    base.update(kw)
    return ListwiseConfig(**base)


def _independent_logp(model, prompt_ids, completion_ids):
    """log π(completion | prompt) from one unpadded forward pass, summed by hand."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    P = len(prompt_ids)
    return sum(float(logp[P - 1 + t, c]) for t, c in enumerate(completion_ids))


def _independent_group(model, dataset):
    G = max(len(c) for c in dataset["completion_ids"])
    out = torch.zeros(len(dataset), G, dtype=torch.float64)
    for r in range(len(dataset)):
        for k, c in enumerate(dataset[r]["completion_ids"]):
            out[r, k] = _independent_logp(model, dataset[r]["prompt_ids"], c)
    return out


def _batch(trainer, dataset=None):
    ds = trainer.train_dataset if dataset is None else dataset
    return trainer.data_collator([ds[i] for i in range(len(ds))])


def test_collator_pads_groups_and_masks_only_completion_tokens(tmp_path):
    tr = ListwiseTrainer(_model(), args=_args(tmp_path), train_dataset=ROWS, processing_class=TOK)
    b = _batch(tr)
    assert b["valid"].tolist() == [
        [True, True, True, False],
        [True, True, False, False],
        [True, True, True, True],
    ]
    assert b["input_ids"].shape[0] == 9  # only real candidates are sequences (N = Σ K)
    assert b["group_index"].tolist() == [0, 1, 2, 4, 5, 8, 9, 10, 11]
    for n in range(9):
        p = int(b["prompt_lengths"][n])
        m = b["completion_mask"][n]
        assert not m[:p].any()  # the prompt is excluded
        assert int(m.sum()) == int(b["attention_mask"][n].sum()) - p
    assert b["scores"][1].tolist() == pytest.approx([1.0, 0.4, 0.0, 0.0])
    # right padding: real tokens first
    assert (b["attention_mask"].cummin(-1).values == b["attention_mask"]).all()


def test_group_logps_equal_unpadded_per_sequence_sums(tmp_path):
    model = _model()
    tr = ListwiseTrainer(model, args=_args(tmp_path), train_dataset=ROWS, processing_class=TOK)
    model.eval()
    with torch.no_grad():
        got = group_logps(model, _batch(tr))
    want = _independent_group(model, tr.train_dataset)
    valid = _batch(tr)["valid"]
    assert torch.allclose(got.double()[valid], want[valid], atol=1e-5, rtol=0)
    assert (got[~valid] == 0).all()
    # one row alone gives the same numbers as inside the padded batch (padding-invariant)
    with torch.no_grad():
        alone = group_logps(model, tr.data_collator([tr.train_dataset[1]]))
    assert torch.allclose(alone[0, :2], got[1, :2], atol=1e-5)


@pytest.mark.parametrize(
    ("config", "loss_kw"),
    [
        ({}, {"beta": 0.5}),  # the defaults: softmax target, β_r 0.5, z-scored scores
        ({"target_beta": 0.25}, {"beta": 0.25}),
        ({"target": "plackett_luce"}, {"target": "plackett_luce"}),  # Breslow ties (default)
        (
            {"target": "plackett_luce", "ties": "efron"},
            {"target": "plackett_luce", "ties": "efron"},
        ),
        ({"target": "top1"}, {"target": "top1"}),
    ],
    ids=["defaults", "target_beta", "plackett_luce", "efron", "top1"],
)
def test_loss_parity_with_adpo_loss_on_a_fixed_batch(tmp_path, config, loss_kw):
    policy, ref = _model(0), _model(1)  # different weights: Δ ≠ 0
    tr = ListwiseTrainer(
        policy,
        ref_model=ref,
        args=_args(tmp_path, tau=0.7, **config),
        train_dataset=ROWS,
        processing_class=TOK,
    )
    policy.eval()
    with torch.no_grad():
        loss = tr.compute_loss(policy, _batch(tr))
    b = _batch(tr)
    lp = _independent_group(policy, tr.train_dataset)
    rp = _independent_group(ref, tr.train_dataset)
    want = adpo_loss(lp, rp, b["scores"].double(), tau=0.7, valid=b["valid"], **loss_kw)
    assert float(loss) == pytest.approx(float(want.loss), abs=1e-5)
    assert float(want.loss) > 0.1  # a non-trivial value


def test_mean_seq_reduction_divides_each_score_by_its_completion_length(tmp_path):
    """Closed form: u_i = (log π(y_i) − log π_ref(y_i)) / (|y_i|·τ)."""
    policy, ref = _model(0), _model(1)
    tr = ListwiseTrainer(policy, ref_model=ref, processing_class=TOK, train_dataset=ROWS,
                         args=_args(tmp_path, target="plackett_luce", tau=0.7,
                                    seq_reduction="mean"))  # fmt: skip
    policy.eval()
    with torch.no_grad():
        loss = tr.compute_loss(policy, _batch(tr))
    b = _batch(tr)
    lp = _independent_group(policy, tr.train_dataset)
    rp = _independent_group(ref, tr.train_dataset)
    n = torch.tensor([[len(c) for c in row] + [1] * (lp.shape[1] - len(row))
                      for row in tr.train_dataset["completion_ids"]], dtype=lp.dtype)  # fmt: skip
    want = adpo_loss(lp / n, rp / n, b["scores"].double(), target="plackett_luce", tau=0.7,
                     valid=b["valid"])  # fmt: skip
    summed = adpo_loss(lp, rp, b["scores"].double(), target="plackett_luce", tau=0.7,
                       valid=b["valid"])  # fmt: skip
    assert float(loss) == pytest.approx(float(want.loss), abs=1e-5)
    assert abs(float(want.loss) - float(summed.loss)) > 1e-3
    with pytest.raises(ValueError, match="seq_reduction"):
        _args(tmp_path, seq_reduction="max")


def test_softmax_target_on_raw_scores(tmp_path):
    policy, ref = _model(0), _model(1)
    tr = ListwiseTrainer(
        policy,
        ref_model=ref,
        args=_args(tmp_path, standardize_scores=False, beta=0.25),
        train_dataset=ROWS,
        processing_class=TOK,
    )
    policy.eval()
    b = _batch(tr)
    with torch.no_grad():
        loss = tr.compute_loss(policy, b)
    lp, rp = _independent_group(policy, tr.train_dataset), _independent_group(ref, tr.train_dataset)
    s = b["scores"].double().masked_fill(~b["valid"], float("-inf"))
    q = torch.softmax(s / 0.25, -1)  # softmax(scores / β) by hand
    want = adpo_loss(lp, rp, targets=q, tau=0.8, valid=b["valid"])
    assert float(loss) == pytest.approx(float(want.loss), abs=1e-5)
    standardized = adpo_loss(lp, rp, b["scores"].double(), tau=0.8, beta=0.25, valid=b["valid"])
    assert abs(float(standardized.loss) - float(want.loss)) > 1e-3  # the option matters


def test_teacher_probabilities_are_the_target(tmp_path):
    rows = [
        {"prompt": "2+2=", "completions": ["4", "5", "22"], "target_probs": [0.7, 0.2, 0.1]},
        {"prompt": "3+3=", "completions": ["6", "9"], "target_probs": [0.5, 0.5]},
    ]
    policy, ref = _model(0), _model(1)
    tr = ListwiseTrainer(
        policy,
        ref_model=ref,
        args=_args(tmp_path, target="probs"),
        train_dataset=rows,
        processing_class=TOK,
    )
    policy.eval()
    b = _batch(tr)
    with torch.no_grad():
        loss = tr.compute_loss(policy, b)
    lp, rp = _independent_group(policy, tr.train_dataset), _independent_group(ref, tr.train_dataset)
    want = adpo_loss(lp, rp, targets=b["target_probs"].double(), tau=0.8, valid=b["valid"])
    assert float(loss) == pytest.approx(float(want.loss), abs=1e-5)
    with pytest.raises(ValueError, match="set target='probs'"):
        ListwiseTrainer(_model(), args=_args(tmp_path), train_dataset=rows, processing_class=TOK)
    with pytest.raises(ValueError, match="needs rows with 'target_probs'"):
        ListwiseTrainer(
            _model(), args=_args(tmp_path, target="probs"), train_dataset=ROWS, processing_class=TOK
        )


@pytest.mark.parametrize("target", ["top1", "plackett_luce"])
def test_pairwise_rows_give_exactly_the_dpo_loss(tmp_path, target):
    pairs = [
        {"prompt": "12+34=", "chosen": "46", "rejected": "45"},
        {"prompt": "5+5=", "chosen": "10", "rejected": "100"},
        {"prompt": "9+9=", "chosen": "18", "rejected": "19"},
    ]
    beta = 0.1
    policy, ref = _model(0), _model(1)
    tr = ListwiseTrainer(
        policy,
        ref_model=ref,
        args=_args(tmp_path, target=target, tau=1 / beta),
        train_dataset=pairs,
        processing_class=TOK,
    )
    policy.train()
    b = _batch(tr)
    loss = tr.compute_loss(policy, b)
    (g_trainer,) = torch.autograd.grad(loss, policy.model.embed_tokens.weight)
    lp, rp = group_logps(policy, b), _independent_group(ref, tr.train_dataset).float()
    want = dpo_loss(lp[:, 0], lp[:, 1], rp[:, 0], rp[:, 1], beta=beta).loss
    (g_dpo,) = torch.autograd.grad(want, policy.model.embed_tokens.weight)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), abs=1e-6)
    assert torch.allclose(g_trainer, g_dpo, atol=1e-7, rtol=1e-5)
    # and against a hand-written DPO on independent sums: −log σ(β·((c − c_ref) − (r − r_ref)))
    ind = _independent_group(policy, tr.train_dataset)
    z = beta * ((ind[:, 0] - rp[:, 0]) - (ind[:, 1] - rp[:, 1]))
    assert float(loss.detach()) == pytest.approx(
        float(-torch.nn.functional.logsigmoid(z).mean()), abs=1e-5
    )


def test_chat_template_rows(tmp_path):
    def chat(a, b, answers, scores):
        return {
            "prompt": [{"role": "user", "content": f"{a}+{b}="}],
            "completions": [[{"role": "assistant", "content": x}] for x in answers],
            "scores": scores,
        }

    rows = [chat(1, 2, ["3", "4", "12"], [1, 0.5, 0]), chat(5, 5, ["10", "11"], [1, 0.6])]
    policy, ref = _model(0), _model(1)
    tr = ListwiseTrainer(
        policy, ref_model=ref, args=_args(tmp_path), train_dataset=rows, processing_class=TOK
    )
    ds = tr.train_dataset
    assert TOK.decode(ds[0]["prompt_ids"]) == "user: 1+2=\nassistant: "
    assert [TOK.decode(c) for c in ds[0]["completion_ids"]] == ["3\n", "4\n", "12\n"]
    policy.eval()
    b = _batch(tr)
    with torch.no_grad():
        loss = tr.compute_loss(policy, b)
    lp, rp = _independent_group(policy, ds), _independent_group(ref, ds)
    want = adpo_loss(lp, rp, b["scores"].double(), tau=0.8, beta=0.5, valid=b["valid"])
    assert float(loss) == pytest.approx(float(want.loss), abs=1e-5)


def test_precomputed_reference_logps_equal_live_ones(tmp_path):
    rows = ROWS * 3
    ref = _model(1)
    live = ListwiseTrainer(
        _model(0),
        ref_model=ref,
        args=_args(tmp_path, anchor="fixed"),
        train_dataset=rows,
        processing_class=TOK,
    )
    pre = ListwiseTrainer(
        _model(0),
        ref_model=_model(1),
        args=_args(tmp_path, anchor="precomputed", precompute_batch_size=2),
        train_dataset=rows,
        eval_dataset=ROWS,
        processing_class=TOK,
    )
    assert pre.ref_model is None and pre.anchor is None  # no reference kept in memory
    assert (
        "ref_logps" in pre.train_dataset.column_names
        and "ref_logps" in pre.eval_dataset.column_names
    )
    for s in range(0, len(rows), 4):  # live: the anchor evaluates each training batch
        feats = [live.train_dataset[i] for i in range(s, min(s + 4, len(rows)))]
        b = live.data_collator(feats)
        got = live.anchor.anchor_logps(group_logps, b)
        stored = pre.data_collator([pre.train_dataset[i] for i in range(s, min(s + 4, len(rows)))])
        assert torch.allclose(stored["ref_logps"], got, atol=1e-5), s
    # the same loss on the same batch, and the same weights after two optimiser steps
    b_live, b_pre = _batch(live), _batch(pre)
    with torch.no_grad():
        assert float(live.compute_loss(live.model, b_live)) == pytest.approx(
            float(pre.compute_loss(pre.model, b_pre)), abs=1e-6
        )
    for tr in (live, pre):
        tr.args.max_steps = 2
        tr.args.learning_rate = 1e-2
        tr.train()
    for p, q in zip(live.model.parameters(), pre.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_precomputed_without_ref_model_uses_the_initial_policy(tmp_path):
    model = _model(0)
    tr = ListwiseTrainer(
        model, args=_args(tmp_path, anchor="precomputed"), train_dataset=ROWS, processing_class=TOK
    )
    want = _independent_group(model, tr.train_dataset)
    for r in range(len(ROWS)):
        assert tr.train_dataset[r]["ref_logps"] == pytest.approx(
            want[r, : len(ROWS[r]["scores"])].tolist(), abs=1e-5
        )


def test_rows_carrying_ref_logps_need_no_reference_model(tmp_path):
    rows = [{**r, "ref_logps": [-5.0 - i for i in range(len(r["scores"]))]} for r in ROWS]
    policy = _model(0)
    tr = ListwiseTrainer(policy, args=_args(tmp_path), train_dataset=rows, processing_class=TOK)
    assert tr.anchor is None and tr.ref_model is None
    b = _batch(tr)
    policy.eval()
    with torch.no_grad():
        loss = tr.compute_loss(policy, b)
    lp = _independent_group(policy, tr.train_dataset)
    want = adpo_loss(
        lp, b["ref_logps"].double(), b["scores"].double(), tau=0.8, beta=0.5, valid=b["valid"]
    )
    assert float(loss) == pytest.approx(float(want.loss), abs=1e-5)
    with pytest.warns(UserWarning, match="ignored"):
        dyn = ListwiseTrainer(
            _model(0),
            args=_args(tmp_path, anchor="dynamic"),
            train_dataset=rows,
            processing_class=TOK,
        )
    assert "ref_logps" not in dyn.train_dataset.column_names


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize(
    ("anchor", "kw", "rate"),
    [
        ("fixed", {}, None),
        ("self", {}, None),
        ("ema", {"anchor_ema_decay": 0.5}, 0.5),
        ("ema", {"ema_decay": 0.7}, 0.7),  # deprecated alias
        ("ema", {}, 0.99),  # the default decay
        ("on_policy", {"anchor_refresh_every": 2}, 2),
        ("dynamic", {"anchor_update_steps": 3}, 3),  # deprecated spelling and alias
        ("on_policy", {}, 100),  # the default period: no refresh within 4 steps
    ],
    ids=[
        "fixed",
        "self",
        "ema",
        "ema-alias",
        "ema-default",
        "on_policy",
        "dynamic",
        "on_policy-default",
    ],
)
def test_anchor_strategies_move_as_specified(tmp_path, anchor, kw, rate):
    model = _model(0)
    init = _params(model).clone()
    seen = []

    class Spy(ListwiseTrainer):
        def training_step(self, *a, **k):  # anchor weights as each step starts
            seen.append(_params(self.anchor.module).clone())
            return super().training_step(*a, **k)

    tr = Spy(
        model,
        args=_args(
            tmp_path,
            anchor=anchor,
            max_steps=4,
            learning_rate=1e-2,
            per_device_train_batch_size=1,
            **kw,
        ),
        train_dataset=ROWS * 2,
        processing_class=TOK,
    )
    policy_after = []

    class Record(__import__("transformers").TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            policy_after.append(_params(tr.model).clone())

    tr.add_callback(Record())
    tr.train()
    assert len(seen) == 4 and not torch.equal(_params(tr.model), init)
    if anchor in ("fixed", "self"):
        assert all(torch.equal(s, init) for s in seen)
    elif anchor in ("dynamic", "on_policy"):  # π_ref ← πθ after every N-th step
        for t, s in enumerate([*seen, _params(tr.anchor.module)]):  # t steps done
            last = t // rate * rate  # the last refresh, after step `last` (0: none yet)
            assert torch.equal(s, policy_after[last - 1] if last else init), t
    else:  # EMA: a_t = d·a_{t−1} + (1 − d)·θ_t after every step
        a = init
        for t in range(3):
            a = rate * a + (1 - rate) * policy_after[t]
            assert torch.allclose(seen[t + 1], a, atol=1e-6, rtol=0), t
        assert not torch.allclose(seen[3], init, atol=1e-5, rtol=0)  # it did move


def test_bad_rows_name_the_row_or_are_counted(tmp_path):
    bad = [
        *ROWS,
        {"prompt": "x", "completions": ["1", "2"], "scores": [1.0, math.nan]},
        {"prompt": "y", "completions": ["1"], "scores": [1.0]},
    ]
    with pytest.raises(ValueError, match=r"row 3: 'scores'\[1\] is not finite"):
        ListwiseTrainer(_model(), args=_args(tmp_path), train_dataset=bad, processing_class=TOK)
    with pytest.warns(UserWarning, match="skipped 2 bad train rows"):
        tr = ListwiseTrainer(
            _model(),
            args=_args(tmp_path, skip_bad_rows=True),
            train_dataset=bad,
            processing_class=TOK,
        )
    assert [i for i, _, _ in tr.skipped_rows["train"]] == [3, 4]
    assert len(tr.train_dataset) == 3 and tr.train_dataset["row_index"] == [0, 1, 2]


def _full_ids(row):
    """The untruncated ids of a plain-text row: BOS + prompt, each completion + EOS."""
    prompt = [TOK.bos_token_id, *TOK(row["prompt"], add_special_tokens=False)["input_ids"]]
    comps = [
        [*TOK(c, add_special_tokens=False)["input_ids"], TOK.eos_token_id]
        for c in row["completions"]
    ]
    return prompt, comps


def test_rows_are_truncated_to_the_configured_lengths_and_trained_so(tmp_path, caplog):
    rows = [
        {"prompt": "123456789+1=", "completions": ["123456790", "12", "9"], "scores": [1, 0.2, 0]},
        {"prompt": "5+5=", "completions": ["10", "1000000"], "scores": [1.0, 0.0]},
    ]
    policy, ref = _model(0), _model(1)
    with caplog.at_level("WARNING", logger="adpo.trainers.listwise"):
        tr = ListwiseTrainer(
            policy,
            ref_model=ref,
            args=_args(tmp_path, max_prompt_length=5, max_completion_length=3),
            train_dataset=rows,
            processing_class=TOK,
        )
    want_p, want_c = [], []
    for r, row in enumerate(rows):
        prompt, comps = _full_ids(row)
        want_p.append(prompt[-5:])  # a prompt keeps its end
        want_c.append([c[:3] for c in comps])  # a completion keeps its start
        assert tr.train_dataset[r]["prompt_ids"] == want_p[r]
        assert tr.train_dataset[r]["completion_ids"] == want_c[r]
    # cut: prompt 0 (13 tokens), "123456790<eos>" (10) and "1000000<eos>" (8)
    assert tr.truncated == 3 and "3 sequences truncated" in caplog.text
    # the loss is the loss of the truncated sequences
    policy.eval()
    b = _batch(tr)
    with torch.no_grad():
        loss = tr.compute_loss(policy, b)
    lp, rp = torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    for r in range(2):
        for k, c in enumerate(want_c[r]):
            lp[r, k] = _independent_logp(policy, want_p[r], c)
            rp[r, k] = _independent_logp(ref, want_p[r], c)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    scores = torch.tensor([[1.0, 0.2, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    want = adpo_loss(lp, rp, scores, tau=0.8, beta=0.5, valid=valid)
    assert float(loss) == pytest.approx(float(want.loss), abs=1e-5)


@pytest.mark.parametrize("limit", ["default", None])
def test_default_lengths_keep_512_tokens_and_none_keeps_all(tmp_path, limit):
    row = {"prompt": "1" * 600 + "=", "completions": ["2" * 600, "3"], "scores": [1.0, 0.0]}
    kw = {} if limit == "default" else {"max_prompt_length": None, "max_completion_length": None}
    tr = ListwiseTrainer(
        _model(), args=_args(tmp_path, **kw), train_dataset=[row, ROWS[1]], processing_class=TOK
    )
    prompt, comps = _full_ids(row)
    n = 512 if limit == "default" else None
    assert tr.train_dataset[0]["prompt_ids"] == prompt[-n if n else 0 :]
    assert tr.train_dataset[0]["completion_ids"] == [comps[0][:n], comps[1]]
    assert tr.train_dataset[1]["completion_ids"] == _full_ids(ROWS[1])[1]
    assert tr.truncated == (2 if n else 0)


@pytest.mark.parametrize(
    ("precompute_batch_size", "sequences_per_call"),
    [
        (None, [23, 4, 9]),  # default: per_device_eval_batch_size = 8 rows (train 8 + 1, eval 3)
        (2, [5, 7, 6, 5, 4, 5, 4]),  # rows of K = 3, 2, 4, 3, … two at a time
    ],
)
def test_precomputed_reference_logps_are_batched_as_configured(
    tmp_path, precompute_batch_size, sequences_per_call
):
    ref = _model(1)
    calls = []
    ref.register_forward_hook(
        lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    tr = ListwiseTrainer(
        _model(0),
        ref_model=ref,
        args=_args(tmp_path, anchor="precomputed", precompute_batch_size=precompute_batch_size),
        train_dataset=ROWS * 3,
        eval_dataset=ROWS,
        processing_class=TOK,
    )
    assert calls == sequences_per_call  # one forward per batch of rows, train then eval
    for ds in (tr.train_dataset, tr.eval_dataset):  # the same values however batched
        want = _independent_group(ref, ds)
        for r in range(len(ds)):
            k = len(ds[r]["completion_ids"])
            assert ds[r]["ref_logps"] == pytest.approx(want[r, :k].tolist(), abs=1e-5)


def _dropout_model(arch):
    if arch == "qwen3":  # attention dropout inside SDPA from a float rate: no nn.Dropout
        return tiny_qwen3(
            len(TOK),
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            attention_dropout=0.5,
        )
    from transformers import GPT2Config, GPT2LMHeadModel  # nn.Dropout layers

    torch.manual_seed(0)
    p = {"embd_pdrop": 0.5, "resid_pdrop": 0.5, "attn_pdrop": 0.5}
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(TOK), n_embd=32, n_layer=1, n_head=2, **p))


@pytest.mark.parametrize("arch", ["qwen3", "gpt2"])
@pytest.mark.parametrize("disable_dropout", [True, False])
def test_disable_dropout_makes_the_training_forward_deterministic(tmp_path, disable_dropout, arch):
    policy = _dropout_model(arch)
    tr = ListwiseTrainer(
        policy,
        ref_model=_model(1),
        args=_args(tmp_path, **({} if disable_dropout else {"disable_dropout": False})),
        train_dataset=ROWS,
        processing_class=TOK,
    )
    b = _batch(tr)
    torch.manual_seed(0)
    with torch.no_grad():
        policy.eval()
        eval_loss = float(tr.compute_loss(policy, b))
        policy.train()
        train_losses = [float(tr.compute_loss(policy, b)) for _ in range(3)]
    if disable_dropout:  # the default: training sees the same function as evaluation
        assert train_losses == [eval_loss] * 3
    else:  # dropout stays on in training: each forward draws a new mask
        assert len(set(train_losses)) == 3
        assert min(abs(x - eval_loss) for x in train_losses) > 1e-4, (train_losses, eval_loss)


def test_config_rejects_bad_values(tmp_path):
    for kw, needle in [
        ({"tau": 0.0}, "tau"),
        ({"beta": -1.0}, "beta"),
        ({"target": "listmle"}, "target"),
        ({"anchor": "moving"}, "anchor"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"anchor_refresh_every": 0}, "anchor_refresh_every"),
        ({"max_completion_length": 0}, "max_completion_length"),
    ]:
        with pytest.raises(ValueError, match=needle):
            _args(tmp_path, **kw)
    with pytest.raises(TypeError, match="ListwiseConfig"):
        ListwiseTrainer(_model(), args=object(), train_dataset=ROWS, processing_class=TOK)


def test_ranking_metrics_closed_forms():
    valid = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    scores = torch.tensor([[0.0, 1.0, 0.5], [1.0, 1.0, 0.0], [2.0, 2.0, 2.0]])
    pred = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    assert top1_accuracy(pred, scores, valid).tolist() == [1.0, 1.0, 1.0]
    tied = torch.zeros(3, 3)  # every candidate tied: chance level |best|/K
    assert top1_accuracy(tied, scores, valid).tolist() == pytest.approx([1 / 3, 1.0, 1.0])
    worst = torch.tensor([[3.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert top1_accuracy(worst, scores, valid)[0] == 0.0
    # NDCG: gains s − min s = [0, 1, .5]; ideal = 1 + .5/log2(3)
    ideal = 1 + 0.5 / math.log2(3)
    assert ndcg(pred, scores, valid)[0] == pytest.approx(1.0)
    assert ndcg(worst, scores, valid)[0] == pytest.approx((0.5 / math.log2(3) + 1 / 2) / ideal)
    # all tied: each position gets the mean gain 0.5
    assert ndcg(tied, scores, valid)[0] == pytest.approx(0.5 * (1 + 1 / math.log2(3) + 0.5) / ideal)
    assert ndcg(pred, scores, valid)[2] == 1.0  # constant scores
    with pytest.raises(ValueError, match="shape"):
        ndcg(pred[:, :2], scores, valid)


@pytest.fixture(scope="module")
def sevens():
    """A listwise task learnable in seconds: the score is the number of 7s in the answer."""

    def rows(n, seed):
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            k = rng.randint(3, 5)
            cands = list({"".join(rng.choice("0123456789") for _ in range(3)) for _ in range(k)})
            if len(cands) < 2:
                continue
            out.append(
                {
                    "prompt": f"{rng.randrange(100)}?",
                    "completions": cands,
                    "scores": [c.count("7") for c in cands],
                }
            )
        return out

    return rows(400, 0), rows(120, 1)


def test_short_run_raises_heldout_top1_accuracy(tmp_path, sevens):
    train, held = sevens
    tr = ListwiseTrainer(
        _model(0),
        args=_args(
            tmp_path,
            max_steps=60,
            learning_rate=3e-3,
            tau=1.0,
            per_device_train_batch_size=16,
            lr_scheduler_type="constant",
            logging_steps=100,
        ),
        train_dataset=train,
        eval_dataset=held,
        processing_class=TOK,
    )
    ref = tr.dataset_logps(tr.eval_dataset, tr.ref_model, batch_size=64)
    before = tr.ranking_metrics(tr.eval_dataset, ref)
    tr.train()
    after = tr.ranking_metrics(tr.eval_dataset, ref)
    assert after["top1_accuracy"] > before["top1_accuracy"] + 0.2, (before, after)
    assert after["ndcg"] > before["ndcg"] + 0.05
    assert tr.reference_kl(tr.eval_dataset, tr.ref_model) > 0
    assert tr.state.log_history[-1]["train_loss"] > 0


@pytest.mark.parametrize("anchor", ["ema", "dynamic"])
def test_moving_anchor_is_checkpointed_and_resumed(tmp_path, anchor):
    def make(steps):
        return ListwiseTrainer(
            _model(0),
            args=_args(
                tmp_path,
                anchor=anchor,
                max_steps=steps,
                learning_rate=1e-2,
                anchor_update_steps=3,
                ema_decay=0.5,
                per_device_train_batch_size=1,
                save_strategy="steps",
                save_steps=2,
            ),
            train_dataset=ROWS * 2,
            processing_class=TOK,
        )

    full = make(4)
    full.train()
    resumed = make(4)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert (tmp_path / "out" / "checkpoint-2" / "adpo_anchor.pt").exists()
    assert torch.allclose(_params(resumed.anchor.module), _params(full.anchor.module), atol=1e-6)
    assert torch.allclose(_params(resumed.model), _params(full.model), atol=1e-6)


def test_listwise_config_aliases_and_vocabulary(tmp_path):
    with pytest.warns(DeprecationWarning, match="`beta` is deprecated, use `target_beta`"):
        c = _args(tmp_path, beta=0.25)
    assert c.target_beta == 0.25 and c.beta == 0.25
    with pytest.warns(DeprecationWarning, match="`ema_decay`"):
        assert _args(tmp_path, ema_decay=0.3).anchor_ema_decay == 0.3
    with pytest.warns(DeprecationWarning, match="`anchor_update_steps`"):
        assert _args(tmp_path, anchor_update_steps=7).anchor_refresh_every == 7
    with pytest.warns(DeprecationWarning, match="'dynamic'.*'on_policy'"):
        assert _args(tmp_path, anchor="dynamic").anchor == "on_policy"
    with (
        pytest.raises(ValueError, match=r"`target_beta`=0\.5.*`beta`=0\.25"),
        pytest.warns(DeprecationWarning),
    ):
        _args(tmp_path, target_beta=0.5, beta=0.25)
    c = _args(tmp_path)
    assert (c.target_beta, c.anchor_ema_decay, c.anchor_refresh_every) == (0.5, 0.99, 100)
