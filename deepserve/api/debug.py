"""The debug endpoint's record of recent log lines."""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from deepserve import logs

#: Log lines kept for ``GET /v2/debug/``.
MAX_LINES = 2000


class LogBuffer(logging.Handler):
    """Keeps the last :data:`MAX_LINES` formatted log records in memory."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        super().__init__(level=logging.DEBUG)
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        # Lines name their request, as in the server's own log.
        self.addFilter(logs.RequestIdFilter())
        self.setFormatter(logging.Formatter(logs.TEXT_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)

    def text(self) -> str:
        return "\n".join(self._lines) + ("\n" if self._lines else "")


class DebugLog:
    """The debug endpoint: deepserve's recent log lines, recorded while the
    app runs (:meth:`capture` is one of its cleanup contexts)."""

    def __init__(self) -> None:
        self.buffer = LogBuffer()

    async def capture(self, _app: web.Application) -> AsyncIterator[None]:
        logger = logging.getLogger("deepserve")
        logger.addHandler(self.buffer)
        try:
            yield
        finally:
            logger.removeHandler(self.buffer)

    async def handler(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.buffer.text(), content_type="text/plain")
