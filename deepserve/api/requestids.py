"""Request ids: taken from ``X-Request-ID`` or made up, echoed, and logged.

A proxy or client that already tags its requests passes the id in the
``X-Request-ID`` header; deepserve keeps it when it is short and made of
safe characters (so a hostile header cannot forge log lines), and makes a
new one otherwise. The id is set in :data:`deepserve.logs.REQUEST_ID` while
the request is handled, so every log line of that request carries it, and
is echoed in the response's ``X-Request-ID`` header, errors included.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import weakref
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from deepserve import logs
from deepserve.api.errors import Handler

HEADER = "X-Request-ID"
#: Longest id accepted from a client.
MAX_LENGTH = 128
#: What an accepted id may contain: enough for UUIDs, hex digests and
#: tracing headers; no spaces, quotes or control characters.
_SAFE = re.compile(rf"[A-Za-z0-9._:/+=@-]{{1,{MAX_LENGTH}}}")


class _Ids:
    """Fresh ids: 32 hex digits, a random half per process and a counter.

    As unique as a random UUID for correlating logs, without a system call
    per request (``uuid4`` reads the OS's random source every time, a
    measurable share of a trivial prediction's cost). A forked child takes
    a new random half (``os.register_at_fork``), so two processes never
    share ids.
    """

    def __init__(self) -> None:
        self._renew()
        _LIVE.add(self)

    def _renew(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFFFFFFFFFF:016x}"


#: Every source of ids in this process, renewed in a forked child.
_LIVE: weakref.WeakSet[_Ids] = weakref.WeakSet()


def _renew_all() -> None:
    for ids in list(_LIVE):
        ids._renew()


os.register_at_fork(after_in_child=_renew_all)


def choose(given: str | None, fresh: Callable[[], str]) -> str:
    """``given`` when it is a safe id, otherwise ``fresh()``."""
    if given is not None and _SAFE.fullmatch(given):
        return given
    return fresh()


def middleware() -> Middleware:
    """A middleware giving each request its id for the length of its
    handling, with its own source of fresh ids.

    It must come before the error middleware, so that the errors it logs
    carry the id. The access log reads the id from the response's header.
    """
    fresh = _Ids()

    @web.middleware
    async def request_id_middleware(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        request_id = choose(request.headers.get(HEADER), fresh)
        token = logs.REQUEST_ID.set(request_id)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects pass the error middleware
            exc.headers[HEADER] = request_id
            raise
        finally:
            logs.REQUEST_ID.reset(token)
        if not response.prepared:
            response.headers[HEADER] = request_id
        return response

    return request_id_middleware


async def echo_request_id(_request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the id on responses whose headers leave while
    the handler still runs (file downloads), before the middleware sees them."""
    request_id = logs.REQUEST_ID.get()
    if request_id is not None and HEADER not in response.headers:
        response.headers[HEADER] = request_id


def install(app: web.Application) -> None:
    """Echo request ids on ``app``'s streamed responses (the middleware is
    passed to the application separately, because middleware order matters)."""
    app.on_response_prepare.append(echo_request_id)
