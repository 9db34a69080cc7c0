"""Cross-origin resource sharing, off unless origins are configured.

A web page from an allowed origin may call the API from a browser: its
preflight ``OPTIONS`` requests are answered here (before authentication:
browsers never send credentials with a preflight), and every answer to it
carries ``Access-Control-Allow-Origin``. Credentials (cookies) are never
allowed; a bearer token travels in a header the page sets itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import hdrs, web

from deepserve.api import args
from deepserve.api.errors import Handler, error_response
from deepserve.settings import ApiSettings

#: Seconds a browser may cache a preflight's answer.
MAX_AGE = 600
#: Response headers a page's script may read, beyond the basic ones.
EXPOSED = (
    "Content-Disposition",
    args.HEADER,
    "Retry-After",
    "WWW-Authenticate",
    "X-Request-ID",
)


@dataclasses.dataclass(frozen=True)
class Cors:
    """The allowed origins; ``*`` among them allows any."""

    origins: frozenset[str]

    @property
    def any_origin(self) -> bool:
        return "*" in self.origins

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/") in self.origins

    def allow_origin(self, origin: str) -> str:
        """The value of ``Access-Control-Allow-Origin`` for ``origin``."""
        return "*" if self.any_origin else origin

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers[hdrs.ORIGIN]
        if not self.allows(origin):
            return error_response(
                403, f"Origin '{origin}' may not call this API from a browser"
            )
        error = request.match_info.http_exception
        if isinstance(error, web.HTTPMethodNotAllowed):
            methods = sorted(error.allowed_methods)
        elif error is not None:  # no such resource
            return error_response(error.status, "No such resource")
        else:  # a route that answers OPTIONS itself: none of ours do
            methods = [request.method]
        headers = {
            hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: self.allow_origin(origin),
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(methods),
            hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE),
            hdrs.VARY: "Origin",
        }
        asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
        if asked:
            # Any header: without credentials, a header grants nothing a
            # page could not send from elsewhere.
            headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = asked
        return web.Response(status=204, headers=headers)

    async def on_prepare(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        """Mark every answer to an allowed origin as readable by it."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or not self.allows(origin):
            return
        if hdrs.ACCESS_CONTROL_ALLOW_ORIGIN in response.headers:
            return  # a preflight's answer
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = self.allow_origin(origin)
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(EXPOSED)
        if not self.any_origin:
            response.headers.add(hdrs.VARY, "Origin")


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def from_settings(settings: ApiSettings) -> Cors | None:
    origins = frozenset(o.rstrip("/") for o in settings.cors_origins)
    return Cors(origins) if origins else None


def middlewares(settings: ApiSettings) -> list[Any]:
    """The middleware answering preflights, when CORS is on. Put it before
    authentication."""
    cors = from_settings(settings)
    if cors is None:
        return []

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_preflight(request):
            return await cors.preflight(request)
        return await handler(request)

    return [preflight]


def add_signals(app: web.Application, settings: ApiSettings) -> None:
    """Add the CORS headers to every answer (streamed ones included)."""
    cors = from_settings(settings)
    if cors is not None:
        app.on_response_prepare.append(cors.on_prepare)
