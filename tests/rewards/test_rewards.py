"""Reward functions: math-verify answers, exact match, arithmetic, format, and the guard."""

import contextlib
import functools
import inspect
import json
import math
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adpo.rewards.math as math_module
from adpo.rewards import (
    FormatReward,
    GuardedReward,
    MathReward,
    arithmetic_reward,
    boxed_integer_score,
    completion_text,
    exact_match_reward,
    extract_boxed,
    extract_boxed_integer,
    guard_reward,
    guard_reward_funcs,
    math_reward,
    normalize_answer,
)
from adpo.rewards.math import extract_boxed_all, parse_gold


def test_extract_boxed_balances_braces_and_takes_the_last():
    text = r"first \boxed{1} then \boxed{\frac{1}{2}} and \fbox{x}"
    assert extract_boxed_all(text) == ["1", r"\frac{1}{2}", "x"]
    assert extract_boxed(text) == "x"
    assert extract_boxed("no box") is None
    assert extract_boxed(r"\boxed{unclosed") is None


def test_math_reward_equivalent_forms_and_wrong_answers():
    solutions = [r"So the answer is $\boxed{\frac{1}{2}}$."] * 4 + [r"\boxed{3}"]
    completions = [
        r"the answer is \boxed{\frac{1}{2}}",
        r"$\boxed{0.5}$",
        r"\boxed{\frac{1}{3}}",
        "I do not know",
        [{"role": "assistant", "content": r"\boxed{3}"}],  # conversational completion
    ]
    assert math_reward(completions, solutions) == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_math_reward_unparsable_gold_gives_none_not_zero():
    assert parse_gold("no answer anywhere") == []
    assert parse_gold(r"So $\boxed{\frac{1}{2}}$.") == ["1/2", r"\frac{1}{2}"]  # as text
    assert parse_gold(r"$100000000!$") == ["factorial(100000000)", "100000000!"]  # not evaluated
    assert math_reward([r"\boxed{1}"], ["no answer anywhere"]) == [None]
    assert math_reward([r"\boxed{1}"], [None]) == [None]


def test_math_reward_length_mismatch():
    with pytest.raises(ValueError, match="2 completions but 1 solutions"):
        math_reward(["a", "b"], [r"\boxed{1}"])


def test_math_reward_options_are_validated():
    assert math_reward.__name__ == "math_reward" and math_reward.timeout == 5.0
    assert inspect.signature(parse_gold).parameters["timeout"].default == 5.0
    for bad in (0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="MathReward: `timeout` must be finite and > 0"):
            MathReward(timeout=bad)
        with pytest.raises(ValueError, match="parse_gold: `timeout` must be finite and > 0"):
            parse_gold("1", timeout=bad)
    for bad in ("5", True, None):
        with pytest.raises(TypeError, match="`timeout` must be a number of seconds"):
            MathReward(timeout=bad)
    with pytest.raises(ValueError, match="`name` must be a non-empty string"):
        MathReward(name="")


class _RecordingPool:
    """Stands in for the worker pool: records each batch's deadline, answers "parses", 1.0."""

    def __init__(self):
        self.timeouts = []

    @contextlib.contextmanager
    def worker(self):
        yield self

    def map(self, name, arglist, *, timeout):
        self.timeouts.append(timeout)
        return [{"_gold_parses": True, "_score": 1.0, "_gold_text": ["1", "1"]}[name]] * len(
            arglist
        )

    def call(self, name, args, *, timeout):
        return self.map(name, [args], timeout=timeout)[0]


def test_math_reward_timeout_bounds_every_check(monkeypatch):
    pool = _RecordingPool()
    monkeypatch.setattr(math_module, "_POOL", pool)
    reward = MathReward(timeout=0.25)
    assert reward([r"\boxed{1}"] * 3, [r"\boxed{1}"] * 2 + [r"\boxed{2}"]) == [1.0] * 3
    assert pool.timeouts == [0.25] * 2  # the solutions' batch, the completions' batch
    assert parse_gold("1", timeout=0.5) == ["1", "1"] and pool.timeouts[-1] == 0.5


