"""aiohttp's HTTP connection handling, answering even unreadable requests in JSON.

aiohttp answers a request it cannot parse (a request line or a header over
its limits, malformed HTTP) before any application code runs, so no
middleware sees it (aiohttp issue #3287): in ``text/plain``, and with a
traceback in the log of ``aiohttp.server``. Here the connection handler
answers those in the project's JSON error shape, and logs one warning line.
aiohttp offers no public hook for this; the seam used is its documented
runner API plus the ``handle_error`` method of its connection handler.
:func:`deepserve.server.serve` runs the app through :class:`AppRunner`.

The handler also bounds what aiohttp leaves open (:class:`Limits`): a
client gets ``header_timeout`` seconds to send a request's headers, from
its first byte or from connecting, so that slow-header (slowloris) clients
cannot hold connections forever; and past ``max_connections`` a new
connection is answered ``503`` and closed. Both read the handler's request
counters, which aiohttp keeps on it (``_request_count``, ``_messages``,
``_request_in_progress``); ``tests/test_server.py`` checks them on a real
server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from deepserve.api.errors import error_response

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one connection and all of them may hold."""

    #: Seconds to send a request's headers; ``None``: no limit.
    header_timeout: float | None = None
    #: Connections at once; ``None``: no limit.
    max_connections: int | None = None


#: Sent, raw, to a connection over ``max_connections``, which is then closed.
_TOO_MANY = json.dumps(
    {
        "code": 503,
        "title": "Service Unavailable",
        "message": "Too many connections; retry later",
    }
).encode()
TOO_MANY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_TOO_MANY)).encode() + b"\r\n\r\n" + _TOO_MANY
)


class RequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with errors answered in JSON and the
    connection bounded by the server's :class:`Limits`."""

    _header_timer: asyncio.TimerHandle | None = None
    _headers_before = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        limits = _limits(self)
        if limits.max_connections is not None:
            served = len(self._manager.connections)  # type: ignore[union-attr]
            if served > limits.max_connections:
                LOG.warning(
                    "Refused a connection: %d open, max-connections is %d",
                    served - 1,
                    limits.max_connections,
                )
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(TOO_MANY_RESPONSE)
                self.force_close()  # reads nothing more
                # Closing at once, with the request unread, would make the
                # kernel reset the connection and the client lose the 503.
                if transport.can_write_eof():
                    transport.write_eof()
                asyncio.get_running_loop().call_later(1.0, transport.close)
                return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        before = self._parsed()
        super().data_received(data)
        if self._parsed() > before:
            self._disarm_header_timer()  # a request's headers are complete
        elif not self._busy():
            self._arm_header_timer()  # the first bytes of the next request

    def _parsed(self) -> int:
        """Requests whose headers were read on this connection."""
        return int(getattr(self, "_request_count", 0))

    def _busy(self) -> bool:
        """A request read and waiting, or being answered."""
        return bool(getattr(self, "_messages", None)) or bool(
            getattr(self, "_request_in_progress", False)
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        timeout = _limits(self).header_timeout
        if timeout is None or self._header_timer is not None:
            return
        self._headers_before = self._parsed()
        self._header_timer = asyncio.get_running_loop().call_later(
            timeout, self._header_timeout_passed
        )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_passed(self) -> None:
        self._header_timer = None
        if self._parsed() > self._headers_before or self._busy():
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            peer = transport.get_extra_info("peername")
            LOG.info(
                "Closed a connection from %s: no request headers within %g s",
                peer[0] if isinstance(peer, tuple) else peer,
                _limits(self).header_timeout,
            )
            self.force_close()
            transport.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            # Something escaped the app's own error handling: a bug, whose
            # traceback belongs in the log (never in the answer).
            LOG.error("Error handling a request from %s", request.remote, exc_info=exc)
            text = "Internal server error; see the server log"
        else:
            reason = _reason(exc, message)
            LOG.warning("Unreadable HTTP request from %s: %s", request.remote, reason)
            text = f"The HTTP request cannot be read: {reason}"
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already being sent")
        response = error_response(status, text)
        response.force_close()
        return response


def _reason(exc: BaseException | None, message: str | None) -> str:
    if isinstance(exc, HttpProcessingError) and exc.message:
        text = exc.message
    else:
        text = message or (str(exc) if exc else "malformed request")
    # aiohttp's messages may span lines and quote the offending bytes.
    one_line = " ".join(str(text).split())
    return one_line[:200]


def _limits(handler: web.RequestHandler) -> Limits:
    server = handler._manager
    return getattr(server, "limits", None) or Limits()


class Server(web.Server):
    """Makes a :class:`RequestHandler` for each connection."""

    limits = Limits()

    def __call__(self) -> web.RequestHandler:
        return RequestHandler(self, loop=self._loop, **self._kwargs)


#: What the header timeout reads on aiohttp's connection handler.
_COUNTERS = ("_request_count", "_messages", "_request_in_progress")


def _counters_present() -> bool:
    slots: set[str] = set()
    for cls in web.RequestHandler.__mro__:
        slots.update(getattr(cls, "__slots__", ()))
    return all(name in slots for name in _COUNTERS)


class AppRunner(web.AppRunner):
    """:class:`aiohttp.web.AppRunner` serving through :class:`Server`.

    :param limits: what connections may hold (default: no limits).
    """

    def __init__(
        self, app: web.Application, *, limits: Limits | None = None, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        limits = limits or Limits()
        if limits.header_timeout is not None and not _counters_present():
            # Without them every connection would look idle: better no
            # header timeout than one that cuts requests in progress.
            LOG.warning(
                "This aiohttp release lacks the counters the header timeout "
                "reads; connections get no header timeout"
            )
            limits = dataclasses.replace(limits, header_timeout=None)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        server = Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )
        server.limits = self._limits
        return server
