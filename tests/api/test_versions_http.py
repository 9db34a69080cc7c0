"""Versions of a stored model over HTTP, in-process: the DEEPaaS API's and
the Open Inference Protocol's versioned paths, the model list, metrics, the
OpenAPI document, and the protocol's 401."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from openapi_spec_validator import validate

from deepserve import adapters, loader, picklable_model
from deepserve.api import auth, create_app
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ApiSettings, ExecutorSettings
from deepserve.store import Store
from tests.checks import assert_error

TOKEN = "versions-token-for-tests"


class Twin:
    """The registry: ``twin`` saved twice (factors 1 and 2), and
    ``oldstyle`` (installed, no versions)."""

    def __init__(self, registry: Registry, old: str, new: str) -> None:
        self.registry = registry
        self.old = old
        self.new = new


@pytest_asyncio.fixture(scope="module")
async def twin(
    fake_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Twin]:
    import fake_stored  # on sys.path through the fake_site fixture

    store = Store(tmp_path_factory.mktemp("versions-store"))
    tags = []
    for factor in (1.0, 2.0):
        saved = picklable_model.save_model(
            "twin", fake_stored.Scaler(factor), store=store
        )
        tags.append(str(saved.tag))
        time.sleep(0.01)  # distinct creation times
    available = loader.discover(loader.installed_entry_points())
    refs = [
        *loader.select({}, tags, store=store),
        *loader.select(available, ["oldstyle"]),
    ]
    settings = ExecutorSettings(kind="thread")
    registry = Registry(
        [ServedModel.create(r, adapters.build(r), settings) for r in refs]
    )
    await registry.start()
    old, new = (tag.partition(":")[2] for tag in tags)
    try:
        yield Twin(registry, old, new)
    finally:
        await registry.close()


@pytest.fixture
async def client(aiohttp_client, twin):  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(twin.registry, ApiSettings()))


async def predict(client: Any, path: str, rows: Any) -> Any:
    resp = await client.post(path, json={"data": rows})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "OK"
    return body["predictions"]


async def test_deepaas_predict_reaches_each_version(client, twin):
    base = "/v2/models/twin"
    assert await predict(client, f"{base}/versions/{twin.old}/predict/", [[3.0]]) == [[3.0]]  # fmt: skip
    assert await predict(client, f"{base}/versions/{twin.new}/predict/", [[3.0]]) == [[6.0]]  # fmt: skip
    # the unversioned path reaches the default: the newest
    assert await predict(client, f"{base}/predict/", [[3.0]]) == [[6.0]]
    # without the trailing slash too
    assert await predict(client, f"{base}/versions/{twin.old}/predict", [[1.0]]) == [[1.0]]  # fmt: skip


async def test_oip_infer_reaches_each_version(client, twin):
    body = {
        "id": "7",
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 1], "data": [3.0]}],
    }
    for version, expected in ((twin.old, 3.0), (twin.new, 6.0), (None, 6.0)):
        path = "/v2/models/twin" + (f"/versions/{version}" if version else "")
        resp = await client.post(f"{path}/infer", json=body)
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        assert answer["model_name"] == "twin"
        assert answer["model_version"] == (version or twin.new)
        assert answer["id"] == "7"
        assert answer["outputs"][0]["data"] == [expected]


async def test_version_metadata_links_to_the_version(client, twin):
    resp = await client.get(f"/v2/models/twin/versions/{twin.old}/")
    assert resp.status == 200
    meta = await resp.json()
    assert meta["tag"] == f"twin:{twin.old}"
    assert meta["versions"] == [twin.new, twin.old]
    assert meta["platform"] == "cloudpickle"
    (link,) = [x for x in meta["links"] if x["rel"] == "self"]
    assert link["href"] == f"/v2/models/twin/versions/{twin.old}"
    # the unversioned path: the default, linked to the model's own path
    default = await (await client.get("/v2/models/twin")).json()
    assert default["tag"] == f"twin:{twin.new}"
    (link,) = [x for x in default["links"] if x["rel"] == "self"]
    assert link["href"] == "/v2/models/twin"


async def test_installed_model_lists_no_versions(client):
    meta = await (await client.get("/v2/models/oldstyle/")).json()
    assert meta["versions"] == []
    assert meta["platform"] == "deepserve"


async def test_readiness_of_each_version(client, twin):
    for version in (twin.old, twin.new):
        resp = await client.get(f"/v2/models/twin/versions/{version}/ready")
        assert resp.status == 200
        assert await resp.json() == {"name": "twin", "ready": True}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/twin/versions/nope/predict/"),
        ("GET", "/v2/models/twin/versions/nope/"),
        ("GET", "/v2/models/twin/versions/nope/ready"),
        ("POST", "/v2/models/oldstyle/versions/1/predict/"),
        ("GET", "/v2/models/nope/versions/1/"),
    ],
)
async def test_an_unknown_version_is_a_deepaas_404(client, method, path):
    resp = await client.request(method, path, json={"data": [[1.0]]})
    body = await assert_error(resp, 404)
    assert "nope" in body["message"] or "oldstyle" in body["message"]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/v2/models/twin/versions/nope/infer", "twin:nope"),
        ("/v2/models/oldstyle/versions/1/infer", "oldstyle:1"),
        ("/v2/models/nope/versions/1/infer", "nope"),
        ("/v2/models/nope/infer", "nope"),
    ],
)
async def test_an_unknown_version_is_a_protocol_404_on_infer(client, path, named):
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1]}]}
    resp = await client.post(path, json=body)
    assert resp.status == 404
    answer = await resp.json()
    assert set(answer) == {"error"}
    assert named in answer["error"]


async def test_the_model_list_names_each_model_once(client, twin):
    models = (await (await client.get("/v2/models/")).json())["models"]
    assert [m["name"] for m in models] == ["twin", "oldstyle"]
    assert models[0]["tag"] == f"twin:{twin.new}"


async def test_queue_depth_is_labelled_per_version(client, twin):
    text = await (await client.get("/metrics")).text()
    depths = [line for line in text.splitlines() if line.startswith("deepserve_queue_depth{")]  # fmt: skip
    assert sorted(depths) == sorted(
        [
            f'deepserve_queue_depth{{model="twin:{twin.old}"}} 0.0',
            f'deepserve_queue_depth{{model="twin:{twin.new}"}} 0.0',
            'deepserve_queue_depth{model="oldstyle"} 0.0',
        ]
    )


async def test_the_document_has_versioned_paths_for_versioned_models(client, twin):
    spec = await (await client.get("/swagger.json")).json()
    validate(spec)
    paths = spec["paths"]
    versioned = {
        "/v2/models/twin/versions/{version}": "get",
        "/v2/models/twin/versions/{version}/predict/": "post",
        "/v2/models/twin/versions/{version}/ready": "get",
        "/v2/models/twin/versions/{version}/infer": "post",
    }
    for path, method in versioned.items():
        op = paths[path][method]
        (param,) = [p for p in op["parameters"] if p["name"] == "version"]
        assert param["in"] == "path" and param["required"] is True
        assert param["schema"]["enum"] == [twin.new, twin.old]
    assert not [p for p in paths if p.startswith("/v2/models/oldstyle/versions")]
    # unversioned paths for both
    assert "post" in paths["/v2/models/oldstyle/infer"]
    assert "post" in paths["/v2/models/twin/infer"]
    ids = [op["operationId"] for item in paths.values() for op in item.values() if isinstance(op, dict) and "operationId" in op]  # fmt: skip
    assert len(ids) == len(set(ids))


@pytest.fixture
async def secured(aiohttp_client, twin):  # type: ignore[no-untyped-def]
    return await aiohttp_client(
        create_app(twin.registry, ApiSettings(auth_tokens=(TOKEN,)))
    )


@pytest.mark.parametrize(
    "path", ["/v2/models/twin/infer", "/v2/models/twin/versions/{old}/infer"]
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong"])
async def test_a_401_on_infer_is_in_the_protocols_shape(
    secured, twin, path, authorization
):
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 1], "data": [1]}]}
    headers = {"Authorization": authorization} if authorization else {}
    url = path.format(old=twin.old)
    resp = await secured.post(url, json=body, headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="deepserve"')
    answer = await resp.json()
    assert set(answer) == {"error"} and "token" in answer["error"].lower()
    # with the token, the inference is answered
    good = await secured.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert good.status == 200, await good.text()
    # DEEPaaS's paths keep DEEPaaS's shape
    deepaas = await secured.post("/v2/models/twin/predict/", json={"data": [[1.0]]})
    await assert_error(deepaas, 401)


async def test_the_document_gives_infer_the_protocols_401(secured, twin):
    spec = await (await secured.get("/swagger.json")).json()
    validate(spec)
    for path in ("/v2/models/twin/infer", "/v2/models/twin/versions/{version}/infer"):
        op = spec["paths"][path]["post"]
        assert op["security"] == [{auth.SCHEME: []}]
        unauthorized = op["responses"]["401"]
        schema = unauthorized["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/InferenceError"}
        assert "WWW-Authenticate" in unauthorized["headers"]
    predict = spec["paths"]["/v2/models/twin/predict/"]["post"]["responses"]["401"]
    assert "InferenceError" not in str(predict)
