"""The requests being handled, so that a shutdown can wait for them."""

from __future__ import annotations

import asyncio

from aiohttp import web

from deepserve.api.errors import Handler


class InFlight:
    """Counts requests in progress; :meth:`wait_idle` waits until none is.

    Every request counts, health probes too: they take milliseconds, and a
    shutdown waits for moments when nothing runs, not for probes to stop.
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        """Requests being handled now."""
        return self._count

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        self._count += 1
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is being handled."""
        await self._idle.wait()


#: The application's tracker, for whoever runs the server.
IN_FLIGHT = web.AppKey("in_flight", InFlight)
