"""The package's public modules, found from the source tree (no hand-kept list to drift).

A module is public when no part of its dotted name starts with ``_``; ``adpo._compat.trl``
is the one private-looking module users import (TRL version shims), so it counts too.
``__all__`` is read with :mod:`ast`, without importing, so modules that need an optional
engine (``adpo.integrations.verl`` needs verl) are read in every environment; only a
computed ``__all__`` (the lazy ``adpo.trainers``) is imported.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ALSO_PUBLIC = ("adpo._compat.trl",)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def public_modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every public module of ``adpo``, sorted by name."""
    found = {module_name(p): p for p in (SRC / "adpo").rglob("*.py") if p.name != "__main__.py"}
    return {
        m: p
        for m, p in sorted(found.items())
        if m in ALSO_PUBLIC or not any(part.startswith("_") for part in m.split("."))
    }


def declared_all(path: Path) -> list[str] | None:
    """The ``__all__`` of a module file, or None when it declares none."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:  # computed: ask the module itself
                return list(importlib.import_module(module_name(path)).__all__)
    return None


def imported_from(path: Path) -> dict[str, str]:
    """``{name: module it is imported from}`` for the module-level ``from … import`` lines."""
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    out: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            source = node.module or ""
            if node.level:  # relative: `from .basic import x`
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([source] if source else [])])
            for alias in node.names:
                out[alias.asname or alias.name] = source
    return out
