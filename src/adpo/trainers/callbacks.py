"""``Trainer`` callbacks: a rich progress bar for long runs."""

from __future__ import annotations

import math

from adpo._io import progress_bar

__all__ = ["RichProgress"]


def RichProgress(total: int, description: str = "RL", metric: str = "reward"):
    """A ``TrainerCallback`` that draws a rich progress bar and the latest ``metric``."""
    from transformers import TrainerCallback

    class _RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress = None  # a rich Progress while training runs
            self.task = None
            self.last = math.nan

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.progress = progress_bar(info=True)
            self.progress.start()
            self.task = self.progress.add_task(
                description, total=total, info="", completed=state.global_step
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and metric in logs:
                self.last = float(logs[metric])

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(
                    self.task, completed=state.global_step, info=f"{metric} {self.last:.3f}"
                )

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return _RichProgress()
