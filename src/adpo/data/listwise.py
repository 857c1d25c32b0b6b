"""Listwise preference rows: validation, normalisation, tokenisation and a generated task.

Shape glossary: ``K`` completions of one row (may differ between rows), ``G`` the
padded group size of a batch (max ``K``), ``B`` rows in a batch, ``P``/``C`` prompt and
completion token counts.

Accepted rows (TRL's dataset formats, extended to lists). A prompt and its completions
are either plain text (``str``) or conversational (lists of ``{"role", "content"}``
messages, rendered with the tokenizer's chat template):

* scored:   ``{"prompt", "completions": [K], "scores": [K]}`` (higher is better)
* ranked:   ``{"prompt", "completions": [K], "ranking": [K]}`` with ``ranking`` a
  permutation of ``0..K−1``, best first; or ``{"prompt", "ranking": [K completions]}``
  with the completions themselves listed best first
* teacher:  ``{"prompt", "completions": [K], "target_probs": [K]}`` (soft labels that sum to
  1: anchored knowledge distillation)
* pairwise: ``{"prompt", "chosen", "rejected"}`` → ``K = 2`` with scores ``[1, 0]`` (with
  the top-1 target and ``τ = 1/β`` the loss is exactly DPO's)

Optionally ``"ref_logps": [K]`` (or TRL's ``"ref_chosen_logps"``/``"ref_rejected_logps"``)
with precomputed reference sequence log-probs.

Normalised form (:func:`normalize_row`): ``{"prompt", "completions": [K], "scores": [K]
| None, "target_probs": [K] | None, "ref_logps": [K] | None}``; a ranking becomes the
scores ``K−1, …, 1, 0`` (best first), so every ranking-based target sees exactly the
given order. Bad rows raise :class:`BadRowError` naming the row index, or are skipped and
counted (never silently).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BadRowError",
    "NormalizedRows",
    "is_conversational",
    "make_arithmetic_listwise",
    "normalize_row",
    "normalize_rows",
    "tokenize_row",
]

_SUPERVISION = ("scores", "ranking", "target_probs")
PROBS_TOL = 1e-4  # |Σ target_probs − 1| allowed (float32 round-off of stored soft labels)


class BadRowError(ValueError):
    """A malformed dataset row. ``index`` is the row's position in the input dataset."""

    def __init__(self, index: int, reason: str, kind: str):
        super().__init__(f"row {index}: {reason}")
        self.index = index
        self.reason = reason
        self.kind = kind  # short category for counting skipped rows


def is_conversational(x: Any) -> bool:
    """True for a list of ``{"role", "content"}`` messages (TRL's conversational format)."""
    return (
        isinstance(x, (list, tuple))
        and len(x) > 0
        and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in x)
    )


def _is_empty(completion: Any) -> bool:
    if isinstance(completion, str):
        return completion.strip() == ""
    if is_conversational(completion):
        return all(str(m["content"]).strip() == "" for m in completion)
    return True


def _floats(i: int, name: str, values: Any, k: int) -> list[float]:
    """A list of ``k`` finite floats, or a :class:`BadRowError`."""
    if not isinstance(values, (list, tuple)):
        raise BadRowError(i, f"'{name}' must be a list, got {type(values).__name__}", "type")
    if len(values) != k:
        raise BadRowError(
            i,
            f"'{name}' has {len(values)} values for {k} completions (lengths must match)",
            "length_mismatch",
        )
    out = []
    for j, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadRowError(
                i, f"'{name}'[{j}] must be a number, got {type(v).__name__} {v!r}", "type"
            )
        if not math.isfinite(v):
            raise BadRowError(i, f"'{name}'[{j}] is not finite ({v!r})", "non_finite")
        out.append(float(v))
    return out


