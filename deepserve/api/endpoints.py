"""Which endpoint a request reached, as a route template."""

from __future__ import annotations

from aiohttp import web

#: The optional trailing slash of the routes (see :mod:`deepserve.api.app`).
_SLASH = "{slash}"


def template(request: web.Request, base_path: str) -> str | None:
    """The route template a request matched, without the base path or the
    optional trailing slash: ``/v2/models/{name}/predict``.

    A template, never the request's own path, so that it can name a metric
    label or a policy rule whatever a client sends.

    :returns: ``None`` when the request matched no route (a 404 or 405).
    """
    info = request.match_info
    if info.http_exception is not None:
        return None
    resource = info.route.resource
    if resource is None:
        return None
    path = resource.canonical
    if base_path and path.startswith(base_path):
        path = path[len(base_path) :]
    path = path.removesuffix(_SLASH).rstrip("/")
    return path or "/"