def test_math_reward_from_a_worker_thread_is_bounded():
    """The completion that froze a process scores None after the deadline, from a thread.

    A regression would hang the interpreter with the GIL held, so the check runs in a
    child interpreter killed after 240 s (it needs about ten).
    """
    code = r"""
    import io, json, logging, threading
    from adpo.rewards import MathReward, parse_gold

    log = io.StringIO()
    logging.getLogger("adpo.rewards").addHandler(logging.StreamHandler(log))
    tower = r"\boxed{2^{2^{2^{2^{2^{100}}}}}}"  # sympy runs for minutes
    nested = "$" + "(" * 3000 + "1" + ")" * 3000 + "$"  # parsing it: over a minute
    reward, metrics, got = MathReward(timeout=1.0, name="mv"), {}, {}

    def run():
        got["rewards"] = reward(
            completions=[tower, r"\boxed{2}", r"\boxed{3}", r"\boxed{1}", r"\boxed{1}"],
            solution=[r"\boxed{2}"] * 3 + [nested] * 2,
            log_metric=lambda name, value: metrics.__setitem__(name, value),
        )
        got["gold"] = parse_gold(nested, timeout=1.0)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    print(json.dumps(dict(got, timeouts=reward.timeouts, calls=reward.calls, metrics=metrics,
                          nested=len(nested), log=log.getvalue().splitlines(),
                          failed=reward.last_failed)))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    # the tower and the two completions of the solution that cannot be parsed in time get
    # None; the others are scored by the worker that replaced the killed one
    assert got["rewards"] == [None, 1.0, 0.0, None, None]
    assert (got["timeouts"], got["calls"]) == (3, 5)
    assert got["metrics"] == {"rewards/mv/timeouts": 3.0}
    assert got["failed"] == [True, False, False, True, True]  # timeouts are failures
    assert got["gold"] == []
    batch, gold = got["log"]
    assert batch.startswith("mv: 3 of 5 completions get no reward: 2 checks ran past the 1 s")
    # it quotes the first check that ran late, shortened: the solution, checked first
    assert "(the first: solution '$((((" in batch and len(batch) < 600
    assert batch.endswith(f"({got['nested']} characters)')")
    assert gold.startswith("parse_gold: no answer within 1 s") and len(gold) < 600


def test_exact_match_normalises_and_prefers_boxed():
    assert normalize_answer(" $1,000$. ") == "1000"
    assert normalize_answer(r"\text{Paris}") == "paris"
    got = exact_match_reward([r"so \boxed{Paris}", " paris. ", "Lyon", "x"], ["Paris"] * 3 + [None])
    assert got == [1.0, 1.0, 0.0, None]


def test_arithmetic_reward_reads_the_leading_integer():
    assert arithmetic_reward(
        ["46", "46 because", "-3", "4 6", ""], ["46", "46", "-3", "46", "0"]
    ) == [
        1.0,
        1.0,
        1.0,
        0.0,
        0.0,
    ]


def test_format_reward_default_and_pattern():
    f = FormatReward()
    assert f.__name__ == "format"
    assert f([r"\boxed{1}", r"\boxed{1}\boxed{2}", r"\boxed{ }", "none"]) == [1.0, 0.0, 0.0, 0.0]
    g = FormatReward(r"^\d+$", name="digits")
    assert g(["12", "12a"]) == [1.0, 0.0]


def test_completion_text_rejects_other_types():
    assert (
        completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
        == "hi"
    )
    with pytest.raises(TypeError, match="string or a list of messages"):
        completion_text(3)


def _flaky(completions, answer, **kwargs):
    """Raises on the whole batch when any completion is 'boom'; NaN for 'nan'."""
    out = []
    for c, a in zip(completions, answer, strict=True):
        if c == "boom":
            raise RuntimeError("parser crashed")
        out.append(math.nan if c == "nan" else float(c == a))
    return out


def test_guard_turns_failures_into_none_counts_and_logs_them():
    logged = {}
    g = guard_reward(_flaky)
    assert isinstance(g, GuardedReward) and g.__name__ == "_flaky"
    out = g(
        prompts=["p"] * 4,
        completions=["1", "boom", "nan", "2"],
        answer=["1", "1", "1", "1"],
        log_metric=lambda k, v: logged.__setitem__(k, v),
        trainer_state=None,
    )
    assert out == [1.0, None, None, 0.0]  # the good samples keep their reward
    assert (g.calls, g.failures) == (4, 2)
    assert logged == {"rewards/_flaky/failures": 2.0}
    assert guard_reward(g) is g


def test_guard_counts_a_none_its_function_flags_as_failed():
    """A function may say which of its Nones are failures (MathReward: timeouts) rather
    than "does not apply": the guard counts them and the online trainers drop the sample."""

    class Checker:
        __name__ = "checker"

        def __call__(self, completions, **kw):
            self.last_failed = [c == "slow" for c in completions]
            return [None if c in ("slow", "n/a") else 1.0 for c in completions]

    g = guard_reward(Checker())
    assert g(completions=["ok", "slow", "n/a"]) == [1.0, None, None]
    assert g.last_failed == [False, True, False] and g.failures == 1


def test_guard_passes_none_through_and_rejects_wrong_lengths():
    g = guard_reward(lambda completions, **kw: [None] * len(completions), name="skip")
    assert g(completions=["a", "b"]) == [None, None] and g.failures == 0
    bad = guard_reward(lambda completions, **kw: [1.0], name="short")
    with pytest.raises(ValueError, match="returned 1 values for 2 completions"):
        bad(completions=["a", "b"])
    with pytest.raises(TypeError, match="callable"):
        guard_reward(3)

    async def coro(completions, **kw):
        return [1.0]

    with pytest.raises(TypeError, match="async"):
        guard_reward(coro)
    with pytest.raises(TypeError, match="async"):  # a partial of an async function too
        guard_reward(functools.partial(coro, flag=1))


def test_guard_reward_funcs_guards_only_synchronous_callables():
    import torch

    async def coro(completions, **kw):
        return [1.0]

    model = torch.nn.Linear(1, 1)
    out = guard_reward_funcs(["org/reward-model", model, coro, arithmetic_reward])
    assert out[0] == "org/reward-model" and out[1] is model and out[2] is coro
    assert isinstance(out[3], GuardedReward)
    single = guard_reward_funcs(arithmetic_reward)  # one function → a list of one
    assert len(single) == 1 and isinstance(single[0], GuardedReward)
    assert guard_reward_funcs(single)[0] is single[0]  # guarding twice changes nothing


class _Env:
    """An environment that owns its answer, as TRL's ``environment_factory`` builds them."""

    def __init__(self, answer):
        self.answer = answer

    def check(self, completion: str) -> float:
        if self.answer is None:
            raise RuntimeError("sandbox error")
        return float(completion == self.answer)


