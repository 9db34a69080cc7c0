"""Health and readiness endpoints over a real app, in every state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from deepserve import adapters, loader
from deepserve.api import create_app
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ApiSettings, ExecutorSettings
from tests.checks import assert_error


@pytest.fixture
async def fresh(fake_site: Path) -> AsyncIterator[Registry]:
    """An unstarted registry of two inline models: the test drives its life."""
    available = loader.discover(loader.installed_entry_points())
    inline = ExecutorSettings(kind="inline")
    registry = Registry(
        [
            ServedModel.create(ref, adapters.build(ref), inline)
            for ref in loader.select(available, ["minimal", "classy"])
        ]
    )
    yield registry
    await registry.close()


async def probe(client, path: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    resp = await client.get(path)
    assert resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    return resp.status, await resp.json()


async def retry_after(client, path: str, **kw) -> str | None:  # type: ignore[no-untyped-def]
    """The ``Retry-After`` of a request's answer, which must be a 503."""
    method = client.post if "predict" in path or "train" in path else client.get
    resp = await method(path, **kw)
    assert resp.status == 503, await resp.text()
    return resp.headers.get("Retry-After")


async def test_started_registry_is_live_and_ready(client):
    assert await probe(client, "/v2/health/live") == (200, {"live": True})
    assert await probe(client, "/v2/health/ready") == (200, {"ready": True})
    for name in ("oldstyle", "classy", "minimal", "files", "batchy"):
        assert await probe(client, f"/v2/models/{name}/ready") == (
            200,
            {"name": name, "ready": True},
        )


async def test_trailing_slash_is_accepted(client):
    assert await probe(client, "/v2/health/live/") == (200, {"live": True})
    assert await probe(client, "/v2/health/ready/") == (200, {"ready": True})
    assert (await probe(client, "/v2/models/classy/ready/"))[0] == 200


async def test_readiness_of_unknown_model_is_404_json(client):
    body = await assert_error(await client.get("/v2/models/nope/ready"), 404)
    assert "'nope'" in body["message"] and body["model"] == "nope"


async def test_not_ready_before_start_and_while_draining(aiohttp_client, fresh):
    client = await aiohttp_client(create_app(fresh, ApiSettings()))
    assert await probe(client, "/v2/health/live") == (200, {"live": True})
    assert await probe(client, "/v2/health/ready") == (503, {"ready": False})
    assert await probe(client, "/v2/models/minimal/ready") == (
        503,
        {"name": "minimal", "ready": False},
    )
    body = await assert_error(await client.post("/v2/models/minimal/predict/"), 503)
    assert "still starting" in body["message"] and body["model"] == "minimal"
    # Starting: ask again shortly.
    assert await retry_after(client, "/v2/health/ready") == "1"
    assert await retry_after(client, "/v2/models/minimal/ready") == "1"
    assert await retry_after(client, "/v2/models/minimal/predict/") == "1"

    await fresh.start()
    assert fresh.ready and not fresh.draining
    assert await probe(client, "/v2/health/ready") == (200, {"ready": True})
    assert (await client.post("/v2/models/minimal/predict/")).status == 200

    fresh.drain()
    assert not fresh.ready and fresh.draining
    assert await probe(client, "/v2/health/live") == (200, {"live": True})
    assert await probe(client, "/v2/health/ready") == (503, {"ready": False})
    assert (await probe(client, "/v2/models/classy/ready"))[0] == 503
    body = await assert_error(await client.post("/v2/models/minimal/predict/"), 503)
    assert "shutting down" in body["message"]
    body = await assert_error(
        await client.post("/v2/models/classy/train/", json={"seconds": 0}), 503
    )
    assert "shutting down" in body["message"] and body["model"] == "classy"
    # Shutting down: this server will not be back, so no Retry-After.
    assert await retry_after(client, "/v2/health/ready") is None
    assert await retry_after(client, "/v2/models/classy/ready") is None
    assert await retry_after(client, "/v2/models/minimal/predict/") is None


async def test_one_model_not_ready_makes_the_server_not_ready(aiohttp_client, fresh):
    client = await aiohttp_client(create_app(fresh, ApiSettings()))
    await fresh["minimal"].start()
    assert await probe(client, "/v2/models/minimal/ready") == (
        200,
        {"name": "minimal", "ready": True},
    )
    assert (await probe(client, "/v2/models/classy/ready"))[0] == 503
    assert await probe(client, "/v2/health/ready") == (503, {"ready": False})


async def test_health_under_base_path(aiohttp_client, registry):
    app = create_app(registry, ApiSettings(base_path="/deep"))
    client = await aiohttp_client(app)
    assert await probe(client, "/deep/v2/health/ready") == (200, {"ready": True})
    assert await probe(client, "/deep/v2/models/classy/ready") == (
        200,
        {"name": "classy", "ready": True},
    )


async def test_health_is_documented(client):
    spec = await (await client.get("/swagger.json")).json()
    validate(spec)
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/classy/ready"):
        responses = spec["paths"][path]["get"]["responses"]
        assert {"200", "503"} <= set(responses), path
    assert "404" in spec["paths"]["/v2/models/classy/ready"]["get"]["responses"]
    ready = spec["components"]["schemas"]["Readiness"]
    assert ready["properties"]["ready"]["type"] == "boolean"


async def test_every_documented_503_names_its_retry_after_header(client):
    spec = await (await client.get("/swagger.json")).json()
    unavailable = [
        (path, method, op["responses"]["503"])
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "503" in op.get("responses", {})
    ]
    assert ("/v2/health/ready", "get") in {(p, m) for p, m, _ in unavailable}
    assert ("/v2/models/classy/predict/", "post") in {(p, m) for p, m, _ in unavailable}
    for path, method, response in unavailable:
        if "$ref" in response:  # a shared error response
            name = response["$ref"].removeprefix("#/components/responses/")
            response = spec["components"]["responses"][name]
        header = response.get("headers", {}).get("Retry-After")
        assert header is not None, (path, method)
        assert header["schema"] == {"type": "integer", "minimum": 0}
        assert not header.get("required")  # a shutdown's 503 has none
