"""A lean access log: one line per request, cheap enough for the hot path.

When the access log's records would only reach deepserve's own stderr
handler (``deepserve run``'s logging, see :func:`deepserve.logs.direct_handler`),
a request's line is kept as a tuple and the lines of every request answered
in one turn of the event loop are formatted and written together, after
the answers went out: the same text or JSON lines, request ids included,
without a :class:`logging.LogRecord` and a write per request (through
:mod:`logging`, the access log cost a sixth of a trivial prediction's CPU).
Otherwise (logging configured by the embedding program, a test capturing
records) each line goes through :mod:`logging` at once.

Credentials never reach it: the value of a query parameter that carries
one (``token``, ``access_token``, ``api_key``...), or that equals a
configured token, is written as ``REDACTED``.
"""

from __future__ import annotations

import asyncio
import logging
import time as clock
from collections.abc import Collection
from urllib.parse import unquote, unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from deepserve import logs
from deepserve.api import requestids

#: The app's configured tokens, for :func:`redact` (set by ``create_app``).
SECRETS = web.AppKey("access_log_secrets", frozenset)
#: Query parameters whose value is a credential, whatever it is.
SENSITIVE = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "api-key",
        "key",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "auth",
        "authorization",
        "signature",
        "sig",
    }
)
REDACTED = "REDACTED"


def redact(path_qs: str, secrets: Collection[str] = ()) -> str:
    """``path_qs`` with the values of credential parameters replaced."""
    path, sep, query = path_qs.partition("?")
    if not query:
        return path_qs
    pairs = query.split("&")
    changed = False
    for i, pair in enumerate(pairs):
        key, eq, value = pair.partition("=")
        if not eq:
            continue
        name = unquote_plus(key).strip().lower()
        if _sensitive(name) or (secrets and _holds(value, secrets)):
            pairs[i] = f"{key}={REDACTED}"
            changed = True
    return f"{path}{sep}{'&'.join(pairs)}" if changed else path_qs


#: Parts of a parameter name that say its value is a credential.
_SENSITIVE_PARTS = (
    "token", "secret", "passw", "pwd", "key", "auth", "sig", "session",
    "credential", "jwt", "cookie",
)  # fmt: skip


def _sensitive(name: str) -> bool:
    return name in SENSITIVE or any(part in name for part in _SENSITIVE_PARTS)


def _holds(value: str, secrets: Collection[str]) -> bool:
    """Whether a raw query value contains a configured token, decoded
    either way (a '+' may be a plus or a space)."""
    decoded = {value, unquote_plus(value), unquote(value)}
    return any(secret and secret in text for secret in secrets for text in decoded)


def _secrets(request: web.BaseRequest) -> frozenset[str]:
    try:
        app = request.app  # type: ignore[attr-defined]
    except (AttributeError, AssertionError, RuntimeError):
        return frozenset()  # a request no app matched
    if not isinstance(app, web.Application):
        return frozenset()
    return app.get(SECRETS, frozenset())


class AccessLogger(AbstractAccessLogger):
    """Logs ``client "METHOD path?query" status duration``.

    aiohttp's default formatter costs more than the rest of a trivial
    prediction's handling; this one formats only what operators read.
    """

    @property
    def enabled(self) -> bool:
        return bool(self.logger.isEnabledFor(logging.INFO))

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        path = redact(request.path_qs, _secrets(request))
        message = (
            f'{request.remote} "{request.method} {path}" {response.status} '
            f"{time * 1000:.1f}ms"
        )
        # Written after the request's context ended: the id is passed
        # along, from the header the request-id middleware set.
        request_id = response.headers.get(requestids.HEADER)
        if logs.direct_handler(self.logger, logging.INFO) is not None:
            PENDING.add(self.logger, clock.time(), message, request_id)
        else:
            self.logger.info(message, extra={"request_id": request_id})


class Pending:
    """Access lines waiting for the end of the event loop's turn."""

    #: Most lines kept before they are written at once.
    LIMIT = 256

    def __init__(self) -> None:
        self._lines: list[tuple[float, str, str | None]] = []
        self._logger: logging.Logger | None = None
        #: The loop a flush is scheduled on (a loop that closed before it
        #: ran never will: the next line schedules one on its own loop).
        self._scheduled: asyncio.AbstractEventLoop | None = None

    def add(
        self, logger: logging.Logger, at: float, message: str, request_id: str | None
    ) -> None:
        if self._logger is not logger:
            self.flush()
            self._logger = logger
        self._lines.append((at, message, request_id))
        if len(self._lines) >= self.LIMIT:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing to wait for
            self.flush()
            return
        if self._scheduled is not loop:
            loop.call_soon(self.flush)
            self._scheduled = loop

    def flush(self) -> None:
        """Write the lines kept (through logging if its setup changed)."""
        self._scheduled = None
        lines, self._lines = self._lines, []
        logger = self._logger
        if not lines or logger is None:
            return
        handler = logs.direct_handler(logger, logging.INFO)
        if handler is not None:
            logs.write_lines(handler, logger.name, logging.INFO, lines)
            return
        for _at, message, request_id in lines:
            logger.info(message, extra={"request_id": request_id})


#: The lines of this process's servers (one event loop serves them).
PENDING = Pending()


def flush() -> None:
    """Write the access lines still kept (a server stopping)."""
    PENDING.flush()
