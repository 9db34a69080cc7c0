"""Bearer-token authentication through real HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from deepserve.api import create_app
from deepserve.client import ApiError, AsyncClient
from deepserve.settings import ApiSettings
from tests.checks import assert_error
from tests.conftest import GOOD_MODELS

TOKEN = "s3cret-token-for-tests"
OTHER = "another-accepted-token"
GOOD = {"Authorization": f"Bearer {TOKEN}"}

#: (method, path, status with a good token) of every protected endpoint.
PROTECTED = [
    ("POST", "/v2/models/oldstyle/predict/?text=hi", 200),
    ("POST", "/v2/models/oldstyle/train/?epochs=x", 422),  # reached validation
    ("GET", "/v2/models/oldstyle/train/", 200),
    ("GET", "/v2/models/oldstyle/train/nosuchjob", 404),
    ("DELETE", "/v2/models/oldstyle/train/nosuchjob", 404),
    ("GET", "/v2/debug/", 200),
    ("GET", "/metrics", 200),
]
MODELS = tuple(GOOD_MODELS)
PUBLIC = [
    "/v2/health/live",
    "/v2/health/ready/",
    "/v2/models/oldstyle/ready",
    "/",
    "/swagger.json",
    "/v2/",
    "/v2/models/",
    "/v2/models/oldstyle/",
    "/v2/models/oldstyle",
    "/api",
    "/api/static/swagger-ui.css",
]


def secured(**overrides: Any) -> ApiSettings:
    settings: dict[str, Any] = {
        "auth_tokens": (TOKEN, OTHER),
        "debug_endpoint": True,
        **overrides,
    }
    return ApiSettings(**settings)


@pytest.fixture
async def client(aiohttp_client, registry):  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(registry, secured()))


@pytest.mark.parametrize(("method", "path", "_ok"), PROTECTED)
async def test_protected_endpoints_need_a_token(client, method, path, _ok):
    resp = await client.request(method, path)
    body = await assert_error(resp, 401)
    assert body["title"] == "Unauthorized"
    assert "Authorization: Bearer" in body["message"]
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="deepserve"'


@pytest.mark.parametrize(("method", "path", "_ok"), PROTECTED)
@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        "Bearer",
        TOKEN,
    ],
)
async def test_wrong_tokens_are_refused(client, method, path, _ok, authorization):
    resp = await client.request(method, path, headers={"Authorization": authorization})
    await assert_error(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="deepserve"')


async def test_a_wrong_token_is_named_invalid(client):
    resp = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    body = await assert_error(resp, 401)
    assert "not valid" in body["message"]
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize(("method", "path", "ok"), PROTECTED)
async def test_a_good_token_opens_protected_endpoints(client, method, path, ok):
    resp = await client.request(method, path, headers=GOOD)
    assert resp.status == ok, await resp.text()


async def test_every_configured_token_works_and_scheme_is_case_insensitive(client):
    for header in (f"Bearer {OTHER}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "):
        resp = await client.get("/metrics", headers={"Authorization": header})
        assert resp.status == 200, header


@pytest.mark.parametrize("path", PUBLIC)
async def test_public_endpoints_stay_open(client, path):
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()


async def test_unknown_paths_and_methods_are_answered_as_usual(client):
    await assert_error(await client.get("/v2/nowhere"), 404)
    await assert_error(await client.get("/v2/models/nosuchmodel/"), 404)
    # A public path does not make other methods on it public.
    await assert_error(await client.post("/v2/models/"), 405)


async def test_predictions_can_be_left_open(aiohttp_client, registry):
    client = await aiohttp_client(create_app(registry, secured(auth_predict=False)))
    resp = await client.post("/v2/models/oldstyle/predict/?text=hi")
    assert resp.status == 200, await resp.text()
    await assert_error(await client.get("/v2/models/oldstyle/train/"), 401)
    await assert_error(await client.get("/v2/debug/"), 401)
    await assert_error(await client.get("/metrics"), 401)


async def test_metrics_can_be_left_open(aiohttp_client, registry):
    client = await aiohttp_client(create_app(registry, secured(auth_metrics=False)))
    assert (await client.get("/metrics")).status == 200
    await assert_error(await client.post("/v2/models/oldstyle/predict/"), 401)


async def test_no_tokens_means_no_authentication(aiohttp_client, registry):
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    for method, path, ok in PROTECTED:
        if path != "/v2/debug/":  # off by default
            resp = await client.request(method, path)
            assert resp.status == ok, (path, await resp.text())
    assert (await client.get("/v2/debug/")).status == 404


async def test_behind_a_base_path(aiohttp_client, registry):
    client = await aiohttp_client(create_app(registry, secured(base_path="/deep")))
    await assert_error(await client.post("/deep/v2/models/oldstyle/predict/"), 401)
    assert (await client.get("/deep/v2/models/")).status == 200
    resp = await client.post("/deep/v2/models/oldstyle/predict/", headers=GOOD)
    assert resp.status == 200


async def test_settings_never_show_tokens():
    assert TOKEN not in repr(secured())


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    }


async def test_openapi_document_declares_the_scheme(client):
    spec = await (await client.get("/swagger.json")).json()
    validate(spec)
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token the server was configured with.",
    }
    ops = operations(spec)
    secured_ops = {key for key, op in ops.items() if "security" in op}
    assert ("post", "/v2/models/oldstyle/predict/") in secured_ops
    assert ("post", "/v2/models/oldstyle/infer") in secured_ops
    assert ("post", "/v2/models/classy/train/") in secured_ops
    assert ("get", "/v2/models/classy/train/") in secured_ops
    assert ("get", "/v2/models/classy/train/{uuid}") in secured_ops
    assert ("delete", "/v2/models/classy/train/{uuid}") in secured_ops
    assert ("get", "/v2/debug/") in secured_ops
    assert ("get", "/metrics") in secured_ops
    for key in secured_ops:
        assert ops[key]["security"] == [{"bearerAuth": []}]
        if key[1].endswith("/infer"):  # the Open Inference Protocol's error body
            unauthorized = ops[key]["responses"]["401"]
            assert unauthorized["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/InferenceError"
            }
            assert "WWW-Authenticate" in unauthorized["headers"]
            continue
        assert ops[key]["responses"]["401"] == {
            "$ref": "#/components/responses/Unauthorized"
        }
        refused = spec["components"]["responses"]["Unauthorized"]
        assert refused["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
        challenge = refused["headers"]["WWW-Authenticate"]
        assert challenge["required"] is True
        assert "Bearer" in challenge["description"]
    public = {key for key in ops if key not in secured_ops}
    assert public == {
        ("get", "/"),
        ("get", "/v2/"),
        ("get", "/v2/models/"),
        *{("get", f"/v2/models/{m}/") for m in MODELS},
        ("get", "/v2/health/live"),
        ("get", "/v2/health/ready"),
        *{("get", f"/v2/models/{m}/ready") for m in MODELS},
    }


async def test_openapi_document_follows_the_options(aiohttp_client, registry):
    settings = secured(auth_predict=False, auth_metrics=False)
    client = await aiohttp_client(create_app(registry, settings))
    spec = await (await client.get("/swagger.json")).json()
    validate(spec)
    ops = operations(spec)
    for opened in (("post", "/v2/models/oldstyle/predict/"), ("get", "/metrics")):
        assert "security" not in ops[opened]
        assert "401" not in ops[opened]["responses"]
    assert "security" in ops[("post", "/v2/models/classy/train/")]
    assert "401" in ops[("post", "/v2/models/classy/train/")]["responses"]


async def test_openapi_document_without_auth_has_no_scheme(aiohttp_client, registry):
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    spec = await (await client.get("/swagger.json")).json()
    assert "securitySchemes" not in spec["components"]
    assert "Unauthorized" not in spec["components"]["responses"]
    assert not any("security" in op for op in operations(spec).values())


async def test_deepserve_client_sends_its_token(client):
    url = str(client.make_url("/"))
    async with AsyncClient(url, token=TOKEN) as good:
        assert "oldstyle" in {m["name"] for m in await good.models()}
        assert (await good.predict("oldstyle", text="hi"))["predictions"][
            "text"
        ] == "hi"
        assert isinstance(await good.trainings("oldstyle"), list)
    async with AsyncClient(url) as anonymous:
        await anonymous.metadata("oldstyle")  # public
        with pytest.raises(ApiError) as refused:
            await anonymous.predict("oldstyle", text="hi")
    assert refused.value.status == 401
    assert "Bearer" in refused.value.detail
