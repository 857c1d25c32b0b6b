"""adpo: Anchored Direct Preference Optimization and Orthogonalized Policy Optimization.

The heart is :mod:`adpo.losses` (pure functions on tensors). Around it:
:mod:`adpo.anchors` (anchor strategies), :mod:`adpo.schedules` (guarded adaptive
temperature), :mod:`adpo.logprobs` (memory-bounded log-prob gathering), trainers,
integrations and the papers' experiments.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