def _env_reward(completions, environments, log_extra=None, log_metric=None, **kwargs):
    """Reads TRL's ``environments`` (one per completion); logs a column and a metric first."""
    log_extra("checked", [f"{c}?" for c in completions])
    log_metric("length", sum(len(c) for c in completions) / len(completions))
    return [env.check(c) for c, env in zip(completions, environments, strict=True)]


def test_guard_retry_gives_each_sample_its_own_environment_and_forwards_logs():
    # TRL 1.16 `_calculate_rewards` passes `environments=self.environments`, a list of one
    # environment instance per completion, beside the per-completion dataset columns
    extra, metrics = {}, {}
    g = guard_reward(_env_reward)
    out = g(
        prompts=["p"] * 4,
        completions=["a", "bb", "ccc", "x"],
        completion_ids=[[1], [2], [3], [4]],
        environments=[_Env("a"), _Env("z"), _Env(None), _Env("x")],  # the 3rd raises
        trainer_state=None,
        log_extra=lambda column, values: extra.__setitem__(column, values),
        log_metric=lambda name, value: metrics.__setitem__(name, value),
    )
    assert out == [1.0, 0.0, None, 1.0]  # sample i read environments[i]
    assert (g.calls, g.failures) == (4, 1)
    # what the failed sample logged before it raised is dropped: one column value per
    # completion, in batch order, None for it; the metric once per batch, the mean of the
    # other samples' values (lengths 1, 2, 1; with the failed one's 3 it would be 7/4)
    assert extra == {"checked": ["a?", "bb?", None, "x?"]}
    assert metrics == {
        "length": pytest.approx(4 / 3, abs=1e-12),
        "rewards/_env_reward/failures": 1.0,
    }


