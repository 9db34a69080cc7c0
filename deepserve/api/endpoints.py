"""The HTTP endpoints, each declared once.

An :class:`Endpoint` says everything the server does with one method on one
path: the handler routing sends it to, who may call it (authentication reads
:attr:`Endpoint.access`), how the OpenAPI document describes it, and the
label its requests are counted under. :func:`deepserve.api.app.declare`
lists an app's endpoints; routing, the document and authentication all work
from that one list, so none can serve, document or protect a path the
others do not know.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from deepserve.api.errors import Handler
    from deepserve.api.openapi import _Builder
    from deepserve.operations.plan import ModelPlan

#: The optional trailing slash most paths accept.
SLASH = "{slash:/?}"
#: The placeholder of the model's name in a path.
NAME = "{name}"

#: One operation of the OpenAPI document, written for one served model (for
#: a path with :data:`NAME`) or for none; ``None`` leaves it out (a model
#: that does not implement the operation).
Operation = Callable[["_Builder", "ModelPlan | None"], dict[str, Any] | None]


class Access(enum.Enum):
    """Who may call an endpoint when the server has tokens."""

    #: Anyone: read-only, telling no more than the OpenAPI document.
    PUBLIC = "public"
    #: Token holders, unless ``auth_predict`` is off.
    PREDICT = "predict"
    #: Token holders, unless ``auth_metrics`` is off.
    METRICS = "metrics"
    #: Token holders only.
    PROTECTED = "protected"


@dataclasses.dataclass(frozen=True)
class Doc:
    """How the OpenAPI document describes an endpoint."""

    #: The documented path; :data:`NAME` is replaced by each model's name.
    path: str
    #: The operation under that path and the endpoint's method.
    operation: Operation
    #: Parameters of the path itself (shared by its operations).
    parameters: tuple[Mapping[str, Any], ...] = ()
    #: Endpoints next to each other in the list and in one group are written
    #: together: those naming a model, model by model (each model's own
    #: operations in turn, every model's readiness together).
    group: str = ""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One method on one path, declared once."""

    #: ``GET``, ``POST``, ``DELETE``...
    method: str
    #: The route template relative to the base path, without a trailing
    #: slash (except the root, ``/``): ``/v2/models/{name}/predict``. It is
    #: also the label the endpoint's requests are counted under.
    path: str
    #: What answers; ``None`` for static files (see :attr:`directory`).
    handler: Handler | None
    access: Access
    #: Its place in the OpenAPI document, if it has one.
    doc: Doc | None = None
    #: Whether one trailing slash may follow :attr:`path`.
    slash: bool = True
    #: For static files: the directory served under :attr:`path` (``GET``
    #: and ``HEAD``).
    directory: Path | None = None
    #: An endpoint of the Open Inference Protocol: its errors are
    #: ``{"error": message}``, as the protocol's clients read them.
    oip: bool = False

    @property
    def per_model(self) -> bool:
        """Whether the path names a model (and is documented once per model)."""
        return NAME in self.path

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods routed here: static files answer ``HEAD`` too."""
        return (self.method, "HEAD") if self.directory is not None else (self.method,)

    def route_path(self, base_path: str) -> str:
        """The path routing matches: under ``base_path``, with the optional
        slash."""
        path = base_path + self.path.rstrip("/")
        if self.slash and self.directory is None:
            return path + SLASH if path else "/"
        return path or "/"

    def documented_paths(self, names: Iterable[str]) -> list[str]:
        """The paths the document gives this endpoint, for models ``names``."""
        if self.doc is None:
            return []
        if self.per_model:
            return [self.doc.path.replace(NAME, name) for name in names]
        return [self.doc.path]


#: The endpoint of each route of an app.
ROUTES = web.AppKey("endpoint_routes", dict)


def add_routes(
    app: web.Application, endpoints: Iterable[Endpoint], base_path: str
) -> None:
    """Route each of ``endpoints``, and nothing else, under ``base_path``;
    remember which route serves which endpoint."""
    routes: dict[web.AbstractRoute, Endpoint] = app.setdefault(ROUTES, {})
    for endpoint in endpoints:
        path = endpoint.route_path(base_path)
        if endpoint.directory is not None:
            resource = app.router.add_static(path, endpoint.directory)
            for route in resource:
                routes[route] = endpoint
        elif endpoint.handler is not None:
            routes[app.router.add_route(endpoint.method, path, endpoint.handler)] = (
                endpoint
            )
        else:
            raise ValueError(f"{endpoint.method} {endpoint.path}: nothing answers")


def endpoint_of(request: web.Request) -> Endpoint | None:
    """The endpoint a request reached.

    :returns: ``None`` when it matched no route (a 404 or 405).
    """
    info = request.match_info
    if info.http_exception is not None:
        return None
    endpoint: Endpoint | None = request.app.get(ROUTES, {}).get(info.route)
    return endpoint
