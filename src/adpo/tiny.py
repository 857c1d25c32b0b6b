"""Kept for old imports: :mod:`adpo.testing` (tokenizer, tiny Qwen3) and
:mod:`adpo.data.arithmetic` (the generated task) are the homes now."""

from adpo.data.arithmetic import ArithmeticTask
from adpo.testing import CHARSET, char_tokenizer, tiny_qwen3

__all__ = ["CHARSET", "ArithmeticTask", "char_tokenizer", "tiny_qwen3"]
