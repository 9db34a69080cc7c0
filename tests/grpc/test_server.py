"""GrpcServer, listening for real, driven by Triton's own gRPC clients."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy
import pytest
import pytest_asyncio

grpc = pytest.importorskip("grpc")
tritongrpc = pytest.importorskip("tritonclient.grpc")

from tritonclient.utils import InferenceServerException  # noqa: E402

from deepserve import exceptions  # noqa: E402
from deepserve.grpc import proto  # noqa: E402
from deepserve.grpc.server import GrpcServer, status_of  # noqa: E402
from deepserve.model import TensorSpec  # noqa: E402
from deepserve.oip.types import (  # noqa: E402
    InferRequest,
    InferResponse,
    ModelMetadata,
    ServerMetadata,
    Tensor,
)

TOKEN = "s3cret-token"

#: Model name -> the error the echo raises for it.
ERRORS: dict[str, exceptions.DeepserveError | Exception] = {
    "missing": exceptions.ModelNotFound("missing"),
    "bad": exceptions.BadInput("Input 'x': wrong shape", {"inputs.x": ["shape"]}),
    "nope": exceptions.NotSupported("nope", "infer"),
    "busy": exceptions.Overloaded("busy", 7, retry_after=3),
    "dead": exceptions.WorkerDied("dead", "killed by signal 9"),
    "late": exceptions.DeadlineExceeded("late", 2.5),
    "huge": exceptions.PayloadTooLarge(100),
    "broken": exceptions.ModelFailed(
        "broken", "ValueError", "secret detail", "Traceback (most recent call)"
    ),
    "wrong": exceptions.BadModelOutput("wrong", "no output 'y'"),
    "bug": RuntimeError("secret internals"),
}


class Echo:
    """An ``Inference`` whose models answer with their inputs.

    Model ``cold`` is not ready; the names of :data:`ERRORS` raise their
    error; ``slow`` sleeps for its ``sleep`` parameter (forever without).
    """

    def __init__(self) -> None:
        self.is_ready = True
        self.requests: list[InferRequest] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    def _check(self, name: str) -> None:
        if name == "missing":
            raise exceptions.ModelNotFound(name)

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.is_ready

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self._check(name)
        return name != "cold"

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata("deepserve", "9.8.7", ("binary_tensor_data", "x"))

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        self._check(name)
        return ModelMetadata(
            name,
            (version or "2", "1"),
            "echo",
            (TensorSpec("x", "FP32", (-1, 3)), TensorSpec("s", "BYTES", (-1,))),
            (TensorSpec("x", "FP32", (-1, 3)),),
        )

    async def infer(self, request: InferRequest) -> InferResponse:
        self.requests.append(request)
        if request.model_name in ERRORS:
            raise ERRORS[request.model_name]
        if request.model_name == "slow":
            self.started.set()
            try:
                await asyncio.sleep(request.parameters.get("sleep", 3600))
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        outputs = list(request.inputs)
        if request.outputs is not None:
            by_name = {t.name: t for t in outputs}
            for wanted in request.outputs:
                if wanted.name not in by_name:
                    raise exceptions.BadInput(f"No output '{wanted.name}'")
            outputs = [by_name[wanted.name] for wanted in request.outputs]
        return InferResponse(
            request.model_name,
            [Tensor(t.name, t.datatype, t.shape, t.data) for t in outputs],
            model_version=request.model_version or "2",
            id=request.id,
            parameters=request.parameters,
        )


Calls = list[tuple[str, str, float]]
Start = Callable[..., Awaitable[tuple[GrpcServer, Echo, Calls]]]


@pytest_asyncio.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[GrpcServer] = []

    async def start(**options: Any) -> tuple[GrpcServer, Echo, Calls]:
        echo, calls = Echo(), []
        server = GrpcServer(
            echo,
            host="127.0.0.1",
            port=0,
            on_request=lambda *call: calls.append(call),
            **options,
        )
        await server.start()
        servers.append(server)
        return server, echo, calls

    yield start
    for server in servers:
        await server.stop(0)


@pytest_asyncio.fixture
async def served(start: Start) -> tuple[GrpcServer, Echo, Calls]:
    return await start()


def client(server: GrpcServer) -> Any:
    return tritongrpc.InferenceServerClient(f"127.0.0.1:{server.port}")


async def call(server: GrpcServer, method: str, *args: Any, **kwargs: Any) -> Any:
    """A method of Triton's synchronous client, run in a thread."""
    triton = client(server)
    try:
        return await asyncio.to_thread(getattr(triton, method), *args, **kwargs)
    finally:
        triton.close()


