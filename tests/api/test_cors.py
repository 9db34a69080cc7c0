"""CORS: off by default; preflights and simple requests when configured."""

from __future__ import annotations

from typing import Any

import pytest

from deepserve.api import create_app
from deepserve.settings import ApiSettings
from tests.checks import assert_error

APP = "https://app.example"
PREDICT = "/v2/models/oldstyle/predict/"


def preflight(method: str = "POST", origin: str = APP, **extra: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        **extra,
    }


async def cors_client(aiohttp_client: Any, registry: Any, **settings: Any) -> Any:
    return await aiohttp_client(create_app(registry, ApiSettings(**settings)))


async def test_off_by_default(client):
    resp = await client.options(PREDICT, headers=preflight())
    await assert_error(resp, 405)
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.get("/v2/models/", headers={"Origin": APP})
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_preflight_of_an_allowed_origin(aiohttp_client, registry):
    client = await cors_client(aiohttp_client, registry, cors_origins=(APP,))
    resp = await client.options(
        PREDICT,
        headers=preflight(
            **{"Access-Control-Request-Headers": "authorization, content-type"}
        ),
    )
    assert resp.status == 204, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Methods"] == "POST"
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in resp.headers["Vary"]
    # A resource with several methods lists them all.
    resp = await client.options("/v2/models/oldstyle/train/", headers=preflight("GET"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST"


async def test_preflight_needs_no_token(aiohttp_client, registry):
    client = await cors_client(
        aiohttp_client, registry, cors_origins=(APP,), auth_tokens=("tok",)
    )
    resp = await client.options(PREDICT, headers=preflight())
    assert resp.status == 204
    # The request itself does, and its 401 is readable by the page.
    resp = await client.post(PREDICT, headers={"Origin": APP})
    await assert_error(resp, 401)
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert "WWW-Authenticate" in resp.headers["Access-Control-Expose-Headers"]
    resp = await client.post(
        PREDICT, headers={"Origin": APP, "Authorization": "Bearer tok"}
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP


async def test_preflight_of_another_origin_is_refused(aiohttp_client, registry):
    client = await cors_client(aiohttp_client, registry, cors_origins=(APP,))
    resp = await client.options(
        PREDICT, headers=preflight(origin="https://evil.example")
    )
    body = await assert_error(resp, 403)
    assert "https://evil.example" in body["message"]
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_preflight_of_an_unknown_path_is_404(aiohttp_client, registry):
    client = await cors_client(aiohttp_client, registry, cors_origins=(APP,))
    await assert_error(await client.options("/nowhere", headers=preflight()), 404)


async def test_a_plain_options_request_is_no_preflight(aiohttp_client, registry):
    client = await cors_client(aiohttp_client, registry, cors_origins=(APP,))
    await assert_error(await client.options(PREDICT), 405)


@pytest.mark.parametrize("origin", [APP, APP + "/"])
async def test_simple_requests_from_an_allowed_origin(aiohttp_client, registry, origin):
    client = await cors_client(
        aiohttp_client, registry, cors_origins=(origin, "https://other.example")
    )
    resp = await client.get("/v2/models/", headers={"Origin": APP})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert "Origin" in resp.headers["Vary"]
    assert "Content-Disposition" in resp.headers["Access-Control-Expose-Headers"]
    # Errors too, or the page could not read them.
    resp = await client.get("/v2/models/nosuch/", headers={"Origin": APP})
    await assert_error(resp, 404)
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    # A streamed file answer too.
    resp = await client.post(
        "/v2/models/files/predict/",
        params={"accept": "text/csv"},
        headers={"Origin": APP},
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP


async def test_simple_requests_from_another_origin(aiohttp_client, registry):
    client = await cors_client(aiohttp_client, registry, cors_origins=(APP,))
    resp = await client.get("/v2/models/", headers={"Origin": "https://evil.example"})
    assert resp.status == 200  # the browser, not the server, withholds it
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_any_origin(aiohttp_client, registry):
    client = await cors_client(aiohttp_client, registry, cors_origins=("*",))
    resp = await client.get("/v2/models/", headers={"Origin": "https://x.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    resp = await client.options(PREDICT, headers=preflight(origin="https://y.example"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
