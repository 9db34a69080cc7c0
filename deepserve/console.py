"""What the ``deepserve`` commands write for people: errors, suggestions, colour.

Every command reports a problem the same way::

    deepserve <command>: error: <one line>
    (did you mean 'x'?)

and exits :data:`USAGE` (2) when the command line is wrong, :data:`FAILURE`
(1) when the work failed. Control characters in a message are shown escaped
(``\x1b``), never sent to the terminal. Colour is used on a terminal only: never for a
pipe or a file, never when ``NO_COLOR`` is set (https://no-color.org), and
always when ``FORCE_COLOR`` is set to anything but ``0``.

This module imports nothing heavy: ``deepserve --version`` loads it.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterable
from typing import TextIO

#: Exit status of a command line that is wrong (argparse's convention).
USAGE = 2
#: Exit status of a command whose work failed.
FAILURE = 1
#: Exit status after Ctrl-C (128 + SIGINT).
INTERRUPTED = 130

_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}


class UsageError(Exception):
    """A command line that cannot be run; reported with exit status 2."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def colour_on(stream: TextIO) -> bool:
    """Whether text written to ``stream`` may carry colour."""
    force = os.environ.get("FORCE_COLOR")
    if force is not None and force not in ("", "0"):
        return True
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a closed or fake one is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def paint(
    text: str, *styles: str, stream: TextIO | None = None, force: bool = False
) -> str:
    """``text`` in ``styles`` (``"bold"``, ``"red"``...) when ``stream``
    (standard output by default) takes colour, or ``force``; else ``text``
    unchanged."""
    if not styles or not (force or colour_on(stream or sys.stdout)):
        return text
    codes = ";".join(_CODES[s] for s in styles)
    return f"\033[{codes}m{text}\033[0m"


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to a mistyped ``word``, if one is close enough."""
    options = [c for c in choices if c]
    if not word or not options:
        return None
    # Case and -/_ mix-ups are the commonest typos: compare without them.
    folded = {c.lower().replace("_", "-"): c for c in options}
    key = word.lower().replace("_", "-")
    if key in folded:
        return folded[key]
    found = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.6)
    return folded[found[0]] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"did you mean 'x'?"`` for a close choice, else ``""``."""
    match = suggest(word, choices)
    return f"did you mean '{match}'?" if match else ""


#: C0 and C1 control characters and DEL: never written raw to a terminal,
#: where they could move the cursor, retitle the window or hide text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters written as ``\\xNN``: names, tags
    and messages that came from files or models, shown on a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def error(
    command: str,
    message: str,
    *,
    hint: str = "",
    status: int = FAILURE,
    stream: TextIO | None = None,
) -> int:
    """Write ``deepserve <command>: error: message`` (and the hint on its own
    line) to standard error; return ``status`` for the caller to exit with.

    ``command`` is the program as typed, e.g. ``"deepserve models"``.
    """
    out = stream or sys.stderr
    one_line = printable(" ".join(message.split()))
    label = paint("error:", "bold", "red", stream=out)
    print(f"{command}: {label} {one_line}", file=out)
    if hint:
        print(paint(printable(" ".join(hint.split())), "dim", stream=out), file=out)
    return status


def discard_stdout() -> None:
    """Point standard output at ``/dev/null`` for the rest of the process:
    after its reader went away (``| head``), so that flushing it at exit
    does not fail again with "Exception ignored ... BrokenPipeError"."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def usage_error(command: str, exc: UsageError, *, stream: TextIO | None = None) -> int:
    """Report a :class:`UsageError`, pointing at ``--help``; return 2."""
    hint = exc.hint or f"Try '{command} --help' for help."
    return error(command, exc.message, hint=hint, status=USAGE, stream=stream)