async def refused(server: GrpcServer, method: str, *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(InferenceServerException) as caught:
        await call(server, method, *args, **kwargs)
    return caught.value


def tensor(name: str, data: numpy.ndarray[Any, Any], datatype: str) -> Any:
    value = tritongrpc.InferInput(name, list(data.shape), datatype)
    value.set_data_from_numpy(data)
    return value


async def test_health_probes(served: tuple[GrpcServer, Echo, Calls]) -> None:
    server, echo, _ = served
    assert await call(server, "is_server_live") is True
    assert await call(server, "is_server_ready") is True
    echo.is_ready = False
    assert await call(server, "is_server_ready") is False
    assert await call(server, "is_model_ready", "m") is True
    assert await call(server, "is_model_ready", "cold", "1") is False
    error = await refused(server, "is_model_ready", "missing")
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "Model 'missing' is not served here" in error.message()


async def test_metadata(served: tuple[GrpcServer, Echo, Calls]) -> None:
    server, _, _ = served
    metadata = await call(server, "get_server_metadata", as_json=True)
    assert metadata == {
        "name": "deepserve",
        "version": "9.8.7",
        "extensions": ["binary_tensor_data", "x"],
    }
    model = await call(server, "get_model_metadata", "m", "5", as_json=True)
    assert model == {
        "name": "m",
        "versions": ["5", "1"],
        "platform": "echo",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": ["-1", "3"]},
            {"name": "s", "datatype": "BYTES", "shape": ["-1"]},
        ],
        "outputs": [{"name": "x", "datatype": "FP32", "shape": ["-1", "3"]}],
    }
    error = await refused(server, "get_model_metadata", "missing")
    assert error.status() == "StatusCode.NOT_FOUND"


async def test_infer_round_trips_every_kind_of_tensor(
    served: tuple[GrpcServer, Echo, Calls],
) -> None:
    server, echo, _ = served
    values = {
        "f": (numpy.array([[0.5, -1.25, 3e38]], dtype=numpy.float32), "FP32"),
        "i": (numpy.array([-(2**63), 0, 2**63 - 1], dtype=numpy.int64), "INT64"),
        "s": (
            numpy.array([[b"ab", b""], ["é".encode(), b"\0"]], dtype=object),
            "BYTES",
        ),
        "b": (numpy.array([True, False, True]), "BOOL"),
    }
    result = await call(
        server,
        "infer",
        "m",
        [tensor(name, data, datatype) for name, (data, datatype) in values.items()],
        model_version="3",
        request_id="req-9",
        parameters={"top": 5, "mode": "fast", "on": True},
    )
    for name, (data, _) in values.items():
        numpy.testing.assert_array_equal(result.as_numpy(name), data)
        assert result.as_numpy(name).dtype == data.dtype
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        "m",
        "3",
        "req-9",
    )
    [seen] = echo.requests
    assert (seen.model_name, seen.model_version, seen.id, seen.outputs) == (
        "m",
        "3",
        "req-9",
        None,
    )
    assert seen.parameters == {"top": 5, "mode": "fast", "on": True}
    assert [(t.name, t.datatype, t.shape) for t in seen.inputs] == [
        ("f", "FP32", (1, 3)),
        ("i", "INT64", (3,)),
        ("s", "BYTES", (2, 2)),
        ("b", "BOOL", (3,)),
    ]
    assert seen.inputs[2].data.tolist() == [[b"ab", b""], ["é".encode(), b"\0"]]


