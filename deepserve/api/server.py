"""The HTTP server: aiohttp's, answering even unreadable requests in JSON.

aiohttp answers a request it cannot parse (a request line or a header over
its limits, malformed HTTP) before any application code runs, so no
middleware sees it (aiohttp issue #3287): in ``text/plain``, and with a
traceback in the log of ``aiohttp.server``. Here the connection handler
answers those in the project's JSON error shape, and logs one warning line.
aiohttp offers no public hook for this; the seam used is its documented
runner API plus the ``handle_error`` method of its connection handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

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


def run_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    print: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, like :func:`aiohttp.web.run_app`.

    :param print: called with a line once the socket listens.
    :param kwargs: for :class:`AppRunner` (``access_log``,
        ``handler_cancellation``, ``shutdown_timeout``...).
    :raises OSError: when the address cannot be bound.
    """
    loop = asyncio.new_event_loop()
    main = loop.create_task(_serve(app, host, port, print, kwargs))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    print: Callable[[str], None] | None,
    kwargs: dict[str, Any],
) -> None:
    # web.run_app's keep-alive, not the connection handler's hour.
    kwargs.setdefault("keepalive_timeout", 75.0)
    runner = AppRunner(app, handle_signals=True, **kwargs)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if print is not None:
            print(f"Running on {site.name}")
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception while stopping the server",
                    "exception": task.exception(),
                    "task": task,
                }
            )
