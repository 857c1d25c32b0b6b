"""``adpo.rewards``: reward functions for group RL on language models.

Every reward here follows TRL's reward-function interface, so it plugs into
``GRPOTrainer`` and ``adpo.trainers.ADPOTrainer``/``OPOTrainer`` alike::

    reward(prompts=[...], completions=[...], completion_ids=[...], **dataset_columns) -> list[float | None]

``completions`` are strings (plain prompts) or lists of chat messages (conversational
prompts); one reward per completion, ``None`` where a reward does not apply (TRL then
leaves the completion out of the group baseline).

* :data:`math_reward` — answers checked with ``math-verify`` against a MATH-style
  ``solution`` column (the gold answer is the solution's last ``\\boxed{…}``), each
  check in a worker process with a deadline, so no completion can hang the run
  (:class:`MathReward` sets it; a completion past it scores ``None``, counted as
  ``rewards/<name>/timeouts``); :func:`parse_gold` checks a dataset's solutions parse
  before training, and :func:`extract_boxed` / :func:`extract_boxed_all` read the boxed
  answers of a text.
* :func:`exact_match_reward` — normalised string equality with an ``answer`` column.
* :func:`arithmetic_reward` — the integer answer of :class:`adpo.data.arithmetic.ArithmeticTask`.
* :func:`chain_arithmetic_reward` — the boxed integer after the worked scratchpad of
  :class:`adpo.data.chain_arithmetic.ChainArithmeticTask` (``adpo bench reasoning-long``);
  :func:`extract_boxed_integer` / :func:`boxed_integer_score` for one completion.
* :class:`FormatReward` — 1.0 when the completion matches a pattern (default: exactly one
  ``\\boxed{…}``).

* :func:`guard_reward` — wraps any reward so that a sample whose reward raises or is not
  finite becomes ``None`` (counted and logged) instead of stopping the run;
  :func:`guard_reward_funcs` does it for each synchronous callable of TRL's ``reward_funcs``.

The rewards other than :data:`math_reward` are string code that takes time linear in a
completion's length (no regular expression of theirs can backtrack catastrophically;
a :class:`FormatReward` pattern of your own runs as given), so they need no deadline.
"""

from adpo.rewards.basic import (
    FormatReward,
    arithmetic_reward,
    boxed_integer_score,
    chain_arithmetic_reward,
    completion_text,
    exact_match_reward,
    extract_boxed_integer,
    normalize_answer,
)
from adpo.rewards.guard import GuardedReward, guard_reward, guard_reward_funcs
from adpo.rewards.math import MathReward, extract_boxed, math_reward, parse_gold
from adpo.rewards.text import extract_boxed_all

__all__ = [
    "FormatReward",
    "GuardedReward",
    "MathReward",
    "arithmetic_reward",
    "boxed_integer_score",
    "chain_arithmetic_reward",
    "completion_text",
    "exact_match_reward",
    "extract_boxed",
    "extract_boxed_all",
    "extract_boxed_integer",
    "guard_reward",
    "guard_reward_funcs",
    "math_reward",
    "normalize_answer",
    "parse_gold",
]
