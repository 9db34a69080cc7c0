"""The one place where errors become HTTP statuses and JSON bodies.

Every error response has the shape of :class:`deepserve.api.schemas.Error`:
``{"code": 422, "title": "Unprocessable Entity", "message": "...", ...}``.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from deepserve import exceptions as exc
from deepserve.api.endpoints import endpoint_of

LOG = logging.getLogger(__name__)

#: Domain error -> status; looked up along the error's MRO.
STATUS: dict[type[exc.DeepserveError], int] = {
    exc.MalformedRequest: 400,
    exc.BadArchive: 400,
    exc.Unauthorized: 401,
    exc.ModelNotFound: 404,
    exc.ModelTagNotFound: 404,
    exc.TagExists: 409,
    exc.JobNotFound: 404,
    exc.PayloadTooLarge: 413,
    exc.InsufficientStorage: 507,
    exc.BadInput: 422,
    exc.BadTag: 422,
    exc.WrongModule: 422,
    exc.InvalidModel: 422,
    exc.NotSupported: 501,
    exc.WorkerDied: 503,
    exc.Overloaded: 503,
    exc.JobStoreError: 503,
    exc.DeadlineExceeded: 504,
    exc.StoreError: 500,
    exc.DeepserveError: 500,
}


def status_for(error: exc.DeepserveError) -> int:
    if isinstance(error, exc.ModelHTTPError):
        return error.status
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(
    status: int,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {"code": status, "title": title, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return web.json_response(body, status=status, headers=headers)


def domain_error_response(
    error: exc.DeepserveError, *, oip: bool = False
) -> web.Response:
    """The answer to a domain error: DEEPaaS's error shape, or with ``oip``
    the Open Inference Protocol's (``{"error": message}``; a request the
    model cannot take is ``400`` there, not ``422``)."""
    status = status_for(error)
    model = getattr(error, "model", None)
    if isinstance(error, exc.ModelFailed):
        LOG.error("%s: %s\n%s", error.message, error.detail, error.traceback.rstrip())
        if oip:
            return oip_error_response(status, f"{error.message}: {error.detail}")
        return error_response(
            status,
            error.message,
            model=model,
            error_type=error.error_type,
            detail=error.detail,
        )
    if status >= 500 and not isinstance(error, exc.Overloaded):
        LOG.error("%s", error.message)
    errors = error.errors if isinstance(error, exc.BadInput) else None
    headers = (
        {"Retry-After": str(error.retry_after)}
        if error.retry_after is not None
        else None
    )
    if isinstance(error, exc.Unauthorized):
        headers = {"WWW-Authenticate": www_authenticate(error)}
    if oip:
        if isinstance(error, exc.BadInput):
            status = 400
        return oip_error_response(status, error.message, headers=headers)
    limit = error.limit if isinstance(error, exc.PayloadTooLarge) else None
    return error_response(
        status,
        error.message,
        headers=headers,
        model=model,
        errors=errors,
        limit=limit,
    )


def oip_error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """An error in the Open Inference Protocol's shape: ``{"error": ...}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


def www_authenticate(error: exc.Unauthorized) -> str:
    """The challenge of a 401 (RFC 6750): the scheme, and why, if a token came."""
    if error.invalid:
        return 'Bearer realm="deepserve", error="invalid_token"'
    return 'Bearer realm="deepserve"'


def http_error_response(error: web.HTTPException, *, oip: bool = False) -> web.Response:
    """JSON for the HTTP errors aiohttp raises itself (404, 405, 413...)."""
    answer = oip_error_response if oip else error_response
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        message = f"Method {error.method} is not allowed here; allowed: {allowed}"
        return answer(error.status, message, headers={"Allow": allowed})
    if isinstance(error, web.HTTPNotFound):
        return answer(error.status, "No such resource")
    text = error.text or error.reason
    return answer(error.status, text)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _speaks_oip(request: web.Request) -> bool:
    """Whether the endpoint reached answers errors in the Open Inference
    Protocol's shape (see :attr:`deepserve.api.endpoints.Endpoint.oip`)."""
    endpoint = endpoint_of(request)
    return endpoint is not None and endpoint.oip


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    try:
        return await handler(request)
    except exc.DeepserveError as error:
        return domain_error_response(error, oip=_speaks_oip(request))
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return http_error_response(error, oip=_speaks_oip(request))
    except asyncio.CancelledError:
        raise
    except Exception:
        LOG.exception("Unexpected error serving %s %s", request.method, request.path)
        return error_response(500, "Internal server error; see the server log")
