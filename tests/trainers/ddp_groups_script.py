"""Run under ``accelerate launch --num_processes 2 --cpu``: record every micro-batch's rows.

Usage: ``accelerate launch --num_processes 2 --cpu ddp_groups_script.py OUT_DIR [adpo|opo]``.
Each rank writes ``OUT_DIR/rank{r}.json``: per micro-batch, its prompts (decoded) and group
ids; the test checks that every micro-batch holds whole groups and that ranks never share
a group.
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
    Cfg, Base = (ADPOConfig, ADPOTrainer) if kind == "adpo" else (OPOConfig, OPOTrainer)
    tok, model, ds = tiny_setup(n_rows=48)

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


if __name__ == "__main__":
    main()
