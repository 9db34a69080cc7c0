"""Capture a job process's output: its stdout and stderr file descriptors
(so C-level writes and child processes count too) and its log records.

The server makes three pipes per job. The job process puts two of them in
place of its fds 1 and 2, and writes its log records to the third, each a
:class:`~deepserve.executors.messages.LogLine`; the event loop reads the
other ends and hands each line to a :class:`~deepserve.executors.JobWatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext

from deepserve.executors import JobWatch
from deepserve.executors.messages import LogLine

#: Longest line passed on, in bytes; a longer one is passed on in pieces, so
#: a process writing without newlines cannot grow the server's memory.
MAX_LINE_BYTES = 16 * 1024
_READ_SIZE = 64 * 1024


@dataclasses.dataclass
class Capture:
    """The write ends, sent to the job process (they pickle for spawn)."""

    stdout: Connection
    stderr: Connection
    log: Connection


# -- in the job process ------------------------------------------------------


def redirect(capture: Capture, log_level: int) -> None:
    """Send this process's fds 1 and 2 and its log records to ``capture``.

    :param log_level: the server's level; records at INFO and above are
        kept whatever it is.
    """
    for conn, fd in ((capture.stdout, 1), (capture.stderr, 2)):
        os.dup2(conn.fileno(), fd)
        conn.close()
    for stream in (sys.stdout, sys.stderr):
        # Not a terminal any more, so Python would buffer whole blocks:
        # line buffering lets a client follow the output as it comes.
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    root = logging.getLogger()
    # A training's progress is usually logged at INFO: keep it even when the
    # server itself logs less; DEBUG too when the server logs at DEBUG.
    root.setLevel(min(log_level, logging.INFO))
    root.addHandler(_RecordSender(capture.log))


def flush() -> None:
    """Push out what Python and the C library still buffer, before the
    process answers (so the output comes before the result)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()
    with contextlib.suppress(Exception):
        # Imported here: pool workers, which never capture, skip its cost.
        import ctypes

        ctypes.CDLL(None).fflush(None)


class _RecordSender(logging.Handler):
    """Writes each record as a :class:`LogLine` to a pipe."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self._fd = conn.fileno()
        self._conn = conn  # keeps the fd open
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = LogLine(record.created, record.levelname, self.format(record))
            os.write(self._fd, line.encode())
        except Exception:
            self.handleError(record)


# -- in the server -----------------------------------------------------------


class Reader:
    """Makes the pipes of one job and reads the server's ends of them.

    :param watch: told about every line.
    """

    def __init__(self, ctx: SpawnContext, watch: JobWatch) -> None:
        self._watch = watch
        self._loop = asyncio.get_running_loop()
        ends = {name: ctx.Pipe(duplex=False) for name in ("stdout", "stderr", "log")}
        self.child = Capture(
            stdout=ends["stdout"][1], stderr=ends["stderr"][1], log=ends["log"][1]
        )
        self._ours: dict[str, Connection] = {n: e[0] for n, e in ends.items()}
        self._partial: dict[str, bytes] = {n: b"" for n in ends}
        self._reading = False

    def start(self) -> None:
        """Read from now on; call once the job process has started (and so
        holds its own copies of the write ends, which we close)."""
        for conn in (self.child.stdout, self.child.stderr, self.child.log):
            conn.close()
        for name, conn in self._ours.items():
            os.set_blocking(conn.fileno(), False)
            self._loop.add_reader(conn.fileno(), self._readable, name)
        self._reading = True

    def close(self) -> None:
        """Read what is already there, then stop and close our ends.

        Does not wait for the write ends to close: a process the job left
        behind may hold them.
        """
        if not self._reading:
            for conn in (self.child.stdout, self.child.stderr, self.child.log):
                conn.close()
        for name, conn in self._ours.items():
            if self._reading:
                self._loop.remove_reader(conn.fileno())
                self._drain(name)
            self._emit_rest(name)
            conn.close()
        self._reading = False

    def _readable(self, name: str) -> None:
        if not self._drain(name):
            self._loop.remove_reader(self._ours[name].fileno())

    def _drain(self, name: str) -> bool:
        """Read all that is there; ``False`` at end of file."""
        fd = self._ours[name].fileno()
        while True:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self._feed(name, data)

    def _feed(self, name: str, data: bytes) -> None:
        buffered = self._partial[name] + data
        *lines, rest = buffered.split(b"\n")
        while len(rest) > MAX_LINE_BYTES:
            lines.append(rest[:MAX_LINE_BYTES])
            rest = rest[MAX_LINE_BYTES:]
        self._partial[name] = rest
        for line in lines:
            self._line(name, line)

    def _emit_rest(self, name: str) -> None:
        rest, self._partial[name] = self._partial[name], b""
        if rest:
            self._line(name, rest)

    def _line(self, name: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").removesuffix("\r")
        if name != "log":
            self._watch.output(name, text, None, time.time())
            return
        try:
            record = LogLine.decode(text)
        except ValueError:
            self._watch.output("log", text, None, time.time())
            return
        self._watch.output("log", record.text, record.level, record.time)
