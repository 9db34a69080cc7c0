"""aiohttp's HTTP connection handling, answering even unreadable requests in JSON.

aiohttp answers a request it cannot parse (a request line or a header over
its limits, malformed HTTP) before any application code runs, so no
middleware sees it (aiohttp issue #3287): in ``text/plain``, and with a
traceback in the log of ``aiohttp.server``. Here the connection handler
answers those in the project's JSON error shape, and logs one warning line.
aiohttp offers no public hook for this; the seam used is its documented
runner API plus the ``handle_error`` method of its connection handler.
:func:`deepserve.server.serve` runs the app through :class:`AppRunner`.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from deepserve.api.errors import error_response

LOG = logging.getLogger(__name__)


class RequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with errors answered in JSON."""

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


class Server(web.Server):
    """Makes a :class:`RequestHandler` for each connection."""

    def __call__(self) -> web.RequestHandler:
        return RequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """:class:`aiohttp.web.AppRunner` serving through :class:`Server`."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )
