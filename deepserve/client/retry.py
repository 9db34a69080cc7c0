"""When the clients send a request again, and how long they wait first.

Two things are worth another try:

- a connection that failed before anything reached the server: refused (the
  server is not listening yet: it is starting, or restarting), reset while
  being opened, or a name the resolver could not look up *for now*
  (``EAI_AGAIN``). A name that does not exist, a TLS error or a refusal by
  the certificate check are mistakes to fix, not to wait out;
- a connection that broke once the request was sent, for a safe method
  (``GET``) only: the server may have received a ``POST`` and acted on it,
  so that is never sent twice.

The waits between such tries grow exponentially, are capped, and are drawn
at random below that bound ("full jitter"), so that many clients of one
restarted server do not all come back at the same instant. A ``503`` asks
for its own wait in ``Retry-After``, in seconds or as an HTTP date.

Every wait fits in the time the call is given: the :class:`Deadline`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import errno
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime

import aiohttp

#: The ceiling of the first wait after a failed connection, in seconds; it
#: doubles with each further one...
BACKOFF_BASE = 0.2
#: ... up to this many seconds.
MAX_BACKOFF = 5.0
#: Methods that do not change the server's state (RFC 9110, 9.2.1): sent
#: again even when the server may have received them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_RESET = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})
_DELAY_SECONDS = re.compile(r"[0-9]+")


def backoff(
    retry: int,
    rand: Callable[[], float] = random.random,
    *,
    base: float = BACKOFF_BASE,
    cap: float = MAX_BACKOFF,
) -> float:
    """Seconds to wait before retry number ``retry`` (0 for the first).

    Full jitter: drawn uniformly below ``min(cap, base * 2**retry)``.

    :param rand: the random source, a function returning a float in
        ``[0, 1)``.
    :raises ValueError: for a negative ``retry``.
    """
    if retry < 0:
        raise ValueError(f"retry must not be negative: {retry}")
    # 2.0 ** a large number overflows; the cap is reached long before.
    ceiling = min(cap, base * 2.0 ** min(retry, 64))
    return rand() * ceiling


def retry_after(value: str, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` header value asks to wait.

    RFC 9110 allows a number of seconds or an HTTP date (IMF-fixdate, and
    the obsolete RFC 850 and asctime forms, taken as UTC); a date already
    past means at once (0).

    :param now: the current time as a POSIX timestamp (default: now).
    :returns: None for a value that is neither.
    """
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def unreached(error: aiohttp.ClientError) -> bool:
    """Whether ``error`` is a connection that failed, for now, before
    anything of the request was sent."""
    if not isinstance(error, aiohttp.ClientConnectorError) or isinstance(
        error, aiohttp.ClientSSLError
    ):
        return False
    cause = error.os_error
    if isinstance(cause, socket.gaierror):
        return cause.errno == socket.EAI_AGAIN
    return isinstance(cause, ConnectionRefusedError) or cause.errno in (
        _RESET | {errno.ECONNREFUSED}
    )


#: aiohttp 3.10+ raises this (a ConnectionResetError, not a ClientOSError)
#: for "Connection lost" and "Cannot write to closing transport".
_LOST: type[Exception] = getattr(
    aiohttp, "ClientConnectionResetError", aiohttp.ServerDisconnectedError
)


def broken(error: aiohttp.ClientError) -> bool:
    """Whether ``error`` is an open connection the server closed or reset,
    so that the request may or may not have reached it."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return False
    if isinstance(error, aiohttp.ServerDisconnectedError | _LOST):
        return True
    return isinstance(error, aiohttp.ClientOSError) and error.errno in _RESET


class Deadline:
    """The time one call may take, started when it is made.

    :param seconds: the limit; None for none.
    :param clock: monotonic seconds (``time.monotonic``).
    """

    def __init__(
        self, seconds: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self.started = clock()

    def elapsed(self) -> float:
        """Seconds since the call started."""
        return self._clock() - self.started

    def left(self) -> float | None:
        """Seconds left (0 when past); None without a limit."""
        if self.seconds is None:
            return None
        return max(0.0, self.seconds - self.elapsed())

    def allows(self, wait: float) -> bool:
        """Whether another try still fits after waiting ``wait`` seconds."""
        left = self.left()
        return left is None or wait < left


_CALL: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "deepserve_client_call", default=None
)


@contextlib.contextmanager
def call(seconds: float | None) -> Iterator[Deadline]:
    """The deadline of the current call: a new one of ``seconds``, or the
    one of a call this one is part of (a ``DeployedModel.predict`` reads the
    model's operation, then predicts: both fit in one timeout)."""
    current = _CALL.get()
    if current is not None:
        yield current
        return
    deadline = Deadline(seconds)
    token = _CALL.set(deadline)
    try:
        yield deadline
    finally:
        _CALL.reset(token)
