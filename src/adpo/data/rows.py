"""Dataset rows from files, folders or the hub, and YAML config files: one reader each.

Shared by ``adpo train`` (online, prompts + references) and ``adpo train-offline``
(listwise rows): both read rows with :func:`load_rows` and config files with
:func:`read_yaml_config`, so a file that one command reads the other reads the same way.

Rows are plain ``list[dict]``: a malformed row (a list where a number belongs, a missing
column) must reach the row validator to be named and counted, and a columnar loader
would refuse the whole file first. JSON/JSONL files are parsed here for the same reason
(a bad line is named by its number); everything else goes through ``datasets``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_rows", "read_yaml_config", "validate_rows"]

_FILE_KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _read_json(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (one object per line) or a JSON file (a list of objects).

    A parse error is named by the file's own line and column (for JSONL, ``json``'s
    "line 1 column N" is the column on that line).
    """
    if path.suffix.lower() == ".jsonl":
        rows = []
        with path.open() as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.rstrip("\r\n"))  # one line: json's column is ours
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"load_rows: {path}: line {n} is not valid JSON: {e.msg} at column {e.colno}"
                    ) from e
                if not isinstance(row, dict):
                    raise ValueError(
                        f"load_rows: {path}: line {n} is a JSON {type(row).__name__}, not an "
                        'object (one row per line: {"prompt": …, …})'
                    )
                rows.append(row)
        return rows
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"load_rows: {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
    if not isinstance(data, list):
        raise ValueError(f"load_rows: {path} must hold a JSON list of rows")
    bad = next((i for i, r in enumerate(data) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(
            f"load_rows: {path}: row {bad} is a JSON {type(data[bad]).__name__}, not an object"
        )
    return data


def load_rows(
    source: str | Path, *, split: str = "train", name: str | None = None
) -> list[dict[str, Any]]:
    """Rows of a JSON/JSONL/parquet/CSV file, a local dataset folder or a hub dataset id.

    Args:
        source: a ``.jsonl``/``.json``/``.parquet``/``.csv`` file; a folder written by
            ``Dataset.save_to_disk`` (a ``DatasetDict`` gives its ``split``) or holding
            data files; otherwise a ``datasets`` hub id.
        split: split of a ``DatasetDict`` folder or hub dataset.
        name: the configuration of a hub dataset (``datasets.load_dataset(name=…)``).

    Returns:
        ``list[dict]``, one dict per row, in file order.

    Raises:
        FileNotFoundError: a path-like ``source`` that does not exist.
        ValueError: a JSON file or JSONL line that does not parse (named by line).
    """
    source = str(source)
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in _FILE_KINDS:
        if not path.is_file():
            raise FileNotFoundError(f"load_rows: no such file {source!r}")
        if _FILE_KINDS[suffix] == "json":
            return _read_json(path)
    elif not path.is_dir() and source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"load_rows: no such file or folder {source!r}")

    import datasets

    if suffix in _FILE_KINDS:
        ds = datasets.load_dataset(_FILE_KINDS[suffix], data_files=str(path), split="train")
    elif (
        path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists())
    ) or (path / "dataset_dict.json").exists():
        ds = datasets.load_from_disk(str(path))
    elif path.is_dir():
        ds = datasets.load_dataset(str(path), name=name, split=split)
    else:
        ds = datasets.load_dataset(source, name=name, split=split)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"load_rows: {source!r} has splits {sorted(ds)}, not {split!r}")
        ds = ds[split]
    return ds.to_list()


def validate_rows(
    rows: Sequence[dict[str, Any]], required: Sequence[str], *, name: str = "dataset"
) -> None:
    """Check that every row has every ``required`` column, non-empty.

    A prompt may be a string or a list of chat messages (``{"role", "content"}``); a
    reference may also be a number. ``rows`` is a list of dicts or a ``datasets.Dataset``.

    Raises:
        ValueError: naming the first bad row and column.
    """
    if len(rows) == 0:
        raise ValueError(f"{name}: the dataset has no rows")
    cols = set(getattr(rows, "column_names", None) or rows[0].keys())
    missing = [c for c in required if c not in cols]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; the dataset has {sorted(cols)}")
    for i, row in enumerate(rows):
        for c in required:
            if c not in row:
                raise ValueError(f"{name}: row {i}: column {c!r} is missing")
            _check_cell(name, i, c, row[c])


def _check_cell(name: str, i: int, c: str, v: Any) -> None:
    if v is None:
        raise ValueError(f"{name}: row {i}: column {c!r} is missing (None)")
    if isinstance(v, str):
        if not v.strip():
            raise ValueError(f"{name}: row {i}: column {c!r} is empty")
    elif isinstance(v, list):
        if not v:
            raise ValueError(f"{name}: row {i}: column {c!r} is an empty list")
        for m in v:
            if not (isinstance(m, dict) and "role" in m and "content" in m):
                raise ValueError(
                    f"{name}: row {i}: column {c!r} must be a string or a list of "
                    f"{{'role', 'content'}} messages, got an element {m!r:.80}"
                )
        if not any(str(m["content"]).strip() for m in v):
            raise ValueError(f"{name}: row {i}: column {c!r} has only empty messages")
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name}: row {i}: column {c!r} must be text, got {type(v).__name__}")


def read_yaml_config(
    path: str | Path, *, allowed: Collection[str], where: str, hint: str = ""
) -> dict[str, Any]:
    """A YAML file holding one mapping whose keys are all in ``allowed``.

    Args:
        path: the file.
        allowed: the accepted top-level keys (a config dataclass's field names).
        where: who reads it, for messages (``"adpo train"``).
        hint: appended to the unknown-key message (where the key might belong).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a mapping, or unknown keys (all named).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{where}: no such config file {str(path)!r}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: {path} is not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{where}: {path} must hold a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown} in {path}" + (f"; {hint}" if hint else "")
        )
    return data
