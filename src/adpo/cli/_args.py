"""What every ``adpo`` command shares: one-line errors with exit statuses, and clean help.

* :func:`run_command` runs a command and turns what went wrong into one to three lines on
  stderr, without a traceback (``--debug`` anywhere on the command line shows it): exit
  status 2 for a usage error (:class:`UsageError`: a flag, a value, a config file's key),
  1 for bad data or files (:class:`InputError`, and any other error), 130 for Ctrl-C.
* :func:`plain` strips reST markup from docstrings shown as help; :func:`tyro_errors` turns
  the parse errors of the commands that parse with tyro (the benchmarks' config
  dataclasses) into one line.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import re
import sys
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "ArgumentParser",
    "InputError",
    "UsageError",
    "clean_help",
    "plain",
    "run_command",
    "tyro_errors",
]


class UsageError(Exception):
    """The command line (or a config file's option) is wrong: exit status 2."""


class InputError(Exception):
    """A file or the data is missing or malformed: exit status 1."""


# --debug seen by an outer run_command (the `adpo` dispatcher) reaches the command's own
_debug: contextvars.ContextVar[bool] = contextvars.ContextVar("adpo_cli_debug", default=False)


def run_command(prog: str, fn: Callable[[list[str]], int | None], argv: Sequence[str]) -> int:
    """``fn(argv)``'s exit status; an error becomes one to three lines on stderr.

    ``--debug`` is taken out of ``argv`` and lets the traceback through instead.
    """
    argv = list(argv)
    debug = _debug.get() or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    token = _debug.set(debug)
    try:
        with warnings.catch_warnings():
            # TRL 1.16 calls transformers' deprecated gradient-checkpointing methods around
            # generation; nothing a user of the command can change
            warnings.filterwarnings(
                "ignore",
                message=r"`(is_gradient_checkpointing|gradient_checkpointing_(enable|disable))` "
                "is deprecated",
                category=FutureWarning,
            )
            return int(fn(argv) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        _say(prog, "interrupted")
        return 130
    except UsageError as e:
        if debug:
            raise
        _say(prog, str(e))
        return 2
    except InputError as e:
        if debug:
            raise
        _say(prog, str(e))
        return 1
    except Exception as e:
        if debug:
            raise
        lines = [x for x in str(e).splitlines() if x.strip()] or [""]
        text = "\n".join(lines[:2]) + (" …" if len(lines) > 2 else "")
        _say(prog, f"{type(e).__name__}: {text}\n(run again with --debug for the traceback)")
        return 1
    finally:
        _debug.reset(token)


def _say(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are a :class:`UsageError` (one line)."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------- help text

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``")


def plain(text: str) -> str:
    """``text`` without reST markup: ``x`` and :role:`x` become x (``~a.b.C`` becomes C)."""

    def role(m: re.Match[str]) -> str:
        target = m.group(1)
        short = m.group(0).split("`", 1)[1].startswith("~")
        return target.rsplit(".", 1)[-1] if short else target

    text = _ROLE.sub(role, text)
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.M)


def clean_help(text: str) -> str:
    """A rendered help text (tyro's boxes included) without reST markup; box edges kept aligned."""
    out = []
    for line in text.splitlines():
        new = plain(line)
        if new != line and line.endswith("│") and new.endswith("│"):
            new = new[:-1] + " " * (len(line) - len(new)) + "│"
        out.append(new)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


# --------------------------------------------------------------------------- tyro commands


@contextlib.contextmanager
def tyro_errors() -> Iterator[None]:
    """While a tyro-parsed command parses its flags, its parse errors are one line.

    Uses tyro's parse-error hook (``tyro._errors.on_parse_error``, tyro ≥ 1.0); with a tyro
    without it, tyro prints its own message.
    """
    try:
        from tyro import _errors as te

        hook_point = te.on_parse_error
    except (ImportError, AttributeError):
        yield
        return

    def hook(event: Any) -> None:
        help_hint = f" (see {event.prog} --help)"
        if isinstance(event, te.UnrecognizedArgs):
            raise UsageError("unrecognized option(s): " + " ".join(event.tokens) + help_hint)
        if isinstance(event, te.InvalidChoice):
            raise UsageError(
                f"{_display(event.argument)}: {event.value!r} is not one of "
                f"{', '.join(event.choices)}{help_hint}"
            )
        if isinstance(event, te.MissingArgs):
            names = ", ".join(_display(a.arg) for a in event.missing_arguments)
            raise UsageError(f"missing {names}{help_hint}")
        if isinstance(event, te.InstantiationFailure):
            arg = f"{_display(event.argument)}: " if event.argument is not None else ""
            raise UsageError(f"{arg}{event.message}")
        # any other event: tyro's own message

    with hook_point(hook):
        yield


def _display(arg: Any) -> str:
    name = getattr(arg, "display_name", None)
    return name() if callable(name) else str(arg)
