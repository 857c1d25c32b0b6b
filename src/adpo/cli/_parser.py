"""The parser of ``adpo train``: TRL's ``TrlParser`` over dataclass fields.

:class:`DataclassParser` is ``TrlParser`` (transformers' ``HfArgumentParser``) over dataclass
fields added in titled groups, with a help text a terminal reads (one line per option with
its type, reST markup removed, one default each), argparse's errors as
:class:`~adpo.cli._args.UsageError`, and a YAML config file (:func:`read_config_file`) whose
keys become the defaults, so an explicit flag always wins, each key checked against its
option and named by the file's line. Imports TRL: only the commands that need it use it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trl import TrlParser

from adpo.cli._args import InputError, UsageError, plain

__all__ = ["DataclassParser", "read_config_file"]


def _type_name(action: argparse.Action) -> str:
    t = action.type
    name = getattr(t, "__name__", "") if t is not None else "str"
    return {"string_to_bool": "BOOL", "str": "STR", "int": "INT", "float": "FLOAT"}.get(
        name, "VALUE"
    )


# a help text that already says its default (TRL's "If `None`, it defaults to …")
_STATES_DEFAULT = re.compile(r"\(default|defaults? to|default:", re.I)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """One line per option (``--name TYPE``), help without reST, one default per option."""

    def __init__(self, prog: str) -> None:
        width = min(110, max(60, _terminal_width()))
        super().__init__(prog, max_help_position=34, width=width)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        name = action.option_strings[0]
        if not name.startswith("--"):  # -h: with its long form
            name = ", ".join(action.option_strings)
        if action.nargs == 0:
            return name
        return f"{name} {self._value_name(action)}"

    @staticmethod
    def _value_name(action: argparse.Action) -> str:
        if action.metavar is not None:
            value = str(action.metavar)
        elif action.choices is not None and len(",".join(map(str, action.choices))) <= 48:
            value = "{" + ",".join(map(str, action.choices)) + "}"
        else:
            value = _type_name(action)
        if action.nargs == "?":
            return f"[{value}]"
        if action.nargs in ("+", "*"):
            return f"{value} …"
        return value

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain(action.help or "")
        if action.choices is not None and len(",".join(map(str, action.choices))) > 48:
            text += " Choices: " + ", ".join(map(str, action.choices)) + "."
        # argparse formats help with %: keep %(default)s, escape every other %
        text = re.sub(r"%(?!\()", "%%", text.replace("%%", "%"))
        if action.required:
            text += " (required)"
        elif (
            action.option_strings
            and action.nargs != 0
            and action.default is not argparse.SUPPRESS
            and not _STATES_DEFAULT.search(text)
        ):
            text += " (default: %(default)s)"
        return text


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


def read_config_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, int]]:
    """A YAML file of ``option: value`` pairs: ``(values, {option: line number})``.

    Raises:
        InputError: no such file, not YAML (named by line and column), or not a mapping.
        UsageError: an option given twice.
    """
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"--config {path}: no such file")
    text = p.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:  # named where the broken construct starts, if known
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x)
        raise InputError(f"{path}{where}: not valid YAML ({what or str(e).splitlines()[0]})") from e
    if data is None:
        return {}, {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise InputError(
            f"{path}: expected a mapping of `option: value` lines, got a {type(data).__name__}"
        )
    lines: dict[str, int] = {}
    for key, _ in node.value:
        line = key.start_mark.line + 1
        if key.value in lines:
            raise UsageError(
                f"{path} line {line}: `{key.value}` is given twice (also on line {lines[key.value]})"
            )
        lines[key.value] = line
    return {str(k): v for k, v in data.items()}, lines


class DataclassParser(TrlParser):
    """``TrlParser`` over dataclass fields added group by group (see the module doc).

    Args:
        prog, usage, description, epilog: as for ``argparse.ArgumentParser``.
        unknown: ``name → message`` for an option the parser does not have (a flag or a
            config file's key), e.g. to say which other command has it.
    """

    def __init__(
        self,
        *,
        prog: str,
        usage: str | None = None,
        description: str | None = None,
        epilog: str | None = None,
        unknown: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(
            dataclass_types=[],
            prog=prog,
            usage=usage,
            description=description,
            epilog=epilog,
            formatter_class=_HelpFormatter,
            allow_abbrev=False,
        )
        self._unknown = unknown or (lambda name: f"unknown option --{name}")
        self._names: dict[str, argparse.Action] = {}  # option (underscores) → its action

    def add_fields(
        self,
        title: str | None,
        cls: type,
        fields: Sequence[dataclasses.Field] | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        hidden: Sequence[str] = (),
        help: Mapping[str, str] | None = None,
    ) -> None:
        """Add ``fields`` of dataclass ``cls`` (default: all) as options, in group ``title``.

        ``defaults`` replace the fields' defaults; ``hidden`` options are accepted but left
        out of ``--help``; ``help`` replaces a field's help text.
        """
        group = self.add_argument_group(title) if title else self
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls) if fields is None else fields:
            if not f.init:
                continue
            f = copy.copy(f)  # HfArgumentParser rewrites `type` on the Field it is given
            f.type = hints[f.name]
            if (help or {}).get(f.name):
                f.metadata = {**f.metadata, "help": help[f.name]}
            if defaults and f.name in defaults:
                f.default, f.default_factory = defaults[f.name], dataclasses.MISSING
            before = len(self._actions)
            self._parse_dataclass_field(group, f)
            for action in self._actions[before:]:
                primary = action.option_strings[0][2:]
                if primary.startswith("no_") and action.dest == f.name:
                    action.help = argparse.SUPPRESS  # `--no_x` is in the epilog, not listed
                    continue
                if f.name in hidden:
                    action.help = argparse.SUPPRESS
                for option in action.option_strings:
                    self._names.setdefault(option.lstrip("-").replace("-", "_"), action)

    def add_option(self, title: str | None, *args: Any, **kwargs: Any) -> argparse.Action:
        """``add_argument`` in group ``title`` (an option no dataclass holds)."""
        group = next((g for g in self._action_groups if g.title == title), None) or self
        action = group.add_argument(*args, **kwargs)
        for option in action.option_strings:
            self._names.setdefault(option.lstrip("-").replace("-", "_"), action)
        return action

    def dest_of(self, name: str) -> str | None:
        """The dataclass field behind option ``name`` (``max-steps``, ``--max_steps`` …)."""
        action = self._names.get(name.lstrip("-").split("=", 1)[0].replace("-", "_"))
        return None if action is None else action.dest

    def set_file_defaults(
        self, values: Mapping[str, Any], lines: Mapping[str, int], path: str
    ) -> dict[str, str]:
        """Make a config file's values the defaults, each checked against its option.

        Returns ``{field: "FILE line N"}`` for the messages of later checks.

        Raises:
            UsageError: a key that is not an option (with :attr:`unknown`'s message), or a
                value its option does not accept; both named by file and line.
        """
        where: dict[str, str] = {}
        for key, value in values.items():
            at = f"{path} line {lines.get(key, '?')}"
            action = self._names.get(str(key).replace("-", "_"))
            if action is None or action.nargs == 0:
                raise UsageError(f"{at}: {self._unknown(str(key))}")
            action.default = self._convert(action, key, value, at)
            action.required = False
            where[action.dest] = at
        return where

    @staticmethod
    def _convert(action: argparse.Action, key: str, value: Any, at: str) -> Any:
        if value is None:
            return None
        if action.nargs in ("+", "*"):
            items = value if isinstance(value, list) else [value]
            return [DataclassParser._convert_one(action, key, v, at) for v in items]
        if isinstance(value, (dict, list)):
            if action.type in (None, str):  # dict-valued fields (`generation_kwargs` …)
                return value
            raise UsageError(
                f"{at}: `{key}` expects {_type_name(action)}, got a {type(value).__name__}"
            )
        return DataclassParser._convert_one(action, key, value, at)

    @staticmethod
    def _convert_one(action: argparse.Action, key: str, value: Any, at: str) -> Any:
        try:
            converted = action.type(value if isinstance(value, bool) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise UsageError(f"{at}: `{key}` expects {_type_name(action)}, got {value!r}") from None
        if action.choices is not None and converted not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise UsageError(f"{at}: `{key}` must be one of {choices}; got {value!r}")
        return converted

    def parse(self, argv: Sequence[str]) -> dict[str, Any]:
        """``{dest: value}`` for every option; an unknown token is a :class:`UsageError`."""
        namespace, rest = self.parse_known_args(list(argv))
        for token in rest:
            if token.startswith("-") and len(token) > 1:
                raise UsageError(self._unknown(token.lstrip("-").split("=", 1)[0]))
            raise UsageError(f"unexpected argument {token!r} (options are --name value)")
        return vars(namespace)

    def error(self, message: str) -> typing.NoReturn:  # argparse's usage errors
        raise UsageError(f"{message} (see {self.prog} --help)")
