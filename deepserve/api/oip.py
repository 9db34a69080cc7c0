"""The Open Inference Protocol's REST endpoints.

They share the port, the middlewares (request ids, metrics, auth) and the
served models with the DEEPaaS API. Where the two protocols share a path,
one merged document answers both (see :func:`merge`): ``GET /v2`` and
``GET /v2/models/{name}`` carry DEEPaaS's keys and the protocol's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from deepserve.api.routes import Handlers, json_response
from deepserve.oip import rest
from deepserve.oip.rest import HEADER_LENGTH
from deepserve.oip.service import InferenceService
from deepserve.operations.negotiation import JSON

#: The app's protocol service, which the gRPC service shares.
SERVICE = web.AppKey("oip_service", InferenceService)


def merge(deepaas: dict[str, Any], protocol: dict[str, Any]) -> dict[str, Any]:
    """One document for a path both protocols answer: DEEPaaS's keys and
    the protocol's; where both have a key, DEEPaaS's value stays (its
    clients parse these paths strictly, the protocol's clients do not
    read the keys DEEPaaS shares)."""
    return {**protocol, **deepaas}


def version_of(request: web.Request) -> str | None:
    """The version a path names, or ``None`` for the default."""
    return request.match_info.get("version")


class OipHandlers:
    """The protocol's handlers over one :class:`InferenceService`."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    def server_metadata(self) -> dict[str, Any]:
        meta = self.service.server_metadata()
        return {
            "name": meta.name,
            "version": meta.version,
            "extensions": list(meta.extensions),
        }

    def model_metadata(self, request: web.Request) -> dict[str, Any]:
        name = request.match_info["name"]
        return self.service.model_metadata(name, version_of(request)).to_json()

    async def infer(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        # Before the body is read: a refused request is not first received.
        self.service.admit(name, version_of(request))
        header = request.headers.get(HEADER_LENGTH)
        length: int | None = None
        if header is not None:
            try:
                length = int(header)
            except ValueError:
                length = -1
            if length < 0:
                return _bad_header(header)
        body = await request.read()
        infer = rest.decode_request(
            body,
            header_length=length,
            model_name=name,
            model_version=version_of(request),
        )
        answer = await self.service.infer(infer)
        payload, json_length = rest.encode_response(answer, infer)
        if json_length is None:
            return web.Response(body=payload, content_type=JSON)
        return web.Response(
            body=payload,
            content_type="application/octet-stream",
            headers={HEADER_LENGTH: str(json_length)},
        )


class SharedPaths:
    """The paths both protocols answer, with one merged document."""

    def __init__(self, api: Handlers, oip: OipHandlers) -> None:
        self.api = api
        self.oip = oip

    async def version(self, _request: web.Request) -> web.Response:
        return json_response(merge(self.api.version_view(), self.oip.server_metadata()))

    async def model(self, request: web.Request) -> web.Response:
        deepaas = self.api.model_view(request)
        return json_response(merge(deepaas, self.oip.model_metadata(request)))


def _bad_header(value: str) -> web.Response:
    return web.json_response(
        {"error": f"{HEADER_LENGTH} must be a length in bytes, not {value!r}"},
        status=400,
    )
