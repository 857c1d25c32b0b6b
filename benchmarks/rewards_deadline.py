"""What the deadline costs `math_reward` on ordinary answers: the checks in a worker process
(one pipe round trip per completion) against the same math-verify calls in-process, as
`math_reward` made them before it had a deadline (math-verify's signal timeouts, main
thread only). Prints per-completion times and their ratio measured in one run, with the
load average (other jobs share the machine), and the worker's one-off start-up.

    python benchmarks/rewards_deadline.py [--prompts 32] [--G 8] [--reps 10]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from adpo.rewards import MathReward, completion_text
from adpo.rewards._process import Worker
from adpo.rewards.math import _gold_target


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


def batch(prompts: int, G: int, seed: int) -> tuple[list[str], list[str]]:
    """MATH-like rows: a worked solution per prompt, G completions with right, equivalent,
    wrong and missing answers after a few hundred characters of reasoning."""
    rng = random.Random(seed)
    completions, solutions = [], []
    for _ in range(prompts):
        a, b = rng.randrange(1, 50), rng.randrange(2, 50)
        sol = f"Dividing, we get $x = \\boxed{{\\frac{{{a}}}{{{b}}}}}$."
        answers = [f"\\frac{{{a}}}{{{b}}}", f"{a / b:.6f}", f"\\frac{{{a + 1}}}{{{b}}}", None]
        for _ in range(G):
            ans = rng.choice(answers)
            reasoning = " ".join(f"step {k}: we simplify the term {a}x + {k}." for k in range(12))
            completions.append(reasoning + (f" So $\\boxed{{{ans}}}$." if ans else " I give up."))
            solutions.append(sol)
    return completions, solutions


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

    reward = MathReward()
    times: dict[str, list[float]] = {"in-process": [], "worker": []}
    for rep in range(a.reps + 1):  # the first round warms both up (imports, caches, worker)
        completions, solutions = batch(a.prompts, a.G, seed=rep)
        results = {}
        paths = [("in-process", in_process), ("worker", reward)]
        for name, fn in paths if rep % 2 else paths[::-1]:  # alternate who goes first
            t = time.perf_counter()
            results[name] = fn(completions, solutions)
            if rep:
                times[name].append((time.perf_counter() - t) / len(completions))
        assert results["in-process"] == results["worker"], "the two paths disagree"
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
