"""Griffe extension for adpo's docstrings, so mkdocstrings renders them as they read in code.

The docstrings are Google style with reStructuredText inline markup (``code``, Sphinx
roles, ``::`` before a literal block), the convention of the Python libraries this one
sits next to. Three things would otherwise render badly or not at all:

* **Sphinx roles** (``:class:`ADPOTrainer```, ``:func:`adpo.losses.adpo_loss```, ``:mod:``,
  ``:meth:``, ``:data:`` …) become cross-references when the target is an object the API
  reference renders (found from the ``::: identifier`` lines of ``docs/reference/*.md``),
  and inline code otherwise (external names such as ``transformers.Trainer``, private
  helpers). A role naming an ``adpo`` object that does not exist logs a warning, which
  fails ``mkdocs build --strict``: a renamed function cannot leave a stale reference.
* **``text::``** before an indented block becomes ``text:`` and a fenced code block
  (Google-style parsing would otherwise read ``text:`` + indented lines as a section).
* **``#:`` comments** right above a module-level assignment become its docstring, as
  Sphinx's autodoc reads them.
* **TRL-style parameters**, ``name (`str`, defaults to `"x"`):``, become
  ``name (str):`` (the rendered signature shows the default).
* **Lazy exports**: ``adpo.trainers`` exports its names through ``__getattr__`` (so it
  imports without TRL); the ``_EXPORTS`` table is read here and turned into aliases, so
  ``adpo.trainers.ADPOTrainer`` is documented at the path users import it from.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import griffe

# the reference's `::: identifier` entries, shared with tests/test_docs.py (loaded by path:
# mkdocstrings loads this extension by path, so its folder is not on sys.path)
_spec = importlib.util.spec_from_file_location(
    "reference_entries", Path(__file__).with_name("reference_entries.py")
)
_entries = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_entries)
_rendered_roots = _entries.rendered_roots

logger = griffe.get_logger("griffe_adpo")

ROLE = re.compile(r":(?:py:)?(class|func|mod|meth|attr|data|exc|obj|const):`(!?~?)([^`<]+?)`")
# TRL's docstring style, ``name (`type`, defaults to `value`):``; the signature has the default
PARAM = re.compile(r"^(?P<lead>[ \t]+\w+) \(`(?P<type>[^`]+)`(?:, defaults to `[^`]*`)?\):", re.M)
# "Example::", a blank line, then an indented block (reST's literal block)
LITERAL = re.compile(r"(?<=\S)::[ \t]*\n[ \t]*\n((?:(?:[ \t]+\S[^\n]*)?\n)*(?:[ \t]+\S[^\n]*))")


def _fence(m: re.Match) -> str:
    """``text::`` + indented block → ``text:`` + a fenced code block (dedented)."""
    lines = m.group(1).split("\n")
    indent = min(len(x) - len(x.lstrip()) for x in lines if x.strip())
    body = "\n".join(x[indent:] for x in lines).rstrip()
    return ":\n\n```text\n" + body + "\n```"


def _public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


class AdpoDocstrings(griffe.Extension):
    """Roles to cross-references, ``::`` to ``:``, and ``adpo.trainers``' lazy exports."""

    def __init__(self, reference_dir: str = "docs/reference", package: str = "adpo") -> None:
        super().__init__()
        self.reference_dir = Path(reference_dir)
        self.package = package

    # ------------------------------------------------------------------ lazy exports
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        if pkg.name != self.package:
            return
        self._lazy_exports(pkg)
        for obj in self._walk(pkg):
            if obj.is_attribute and obj.docstring is None:
                self._comment_docstring(obj)
        rendered = self._rendered(pkg)
        for obj in self._walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self._rewrite(obj, obj.docstring.value, rendered)

    def _lazy_exports(self, pkg: griffe.Module) -> None:
        trainers = pkg.get_member("trainers") if "trainers" in pkg.members else None
        if trainers is None or "_EXPORTS" not in trainers.members:
            return
        table = ast.literal_eval(str(trainers.members["_EXPORTS"].value))
        for name, module in table.items():
            alias = griffe.Alias(name, f"{trainers.path}.{module}.{name}", parent=trainers)
            trainers.set_member(name, alias)
        trainers.exports = sorted(table)

    def _comment_docstring(self, attr) -> None:
        """``#: text`` comment lines right above an assignment document it (Sphinx's rule)."""
        if not attr.lineno or attr.parent is None or not attr.parent.is_module:
            return
        try:
            lines = attr.parent.lines
        except (OSError, AttributeError):
            return
        doc: list[str] = []
        i = attr.lineno - 2
        while i >= 0 and lines[i].lstrip().startswith("#:"):
            doc.insert(0, lines[i].lstrip()[2:].strip())
            i -= 1
        if doc:
            attr.docstring = griffe.Docstring(
                "\n".join(doc), lineno=i + 2, endlineno=attr.lineno - 1, parent=attr
            )

    # ------------------------------------------------------------------ what is rendered
    def _rendered(self, pkg: griffe.Module) -> dict[str, str]:
        """canonical path -> the identifier under which the reference renders it."""
        out: dict[str, str] = {}
        for root, members in _rendered_roots(self.reference_dir):
            obj = self._lookup(pkg, root)
            if obj is None:
                logger.warning("docs/reference renders %s, which griffe cannot find", root)
                continue
            self._collect(obj, root, out, members=members)
        return out

    def _collect(self, obj, ident: str, out: dict[str, str], *, members: bool = True) -> None:
        # mkdocstrings renders an object only if it, or one of its members, has a docstring
        target = obj.final_target if obj.is_alias else obj
        if not target.has_docstrings:
            return
        out.setdefault(target.path, ident)
        out.setdefault(ident, ident)
        if not members:
            return
        if target.is_module:
            exports = target.exports
            for name, member in target.members.items():
                if exports is not None:
                    if name not in exports:
                        continue
                elif not _public(name) or member.is_alias:
                    continue
                if member.is_module and exports is None:
                    continue  # submodules get their own `:::` line
                try:
                    self._collect(member, f"{ident}.{name}", out)
                except griffe.AliasResolutionError:
                    continue
        elif target.is_class:
            for name, member in target.members.items():
                if _public(name) and not member.is_alias and member.has_docstrings:
                    out.setdefault(member.path, f"{ident}.{name}")

    def _lookup(self, pkg: griffe.Module, path: str):
        if path == pkg.path:
            return pkg
        if not path.startswith(pkg.path + "."):
            return None
        try:
            return pkg[path[len(pkg.path) + 1 :]]
        except (KeyError, griffe.AliasResolutionError):
            return None

    def _walk(self, obj):
        yield obj
        for member in list(obj.members.values()):
            if member.is_alias:
                continue
            yield from self._walk(member)

    # ------------------------------------------------------------------ rewriting
    def _rewrite(self, obj, text: str, rendered: dict[str, str]) -> str:
        text = LITERAL.sub(_fence, text)
        text = PARAM.sub(lambda m: f"{m.group('lead')} ({m.group('type')}):", text)

        def role(m: re.Match) -> str:
            kind, flags, target = m.group(1), m.group(2), m.group(3).strip()
            shown = target.rsplit(".", 1)[-1] if "~" in flags else target
            shown = shown.lstrip(".")
            if kind in ("func", "meth") and not shown.endswith(")"):
                pass  # keep the name as written (Sphinx adds "()"; we do not)
            ident = self._resolve(obj, target.lstrip("."), rendered)
            if ident is None:
                return f"`{shown}`"
            return f"[`{shown}`][{ident}]"

        return ROLE.sub(role, text)

    def _resolve(self, obj, target: str, rendered: dict[str, str]) -> str | None:
        pkg = obj.package
        candidates = []
        if target.startswith(pkg.path + ".") or target == pkg.path:
            candidates.append(target)
        else:
            scope = obj if (obj.is_module or obj.is_class) else obj.parent
            while scope is not None:
                candidates.append(f"{scope.path}.{target}")
                scope = scope.parent
        for cand in candidates:
            found = self._lookup(pkg, cand)
            if found is None:
                continue
            try:
                canonical = found.final_target.path if found.is_alias else found.path
            except griffe.AliasResolutionError:
                return None  # an alias to something outside the package (torch, TRL)
            return rendered.get(cand) or rendered.get(canonical)
        if target.startswith(pkg.path + "."):
            logger.warning("%s: the docstring refers to %s, which does not exist", obj.path, target)
        return None
