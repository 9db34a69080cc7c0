"""The gRPC server of the Open Inference Protocol: ``inference.GRPCInferenceService``.

:class:`GrpcServer` listens with ``grpc.aio`` on the running event loop and
answers every method of the service by calling an
:class:`~deepserve.oip.types.Inference`. :func:`status_of` is the one place
where deepserve's errors become gRPC status codes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from deepserve import exceptions
from deepserve.grpc import convert, proto
from deepserve.oip.types import Inference

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "OPEN_METHODS",
    "GrpcServer",
    "OnRequest",
    "status_of",
]

log = logging.getLogger(__name__)

#: The methods open without a token by default: the health probes and the
#: metadata, public over HTTP too (``GET /v2``, ``GET /v2/models/{name}``).
OPEN_METHODS = frozenset(
    {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata"}
)

#: The largest message received or sent when none is configured.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Called once per RPC, when it ends, with the method (``"ModelInfer"``),
#: the status code's name (``"OK"``, ``"NOT_FOUND"``...) and its duration
#: in seconds.
OnRequest = Callable[[str, str, float], None]


class _Refused(Exception):
    """Ends an RPC with ``code`` and ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


#: The status of a model's own HTTP error, by its HTTP status; other 4xx
#: statuses become FAILED_PRECONDITION, the rest INTERNAL.
_HTTP_STATUSES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and details an RPC ends with when ``error`` is
    raised: deepserve's errors keep their message (a retry hint added when
    retrying may help), any other exception is an ``"internal error"``."""
    codes = grpc.StatusCode
    if isinstance(error, _Refused):
        return error.code, error.details
    if not isinstance(error, exceptions.DeepserveError):
        return codes.INTERNAL, "internal error"
    code = codes.INTERNAL
    if isinstance(error, exceptions.ModelNotFound):
        code = codes.NOT_FOUND
    elif isinstance(error, exceptions.BadInput | exceptions.MalformedRequest):
        code = codes.INVALID_ARGUMENT
    elif isinstance(error, exceptions.NotSupported):
        code = codes.UNIMPLEMENTED
    elif isinstance(error, exceptions.Overloaded | exceptions.WorkerDied):
        code = codes.UNAVAILABLE
    elif isinstance(error, exceptions.DeadlineExceeded):
        code = codes.DEADLINE_EXCEEDED
    elif isinstance(error, exceptions.PayloadTooLarge):
        code = codes.RESOURCE_EXHAUSTED
    elif isinstance(error, exceptions.Unauthorized):
        code = codes.UNAUTHENTICATED
    elif isinstance(error, exceptions.ModelHTTPError):
        code = _HTTP_STATUSES.get(
            error.status,
            codes.FAILED_PRECONDITION if 400 <= error.status < 500 else codes.INTERNAL,
        )
    details = error.message
    if code is codes.UNAVAILABLE and error.retry_after is not None:
        details += f" (retry after {error.retry_after} s)"
    return code, details


class GrpcServer:
    """``inference.GRPCInferenceService`` on ``host:port``, answered by
    ``inference``.

    :param tokens: the bearer tokens accepted; when any, every method but
        ``open_methods`` needs ``authorization: Bearer <token>`` metadata.
        Empty: no authentication.
    :param open_methods: the methods open without a token (add
        ``ModelInfer`` where predictions are open, ``--noauth-predict``).
    :param max_message_bytes: the largest request and response message;
        larger ones end with ``RESOURCE_EXHAUSTED``.
    :param on_request: called as each RPC ends (see :data:`OnRequest`).
    """

    def __init__(
        self,
        inference: Inference,
        *,
        host: str,
        port: int,
        tokens: frozenset[str] = frozenset(),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_request: OnRequest | None = None,
        open_methods: frozenset[str] = OPEN_METHODS,
    ) -> None:
        self._inference = inference
        self._open_methods = open_methods
        self._host = host
        self._requested_port = port
        self._tokens = tuple(token.encode() for token in tokens)
        self._max_message_bytes = max_message_bytes
        self._on_request = on_request
        self._server: Any = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked when asked for port 0)."""
        if self._port is None:
            raise RuntimeError("The gRPC server is not started")
        return self._port

    async def start(self) -> None:
        """Listen, on the running event loop; ``OSError`` when the address
        cannot be bound."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
                # A port in use is an error, not a port shared.
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    proto.SERVICE,
                    {method: self._handler(method) for method in proto.METHODS},
                ),
            )
        )
        host = f"[{self._host}]" if ":" in self._host else self._host
        address = f"{host}:{self._requested_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.5x raises where older ones return 0
            port = 0
        if not port:
            raise OSError(f"Cannot listen on {address} for gRPC (in use or not ours)")
        await server.start()
        self._server, self._port = server, port

    async def stop(self, grace: float) -> None:
        """Stop listening; the RPCs in progress have ``grace`` seconds to
        end before they are cancelled."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)

    def _handler(self, method: str) -> Any:
        request_class, _ = proto.MESSAGES[method]
        answer: Callable[[Any], Awaitable[Any]] = getattr(self, f"_{method}")
        open_method = method in self._open_methods

        async def handle(data: bytes, context: Any) -> Any:
            # Each outcome is recorded before the client can see it.
            started = time.monotonic()
            try:
                if self._tokens and not open_method:
                    self._authorize(context.invocation_metadata())
                try:
                    message = request_class.FromString(data)
                except DecodeError:
                    raise exceptions.MalformedRequest(
                        f"The {method}Request message cannot be parsed"
                    ) from None
                response = await answer(message)
            except asyncio.CancelledError:
                # The client cancelled, or its deadline passed.
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                self._record(
                    method,
                    grpc.StatusCode.DEADLINE_EXCEEDED
                    if expired
                    else grpc.StatusCode.CANCELLED,
                    started,
                )
                raise
            except Exception as error:
                code, details = status_of(error)
                if not isinstance(error, exceptions.DeepserveError | _Refused):
                    log.exception("gRPC %s failed", method)
                self._record(method, code, started)
                await context.abort(code, details)
            self._record(method, grpc.StatusCode.OK, started)
            return response

        return grpc.unary_unary_rpc_method_handler(
            handle, response_serializer=lambda message: message.SerializeToString()
        )

    def _authorize(self, metadata: Any) -> None:
        values = [value for key, value in metadata or () if key == "authorization"]
        if not values:
            raise _Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                "This method needs 'authorization: Bearer <token>' metadata",
            )
        scheme, _, token = str(values[0]).partition(" ")
        given = token.strip().encode()
        accepted = False
        for expected in self._tokens:
            accepted |= hmac.compare_digest(given, expected)
        if scheme.lower() != "bearer" or not accepted:
            raise _Refused(
                grpc.StatusCode.UNAUTHENTICATED, "The bearer token is not valid"
            )

    def _record(self, method: str, code: grpc.StatusCode, started: float) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(method, code.name, time.monotonic() - started)
        except Exception:
            log.exception("The gRPC request callback failed")

    # The methods, each from its request message to its response message.

    async def _ServerLive(self, message: Any) -> Any:
        return proto.ServerLiveResponse(live=self._inference.live())

    async def _ServerReady(self, message: Any) -> Any:
        return proto.ServerReadyResponse(ready=self._inference.ready())

    async def _ModelReady(self, message: Any) -> Any:
        ready = self._inference.model_ready(message.name, message.version or None)
        return proto.ModelReadyResponse(ready=ready)

    async def _ServerMetadata(self, message: Any) -> Any:
        return convert.server_metadata_to_proto(self._inference.server_metadata())

    async def _ModelMetadata(self, message: Any) -> Any:
        metadata = self._inference.model_metadata(message.name, message.version or None)
        return convert.model_metadata_to_proto(metadata)

    async def _ModelInfer(self, message: Any) -> Any:
        request = convert.request_from_proto(message)
        response = await self._inference.infer(request)
        return convert.response_to_proto(response)
