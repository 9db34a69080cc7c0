"""A lean access log: one line per request, cheap enough for the hot path."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from deepserve.api import requestids


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
        self.logger.info(
            '%s "%s %s" %d %.1fms',
            request.remote,
            request.method,
            request.path_qs,
            response.status,
            time * 1000,
            # Written after the request's context ended: the id is passed
            # along, from the header the request-id middleware set.
            extra={"request_id": response.headers.get(requestids.HEADER)},
        )
