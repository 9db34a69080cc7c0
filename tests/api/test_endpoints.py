"""The one list of endpoints: what the app routes, documents and protects."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from deepserve.api import create_app
from deepserve.api.app import declare
from deepserve.api.endpoints import ROUTES, SLASH, Access, Endpoint
from deepserve.settings import ApiSettings

TOKEN = "endpoint-list-token"

#: Settings that switch each optional endpoint on or off.
SETTINGS = {
    "default": {},
    "everything": {"debug_endpoint": True, "base_path": "/deep"},
    "nothing optional": {
        "predict_endpoint": False,
        "train_endpoint": False,
        "doc_endpoint": False,
        "metrics_endpoint": False,
    },
}
#: Token settings, with each endpoint the policy may leave open.
SECURED = {
    "all protected": {"debug_endpoint": True},
    "predictions open": {"auth_predict": False, "debug_endpoint": True},
    "metrics open": {"auth_metrics": False, "base_path": "/deep"},
}


def canonical(path: str) -> str:
    """A route path as aiohttp names its resource: placeholders without
    their patterns."""
    return path.replace(SLASH, "{slash}")


def concrete(endpoint: Endpoint, base: str) -> str:
    """A path that reaches ``endpoint``: a served model, a training that
    does not exist, a file of the static directory."""
    path = endpoint.route_path(base).replace(SLASH, "")
    path = path.replace("{name}", "oldstyle").replace("{uuid}", "nosuchjob")
    path = path.replace("{version}", "noversion")
    if endpoint.directory is not None:
        path += "/swagger-ui.css"
    assert not re.search(r"[{}]", path), path
    return path


def served(app: web.Application) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in app.router.routes()}  # type: ignore[union-attr]


def listed(settings: ApiSettings) -> set[tuple[str, str]]:
    return {
        (method, canonical(e.route_path(settings.base_path)))
        for e in declare(settings)
        for method in e.methods
    }


@pytest.mark.parametrize("overrides", SETTINGS.values(), ids=SETTINGS)
def test_the_app_routes_exactly_the_declared_endpoints(registry, overrides):
    settings = ApiSettings(**overrides)
    app = create_app(registry, settings)
    assert served(app) == listed(settings)
    # Each route knows its endpoint, which declares that route.
    routes = app[ROUTES]
    assert set(routes) == set(app.router.routes())
    base = settings.base_path
    for route, endpoint in routes.items():
        assert route.method in endpoint.methods
        assert route.resource is not None
        assert route.resource.canonical == canonical(endpoint.route_path(base))


def test_settings_decide_which_endpoints_exist():
    every = listed(ApiSettings(debug_endpoint=True))
    bare = listed(ApiSettings(**SETTINGS["nothing optional"]))
    assert every - bare == {
        ("GET", "/v2/debug{slash}"),
        ("POST", "/v2/models/{name}/predict{slash}"),
        ("POST", "/v2/models/{name}/versions/{version}/predict{slash}"),
        ("POST", "/v2/models/{name}/infer{slash}"),
        ("POST", "/v2/models/{name}/versions/{version}/infer{slash}"),
        ("POST", "/v2/models/{name}/train{slash}"),
        ("GET", "/v2/models/{name}/train{slash}"),
        ("GET", "/v2/models/{name}/train/{uuid}{slash}"),
        ("DELETE", "/v2/models/{name}/train/{uuid}{slash}"),
        ("GET", "/v2/models/{name}/train/{uuid}/logs{slash}"),
        ("GET", "/metrics"),
        ("GET", "/api{slash}"),
        ("GET", "/ui{slash}"),
        ("GET", "/api/static"),
        ("HEAD", "/api/static"),
    }
    assert bare == {
        ("GET", "/"),
        ("GET", "/swagger.json"),
        ("GET", "/v2{slash}"),
        ("GET", "/v2/models{slash}"),
        ("GET", "/v2/health/live{slash}"),
        ("GET", "/v2/health/ready{slash}"),
        ("GET", "/v2/models/{name}/ready{slash}"),
        ("GET", "/v2/models/{name}/versions/{version}/ready{slash}"),
        ("GET", "/v2/models/{name}{slash}"),
        ("GET", "/v2/models/{name}/versions/{version}{slash}"),
    }


async def test_a_list_to_document_answers_nothing():
    """Without handlers, the list documents; what it would route answers 404."""
    handlers = {e.handler for e in declare(ApiSettings()) if e.directory is None}
    assert len(handlers) == 1
    (handler,) = handlers
    assert handler is not None
    with pytest.raises(web.HTTPNotFound):
        await handler(make_mocked_request("GET", "/v2/models/"))


def test_the_root_and_the_base_path():
    root = next(e for e in declare(ApiSettings()) if e.path == "/")
    assert root.route_path("") == "/"
    assert root.route_path("/deep") == "/deep" + SLASH


@pytest.mark.parametrize("overrides", SECURED.values(), ids=SECURED)
async def test_authentication_follows_each_declaration(
    aiohttp_client, registry, overrides
):
    """Every route of the app, without a token: refused exactly when its
    endpoint's declared access needs one under these settings."""
    settings = ApiSettings(auth_tokens=(TOKEN,), **overrides)
    app = create_app(registry, settings)
    needs_token = {
        Access.PUBLIC: False,
        Access.PREDICT: settings.auth_predict,
        Access.METRICS: settings.auth_metrics,
        Access.PROTECTED: True,
    }
    client = await aiohttp_client(app)
    tried: set[Access] = set()
    for route, endpoint in app[ROUTES].items():
        path = concrete(endpoint, settings.base_path)
        resp = await client.request(route.method, path, allow_redirects=False)
        refused = resp.status == 401
        assert refused == needs_token[endpoint.access], (route.method, path)
        # Routed where the list says, not to a 405 of a neighbour.
        assert resp.status != 405, (route.method, path)
        tried.add(endpoint.access)
    assert tried == set(Access)


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }


