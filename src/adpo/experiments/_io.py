"""Moved to :mod:`adpo._io` (a layer below the trainers); re-exported for the experiments."""

from adpo._io import (  # noqa: F401
    command_line,
    console,
    environment,
    prepare_out,
    progress_bar,
    timer,
    write_csv,
    write_json,
)
