"""Optional bearer-token authentication.

Deny by default: with tokens configured, every endpoint needs one except
those declared :attr:`~deepserve.api.endpoints.Access.PUBLIC` in the app's
list of endpoints (:func:`deepserve.api.app.declare`). Those are read-only
and tell a client only what the OpenAPI document already tells it: the
version documents and the OpenAPI document, the model list and each model's
metadata, the Swagger UI and its files, and health and readiness, which
probes must reach without credentials.

Predictions are protected unless ``auth_predict`` is off, ``/metrics`` unless
``auth_metrics`` is off. Training, debug and any endpoint added later are
protected unless declared otherwise.

Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from deepserve.api import oip_docs
from deepserve.api.endpoints import Access, Endpoint, endpoint_of
from deepserve.api.errors import Handler
from deepserve.api.openapi import refer_errors
from deepserve.exceptions import Unauthorized
from deepserve.settings import ApiSettings

#: The security scheme's name in the OpenAPI document.
SCHEME = "bearerAuth"


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

    def protects(self, access: Access) -> bool:
        """Whether an endpoint declared with ``access`` needs a token."""
        if access is Access.PUBLIC:
            return False
        if access is Access.PREDICT:
            return self.predict
        if access is Access.METRICS:
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

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        endpoint = endpoint_of(request)
        # Unrouted requests go on to their 404 or 405.
        if endpoint is not None and policy.protects(endpoint.access):
            policy.check(request.headers.get("Authorization"))
        return await handler(request)

    return [authenticate]


def document(
    spec: dict[str, Any],
    settings: ApiSettings,
    endpoints: Iterable[Endpoint],
    models: Iterable[str],
) -> None:
    """Declare the bearer scheme in an OpenAPI document, and mark the
    operation of each protected endpoint (written for each of ``models``)
    with it, so that Swagger UI offers to authorise."""
    policy = Policy.from_settings(settings)
    if policy is None:
        return
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A token the server was configured with.",
    }
    paths = spec.get("paths", {})
    names = list(models)
    for endpoint in endpoints:
        if not policy.protects(endpoint.access):
            continue
        for path in endpoint.documented_paths(names):
            op = paths.get(path, {}).get(endpoint.method.lower())
            if op is None:  # a model without the operation
                continue
            op["security"] = [{SCHEME: []}]
            # The shared 401: the error body, and the challenge.
            if endpoint.oip:
                op.setdefault("responses", {}).update(oip_docs.errors(401))
            else:
                op.setdefault("responses", {}).update(refer_errors(spec, 401))