@pytest.mark.parametrize(
    ("overrides", "tokens"),
    [(o, ()) for o in SETTINGS.values()] + [(o, (TOKEN,)) for o in SECURED.values()],
    ids=[*SETTINGS, *SECURED],
)
async def test_the_document_describes_the_declared_endpoints(
    aiohttp_client, registry, overrides, tokens
):
    settings = ApiSettings(auth_tokens=tokens, **overrides)
    client = await aiohttp_client(create_app(registry, settings))
    resp = await client.get(
        f"{settings.base_path}/swagger.json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    doc = await resp.json()
    names = list(registry)
    documented = {
        (e.method, path): e
        for e in declare(settings)
        for path in e.documented_paths(names)
    }
    # Nothing is documented that is not declared...
    assert operations(doc) <= set(documented)
    # ...and every declared endpoint is, for the models that have it.
    for (method, path), endpoint in documented.items():
        has = (method, path) in operations(doc)
        # (a model without the operation, or without versions, has none)
        if not endpoint.per_model or not re.search(
            r"/(predict|train|versions|infer)", path
        ):
            assert has, (method, path)
    for endpoint in declare(settings):
        # (no model here has versions: test_versions_http covers those paths)
        if endpoint.doc is None or "{version}" in endpoint.path:
            continue
        assert any(
            (endpoint.method, p) in operations(doc)
            for p in endpoint.documented_paths(names)
        ), endpoint.path
    # A token is asked for exactly where the declaration needs one.
    for method, path in operations(doc):
        endpoint = documented[(method, path)]
        protected = bool(tokens) and (
            endpoint.access is Access.PROTECTED
            or (endpoint.access is Access.PREDICT and settings.auth_predict)
            or (endpoint.access is Access.METRICS and settings.auth_metrics)
        )
        assert ("security" in doc["paths"][path][method.lower()]) == protected


async def test_the_document_lists_readiness_then_each_models_operations(
    aiohttp_client, registry
):
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    paths = list((await (await client.get("/swagger.json")).json())["paths"])
    names = list(registry)
    assert len(names) > 1
    ready = [paths.index(f"/v2/models/{n}/ready") for n in names]
    meta = [paths.index(f"/v2/models/{n}/") for n in names]
    assert ready == sorted(ready) and max(ready) < min(meta)
    # Each model's operations follow each other, in the models' order.
    assert meta == sorted(meta)
    for first, after in zip(meta, [*meta[1:], paths.index("/metrics")], strict=True):
        model = paths[first]
        assert all(p.startswith(model) for p in paths[first:after])
