"""Listwise rows: every bad-row case, normalisation of each format, tokenisation, the
generated task."""

import math

import pytest

from adpo.data.arithmetic import ArithmeticTask
from adpo.data.listwise import (
    BadRowError,
    is_conversational,
    make_arithmetic_listwise,
    normalize_row,
    normalize_rows,
    tokenize_row,
)
from adpo.testing import char_tokenizer

GOOD = {"prompt": "1+1=", "completions": ["2", "3", "11"], "scores": [1.0, 0.5, 0.0]}


@pytest.mark.parametrize(
    ("row", "kind", "needle"),
    [
        (
            {"prompt": "1+1=", "completions": ["2"], "scores": [1.0]},
            "too_few_completions",
            "at least 2",
        ),
        ({"prompt": "1+1=", "completions": [], "scores": []}, "too_few_completions", "at least 2"),
        ({"prompt": "1+1=", "ranking": ["2"]}, "too_few_completions", "at least 2"),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "scores": [1.0]},
            "length_mismatch",
            "'scores' has 1 values for 2",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "target_probs": [0.2, 0.3, 0.5]},
            "length_mismatch",
            "'target_probs' has 3",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "ranking": [0]},
            "length_mismatch",
            "'ranking' has 1",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "scores": [1.0, float("nan")]},
            "non_finite",
            "'scores'[1] is not finite",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "scores": [float("inf"), 0.0]},
            "non_finite",
            "'scores'[0]",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", ""], "scores": [1.0, 0.0]},
            "empty_completion",
            "completion 1 is empty",
        ),
        (
            {"prompt": "1+1=", "completions": ["  ", "2"], "scores": [1.0, 0.0]},
            "empty_completion",
            "completion 0",
        ),
        ({"prompt": "1+1=", "chosen": "2", "rejected": ""}, "empty_completion", "completion 1"),
        ({"prompt": "1+1=", "chosen": "2"}, "missing_field", "both 'chosen' and 'rejected'"),
        ({"completions": ["2", "3"], "scores": [1.0, 0.0]}, "missing_field", "no 'prompt'"),
        ({"prompt": "1+1=", "completions": ["2", "3"]}, "missing_field", "exactly one of"),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "scores": [1, 0], "ranking": [0, 1]},
            "ambiguous",
            "exactly one of",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "ranking": [0, 0]},
            "bad_ranking",
            "permutation",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "target_probs": [0.7, 0.7]},
            "bad_probs",
            "sums to 1.4",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "target_probs": [1.5, -0.5]},
            "bad_probs",
            "negative",
        ),
        (
            {"prompt": "1+1=", "completions": ["2", "3"], "scores": ["a", 0]},
            "type",
            "must be a number",
        ),
        ({"prompt": 5, "completions": ["2", "3"], "scores": [1, 0]}, "type", "'prompt'"),
        (
            {
                "prompt": "1+1=",
                "completions": ["2", [{"role": "assistant", "content": "3"}]],
                "scores": [1, 0],
            },
            "type",
            "mix plain text and chat",
        ),
    ],
)
def test_every_bad_row_is_named(row, kind, needle):
    with pytest.raises(BadRowError, match=r"^row 7: ") as err:
        normalize_row(row, 7)
    assert err.value.kind == kind and err.value.index == 7
    assert needle in str(err.value)


def test_bad_rows_raise_with_index_or_are_counted_when_skipping():
    rows = [
        GOOD,
        {"prompt": "x", "completions": ["a"], "scores": [1.0]},
        GOOD,
        {"prompt": "x", "completions": ["a", "b"], "scores": [1.0, math.nan]},
        {"prompt": "x", "completions": ["a", "b"], "scores": [1.0]},
        {"prompt": "x", "completions": ["a", ""], "scores": [1.0, 0.0]},
    ]
    with pytest.raises(BadRowError, match="row 1: needs at least 2 completions"):
        normalize_rows(rows)
    out = normalize_rows(rows, skip_bad_rows=True)
    assert out.source_index == [0, 2]
    assert [i for i, _, _ in out.skipped] == [1, 3, 4, 5]
    assert out.skipped_by_kind() == {
        "too_few_completions": 1,
        "non_finite": 1,
        "length_mismatch": 1,
        "empty_completion": 1,
    }
    with pytest.raises(ValueError, match="no usable rows: all 1 rows are bad"):
        normalize_rows(rows[1:2], skip_bad_rows=True)
    with pytest.raises(ValueError, match="empty"):
        normalize_rows([])


def test_mixed_supervision_and_partial_ref_logps_are_rejected():
    probs = {"prompt": "x", "completions": ["a", "b"], "target_probs": [0.5, 0.5]}
    with pytest.raises(ValueError, match="row 1: the dataset mixes teacher 'target_probs'"):
        normalize_rows([GOOD, probs])
    with pytest.raises(ValueError, match="row 1: 'ref_logps' must be given for every row"):
        normalize_rows([{**GOOD, "ref_logps": [-1.0, -2.0, -3.0]}, GOOD])


