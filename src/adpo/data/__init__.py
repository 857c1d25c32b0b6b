"""``adpo.data``: dataset rows for the trainers — reading, validation, normalisation, generated tasks.

* :func:`load_rows`, :func:`validate_rows`, :func:`read_yaml_config` (:mod:`adpo.data.rows`):
  the one rows loader and the one YAML config reader of ``adpo train`` and
  ``adpo train-offline``.
* :mod:`adpo.data.listwise`: listwise rows (scores, rankings, target probabilities,
  chosen/rejected) normalised and tokenised for :class:`adpo.trainers.ListwiseTrainer`.
* :class:`ArithmeticTask` (:mod:`adpo.data.arithmetic`): generated integer arithmetic.
* :class:`ChainArithmeticTask` (:mod:`adpo.data.chain_arithmetic`): multi-step chains with
  a worked scratchpad and a boxed answer, in difficulty tiers 1–5.
"""

from adpo.data.arithmetic import ArithmeticTask
from adpo.data.chain_arithmetic import ChainArithmeticTask
from adpo.data.listwise import BadRowError, make_arithmetic_listwise, normalize_row, normalize_rows
from adpo.data.rows import load_rows, read_yaml_config, validate_rows

__all__ = [
    "ArithmeticTask",
    "BadRowError",
    "ChainArithmeticTask",
    "load_rows",
    "make_arithmetic_listwise",
    "normalize_row",
    "normalize_rows",
    "read_yaml_config",
    "validate_rows",
]