async def test_infer_passes_the_requested_outputs(
    served: tuple[GrpcServer, Echo, Calls],
) -> None:
    server, echo, _ = served
    a = numpy.arange(6, dtype=numpy.int32).reshape(2, 3)
    b = numpy.ones(2, dtype=numpy.float64)
    result = await call(
        server,
        "infer",
        "m",
        [tensor("a", a, "INT32"), tensor("b", b, "FP64")],
        outputs=[tritongrpc.InferRequestedOutput("b")],
    )
    numpy.testing.assert_array_equal(result.as_numpy("b"), b)
    assert result.as_numpy("a") is None
    assert [o.name for o in echo.requests[0].outputs or []] == ["b"]


@pytest.mark.parametrize(
    ("model", "status", "details"),
    [
        ("missing", "NOT_FOUND", "Model 'missing' is not served here"),
        ("bad", "INVALID_ARGUMENT", "Input 'x': wrong shape"),
        ("nope", "UNIMPLEMENTED", "does not implement 'infer'"),
        ("busy", "UNAVAILABLE", "7 requests queued); retry later (retry after 3 s)"),
        ("dead", "UNAVAILABLE", "killed by signal 9 (retry after 1 s)"),
        ("late", "DEADLINE_EXCEEDED", "did not answer within 2.5 s"),
        ("huge", "RESOURCE_EXHAUSTED", "exceeds the limit of 100 bytes"),
        ("broken", "INTERNAL", "Model 'broken' failed with ValueError"),
        ("wrong", "INTERNAL", "returned an invalid response: no output 'y'"),
        ("bug", "INTERNAL", "internal error"),
    ],
)
async def test_errors_become_status_codes(
    served: tuple[GrpcServer, Echo, Calls], model: str, status: str, details: str
) -> None:
    server, _, calls = served
    error = await refused(
        server, "infer", model, [tensor("x", numpy.zeros(1, numpy.float32), "FP32")]
    )
    assert error.status() == f"StatusCode.{status}"
    assert details in error.message()
    for secret in ("secret", "Traceback"):
        assert secret not in error.message()
    assert calls[-1][:2] == ("ModelInfer", status)


async def test_an_unexpected_error_is_logged(
    served: tuple[GrpcServer, Echo, Calls], caplog: pytest.LogCaptureFixture
) -> None:
    server, _, _ = served
    await refused(server, "infer", "bug", [tensor("x", numpy.zeros(1), "FP64")])
    [record] = [r for r in caplog.records if r.name == "deepserve.grpc.server"]
    assert "ModelInfer" in record.getMessage()
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])


async def raw_call(server: GrpcServer, method: str, request: Any, **kwargs: Any) -> Any:
    """``method`` called over a plain channel with our own messages
    (``request`` as bytes is sent as it is)."""
    _, response_class = proto.MESSAGES[method]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = channel.unary_unary(
            f"/{proto.SERVICE}/{method}",
            request_serializer=None
            if isinstance(request, bytes)
            else (lambda m: m.SerializeToString()),
            response_deserializer=response_class.FromString,
        )
        return await stub(request, **kwargs)


async def test_typed_contents_are_read(served: tuple[GrpcServer, Echo, Calls]) -> None:
    server, echo, _ = served
    request = proto.ModelInferRequest(model_name="m", id="t")
    x = request.inputs.add(name="x", datatype="INT16", shape=[2, 2])
    x.contents.int_contents.extend([1, -2, 3, -32768])
    s = request.inputs.add(name="s", datatype="BYTES", shape=[2])
    s.contents.bytes_contents.extend([b"hi", b"there"])
    response = await raw_call(server, "ModelInfer", request)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("x", "INT16", [2, 2]),
        ("s", "BYTES", [2]),
    ]
    assert numpy.frombuffer(response.raw_output_contents[0], "<i2").tolist() == [
        1,
        -2,
        3,
        -32768,
    ]
    assert response.raw_output_contents[1] == b"\2\0\0\0hi\5\0\0\0there"
    assert echo.requests[0].inputs[0].data.dtype == numpy.int16


