"""Deprecated location: the ranking metrics live in :mod:`adpo.metrics`."""

from adpo.metrics import ndcg, top1_accuracy

__all__ = ["ndcg", "top1_accuracy"]
