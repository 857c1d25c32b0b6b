"""Small helpers on the policy model that both trainers share."""

from __future__ import annotations

from torch import nn

__all__ = ["disable_dropout", "has_dropout"]


def _rates(model: nn.Module):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            yield m, "p", m.p
        for name, value in list(vars(m).items()):
            if "dropout" in name and isinstance(value, float):
                yield m, name, value


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout rate of ``model`` to 0: ``nn.Dropout`` layers, and the float
    rates that modules hand to a kernel themselves (Llama/Qwen-style attention passes
    ``self.attention_dropout`` to SDPA: there is no ``nn.Dropout`` to find, so TRL's
    ``disable_dropout_in_model`` leaves it on)."""
    for m, name, _ in list(_rates(model)):
        setattr(m, name, 0.0)


def has_dropout(model: nn.Module) -> bool:
    """Whether any dropout rate of ``model`` (as :func:`disable_dropout` finds them) is > 0."""
    return any(value > 0 for _, _, value in _rates(model))
