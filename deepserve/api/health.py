"""Health and readiness on the Open Inference Protocol's paths.

``GET /v2/health/live``, ``GET /v2/health/ready`` and
``GET /v2/models/{name}/ready`` answer 200 when true and 503 otherwise,
with a small JSON body, so that Kubernetes probes and KServe/Triton clients
read them alike. The server listens while its models still warm: it is
live then, not ready, and its 503s carry ``Retry-After``; it is not ready
either once a shutdown began (no ``Retry-After``: it will not come back).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import Schema, fields

from deepserve.runtime import Registry

#: Probes must see the state now, never a cached answer.
_NO_STORE = {"Cache-Control": "no-store"}


class Liveness(Schema):
    live = fields.Bool(required=True, metadata={"description": "Always true"})


class Readiness(Schema):
    ready = fields.Bool(
        required=True,
        metadata={
            "description": "Every model started and warmed, and no shutdown begun"
        },
    )


class ModelReadiness(Schema):
    name = fields.Str(required=True, metadata={"description": "The model"})
    ready = fields.Bool(
        required=True,
        metadata={"description": "The model started and warmed, no shutdown begun"},
    )


def _answer(body: dict[str, Any], ok: bool, *, starting: bool = False) -> web.Response:
    """200 or 503; a 503 while models still start says when to ask again."""
    headers = {**_NO_STORE, "Retry-After": "1"} if starting and not ok else _NO_STORE
    return web.json_response(body, status=200 if ok else 503, headers=headers)


class Health:
    """The health handlers of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def live(self, _request: web.Request) -> web.Response:
        """The process answers HTTP; nothing more is checked."""
        return _answer({"live": True}, True)

    async def ready(self, _request: web.Request) -> web.Response:
        ready = self.registry.ready
        return _answer({"ready": ready}, ready, starting=not self.registry.draining)

    async def model_ready(self, request: web.Request) -> web.Response:
        """:raises ModelNotFound: for a model not served (a 404)."""
        info = request.match_info
        served = self.registry.version(info["name"], info.get("version"))
        return _answer(
            {"name": served.name, "ready": served.ready},
            served.ready,
            starting=not self.registry.draining,
        )
