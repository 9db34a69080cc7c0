"""Optional bearer-token authentication.

Deny by default: with tokens configured, every endpoint needs one except
the few that are public on purpose. Those are read-only and tell a client
only what the OpenAPI document already tells it:

- the version documents (``/``, ``/v2``) and the OpenAPI document;
- the model list and each model's metadata;
- the Swagger UI and its static files;
- health and readiness (``/v2/health/*``, ``/v2/models/{name}/ready``), which
  probes must reach without credentials.

Predictions are protected unless ``auth_predict`` is off, ``/metrics`` unless
``auth_metrics`` is off. Training, debug and any endpoint added later are
always protected, since they are not on the list.

Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import Any

from aiohttp import web

from deepserve.api.endpoints import template
from deepserve.api.errors import Handler
from deepserve.api.openapi import refer_errors
from deepserve.exceptions import Unauthorized
from deepserve.settings import ApiSettings

#: The security scheme's name in the OpenAPI document.
SCHEME = "bearerAuth"

_READS = frozenset({"GET", "HEAD"})
#: Route templates anyone may read.
PUBLIC = frozenset(
    {
        "/",
        "/swagger.json",
        "/v2",
        "/v2/models",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/api",
        "/ui",
    }
)
#: Template prefixes anyone may read.
PUBLIC_PREFIXES = ("/api/static", "/v2/health/")
PREDICT = "/v2/models/{name}/predict"
METRICS = "/metrics"


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which requests need a token, and which tokens are good."""

    tokens: tuple[bytes, ...] = dataclasses.field(repr=False)
    predict: bool = True
    metrics: bool = True

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Policy | None:
        """The policy, or ``None`` when no token is configured."""
        if not settings.auth_tokens:
            return None
        return cls(
            tokens=tuple(t.encode() for t in settings.auth_tokens),
            predict=settings.auth_predict,
            metrics=settings.auth_metrics,
        )

    def protects(self, method: str, path: str) -> bool:
        """Whether ``method`` on the route template ``path`` needs a token."""
        if method in _READS and (
            path in PUBLIC or any(path.startswith(p) for p in PUBLIC_PREFIXES)
        ):
            return False
        if path == PREDICT and method == "POST":
            return self.predict
        if path == METRICS and method in _READS:
            return self.metrics
        return True

    def check(self, authorization: str | None) -> None:
        """Accept a request's ``Authorization`` header, or raise.

        :raises Unauthorized: without a bearer token, or with a wrong one.
        """
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Unauthorized(invalid=False)
        candidate = given.strip().encode()
        # Every token is compared, so the time taken says nothing of which
        # one (if any) was close.
        good = False
        for token in self.tokens:
            good |= hmac.compare_digest(candidate, token)
        if not good:
            raise Unauthorized(invalid=True)


def middlewares(settings: ApiSettings) -> list[Any]:
    """The authentication middleware, if tokens are configured."""
    policy = Policy.from_settings(settings)
    if policy is None:
        return []
    base = settings.base_path

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        path = template(request, base)
        # Unrouted requests go on to their 404 or 405.
        if path is not None and policy.protects(request.method, path):
            policy.check(request.headers.get("Authorization"))
        return await handler(request)

    return [authenticate]


def document(spec: dict[str, Any], settings: ApiSettings) -> None:
    """Declare the bearer scheme in an OpenAPI document, and mark each
    protected operation with it, so that Swagger UI offers to authorise."""
    policy = Policy.from_settings(settings)
    if policy is None:
        return
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A token the server was configured with.",
    }
    models = {p.split("/")[3] for p in spec.get("paths", {}) if _is_model_path(p)}
    for path, item in spec.get("paths", {}).items():
        route = _as_template(path, models)
        for method, op in item.items():
            if method in _METHODS and policy.protects(method.upper(), route):
                op["security"] = [{SCHEME: []}]
                # The shared 401: the error body, and the challenge.
                op.setdefault("responses", {}).update(refer_errors(spec, 401))


_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _is_model_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) > 3 and parts[1:3] == ["v2", "models"] and bool(parts[3])


def _as_template(path: str, models: set[str]) -> str:
    """A documented path as the route template it is served by."""
    parts = path.rstrip("/").split("/")
    if _is_model_path(path) and parts[3] in models:
        parts[3] = "{name}"
    return "/".join(parts) or "/"