async def test_bad_tensors_are_invalid_arguments_naming_them(
    served: tuple[GrpcServer, Echo, Calls],
) -> None:
    server, echo, calls = served
    request = proto.ModelInferRequest(model_name="m")
    request.inputs.add(name="pixels", datatype="FP32", shape=[2, 2])
    request.raw_input_contents.append(b"\0" * 12)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(server, "ModelInfer", request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor 'pixels'" in str(caught.value.details())
    assert "needs 16" in str(caught.value.details())
    assert not echo.requests
    assert calls == [("ModelInfer", "INVALID_ARGUMENT", pytest.approx(0, abs=1))]


async def test_an_unreadable_message_is_an_invalid_argument(
    served: tuple[GrpcServer, Echo, Calls],
) -> None:
    server, _, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(server, "ModelInfer", b"\xff\xff\xff")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelInferRequest" in str(caught.value.details())


async def test_tokens_guard_inference_but_not_probes_and_metadata(start: Start) -> None:
    server, _, calls = await start(tokens=frozenset({TOKEN, "other"}))
    x = [tensor("x", numpy.zeros(2, numpy.float32), "FP32")]
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        error = await refused(server, "infer", "m", x, headers=headers)
        assert error.status() == "StatusCode.UNAUTHENTICATED", headers
    assert "Bearer <token>" in error.message() or "not valid" in error.message()
    missing = await refused(server, "infer", "m", x)
    assert "authorization: Bearer <token>" in missing.message()
    assert calls[-1][:2] == ("ModelInfer", "UNAUTHENTICATED")
    # The health probes and the metadata stay open, as over HTTP.
    assert await call(server, "is_server_live") is True
    assert await call(server, "is_server_ready") is True
    assert await call(server, "is_model_ready", "m") is True
    assert (await call(server, "get_server_metadata")).name
    assert (await call(server, "get_model_metadata", "m")).name == "m"
    # Either token opens the rest.
    for token in (TOKEN, "other"):
        headers = {"authorization": f"Bearer {token}"}
        result = await call(server, "infer", "m", x, headers=headers)
        assert result.as_numpy("x").tolist() == [0, 0]
        metadata = await call(server, "get_server_metadata", headers=headers)
        assert metadata.name == "deepserve"


async def test_open_methods_may_open_inference(start: Start) -> None:
    from deepserve.grpc.server import OPEN_METHODS

    server, _, _ = await start(
        tokens=frozenset({TOKEN}), open_methods=OPEN_METHODS | {"ModelInfer"}
    )
    x = [tensor("x", numpy.zeros(2, numpy.float32), "FP32")]
    assert (await call(server, "infer", "m", x)).as_numpy("x").tolist() == [0, 0]


async def test_without_tokens_nothing_is_asked(
    served: tuple[GrpcServer, Echo, Calls],
) -> None:
    server, _, _ = served
    headers = {"authorization": "Bearer anything"}
    assert (await call(server, "get_server_metadata", headers=headers)).name


async def test_the_clients_deadline_cancels_the_inference(
    served: tuple[GrpcServer, Echo, Calls],
) -> None:
    server, echo, calls = served
    x = [tensor("x", numpy.zeros(1, numpy.float32), "FP32")]
    started = time.monotonic()
    error = await refused(server, "infer", "slow", x, client_timeout=0.3)
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 5
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    for _ in range(50):  # the server records the RPC as it unwinds
        if calls:
            break
        await asyncio.sleep(0.02)
    assert calls[0][:2] == ("ModelInfer", "DEADLINE_EXCEEDED")
    assert calls[0][2] >= 0.25


async def test_a_cancelled_call_cancels_the_inference(
    served: tuple[GrpcServer, Echo, Calls],
) -> None:
    server, echo, calls = served
    request = proto.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="BOOL", shape=[1])
    request.raw_input_contents.append(b"\1")
    task = asyncio.ensure_future(raw_call(server, "ModelInfer", request))
    await asyncio.wait_for(echo.started.wait(), 5)
    task.cancel()
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    for _ in range(50):
        if calls:
            break
        await asyncio.sleep(0.02)
    assert calls[0][:2] == ("ModelInfer", "CANCELLED")


