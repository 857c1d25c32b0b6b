"""Offline listwise preference training: ADPO on datasets with K scored or ranked responses.

ADPO paper, algorithm 1, OFFLINE branch: a fixed dataset of prompts, each with ``K``
candidate completions and scores, rankings or teacher probabilities; anchored logits
``u = (log πθ(y|x) − log π_ref(y|x)) / τ`` over the candidates of each prompt, and the
anchored cross-entropy against a target ``q`` (:func:`adpo.losses.adpo_loss`). Pairs
(``chosen``/``rejected``) are the case ``K = 2``; with the top-1 target and ``τ = 1/β``
the loss is exactly DPO's (paper, app. D).

Shape glossary:

    B  prompts (rows) in a batch
    G  padded group size of the batch (max K over its rows); ``valid [B, G]`` marks real
       candidates, so rows with different K share a batch and nothing is dropped
    N  real sequences in the batch (Σ_b K_b), flattened for one forward pass
    L  padded sequence length (prompt + completion, right-padded)
    V  vocabulary

Every completion of every prompt of a batch goes through the model in *one* padded
forward pass (``[N, L]``); token log-probs are reduced to sequence sums over completion
tokens only (the prompt is excluded), then scattered into ``[B, G]`` and handed to the
loss. The data loader samples whole rows, so a group is never split across batches.

Anchors (``ListwiseConfig.anchor``, paper §5.2, alg. 1 lines 3 and 27–28):

* ``"fixed"`` (default) — a reference model (``ref_model``, or a frozen copy of the
  initial policy), or the ``ref_logps`` carried by the dataset;
* ``"precomputed"`` — reference log-probs computed once before training (with
  ``ref_model``, or with the initial policy itself), stored in the dataset; afterwards no
  reference model is kept;
* ``"self"`` — a frozen snapshot of the initial policy (:class:`adpo.anchors.SelfAnchor`);
* ``"ema"`` — an EMA of the policy's weights, updated after each optimiser step;
* ``"on_policy"`` (old spelling ``"dynamic"``, deprecated) — π_ref ← πθ every
  ``anchor_refresh_every`` optimiser steps (:class:`adpo.anchors.OnPolicyAnchor`).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from adpo.anchors import (
    ANCHOR_KINDS,
    Anchor,
    AnchorConfig,
    EMAAnchor,
    FixedAnchor,
    OnPolicyAnchor,
    SelfAnchor,
    canonical_anchor,
    make_anchor,
)
from adpo.data.listwise import normalize_rows, tokenize_row
from adpo.logprobs import selective_log_softmax, sequence_logps
from adpo.losses import LossOutput, adpo_loss, softmax_targets
from adpo.metrics import ndcg, top1_accuracy
from adpo.trainers._model import disable_dropout

__all__ = ["ListwiseCollator", "ListwiseConfig", "ListwiseTrainer", "group_logps"]

logger = logging.getLogger(__name__)

TARGETS = ("softmax", "plackett_luce", "top1", "probs")
ANCHORS = ANCHOR_KINDS
_COLUMNS = ["prompt_ids", "completion_ids", "scores", "target_probs", "ref_logps"]


@dataclass
class ListwiseConfig(TrainingArguments):
    """Configuration of :class:`ListwiseTrainer` (plus every ``transformers.TrainingArguments``
    field). Defaults follow the ADPO paper's LLM setting where it has one (τ 0.8, β_r 0.5,
    learning rate 1.5e-5).
    """

    target: Literal["softmax", "plackett_luce", "top1", "probs"] = field(
        default="softmax",
        metadata={
            "help": "target q: 'softmax' = softmax(scores / beta), scores z-scored per prompt "
            "unless standardize_scores=False (alg. 1 line 12); "
            "'plackett_luce' = NLL of the score ranking (ListMLE, ties Breslow/Efron); 'top1' = "
            "uniform over the best-scored completions; 'probs' = the rows' teacher "
            "'target_probs' (anchored KD)."
        },
    )
    tau: float = field(
        default=0.8,
        metadata={
            "help": "anchoring temperature τ > 0 (trust-region radius). With target 'top1' on "
            "pairwise rows, tau = 1/β reproduces DPO with β."
        },
    )
    target_beta: float | None = field(
        default=None,
        metadata={"help": "target temperature β_r > 0 of the 'softmax' target (default 0.5)"},
    )
    beta: float | None = field(default=None, metadata={"help": "deprecated alias of `target_beta`"})
    standardize_scores: bool = field(
        default=True,
        metadata={
            "help": "'softmax' target: z-score the scores within each prompt first (alg. 1 line "
            "12; β is then scale-free). False: q = softmax(scores / beta) on the raw scores."
        },
    )
    ties: Literal["breslow", "efron"] = field(
        default="breslow", metadata={"help": "Plackett–Luce tie handling"}
    )
    seq_reduction: Literal["sum", "mean"] = field(
        default="sum",
        metadata={
            "help": "a completion's score: its summed log-ratio ('sum', the paper's) or the "
            "token mean ('mean', length-normalised; the ADPO authors' code's default)"
        },
    )
    anchor: Literal["fixed", "precomputed", "self", "ema", "on_policy"] = field(
        default="fixed",
        metadata={
            "help": "anchor strategy: fixed, precomputed, self, ema, on_policy "
            "('dynamic' is a deprecated spelling of on_policy)"
        },
    )
    anchor_ema_decay: float | None = field(
        default=None,
        metadata={"help": "decay of the 'ema' anchor per optimiser step, in [0, 1) (default 0.99)"},
    )
    ema_decay: float | None = field(
        default=None, metadata={"help": "deprecated alias of `anchor_ema_decay`"}
    )
    anchor_refresh_every: int | None = field(
        default=None,
        metadata={
            "help": "'on_policy' anchor: π_ref ← πθ every this many optimiser steps (N, default 100)"
        },
    )
    anchor_update_steps: int | None = field(
        default=None, metadata={"help": "deprecated alias of `anchor_refresh_every`"}
    )
    max_prompt_length: int | None = field(
        default=512,
        metadata={"help": "prompts longer than this keep their last tokens (None: no limit)"},
    )
    max_completion_length: int | None = field(
        default=512,
        metadata={"help": "completions longer than this keep their first tokens (None: no limit)"},
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={
            "help": "skip malformed rows (counted in `trainer.skipped_rows`) instead of raising"
        },
    )
    precompute_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "rows per batch when precomputing reference log-probs (default: eval bs)"
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "set every dropout rate of the policy and reference models to 0 (dropout "
            "layers and attention-kernel rates such as Qwen's `attention_dropout`), so the "
            "training forward is deterministic; False keeps the models' dropout in training"
        },
    )
    # TrainingArguments fields whose defaults differ here
    learning_rate: float = field(default=1.5e-5, metadata={"help": "AdamW learning rate"})
    logging_steps: float = field(default=10, metadata={"help": "log every this many steps"})
    save_strategy: str = field(default="no", metadata={"help": "checkpointing: 'no' or 'steps'"})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "kept False: the collator needs the tokenized columns"}
    )

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(
                f"ListwiseConfig: `target` must be one of {TARGETS}, got {self.target!r}"
            )
        self.anchor = canonical_anchor(self.anchor, owner="ListwiseConfig: `anchor`")
        # one name per option across configs; the old names stay as deprecated aliases
        for new, old, default in (
            ("target_beta", "beta", 0.5),
            ("anchor_ema_decay", "ema_decay", 0.99),
            ("anchor_refresh_every", "anchor_update_steps", 100),
        ):
            nv, ov = getattr(self, new), getattr(self, old)
            if ov is not None:
                warnings.warn(
                    f"ListwiseConfig: `{old}` is deprecated, use `{new}`",
                    DeprecationWarning,
                    stacklevel=3,
                )
                if nv is not None and nv != ov:
                    raise ValueError(
                        f"ListwiseConfig: `{new}`={nv!r} and its deprecated alias `{old}`={ov!r} "
                        "disagree; set only `" + new + "`"
                    )
                nv = ov
            setattr(self, new, default if nv is None else nv)
            # the alias keeps a value the caller set (readers of the old name still work)
        if self.ties not in ("breslow", "efron"):
            raise ValueError(
                f"ListwiseConfig: `ties` must be 'breslow' or 'efron', got {self.ties!r}"
            )
        if self.seq_reduction not in ("sum", "mean"):
            raise ValueError(
                f"ListwiseConfig: `seq_reduction` must be 'sum' or 'mean', got {self.seq_reduction!r}"
            )
        for name in ("tau", "target_beta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < float("inf")):
                raise ValueError(f"ListwiseConfig: `{name}` must be finite and > 0, got {v!r}")
        if not 0.0 <= self.anchor_ema_decay < 1.0:
            raise ValueError(
                f"ListwiseConfig: `anchor_ema_decay` must lie in [0, 1), got {self.anchor_ema_decay!r}"
            )
        if not (isinstance(self.anchor_refresh_every, int) and self.anchor_refresh_every >= 1):
            raise ValueError(
                "ListwiseConfig: `anchor_refresh_every` must be an int >= 1, got "
                f"{self.anchor_refresh_every!r}"
            )
        for name in ("max_prompt_length", "max_completion_length", "precompute_batch_size"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and v >= 1):
                raise ValueError(f"ListwiseConfig: `{name}` must be None or an int >= 1, got {v!r}")
        super().__post_init__()


# --------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------


@dataclass
class ListwiseCollator:
    """Pads a list of tokenized rows into one batch of flattened sequences.

    Each input row has ``prompt_ids [P]``, ``completion_ids [K][C_k]`` and ``scores [K]``
    or ``target_probs [K]`` (optionally ``ref_logps [K]``). Output:

    * ``input_ids``, ``attention_mask`` ``[N, L]``: ``prompt + completion``, right-padded
      (so positions, and hence log-probs, do not depend on the padding);
    * ``completion_mask [N, L]`` bool: the completion tokens (the prompt is excluded);
    * ``prompt_lengths [N]``; ``group_index [N]``: flat position ``b·G + k`` of each
      sequence in the ``[B, G]`` group layout;
    * ``valid [B, G]`` bool; ``scores``/``target_probs``/``ref_logps`` ``[B, G]``
      (0 where not valid).

    Only real candidates are sequences (``N = Σ K_b``): padding a row to ``G`` costs no
    compute.
    """

    pad_token_id: int

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        B = len(features)
        G = max(len(f["completion_ids"]) for f in features)
        seqs, prompt_lengths, group_index = [], [], []
        for b, f in enumerate(features):
            for k, c in enumerate(f["completion_ids"]):
                seqs.append(list(f["prompt_ids"]) + list(c))
                prompt_lengths.append(len(f["prompt_ids"]))
                group_index.append(b * G + k)
        L = max(len(s) for s in seqs)
        N = len(seqs)
        input_ids = torch.full((N, L), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((N, L), dtype=torch.long)
        completion_mask = torch.zeros((N, L), dtype=torch.bool)
        for n, (s, p) in enumerate(zip(seqs, prompt_lengths, strict=True)):
            input_ids[n, : len(s)] = torch.tensor(s, dtype=torch.long)
            attention_mask[n, : len(s)] = 1
            completion_mask[n, p : len(s)] = True
        valid = torch.zeros((B, G), dtype=torch.bool)
        for b, f in enumerate(features):
            valid[b, : len(f["completion_ids"])] = True
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": completion_mask,
            "prompt_lengths": torch.tensor(prompt_lengths, dtype=torch.long),
            "group_index": torch.tensor(group_index, dtype=torch.long),
            "valid": valid,
        }
        for key in ("scores", "target_probs", "ref_logps"):
            if features[0].get(key) is not None:
                t = torch.zeros((B, G), dtype=torch.float32)
                for b, f in enumerate(features):
                    t[b, : len(f[key])] = torch.tensor(f[key], dtype=torch.float32)
                batch[key] = t
        return batch


def group_logps(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """Sequence log-probs of every candidate, ``[B, G]`` (0 where not ``valid``).

    One forward pass over the ``[N, L]`` sequences of the batch; the logits are kept only
    from the first completion position on (``logits_to_keep``), the token log-probs are
    gathered with a chunked float32 log-softmax and summed over completion tokens (early
    reduction, prompt excluded).
    """
    ids, attn, cmask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    valid = batch["valid"]
    B, G = valid.shape
    L = ids.shape[1]
    first = int(batch["prompt_lengths"].min())  # ≥ 1: every prompt has a token (BOS at least)
    keep = L - first + 1  # logits at positions first−1 … L−1
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": attn}
    inner = getattr(model, "module", model)  # DDP and similar wrappers hide the signature
    params = inspect.signature(inner.forward).parameters
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = keep
    if "use_cache" in params:
        kwargs["use_cache"] = False
    logits = model(**kwargs).logits[:, -keep:-1]  # (N, L − first, V): predicts first … L−1
    tok = selective_log_softmax(logits, ids[:, first:])  # (N, L − first)
    seq = sequence_logps(tok, cmask[:, first:])  # (N,)
    flat = seq.new_zeros(B * G).index_put((batch["group_index"],), seq)  # (B·G,)
    return flat.view(B, G)


def completion_lengths(batch: Mapping[str, Tensor]) -> Tensor:
    """Completion tokens of every candidate, ``[B, G]`` (1 where not ``valid``)."""
    B, G = batch["valid"].shape
    cmask = batch["completion_mask"]  # (N, L)
    n = cmask.sum(-1).to(torch.float32)  # (N,)
    flat = n.new_ones(B * G).index_put((batch["group_index"],), n.clamp_min(1.0))  # (B·G,)
    return flat.view(B, G)


@torch.no_grad()
def _token_kl(
    policy: nn.Module, ref: nn.Module, batch: Mapping[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """Σ over completion tokens of KL(πθ(·|ctx) ‖ π_ref(·|ctx)) (full vocabulary), and the count."""
    ids, attn, cmask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    lp = torch.log_softmax(policy(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
    lr = torch.log_softmax(ref(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
    kl = (lp.exp() * (lp - lr)).sum(-1)  # (N, L − 1)
    m = cmask[:, 1:]
    return kl[m].sum(), m.sum()


# --------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------


class _AnchorRefresh(TrainerCallback):
    """Advance moving anchors (EMA, dynamic) after every optimiser step."""

    def __init__(self, trainer: ListwiseTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        anchor = self.trainer.anchor
        if anchor is not None and not isinstance(anchor, (FixedAnchor, SelfAnchor)):
            anchor.refresh(self.trainer.model)
        return control


class ListwiseTrainer(Trainer):
    """ADPO on a fixed listwise dataset (algorithm 1, OFFLINE), on ``transformers.Trainer``.

    Args:
        model: a causal LM or a model id/path (loaded with ``AutoModelForCausalLM``).
        ref_model: the reference for the ``"fixed"``/``"precomputed"`` anchors (a model or
            an id/path). None: a frozen copy of the initial policy (``"fixed"``) or the
            initial policy itself (``"precomputed"``, no copy is ever made).
        args: :class:`ListwiseConfig`.
        train_dataset: ``datasets.Dataset`` or a list of row dicts in any format of
            :mod:`adpo.data.listwise`.
        eval_dataset: the same, for evaluation (optional).
        processing_class: the tokenizer (loaded from ``model`` when it is a string).
        callbacks: as in ``transformers.Trainer``.
        optimizers: as in ``transformers.Trainer``.

    Attributes:
        anchor: the :class:`adpo.anchors.Anchor` in use (None when reference log-probs come
            from the dataset).
        skipped_rows: ``{"train": [(index, kind, reason)], "eval": [...]}`` rows left out
            with ``skip_bad_rows=True``.
        truncated: number of prompts/completions cut to the configured maximum lengths.
    """

    _tag_names = ("adpo", "listwise")

    def __init__(
        self,
        model: nn.Module | str,
        ref_model: nn.Module | str | None = None,
        args: ListwiseConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
    ):
        if args is None:
            args = ListwiseConfig(output_dir="listwise-output")
        if not isinstance(args, ListwiseConfig):
            raise TypeError(
                f"ListwiseTrainer: `args` must be a ListwiseConfig, got {type(args).__name__}"
            )
        if isinstance(model, str):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if processing_class is None:
                processing_class = AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if isinstance(ref_model, str):
            from transformers import AutoModelForCausalLM

            ref_model = AutoModelForCausalLM.from_pretrained(ref_model)
        if processing_class is None:
            raise ValueError("ListwiseTrainer: pass the tokenizer as `processing_class`")
        if train_dataset is None:
            raise ValueError("ListwiseTrainer: `train_dataset` is required")
        if args.disable_dropout:
            disable_dropout(model)
            if ref_model is not None:
                disable_dropout(ref_model)
        pad = processing_class.pad_token_id
        if pad is None:
            pad = processing_class.eos_token_id
        if pad is None:
            raise ValueError("ListwiseTrainer: the tokenizer has neither a pad nor an EOS token")

        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self.skipped_rows: dict[str, list[tuple[int, str, str]]] = {}
        self.truncated = 0
        self._tokenizer = processing_class
        self._args_for_prep = args
        train_dataset = self.prepare_dataset(train_dataset, "train")
        if eval_dataset is not None:
            eval_dataset = self.prepare_dataset(eval_dataset, "eval")

        super().__init__(
            model=model,
            args=args,
            data_collator=ListwiseCollator(pad_token_id=pad),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        # our loss is a mean over prompts per micro-batch: let Trainer scale it for accumulation
        self.model_accepts_loss_kwargs = False
        self._setup_anchor(ref_model)
        self.add_callback(_AnchorRefresh(self))

    # -- data -------------------------------------------------------------------------

    def prepare_dataset(self, dataset, name: str = "train"):
        """Validate, normalise and tokenize rows into a ``datasets.Dataset`` (see module doc).

        Already tokenized datasets (with ``prompt_ids``/``completion_ids``) pass through.
        """
        import datasets

        args = self._args_for_prep
        if isinstance(dataset, datasets.Dataset) and "completion_ids" in dataset.column_names:
            return dataset
        rows = dataset if isinstance(dataset, (list, tuple)) else list(iter(dataset))
        norm = normalize_rows(rows, skip_bad_rows=args.skip_bad_rows)
        self.skipped_rows[name] = norm.skipped
        if norm.skipped:
            warnings.warn(
                f"ListwiseTrainer: skipped {len(norm.skipped)} bad {name} rows "
                f"{norm.skipped_by_kind()} (first: row {norm.skipped[0][0]}: {norm.skipped[0][2]})",
                stacklevel=2,
            )
        has_probs = norm.rows[0]["target_probs"] is not None
        if has_probs and args.target != "probs":
            raise ValueError(
                f"ListwiseTrainer: the {name} rows carry teacher 'target_probs'; set "
                f"target='probs' (got target={args.target!r})"
            )
        if not has_probs and args.target == "probs":
            raise ValueError(
                f"ListwiseTrainer: target='probs' needs rows with 'target_probs'; the {name} rows "
                "carry scores, rankings or pairs"
            )
        out = []
        for row, src in zip(norm.rows, norm.source_index, strict=True):
            tok = tokenize_row(
                row,
                self._tokenizer,
                max_prompt_length=args.max_prompt_length,
                max_completion_length=args.max_completion_length,
                index=src,
            )
            self.truncated += tok.pop("truncated")
            tok["row_index"] = src
            for key in ("scores", "target_probs", "ref_logps"):
                if row[key] is not None:
                    tok[key] = row[key]
            out.append(tok)
        if self.truncated:
            logger.warning(
                "ListwiseTrainer: %d sequences truncated to the maximum lengths", self.truncated
            )
        return datasets.Dataset.from_list(out)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [*_COLUMNS, "row_index"]

    # -- anchors ----------------------------------------------------------------------

    def _setup_anchor(self, ref_model: nn.Module | None) -> None:
        args = self.args
        has_ref = "ref_logps" in self.train_dataset.column_names
        self.ref_model = None
        self.anchor: Anchor | None = None
        if has_ref and args.anchor in ("fixed", "precomputed"):
            if ref_model is not None:
                warnings.warn(
                    "ListwiseTrainer: the dataset carries 'ref_logps'; they are used and "
                    "`ref_model` is ignored",
                    stacklevel=3,
                )
            self._check_eval_ref()
            return
        if has_ref:
            warnings.warn(
                f"ListwiseTrainer: anchor={args.anchor!r} moves with the policy, so the dataset's "
                "'ref_logps' are ignored",
                stacklevel=3,
            )
            self.train_dataset = self.train_dataset.remove_columns("ref_logps")
            if self.eval_dataset is not None and "ref_logps" in self.eval_dataset.column_names:
                self.eval_dataset = self.eval_dataset.remove_columns("ref_logps")
        if args.anchor == "precomputed":
            reference = ref_model if ref_model is not None else self.model
            reference.to(self.args.device)
            self.train_dataset = self.add_ref_logps(self.train_dataset, reference)
            if self.eval_dataset is not None:
                self.eval_dataset = self.add_ref_logps(self.eval_dataset, reference)
            return  # the reference is not kept: compute_loss reads the dataset column
        if args.anchor == "fixed":
            if ref_model is None:  # TRL's default: a frozen copy of the initial policy
                ref_model = copy.deepcopy(self.model)
            self.ref_model = ref_model.to(self.args.device)
            self.anchor = FixedAnchor(self.ref_model)
        elif args.anchor == "self":
            self.anchor = SelfAnchor(self.model)
        elif args.anchor == "ema":
            self.anchor = make_anchor(
                AnchorConfig(kind="ema", ema_decay=args.anchor_ema_decay), self.model
            )
        else:  # on_policy: snapshot now, re-snapshot every N optimiser steps (alg. 1 l. 27–28)
            self.anchor = make_anchor(
                AnchorConfig(kind="on_policy", refresh_every=args.anchor_refresh_every), self.model
            )

    def _check_eval_ref(self) -> None:
        if self.eval_dataset is not None and "ref_logps" not in self.eval_dataset.column_names:
            raise ValueError(
                "ListwiseTrainer: the train rows carry 'ref_logps' but the eval rows do not; "
                "precompute them for both (or use anchor='precomputed' with a ref_model)"
            )

    @torch.no_grad()
    def add_ref_logps(self, dataset, reference: nn.Module, batch_size: int | None = None):
        """Return ``dataset`` with a ``ref_logps [K]`` column computed by ``reference``."""
        bs = batch_size or self.args.precompute_batch_size or self.args.per_device_eval_batch_size
        if "ref_logps" in dataset.column_names:
            dataset = dataset.remove_columns("ref_logps")
        logps = self.dataset_logps(dataset, reference, batch_size=bs)
        column = [
            row[: len(c)].tolist() for row, c in zip(logps, dataset["completion_ids"], strict=True)
        ]
        return dataset.add_column("ref_logps", column)

    @torch.no_grad()
    def dataset_logps(
        self, dataset, model: nn.Module | None = None, *, batch_size: int = 8
    ) -> Tensor:
        """Sequence log-probs of every completion of ``dataset`` (in order), ``[R, G_max]``
        float32 on CPU, 0 past each row's K. ``model`` defaults to the policy; eval mode."""
        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        G = max(len(c) for c in dataset["completion_ids"])
        out = []
        try:
            for s in range(0, len(dataset), batch_size):
                batch = self.data_collator(
                    [dataset[i] for i in range(s, min(s + batch_size, len(dataset)))]
                )
                batch = {k: v.to(device) for k, v in batch.items()}
                lp = group_logps(model, batch).float().cpu()
                out.append(nn.functional.pad(lp, (0, G - lp.shape[1])))
        finally:
            model.train(was_training)
        return torch.cat(out)

    # -- loss -------------------------------------------------------------------------

    def listwise_loss(
        self, logps: Tensor, ref_logps: Tensor, inputs: Mapping[str, Tensor]
    ) -> LossOutput:
        """:func:`adpo.losses.adpo_loss` on the ``[B, G]`` group (the math lives there)."""
        args = self.args
        kw = {"tau": args.tau, "valid": inputs["valid"], "ties": args.ties}
        if args.target == "probs":
            return adpo_loss(logps, ref_logps, targets=inputs["target_probs"], **kw)
        if args.target == "softmax" and not args.standardize_scores:
            q = softmax_targets(
                inputs["scores"], beta=args.target_beta, valid=inputs["valid"], standardize=False
            )  # (B, G)
            return adpo_loss(logps, ref_logps, targets=q, **kw)
        return adpo_loss(
            logps, ref_logps, inputs["scores"], target=args.target, beta=args.target_beta, **kw
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps = group_logps(model, inputs)  # (B, G)
        if "ref_logps" in inputs:
            ref = inputs["ref_logps"].to(logps.dtype)  # (B, G) precomputed
        else:
            ref = self.anchor.anchor_logps(group_logps, inputs)  # (B, G)
        if self.args.seq_reduction == "mean":  # token-mean scores: both sums ÷ the length
            n = completion_lengths(inputs).to(logps.dtype)  # (B, G)
            logps, ref = logps / n, ref / n
        out = self.listwise_loss(logps, ref, inputs)
        mode = "train" if model.training else "eval"
        for key, value in out.metrics.items():
            self._metrics[mode][key].append(float(value))
        self._metrics[mode]["group_size"].append(float(inputs["valid"].sum(-1).float().mean()))
        if return_outputs:
            return out.loss, {"logps": logps.detach(), "ref_logps": ref.detach()}
        return out.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        if mode == "eval":
            metrics = {f"eval_{k}": v for k, v in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()

    # -- checkpoints: moving anchors (EMA, dynamic) are part of the training state -----

    _ANCHOR_FILE = "adpo_anchor.pt"

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if isinstance(self.anchor, (EMAAnchor, OnPolicyAnchor)) and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}"
            )
            torch.save(self.anchor.state_dict(), os.path.join(folder, self._ANCHOR_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, self._ANCHOR_FILE)
        if isinstance(self.anchor, (EMAAnchor, OnPolicyAnchor)):
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"ListwiseTrainer: {resume_from_checkpoint} has no {self._ANCHOR_FILE}; the "
                    f"{self.args.anchor!r} anchor cannot be restored"
                )
            self.anchor.load_state_dict(torch.load(path, map_location=self.args.device))

    # -- offline evaluation -----------------------------------------------------------

    @torch.no_grad()
    def ranking_metrics(
        self,
        dataset,
        ref_logps: Tensor,
        *,
        model: nn.Module | None = None,
        batch_size: int | None = None,
        atol: float = 1e-5,
    ) -> dict[str, float]:
        """Held-out ranking quality of the policy against the dataset's scores.

        ``top1_accuracy``/``ndcg`` rank by the anchored score ``log πθ − log π_ref`` (with
        ``ref_logps [R, G]`` of the reference, e.g. from :meth:`dataset_logps` before
        training); ``logp_top1_accuracy``/``logp_ndcg`` by the policy's own log-probs (what
        decoding would prefer). Ties within ``atol`` count as ties (expected value under
        random tie-breaking, see :mod:`adpo.trainers.ranking`). For ``target_probs`` rows the
        teacher probabilities are the scores.
        """
        if not hasattr(dataset, "column_names") or "completion_ids" not in dataset.column_names:
            dataset = self.prepare_dataset(dataset, "eval")
        bs = batch_size or self.args.per_device_eval_batch_size
        logps = self.dataset_logps(dataset, model, batch_size=bs)  # (R, G)
        R, G = logps.shape
        if ref_logps.shape != (R, G):
            raise ValueError(
                f"ranking_metrics: `ref_logps` must have shape {(R, G)}, got {tuple(ref_logps.shape)}"
            )
        valid = torch.zeros(R, G, dtype=torch.bool)
        scores = torch.zeros(R, G)
        key = "target_probs" if "target_probs" in dataset.column_names else "scores"
        for r, s in enumerate(dataset[key]):
            valid[r, : len(s)] = True
            scores[r, : len(s)] = torch.tensor(s)
        anchored = logps - ref_logps
        return {
            "top1_accuracy": float(top1_accuracy(anchored, scores, valid, atol=atol).mean()),
            "ndcg": float(ndcg(anchored, scores, valid, atol=atol).mean()),
            "logp_top1_accuracy": float(top1_accuracy(logps, scores, valid, atol=atol).mean()),
            "logp_ndcg": float(ndcg(logps, scores, valid, atol=atol).mean()),
        }

    @torch.no_grad()
    def reference_kl(
        self, dataset, ref_model: nn.Module, *, batch_size: int | None = None
    ) -> float:
        """Mean per-token ``KL(πθ ‖ π_ref)`` (exact, full vocabulary) over the completion
        tokens of ``dataset``: how far training moved the policy from the reference."""
        bs = batch_size or self.args.per_device_eval_batch_size
        model = self.model
        was_training = model.training
        model.eval()
        ref_model.eval()
        device = next(model.parameters()).device
        total, count = torch.zeros((), dtype=torch.float64), 0
        try:
            for s in range(0, len(dataset), bs):
                batch = self.data_collator(
                    [dataset[i] for i in range(s, min(s + bs, len(dataset)))]
                )
                batch = {k: v.to(device) for k, v in batch.items()}
                kl, n = _token_kl(model, ref_model, batch)
                total += kl.double().cpu()
                count += int(n)
        finally:
            model.train(was_training)
        return float(total / max(count, 1))
