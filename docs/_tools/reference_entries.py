"""The ``::: identifier`` entries of ``docs/reference/*.md``: which objects the API reference renders.

Read by the griffe extension (``griffe_adpo.py``, to turn roles into cross-references) and by
``tests/test_docs.py`` (every public module has an entry); standard library only, so the
test runs without the ``docs`` extra.
"""

from __future__ import annotations

import re
from pathlib import Path

DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*\n((?:[ \t]+\S.*\n?)*)", re.M)


def rendered_roots(reference_dir: Path) -> list[tuple[str, bool]]:
    """``(identifier, members rendered?)`` for every ``::: identifier`` of the reference."""
    roots: list[tuple[str, bool]] = []
    for page in sorted(Path(reference_dir).glob("*.md")):
        for ident, options in DIRECTIVE.findall(page.read_text(encoding="utf-8") + "\n"):
            roots.append((ident, not re.search(r"^\s+members:\s*false\s*$", options, re.M)))
    return roots