def slow_request(seconds: float | None) -> Any:
    request = proto.ModelInferRequest(model_name="slow")
    if seconds is not None:
        request.parameters["sleep"].double_param = seconds
    request.inputs.add(name="x", datatype="INT8", shape=[1])
    request.raw_input_contents.append(b"\7")
    return request


async def test_stop_lets_the_calls_in_progress_finish(start: Start) -> None:
    server, echo, calls = await start()
    task = asyncio.ensure_future(raw_call(server, "ModelInfer", slow_request(0.5)))
    await asyncio.wait_for(echo.started.wait(), 5)
    await server.stop(10)
    response = await task
    assert response.raw_output_contents[0] == b"\7"
    assert not echo.cancelled.is_set()
    assert calls[0][:2] == ("ModelInfer", "OK")


async def test_stop_cancels_what_outlives_the_grace(start: Start) -> None:
    server, echo, _ = await start()
    task = asyncio.ensure_future(raw_call(server, "ModelInfer", slow_request(None)))
    await asyncio.wait_for(echo.started.wait(), 5)
    started = time.monotonic()
    await server.stop(0.3)
    assert time.monotonic() - started < 3
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    with pytest.raises(grpc.aio.AioRpcError):
        await task


async def test_a_port_in_use_is_an_error(
    served: tuple[GrpcServer, Echo, Calls],
) -> None:
    server, echo, _ = served
    assert server.port > 0
    second = GrpcServer(echo, host="127.0.0.1", port=server.port)
    with pytest.raises(OSError, match=f"127.0.0.1:{server.port}"):
        await second.start()
    with pytest.raises(RuntimeError):
        second.port  # noqa: B018


async def test_messages_over_the_limit_are_refused(start: Start) -> None:
    server, echo, _ = await start(max_message_bytes=4096)
    small = numpy.zeros(100, numpy.float32)
    assert (await call(server, "infer", "m", [tensor("x", small, "FP32")])).as_numpy(
        "x"
    ).tolist() == small.tolist()
    big = numpy.zeros(2048, numpy.float32)
    error = await refused(server, "infer", "m", [tensor("x", big, "FP32")])
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert len(echo.requests) == 1


async def test_a_failing_callback_does_not_fail_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*_: Any) -> None:
        raise ValueError("metrics down")

    server = GrpcServer(Echo(), host="127.0.0.1", port=0, on_request=explode)
    await server.start()
    try:
        assert await call(server, "is_server_live") is True
    finally:
        await server.stop(0)
    assert any("callback" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "INVALID_ARGUMENT"),
        (404, "NOT_FOUND"),
        (418, "FAILED_PRECONDITION"),
        (503, "UNAVAILABLE"),
        (500, "INTERNAL"),
    ],
)
def test_a_models_http_errors_keep_their_meaning(status: int, code: str) -> None:
    error = exceptions.ModelHTTPError("m", status, "the model says no")
    assert status_of(error) == (getattr(grpc.StatusCode, code), "the model says no")


def test_unauthorized_and_malformed_errors() -> None:
    unauthorized = exceptions.Unauthorized(invalid=True)
    assert status_of(unauthorized)[0] == grpc.StatusCode.UNAUTHENTICATED
    malformed = exceptions.MalformedRequest("bad body")
    assert status_of(malformed) == (grpc.StatusCode.INVALID_ARGUMENT, "bad body")
    stopping = exceptions.NotRunning("m", "the server stops")
    assert status_of(stopping) == (
        grpc.StatusCode.UNAVAILABLE,
        "Model 'm' is not available: the server stops",
    )


def test_the_other_layers_never_need_grpc() -> None:
    code = (
        "import sys, deepserve.api, deepserve.cli_run, deepserve.oip.types, "
        "deepserve.grpc; print(sorted(m for m in ('grpc', 'google.protobuf') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
