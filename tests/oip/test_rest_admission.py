"""An inference the server would refuse is refused before its body is read."""

from __future__ import annotations

from deepserve.api import create_app
from deepserve.settings import ApiSettings

LIMIT = 1024


async def test_unknown_models_and_versions_are_refused_before_the_body(
    aiohttp_client, registry
):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(client_max_size=LIMIT))
    )
    too_big = b"x" * (LIMIT * 4)
    for path in ("/v2/models/nosuch/infer", "/v2/models/classy/versions/v9/infer"):
        resp = await client.post(path, data=too_big)
        assert resp.status == 404, path  # not 413: the body was never read
        assert "error" in await resp.json()
    # a served model reads it, and finds it too large
    resp = await client.post("/v2/models/classy/infer", data=too_big)
    assert resp.status == 413
    assert "error" in await resp.json()


async def test_a_draining_model_is_refused_before_the_body(aiohttp_client, fake_site):
    from deepserve.settings import ExecutorSettings
    from tests.conftest import start_registry

    registry = await start_registry(["minimal"], ExecutorSettings(kind="inline"))
    try:
        app = create_app(registry, ApiSettings(client_max_size=LIMIT))
        client = await aiohttp_client(app)
        registry.drain()
        resp = await client.post("/v2/models/minimal/infer", data=b"x" * (LIMIT * 4))
        assert resp.status == 503
        assert "shutting down" in (await resp.json())["error"]
    finally:
        await registry.close()