def test_guard_retry_without_trl_hooks_passes_none_through():
    seen = []

    def reward(completions, log_extra=None, **kwargs):
        seen.append(log_extra)
        if "boom" in completions:
            raise RuntimeError("boom")
        return [1.0] * len(completions)

    assert guard_reward(reward)(completions=["boom", "ok"]) == [None, 1.0]
    assert seen == [None, None, None]  # no hook invented when the caller gave none


def test_guard_warning_shortens_a_long_error_text(caplog):
    long = "x" * 100_000

    def reward(completions, **kwargs):
        raise ValueError(f"cannot parse {completions[0]}")

    with caplog.at_level("WARNING", logger="adpo.rewards"):
        assert guard_reward(reward)(completions=[long]) == [None]
    (message,) = [r.getMessage() for r in caplog.records]
    assert (
        "(100025 characters)" in message
    )  # "ValueError: cannot parse " + 100_000 and len(message) < 500


def _boxes_reference(text):
    """extract_boxed_all as first written (quadratic in the number of boxes): the reference."""
    out, i = [], 0
    while True:
        starts = [j for j in (text.find("\\boxed{", i), text.find("\\fbox{", i)) if j >= 0]
        if not starts:
            return out
        k = text.index("{", min(starts)) + 1
        depth, m = 1, k
        while m < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[m], 0)
            m += 1
        if depth:
            return out
        out.append(text[k : m - 1])
        i = m


def _normalize_reference(text):
    """normalize_answer as first written (quadratic in the number of $…$ pairs)."""
    import re

    s = text.strip().rstrip(".").strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    m = re.fullmatch(r"\\text\{(.*)\}", s)
    if m:
        s = m.group(1).strip()
    s = s.rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return re.sub(r"\s+", " ", s).lower()


_PIECES = ["$", " ", "\n", "{", "}", "\\boxed{", "\\fbox{", "\\text{", "1", "0", ",", ".", "-", "a"]


@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
@settings(max_examples=400, deadline=None)
def test_linear_text_helpers_match_the_straightforward_reference(text):
    # rewritten to take time linear in the text (no quadratic rescans or re-slicing)
    assert extract_boxed_all(text) == _boxes_reference(text)
    assert normalize_answer(text) == _normalize_reference(text)


def test_boxed_integer_reads_any_number_of_digits_without_int():
    many = "1" * 5000  # int() refuses over 4,300 digits (Python >= 3.11)
    assert extract_boxed_integer(rf"\boxed{{{many}}}") == many
    assert boxed_integer_score(rf"\boxed{{{many}}}", "1") == 0.0
    assert boxed_integer_score(rf"\boxed{{{many}}}", many) == 1.0
    assert boxed_integer_score(r"\boxed{" + "0" * 5000 + "7}", "7") == 1.0
    assert [extract_boxed_integer(rf"\boxed{{{s}}}") for s in (" -007 ", "-0", "+1", "٣")] == [
        "-7",
        "0",
        None,  # a plus sign is not the task's answer format
        None,  # ASCII digits only
    ]
    with pytest.raises(ValueError, match="`answer` must be an integer, got 'nine'"):
        boxed_integer_score(r"\boxed{9}", "nine")