def normalize_row(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Check one row and return its normalised form (see module doc).

    Args:
        row: the raw row.
        index: its position in the dataset (named in every error).

    Raises:
        BadRowError: fewer than 2 completions, a scores/completions length mismatch,
            a non-finite score, an empty completion, a ranking that is not a
            permutation, target probabilities that are negative or do not sum to 1,
            no supervision or more than one kind of it, a missing prompt.
    """
    i = index
    if not isinstance(row, Mapping):
        raise BadRowError(i, f"must be a mapping, got {type(row).__name__}", "type")
    if "prompt" not in row:
        raise BadRowError(i, "has no 'prompt'", "missing_field")
    prompt = row["prompt"]
    if not (isinstance(prompt, str) or is_conversational(prompt)):
        raise BadRowError(
            i, "'prompt' must be a string or a list of {'role', 'content'} messages", "type"
        )
    ref = None
    # `is not None`: rows read from Arrow carry every column of the table, None where unset
    pairwise = row.get("chosen") is not None or row.get("rejected") is not None
    if pairwise:
        if row.get("chosen") is None or row.get("rejected") is None:
            raise BadRowError(
                i, "a pairwise row needs both 'chosen' and 'rejected'", "missing_field"
            )
        extra = [k for k in (*_SUPERVISION, "completions") if row.get(k) is not None]
        if extra:
            raise BadRowError(
                i, f"mixes pairwise ('chosen'/'rejected') and listwise fields {extra}", "ambiguous"
            )
        completions = [row["chosen"], row["rejected"]]
        scores, probs = [1.0, 0.0], None
        if row.get("ref_chosen_logps") is not None or row.get("ref_rejected_logps") is not None:
            ref = _floats(
                i, "ref_logps", [row.get("ref_chosen_logps"), row.get("ref_rejected_logps")], 2
            )
    else:
        given = [k for k in _SUPERVISION if row.get(k) is not None]
        if len(given) != 1:
            raise BadRowError(
                i,
                "needs exactly one of 'scores', 'ranking', 'target_probs' (or 'chosen'/'rejected'),"
                f" got {given or 'none'}",
                "missing_field" if not given else "ambiguous",
            )
        kind = given[0]
        completions = row.get("completions")
        scores = probs = None
        if kind == "ranking" and completions is None:
            completions = row["ranking"]  # the completions themselves, best first
            if not isinstance(completions, (list, tuple)):
                raise BadRowError(i, "'ranking' must be a list", "type")
            scores = [float(len(completions) - 1 - r) for r in range(len(completions))]
        if not isinstance(completions, (list, tuple)):
            raise BadRowError(i, "'completions' must be a list of completions", "type")
        completions = list(completions)
        if len(completions) < 2:
            raise BadRowError(
                i,
                f"needs at least 2 completions, got {len(completions)} (a listwise loss has no "
                "signal in a group of one)",
                "too_few_completions",
            )
        k = len(completions)
        if kind == "scores":
            scores = _floats(i, "scores", row["scores"], k)
        elif kind == "target_probs":
            probs = _floats(i, "target_probs", row["target_probs"], k)
            if min(probs) < 0:
                raise BadRowError(
                    i, f"'target_probs' has a negative entry {min(probs)}", "bad_probs"
                )
            if abs(sum(probs) - 1.0) > PROBS_TOL:
                raise BadRowError(i, f"'target_probs' sums to {sum(probs):.6g}, not 1", "bad_probs")
        elif scores is None:  # ranking given as indices into completions
            rank = row["ranking"]
            if not isinstance(rank, (list, tuple)):
                raise BadRowError(i, "'ranking' must be a list", "type")
            if len(rank) != k:
                raise BadRowError(
                    i,
                    f"'ranking' has {len(rank)} entries for {k} completions (lengths must match)",
                    "length_mismatch",
                )
            if sorted(rank) != list(range(k)) or not all(
                isinstance(r, int) and not isinstance(r, bool) for r in rank
            ):
                raise BadRowError(
                    i,
                    f"'ranking' must be a permutation of 0..{k - 1} (best first), got {rank}",
                    "bad_ranking",
                )
            scores = [0.0] * k
            for pos, j in enumerate(rank):
                scores[j] = float(k - 1 - pos)
        if row.get("ref_logps") is not None:
            ref = _floats(i, "ref_logps", row["ref_logps"], k)
    if len(completions) < 2:
        raise BadRowError(
            i, f"needs at least 2 completions, got {len(completions)}", "too_few_completions"
        )
    for j, c in enumerate(completions):
        if not (isinstance(c, str) or is_conversational(c)):
            raise BadRowError(
                i,
                f"completion {j} must be a string or a list of messages, got {type(c).__name__}",
                "type",
            )
        if _is_empty(c):
            raise BadRowError(i, f"completion {j} is empty", "empty_completion")
        if is_conversational(c) != is_conversational(prompt):
            raise BadRowError(
                i, f"completion {j} and the prompt mix plain text and chat messages", "type"
            )
    if ref is not None and not all(math.isfinite(r) for r in ref):
        raise BadRowError(i, "'ref_logps' holds a non-finite value", "non_finite")
    return {
        "prompt": prompt,
        "completions": completions,
        "scores": scores,
        "target_probs": probs,
        "ref_logps": ref,
    }


@dataclass
class NormalizedRows:
    """Result of :func:`normalize_rows`.

    Attributes:
        rows: normalised rows, in input order (bad ones left out only when skipping).
        source_index: for each kept row, its index in the input.
        skipped: ``(index, kind, reason)`` of every skipped row (``kind`` is a short
            category such as ``"too_few_completions"`` or ``"non_finite"``).
    """

    rows: list[dict[str, Any]]
    source_index: list[int]
    skipped: list[tuple[int, str, str]] = field(default_factory=list)

    def skipped_by_kind(self) -> dict[str, int]:
        """Number of skipped rows per category."""
        return dict(Counter(kind for _, kind, _ in self.skipped))


def normalize_rows(
    rows: Iterable[Mapping[str, Any]], *, skip_bad_rows: bool = False
) -> NormalizedRows:
    """Normalise every row; raise on the first bad one, or skip and record it.

    The dataset must be homogeneous in its supervision: rows with teacher
    ``target_probs`` cannot be mixed with scored/ranked/pairwise rows (they call for
    different targets), and ``ref_logps`` are given for every row or for none.
    """
    out, src, skipped = [], [], []
    for i, row in enumerate(rows):
        try:
            out.append(normalize_row(row, i))
            src.append(i)
        except BadRowError as e:
            if not skip_bad_rows:
                raise
            skipped.append((i, e.kind, e.reason))
    if not out:
        raise ValueError(
            f"no usable rows: all {len(skipped)} rows are bad (first: row {skipped[0][0]}: "
            f"{skipped[0][2]})"
            if skipped
            else "the dataset is empty"
        )
    probs = [r["target_probs"] is not None for r in out]
    if any(probs) and not all(probs):
        j = probs.index(not probs[0])
        raise ValueError(
            f"row {src[j]}: the dataset mixes teacher 'target_probs' rows with scored/ranked/"
            "pairwise rows; train them separately (they need different targets)"
        )
    refs = [r["ref_logps"] is not None for r in out]
    if any(refs) and not all(refs):
        j = refs.index(not refs[0])
        raise ValueError(
            f"row {src[j]}: 'ref_logps' must be given for every row or for none "
            f"(row {src[0]} {'has' if refs[0] else 'lacks'} them)"
        )
    return NormalizedRows(out, src, skipped)


def _render(
    tokenizer, messages: Sequence[Mapping[str, Any]], *, generation_prompt: bool
) -> list[int]:
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_row(
    row: Mapping[str, Any],
    tokenizer,
    *,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """Token ids of a normalised row: ``prompt_ids [P]`` and ``completion_ids [K][C_k]``.

    Plain text: the prompt gets the tokenizer's BOS token (if it has one) and every
    completion ends with EOS, as in TRL's DPO trainer. Conversational rows are rendered
    with the chat template: the prompt with the generation prompt, each completion as the
    suffix of ``template(prompt + completion)`` after the common prefix with the prompt.
    Long prompts keep their end (``max_prompt_length``), long completions their start.

    Returns:
        ``{"prompt_ids", "completion_ids", "truncated"}`` where ``truncated`` counts the
        sequences that were cut.
    """
    prompt = row["prompt"]
    truncated = 0
    if is_conversational(prompt):
        prompt_ids = _render(tokenizer, prompt, generation_prompt=True)
        fulls = [
            _render(tokenizer, [*prompt, *c], generation_prompt=False) for c in row["completions"]
        ]
        cut = min([len(prompt_ids), *(_common_prefix(prompt_ids, f) for f in fulls)])
        completion_ids = [f[cut:] for f in fulls]
        prompt_ids = prompt_ids[:cut]
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        if bos is not None and (not prompt_ids or prompt_ids[0] != bos):
            prompt_ids = [bos, *prompt_ids]
        completion_ids = []
        for c in row["completions"]:
            ids = tokenizer(c, add_special_tokens=False)["input_ids"]
            if eos is not None and (not ids or ids[-1] != eos):
                ids = [*ids, eos]
            completion_ids.append(ids)
    if not prompt_ids:
        raise BadRowError(
            index,
            "the prompt is empty after tokenisation and the tokenizer has no BOS token",
            "empty_prompt",
        )
    for j, ids in enumerate(completion_ids):
        if not ids:
            raise BadRowError(
                index, f"completion {j} is empty after tokenisation", "empty_completion"
            )
    if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
        prompt_ids = prompt_ids[-max_prompt_length:]
        truncated += 1
    if max_completion_length is not None:
        for j, ids in enumerate(completion_ids):
            if len(ids) > max_completion_length:
                completion_ids[j] = ids[:max_completion_length]
                truncated += 1
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "truncated": truncated}


# --------------------------------------------------------------------------------------
# The generated listwise task of `adpo train-offline`'s embedded default
# --------------------------------------------------------------------------------------


def _distractors(answer: str, rng: random.Random, n: int) -> list[str]:
    """``n`` distinct wrong answers near ``answer`` (digit slips, off-by-one/ten, length)."""
    value = int(answer)
    out: list[str] = []
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        kind = rng.randrange(5)
        if kind == 0:  # one digit changed
            pos = rng.randrange(len(answer))
            d = rng.choice([c for c in "0123456789" if c != answer[pos]])
            cand = answer[:pos] + d + answer[pos + 1 :]
        elif kind == 1:
            cand = str(value + rng.choice((-1, 1)))
        elif kind == 2:
            cand = str(value + rng.choice((-10, 10)))
        elif kind == 3:  # a digit dropped or doubled
            pos = rng.randrange(len(answer))
            cand = (
                answer[:pos] + answer[pos + 1 :]
                if rng.random() < 0.5
                else answer[:pos] + answer[pos] + answer[pos:]
            )
        else:
            cand = str(rng.randrange(0, 2 * value + 20))
        if not cand.startswith("-"):
            cand = cand.lstrip("0") or "0"  # no leading zeros: every candidate is a number
        if cand and cand != answer and cand not in out and cand != "-":
            out.append(cand)
    return out


def make_arithmetic_listwise(
    n: int,
    *,
    seed: int,
    k_min: int = 3,
    k_max: int = 5,
    digits: int = 2,
    ops: str = "+",
    p_correct: float = 0.85,
) -> list[dict[str, Any]]:
    """A generated listwise dataset: arithmetic prompts with ``K`` scored candidate answers.

    Each row is ``{"prompt": "12+34=", "completions": [K], "scores": [K], "answer": "46"}``
    with ``K`` uniform in ``[k_min, k_max]`` (variable group size), candidates in random
    order, scores from :meth:`adpo.data.arithmetic.ArithmeticTask.score` (1 for the right answer,
    partial credit for digit-wise closeness). With probability ``p_correct`` the right
    answer is among the candidates; otherwise the best candidate is only partly right.
    Deterministic in ``seed``.
    """
    from adpo.data.arithmetic import ArithmeticTask

    if not 2 <= k_min <= k_max:
        raise ValueError(
            f"make_arithmetic_listwise: need 2 <= k_min <= k_max, got {k_min}, {k_max}"
        )
    task = ArithmeticTask(digits=digits, ops=ops)
    rng = random.Random(seed)
    rows = []
    for ex in task.sample(n, seed=seed):
        k = rng.randint(k_min, k_max)
        with_answer = rng.random() < p_correct
        cands = _distractors(ex["answer"], rng, k - 1 if with_answer else k)
        if with_answer:
            cands.append(ex["answer"])
        rng.shuffle(cands)
        scores = [task.score(c, ex["answer"]) for c in cands]
        rows.append(
            {"prompt": ex["prompt"], "completions": cands, "scores": scores, "answer": ex["answer"]}
        )
    return rows
