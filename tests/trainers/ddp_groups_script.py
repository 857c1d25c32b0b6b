"""Run under ``accelerate launch --num_processes 2 --cpu``: record every micro-batch's rows.

Usage: ``accelerate launch … ddp_groups_script.py OUT_DIR [adpo|opo] [whole|split]``.

``whole``: each rank writes ``OUT_DIR/rank{r}.json``: per micro-batch, its prompts (decoded)
and group ids; the test checks that every micro-batch holds whole groups and that ranks
never share a group.

``split``: micro-batches of 2 completions, groups of 4 that straddle the two ranks, one SGD
step. Each rank saves ``OUT_DIR/split{r}.pt``: its micro-batches' rows and the parameters
before and after the step; the test rebuilds the whole groups from both ranks' rows and
checks the update against the whole-group gradient it computes itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tiny_setup import base_args, tiny_setup

from adpo.trainers import ADPOConfig, ADPOTrainer, OPOConfig, OPOTrainer


def _dense(completions, **kwargs):
    return [(sum(map(ord, c)) % 11) / 10 for c in completions]


def main() -> None:
    out, kind = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "adpo"
    mode = sys.argv[3] if len(sys.argv) > 3 else "whole"
    Cfg, Base = (ADPOConfig, ADPOTrainer) if kind == "adpo" else (OPOConfig, OPOTrainer)
    tok, model, ds = tiny_setup(n_rows=48)
    if mode == "split":
        return split(out, Cfg, Base, tok, model, ds)

    class Recording(Base):
        records: list = []  # noqa: RUF012

        def _compute_loss(self, model, inputs):
            self.records.append(
                {
                    "step": self._step,
                    "prompts": tok.batch_decode(inputs["prompt_ids"], skip_special_tokens=True),
                    "group_index": inputs["group_index"].tolist(),
                }
            )
            return super()._compute_loss(model, inputs)

    # per process: 3 micro-batches of 2 groups (of 4) per round, 2 rounds
    args = Cfg(**base_args(str(out / "trainer"), steps_per_generation=3, max_steps=6))
    tr = Recording(
        model=model, reward_funcs=_dense, args=args, train_dataset=ds, processing_class=tok
    )
    tr.train()
    rank = tr.accelerator.process_index
    (out / f"rank{rank}.json").write_text(
        json.dumps({"world": tr.accelerator.num_processes, "records": Recording.records})
    )


def split(out, Cfg, Base, tok, model, ds) -> None:
    import torch

    class Recording(Base):
        rows: list = []  # noqa: RUF012

        def _compute_loss(self, model, inputs):
            keep = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "rewards",
                    "reward_valid", "group_index", "anchor_per_token_logps", "omega_hat")  # fmt: skip
            self.rows.append({k: inputs[k].detach().cpu() for k in keep if k in inputs})
            return super()._compute_loss(model, inputs)

    # per rank: 3 micro-batches of 2 completions = 6 rows; the step's 12 rows are 3 groups
    # of 4, the middle one split between the ranks
    args = Cfg(**base_args(str(out / "trainer"), per_device_train_batch_size=2,
                           gradient_accumulation_steps=3, max_steps=1, optim="sgd",
                           learning_rate=0.2, max_grad_norm=0.0, max_completion_length=4))  # fmt: skip
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tr = Recording(model=model, reward_funcs=_dense, args=args, train_dataset=ds,
                   processing_class=tok)  # fmt: skip
    tr.train()
    after = {
        k: v.detach().clone() for k, v in tr.accelerator.unwrap_model(tr.model).state_dict().items()
    }
    rank = tr.accelerator.process_index
    torch.save({"rows": Recording.rows, "before": before, "after": after,
                "world": tr.accelerator.num_processes}, out / f"split{rank}.pt")  # fmt: skip


if __name__ == "__main__":
    main()
