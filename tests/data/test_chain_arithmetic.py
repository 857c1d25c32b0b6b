"""``ChainArithmeticTask``: tiers do what they say, answers checked by an independent evaluator,
malformed completions score 0 without an exception."""

import ast
import operator
import re

import pytest

from adpo.data.chain_arithmetic import TIERS, ChainArithmeticTask, chain_value, worked_solution
from adpo.rewards import boxed_integer_score, chain_arithmetic_reward, extract_boxed_integer


def _independent_eval(expr: str) -> int:
    """Python's own parser and operator precedence (left-associative + and -), not the generator."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub}

    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise AssertionError(f"unexpected node {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval").body)


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_tiers_have_their_steps_digits_and_lengths(tier):
    task = ChainArithmeticTask(tier)
    steps, digits = TIERS[tier]
    rows = task.sample(300, seed=1)
    assert rows == task.sample(300, seed=1)  # deterministic
    assert rows != task.sample(300, seed=2)
    for r in rows:
        m = re.fullmatch(r"([0-9+\-]+)=\?\n", r["prompt"])
        assert m, r["prompt"]
        expr = m.group(1)
        operands = re.split(r"[+\-]", expr)
        assert len(operands) == steps + 1
        for x in operands:  # exactly `digits` digits (1-digit operands may be 0)
            assert len(x) == digits and (digits == 1 or x[0] != "0"), (x, r["prompt"])
        # the answer, by an evaluator that shares no code with the generator
        assert int(r["answer"]) == _independent_eval(expr) >= 0
        lines = r["solution"].split("\n")
        assert len(lines) == steps + 1 and lines[-1] == f"\\boxed{{{r['answer']}}}"
        value = int(operands[0])
        for line, x, op in zip(lines[:-1], operands[1:], re.findall(r"[+\-]", expr), strict=True):
            a, rest = re.fullmatch(r"(\d+)([+\-]\d+=\d+)", line).groups()
            assert int(a) == value  # each line starts from the previous result
            assert rest.startswith(op + x + "=")
            value = _independent_eval(line.split("=")[0])
            assert int(line.split("=")[1]) == value >= 0  # every intermediate result is right
        # completion length (one token per character, plus EOS) within the stated bound
        assert len(r["solution"]) + 1 <= task.max_completion_tokens()
        assert boxed_integer_score(r["solution"], r["answer"]) == 1.0


def test_tiers_grow_in_length_and_difficulty():
    mean_len = [
        sum(len(r["solution"]) for r in ChainArithmeticTask(t).sample(200, 0)) / 200 for t in TIERS
    ]
    assert mean_len == sorted(mean_len) and mean_len[0] < 20 and 55 < mean_len[-1] < 120
    assert [TIERS[t][0] for t in TIERS] == sorted(TIERS[t][0] for t in TIERS)  # steps grow
    assert TIERS[5][1] > TIERS[4][1]  # and digits at the top tier
    # tier 4 is tier 3 with one more step, same digits: the out-of-distribution tier
    assert TIERS[4] == (TIERS[3][0] + 1, TIERS[3][1])


def test_sample_distinct_excludes_and_refuses_impossible_requests():
    task = ChainArithmeticTask(3)
    held = {r["prompt"] for r in task.sample(50, 9)}
    rows = task.sample_distinct(500, 3, exclude=held)
    prompts = [r["prompt"] for r in rows]
    assert len(set(prompts)) == 500 and not set(prompts) & held
    with pytest.raises(ValueError, match="distinct"):
        ChainArithmeticTask(1).sample_distinct(1000, 0)  # tier 1 has 155 distinct problems


def test_chain_helpers_and_bad_tier():
    assert chain_value([7, 5, 3], ["+", "-"]) == 9
    assert worked_solution([7, 5, 3], ["+", "-"]) == "7+5=12\n12-3=9\n\\boxed{9}"
    with pytest.raises(ValueError, match="operators"):
        chain_value([1, 2], ["*"])
    with pytest.raises(ValueError, match="one more operand"):
        chain_value([1], ["+"])
    with pytest.raises(ValueError, match="tier"):
        ChainArithmeticTask(6)


@pytest.mark.parametrize(
    "completion",
    [
        "",  # nothing
        "7+5=12\n12-3=9\n9",  # no answer marker
        "\\boxed{9}\\boxed{9}",  # two markers, even if both right
        "7+5=12\n\\boxed{9}\n\\boxed{10}",
        "\\boxed{9",  # unclosed
        "\\boxed{}",  # empty
        "\\boxed{nine}",  # not an integer
        "\\boxed{9.0}",
        "\\boxed{{9}}",
        "}{\\\\boxed}{{{",  # garbage
        "\x00\uffff\\boxed{\n",
        "\\fbox{9}",  # another marker than the one asked for
    ],
)
def test_malformed_completions_score_zero_without_exception(completion):
    assert boxed_integer_score(completion, "9") == 0.0
    assert chain_arithmetic_reward([completion], ["9"]) == [0.0]


def test_reward_reads_the_one_boxed_integer():
    good = "7+5=12\n12-3=9\n\\boxed{9}"
    assert chain_arithmetic_reward(
        [good, "\\boxed{ 9 }", "wrong work\n\\boxed{9}", "\\boxed{8}", [{"content": good}]],
        ["9"] * 5,
    ) == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert extract_boxed_integer("x\\boxed{012}") == "12"
    with pytest.raises(ValueError, match="answers"):
        chain_arithmetic_reward(["a", "b"], ["1"])
