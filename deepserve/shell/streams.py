"""Where the model's own output goes while ``deepserve call`` runs its code.

Standard output is kept for the result, so that it can be piped on. What
the model writes while it runs (its prints, its libraries' C code writing to
file descriptor 1, the processes it starts, its log records) goes to
standard error as it comes: :func:`model_output_to_stderr` points fd 1 at
fd 2 for the duration, so nothing needs reading and nothing waits for the
end.

While ``--help`` may have been asked for, :func:`held_back` keeps what the
model writes on import (a library's warnings, a C library's notices) in a
temporary file instead, so that the help is all there is to read; the
caller passes it on once it turns out the command is not a ``--help``.

This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

STDOUT = 1
STDERR = 2


def flush_all() -> None:
    """Push out what Python and the C library still hold for fds 1 and 2."""
    for stream in {sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__}:
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()
    with contextlib.suppress(Exception):
        import ctypes  # here: only a command that runs a model pays for it

        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _fds_to(target: int, fds: tuple[int, ...]) -> Iterator[None]:
    """Point each of ``fds`` at the file descriptor ``target``, then back."""
    flush_all()
    saved: list[tuple[int, int]] = []
    try:
        for fd in fds:
            try:
                saved.append((fd, os.dup(fd)))
            except OSError:  # closed (``>&-``): leave it so
                continue
            os.dup2(target, fd)
        yield
    finally:
        flush_all()
        for fd, copy in reversed(saved):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _line_buffered(stream: IO[str] | Any) -> Iterator[None]:
    """Write ``stream``'s lines as they end, for the time being.

    A model may write to ``sys.__stdout__``, which is block-buffered when
    standard output is a pipe: its lines would otherwise wait.
    """
    before = getattr(stream, "line_buffering", None)
    reconfigure = getattr(stream, "reconfigure", None)
    if before is None or reconfigure is None or before:
        yield
        return
    try:
        reconfigure(line_buffering=True)
    except Exception:  # a stream that cannot: its lines come at the end
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            reconfigure(line_buffering=before)


@contextlib.contextmanager
def model_output_to_stderr() -> Iterator[None]:
    """Around the model's own code: all it writes to standard output goes to
    standard error, at once; standard output then holds the result alone."""
    with (
        _fds_to(STDERR, (STDOUT,)),
        _line_buffered(sys.__stdout__),
        contextlib.redirect_stdout(sys.stderr),
    ):
        yield


class HeldBack:
    """What the model wrote while :func:`held_back` held it."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def release(self) -> None:
        """Write what was held to standard error, once."""
        if self._file.closed:
            return
        self._file.seek(0)
        flush_all()
        with contextlib.suppress(OSError):
            while chunk := self._file.read(64 * 1024):
                os.write(STDERR, chunk)
        self._file.close()

    def discard(self) -> None:
        self._file.close()


@contextlib.contextmanager
def held_back() -> Iterator[HeldBack]:
    """Keep what is written to fds 1 and 2 meanwhile in a temporary file.

    Python's warnings and log handlers write to ``sys.stderr``, which
    writes to fd 2: they are held back too. Should the block raise, what
    was held is written to standard error first, as it would have been.
    The caller :meth:`~HeldBack.release`\\ s or
    :meth:`~HeldBack.discard`\\ s the rest.
    """
    file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by HeldBack
    held = HeldBack(file)
    try:
        with (
            _fds_to(file.fileno(), (STDOUT, STDERR)),
            contextlib.redirect_stdout(sys.stderr),
        ):
            yield held
    except BaseException:
        held.release()
        raise
