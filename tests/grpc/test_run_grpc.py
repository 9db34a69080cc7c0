"""The gRPC service as ``deepserve run`` builds it over an app: the app's
own protocol service, tokens and metrics, and --noauth-predict."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy
import pytest

from deepserve import cli_run
from deepserve.api import create_app, metrics
from deepserve.settings import ApiSettings, ExecutorSettings, ServerSettings
from tests.conftest import start_registry

pytest.importorskip("grpc")
tritongrpc = pytest.importorskip("tritonclient.grpc.aio")
from tritonclient.utils import InferenceServerException  # noqa: E402

TOKEN = "grpc-run-token"


def words_input() -> list[object]:
    tensor = tritongrpc.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(numpy.array([b"a b"], dtype=object))
    return [tensor]


@pytest.fixture
async def registry(fake_site):  # type: ignore[no-untyped-def]
    reg = await start_registry(["oldstyle"], ExecutorSettings(kind="inline"))
    yield reg
    await reg.close()


async def serve(registry, auth_predict: bool) -> AsyncIterator[object]:  # type: ignore[no-untyped-def]
    api = ApiSettings(auth_tokens=(TOKEN,), auth_predict=auth_predict)
    settings = ServerSettings(grpc_port=0, api=api)
    app = create_app(registry, api)
    (server,) = cli_run._grpc(app, settings)
    await server.start()
    try:
        yield server, app
    finally:
        await server.stop(0)


@pytest.mark.parametrize("auth_predict", [True, False])
async def test_predictions_follow_noauth_predict(registry, auth_predict):
    async for server, app in serve(registry, auth_predict):
        client = tritongrpc.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            if auth_predict:
                with pytest.raises(InferenceServerException) as info:
                    await client.infer("oldstyle", words_input())
                assert info.value.status() == "StatusCode.UNAUTHENTICATED"
            else:
                result = await client.infer("oldstyle", words_input())
                assert result.as_numpy("text").tolist() == [b"a b"]
            good = {"authorization": f"Bearer {TOKEN}"}
            result = await client.infer("oldstyle", words_input(), headers=good)
            assert result.as_numpy("text").tolist() == [b"a b"]
        finally:
            await client.close()
        # counted with the app's HTTP requests
        text = (await app[metrics.METER].text()).decode()
        assert 'endpoint="/inference.GRPCInferenceService/ModelInfer"' in text
