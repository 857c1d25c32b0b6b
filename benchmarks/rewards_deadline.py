"""What the deadline costs `math_reward` on ordinary answers: the checks in a worker process
(a batch sent in one message, answers streamed back) against math-verify called
in-process as `math_reward` called it before it had a deadline (signal timeouts, main
thread only), and against the worker's own functions called in-process (the process hop
alone). Prints per-completion times and their ratios measured in one run, with the load
average (other jobs share the machine), and the worker's one-off start-up.

    python benchmarks/rewards_deadline.py [--prompts 32] [--G 8] [--reps 10]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import time

from adpo.rewards import MathReward, completion_text
from adpo.rewards._process import Worker
from adpo.rewards.math import _gold_parses, _gold_target, _score, _worker_init


def in_process(completions: list[str], solution: list[str]) -> list[float | None]:
    """`math_reward` before the deadline: math-verify in the caller, signal timeouts."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold_cache: dict[str, list] = {}
    out: list[float | None] = []
    for c, sol in zip(completions, solution, strict=True):
        target = _gold_target(sol)
        if target not in gold_cache:
            gold = parse(
                target, [LatexExtractionConfig(boxed_match_priority=0)], parsing_timeout=10
            )
            if not gold:
                gold = parse(
                    target, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=10
                )
            gold_cache[target] = gold
        gold = gold_cache[target]
        if not gold:
            out.append(None)
            continue
        pred = parse(
            completion_text(c),
            extraction_config=[
                LatexExtractionConfig(
                    normalization_config=NormalizationConfig(units=True),
                    boxed_match_priority=0,
                    try_extract_without_anchor=False,
                )
            ],
            extraction_mode="first_match",
            parsing_timeout=10,
        )
        out.append(float(verify(gold, pred, timeout_seconds=5)) if pred else 0.0)
    return out


def same_checks_in_process(completions: list[str], solution: list[str]) -> list[float | None]:
    """The worker's own functions called here: what the process hop alone costs."""
    targets = [_gold_target(s) for s in solution]
    return [
        _score(completion_text(c), t) if _gold_parses(t) else None
        for c, t in zip(completions, targets, strict=True)
    ]


def batch(prompts: int, G: int, call: int) -> tuple[list[str], list[str], list[float]]:
    """MATH-like rows: a worked solution per prompt, G completions with right, equivalent,
    wrong and missing answers after a few hundred characters of reasoning; and the rewards
    they must get. Every call's numbers are new (`call` picks them), so no path finds a
    string in math-verify's caches that another path or call parsed."""
    rng = random.Random(call)
    completions, solutions, expected = [], [], []
    for p in range(prompts):
        a, b = 1 + call * prompts + p, rng.randrange(2, 50)
        sol = f"Dividing, we get $x = \\boxed{{\\frac{{{a}}}{{{b}}}}}$."
        answers = [
            (f"\\frac{{{a}}}{{{b}}}", 1.0),
            (f"{a / b}", 1.0),
            (f"\\frac{{{a + 1}}}{{{b}}}", 0.0),
            (None, 0.0),
        ]
        for _ in range(G):
            ans, reward = rng.choice(answers)
            reasoning = " ".join(f"step {k}: we simplify the term {a}x + {k}." for k in range(12))
            completions.append(reasoning + (f" So $\\boxed{{{ans}}}$." if ans else " I give up."))
            solutions.append(sol)
            expected.append(reward)
    return completions, solutions, expected


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    t0 = time.perf_counter()
    w = Worker("adpo.rewards.math")
    w.call("_gold_parses", ("$1$",), timeout=60)
    start = time.perf_counter() - t0
    w.close()

    _worker_init()  # math-verify's loggers as in the worker
    reward = MathReward()
    paths = [
        ("in-process", in_process),
        ("same checks in-process", same_checks_in_process),
        ("worker", reward),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    calls = itertools.count()
    for rep in range(a.reps + 1):  # the first round warms them up (imports, the worker)
        for name, fn in paths if rep % 2 else paths[::-1]:  # alternate who goes first
            completions, solutions, expected = batch(a.prompts, a.G, next(calls))
            t = time.perf_counter()
            got = fn(completions, solutions)
            if rep:
                times[name].append((time.perf_counter() - t) / len(completions))
            assert got == expected, f"{name} scored a batch wrong"
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(
        f"{a.prompts} prompts x G={a.G} per batch, median of {a.reps} batches, "
        f"loadavg={os.getloadavg()}; worker start-up {start:.2f} s (once per process)"
    )
    print("| path | ms per completion | / in-process |\n|---|---|---|")
    for name, ms in med.items():
        print(f"| {name} | {ms:.3f} | {ms / med['in-process']:.3f} |")


if __name__ == "__main__":
    main()