def test_formats_normalise_to_scores():
    # ranking by indices, best first: completion 2 best, then 0, then 1
    r = normalize_row({"prompt": "p", "completions": ["a", "b", "c"], "ranking": [2, 0, 1]}, 0)
    assert r["scores"] == [1.0, 0.0, 2.0]
    # ranking given as the completions themselves, best first
    r = normalize_row({"prompt": "p", "ranking": ["best", "mid", "worst"]}, 0)
    assert r["completions"] == ["best", "mid", "worst"] and r["scores"] == [2.0, 1.0, 0.0]
    r = normalize_row(
        {
            "prompt": "p",
            "chosen": "y",
            "rejected": "n",
            "ref_chosen_logps": -1.0,
            "ref_rejected_logps": -2.0,
        },
        0,
    )
    assert r["completions"] == ["y", "n"] and r["scores"] == [1.0, 0.0]
    assert r["ref_logps"] == [-1.0, -2.0]
    r = normalize_row({"prompt": "p", "completions": ["a", "b"], "target_probs": [0.25, 0.75]}, 0)
    assert r["target_probs"] == [0.25, 0.75] and r["scores"] is None
    # Arrow rows carry every column, None where unset: a listwise row with chosen=None
    r = normalize_row({**GOOD, "chosen": None, "rejected": None, "ranking": None}, 0)
    assert r["scores"] == GOOD["scores"]


def test_tokenize_plain_rows_adds_bos_and_eos_and_truncates():
    tok = char_tokenizer()
    row = normalize_row({"prompt": "12+34=", "completions": ["46", "4"], "scores": [1, 0]}, 0)
    out = tokenize_row(row, tok)
    assert out["prompt_ids"][0] == tok.bos_token_id
    assert tok.decode(out["prompt_ids"][1:]) == "12+34="
    assert [ids[-1] for ids in out["completion_ids"]] == [tok.eos_token_id] * 2
    assert tok.decode(out["completion_ids"][0][:-1]) == "46"
    assert out["truncated"] == 0
    cut = tokenize_row(row, tok, max_prompt_length=3, max_completion_length=2)
    assert tok.decode(cut["prompt_ids"]) == "34="  # the prompt keeps its end
    assert cut["completion_ids"][0] == tok("46", add_special_tokens=False)["input_ids"]
    assert cut["truncated"] == 2  # the prompt and the 3-token completion "46<eos>"


def test_tokenize_chat_rows_uses_the_chat_template():
    tok = char_tokenizer()
    prompt = [{"role": "user", "content": "12+34="}]
    row = normalize_row(
        {
            "prompt": prompt,
            "completions": [
                [{"role": "assistant", "content": "46"}],
                [{"role": "assistant", "content": "45"}],
            ],
            "scores": [1, 0],
        },
        0,
    )
    assert is_conversational(row["prompt"])
    out = tokenize_row(row, tok)
    assert tok.decode(out["prompt_ids"]) == "user: 12+34=\nassistant: "
    assert tok.decode(out["completion_ids"][0]) == "46\n"
    assert tok.decode(out["completion_ids"][1]) == "45\n"


def test_generated_task_has_variable_k_shuffled_candidates_and_true_scores():
    rows = make_arithmetic_listwise(200, seed=3, k_min=3, k_max=5)
    assert rows == make_arithmetic_listwise(200, seed=3, k_min=3, k_max=5)  # deterministic
    ks = {len(r["completions"]) for r in rows}
    assert ks == {3, 4, 5}
    best_pos = set()
    for r in rows:
        normalize_row(r, 0)  # every generated row is valid
        assert len(set(r["completions"])) == len(r["completions"])
        assert r["scores"] == [ArithmeticTask.score(c, r["answer"]) for c in r["completions"]]
        if r["answer"] in r["completions"]:
            best_pos.add(r["completions"].index(r["answer"]))
    assert best_pos == {0, 1, 2, 3, 4}  # the right answer is not always in one place
    frac = sum(r["answer"] in r["completions"] for r in rows) / len(rows)
    assert 0.75 < frac < 0.95  # p_correct = 0.85
    with pytest.raises(ValueError, match="k_min"):
        make_arithmetic_listwise(2, seed=0, k_min=1)


@pytest.mark.parametrize(
    "name",
    ["adpo.trainers", "adpo.trainers.listwise", "adpo.trainers.ranking", "adpo.data.listwise"],
)
def test_every_public_symbol_imports(name):
    import importlib

    module = importlib.import_module(name)
    assert module.__all__
    for symbol in module.__all__:
        assert getattr(module, symbol) is not None, f"{name}.{symbol}"
