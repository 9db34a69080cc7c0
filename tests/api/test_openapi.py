"""The OpenAPI document: valid, complete, and stable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import pytest
from marshmallow import fields as mf
from marshmallow import validate
from openapi_spec_validator import validate as validate_spec

from deepserve.api import create_app, openapi, schemas
from deepserve.operations.arguments import ArgSpec
from deepserve.operations.negotiation import Offer
from deepserve.operations.plan import ModelPlan
from deepserve.settings import ApiSettings

SNAPSHOT = Path(__file__).parent.parent / "snapshots" / "openapi.json"


@pytest.fixture
async def spec(client):
    resp = await client.get("/swagger.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    return await resp.json()


def op(spec, path, method="post"):
    return spec["paths"][path][method]


def resolve(spec, item):
    """``item``, or what its ``$ref`` points to in ``spec``."""
    if "$ref" not in item:
        return item
    found = spec
    for part in item["$ref"].removeprefix("#/").split("/"):
        found = found[part]
    return found


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method, operation


def example_of(schema):
    """The example a schema gives, assembled from its properties' examples."""
    if "properties" in schema:
        return {k: example_of(v) for k, v in schema["properties"].items()}
    return schema["example"]


async def test_document_is_valid_openapi_3(spec):
    assert spec["openapi"].startswith("3.0.")
    validate_spec(spec)


async def test_every_endpoint_is_documented(spec):
    for name in ("oldstyle", "classy", "minimal", "files", "batchy"):
        base = f"/v2/models/{name}"
        assert set(spec["paths"][f"{base}/"]) == {"get"}
        assert set(spec["paths"][f"{base}/predict/"]) == {"post"}
        if name in ("oldstyle", "classy"):
            assert set(spec["paths"][f"{base}/train/"]) == {"get", "post"}
            assert {"get", "delete"} <= set(spec["paths"][f"{base}/train/{{uuid}}"])
        else:  # no train(): not documented, and answered with 501
            assert f"{base}/train/" not in spec["paths"]
    for path in ("/", "/v2/", "/v2/models/"):
        assert "get" in spec["paths"][path]
    assert "/v2/debug/" not in spec["paths"]


async def test_old_style_arguments_are_documented(spec):
    predict = op(spec, "/v2/models/oldstyle/predict/")
    params = {p["name"]: p for p in predict["parameters"]}
    assert params["text"]["in"] == "query"
    assert params["text"]["description"] == "Some text"
    assert params["text"]["schema"]["default"] == "hello"
    assert params["count"]["schema"]["type"] == "integer"
    # enum= as DEEPaaS metadata is not checked (nor by DEEPaaS): the values
    # are suggested, not claimed as the only ones.
    assert "enum" not in params["mode"]["schema"]
    assert params["mode"]["description"] == (
        "What to do. Suggested values: echo, badrequest, crash, exit, sleep "
        "(others are accepted too)."
    )
    assert params["mode"]["schema"]["default"] == "echo"
    assert params["tags"]["schema"]["type"] == "array"
    assert params["tags"]["explode"] is True
    # The file is in the multipart body, as a binary string: Swagger UI
    # shows a file picker for it.
    multipart = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["properties"]["data"] == {
        "type": "string",
        "format": "binary",
        "description": "Data file to perform inference on.",
    }
    # Query arguments are documented in the query string only (the server
    # reads them from a body too, but giving both is refused), and there
    # is no form argument to offer as JSON.
    assert list(predict["requestBody"]["content"]) == ["multipart/form-data"]


async def test_accept_media_types_and_responses(spec):
    predict = op(spec, "/v2/models/oldstyle/predict/")
    ok = predict["responses"]["200"]["content"]
    assert list(ok) == [
        "application/json",
        "image/png",
        "application/zip",
        "text/plain",
    ]
    assert ok["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Prediction"
    }
    assert ok["image/png"]["schema"] == {"type": "string", "format": "binary"}
    accept = next(p for p in predict["parameters"] if p["name"] == "accept")
    assert accept["schema"]["enum"] == list(ok)
    for code in ("400", "404", "413", "422", "500", "501", "503"):
        response = resolve(spec, predict["responses"][code])
        schema = response["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    # An Accept header nothing offered satisfies gets the default type.
    assert "406" not in predict["responses"]


async def test_accept_read_from_the_header_only_is_no_parameter(spec):
    predict = op(spec, "/v2/models/headeraccept/predict/")
    assert [p["name"] for p in predict["parameters"]] == ["how"]
    assert list(predict["responses"]["200"]["content"]) == [
        "application/json",
        "image/*",
        "application/zip",
    ]
    predict = op(spec, "/v2/models/wildcard/predict/")
    accept = next(p for p in predict["parameters"] if p["name"] == "accept")
    assert accept["description"] == "Format of the response."
    assert accept["schema"] == {
        "type": "string",
        "enum": ["application/json", "image/*", "application/zip"],
        "default": "application/json",
    }


async def test_response_schema_header_and_form_arguments(spec):
    predict = op(spec, "/v2/models/classy/predict/")
    ok = predict["responses"]["200"]["content"]
    assert list(ok) == ["application/json"]
    schema = ok["application/json"]["schema"]
    assert set(schema["properties"]) == {"label", "score", "warm_count", "instance"}
    assert set(schema["required"]) == {"label", "score", "warm_count", "instance"}
    params = {p["name"]: p for p in predict["parameters"]}
    assert params["X-Token"]["in"] == "header"
    assert params["x"]["required"] is True
    assert params["label"]["schema"]["enum"] == ["pos", "neg"]
    body = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["weights"]["type"] == "array"


async def test_training_file_argument(spec):
    train = op(spec, "/v2/models/classy/train/")
    body = train["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["data"]["format"] == "binary"
    assert train["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Training"
    }


async def test_disabled_endpoints_and_base_path(aiohttp_client, registry):
    settings = ApiSettings(base_path="/deep", train_endpoint=False, debug_endpoint=True)
    client = await aiohttp_client(create_app(registry, settings))
    spec = await (await client.get("/deep/swagger.json")).json()
    validate_spec(spec)
    assert spec["servers"] == [{"url": "/deep"}]
    assert "/v2/models/classy/train/" not in spec["paths"]
    assert "/v2/models/classy/predict/" in spec["paths"]
    assert "/v2/debug/" in spec["paths"]


async def test_error_responses_are_declared_once_and_referred_to(spec):
    shared = spec["components"]["responses"]
    error_ref = {"$ref": "#/components/schemas/Error"}
    referred = set()
    for path, method, operation in operations(spec):
        for code, response in operation["responses"].items():
            if int(code) < 400:
                continue
            probe = path.startswith("/v2/health/") or path.endswith("/ready")
            if probe and code == "503":  # the probe's answer, not an error body
                body = response["content"]["application/json"]["schema"]
                assert body != error_ref
                continue
            if path.endswith("/infer"):
                # The Open Inference Protocol's own error body, not DEEPaaS's.
                body = response["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/InferenceError"}
                continue
            # A reference, and nothing else: no inlined copy.
            assert set(response) == {"$ref"}, (path, method, code)
            name = response["$ref"].removeprefix("#/components/responses/")
            assert name in shared, (path, method, code)
            assert resolve(spec, response)["content"]["application/json"]["example"][
                "code"
            ] == int(code)
            referred.add(name)
    # Each error response is declared once, under its own name, and used.
    assert referred == set(shared)
    codes = [
        v["content"]["application/json"]["example"]["code"] for v in shared.values()
    ]
    assert codes == sorted(set(codes))
    assert set(codes) == {400, 404, 413, 422, 500, 501, 503, 504, 507}
    for response in shared.values():
        assert response["content"]["application/json"]["schema"] == error_ref
        assert response["description"]
    assert shared["ServiceUnavailable"]["headers"]["Retry-After"]["schema"] == {
        "type": "integer",
        "minimum": 0,
    }
    # Nowhere else does the Error body appear.
    assert json.dumps(spec["paths"]).count("#/components/schemas/Error") == 0


async def test_error_examples_are_what_the_server_answers(aiohttp_client, registry):
    """Each shared error response's example is a real answer (the model it
    names aside), and fits the documented Error body."""
    settings = ApiSettings(client_max_size=2000)
    client = await aiohttp_client(create_app(registry, settings))
    spec = await (await client.get("/swagger.json")).json()
    examples = {
        v["content"]["application/json"]["example"]["code"]: v["content"][
            "application/json"
        ]["example"]
        for v in spec["components"]["responses"].values()
    }
    for example in examples.values():
        assert schemas.Error().validate(example) == {}

    async def answer(resp):
        return resp.status, await resp.json()

    def naming(example, model):
        return json.loads(json.dumps(example).replace(openapi.EXAMPLE_MODEL, model))

    assert await answer(await client.get("/v2/models/nope/")) == (404, examples[404])
    assert await answer(
        await client.post("/v2/models/oldstyle/predict/", json=[1])
    ) == (400, examples[400])
    # The example says this server's own limit.
    assert await answer(
        await client.post("/v2/models/oldstyle/predict/", json={"text": "x" * 3000})
    ) == (413, examples[413])
    assert examples[413]["limit"] == 2000
    assert await answer(await client.post("/v2/models/minimal/train/")) == (
        501,
        naming(examples[501], "minimal"),
    )
    status, body = await answer(await client.post("/v2/models/classy/predict/"))
    assert status == 422 and set(body) == set(examples[422])
    assert body["errors"]["x"] == examples[422]["errors"]["text"]


async def test_demo_model_answers_its_documented_example(demo_server):
    """The bundled demo declares its response: the document shows it with
    an example, and the real answer for the example's case is that example
    (the server's response check passing)."""
    async with aiohttp.ClientSession(demo_server.base) as http:
        async with http.get("/swagger.json") as resp:
            spec = await resp.json()
        validate_spec(spec)
        predict = op(spec, "/v2/models/demo/predict/")
        schema = predict["responses"]["200"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == {
            "text",
            "characters",
            "words",
            "warmed",
            "upper",
            "file",
        }
        assert set(schema["required"]) == {"text", "characters", "words", "warmed"}
        assert all(p.get("description") for p in schema["properties"].values())
        form = aiohttp.FormData()
        form.add_field(
            "data",
            b"Hello, deepserve!\n",
            filename="notes.txt",
            content_type="text/plain",
        )
        async with http.post("/v2/models/demo/predict/?upper=true", data=form) as resp:
            assert resp.status == 200
            assert await resp.json() == example_of(schema)
        async with http.post("/v2/models/demo/predict/?text=one+two+three") as resp:
            assert resp.status == 200
            assert await resp.json() == {
                "text": "one two three",
                "characters": 13,
                "words": 3,
                "warmed": True,
            }


async def test_matches_snapshot(spec):
    """Drift in the generated document shows here, not for users.

    Set DEEPSERVE_UPDATE_SNAPSHOTS=1 to rewrite the snapshot after an
    intended change, and review the diff.
    """
    spec["info"]["version"] = "VERSION"
    text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
    if os.environ.get("DEEPSERVE_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text()


async def test_swagger_ui_is_served_offline(client):
    resp = await client.get("/api")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    assert 'url: "/swagger.json"' in page
    assert "http://" not in page and "https://" not in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/api/static/{asset}" in page
        static = await client.get(f"/api/static/{asset}")
        assert static.status == 200
        assert len(await static.read()) > 1000
    redirect = await client.get("/ui", allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Location"] == "/api"


async def test_docs_can_be_disabled(aiohttp_client, registry):
    client = await aiohttp_client(create_app(registry, ApiSettings(doc_endpoint=False)))
    assert (await client.get("/api")).status == 404
    assert (await client.get("/swagger.json")).status == 200
    root = await (await client.get("/")).json()
    assert [link["rel"] for link in root["links"]] == ["describedby"]


def test_accept_declared_in_the_body_is_documented_there():
    declared = {
        "text": mf.Str(metadata={"location": "form"}),
        "accept": mf.Str(
            validate=validate.OneOf(["text/plain", "application/json"]),
            metadata={"location": "form"},
        ),
    }
    spec = ArgSpec.prepare(declared, negotiate_accept=True)
    ops = ModelPlan(
        name="m",
        predict=spec,
        train=None,
        offer=Offer.from_accept_field(spec.accept),
        response_schema=None,
    )
    doc = openapi.build([ops], ApiSettings())
    validate_spec(doc)
    predict = doc["paths"]["/v2/models/m/predict/"]["post"]
    assert all(p["name"] != "accept" for p in predict["parameters"])
    for where in ("multipart/form-data", "application/json"):
        schema = predict["requestBody"]["content"][where]["schema"]
        assert schema["properties"]["accept"]["enum"] == [
            "text/plain",
            "application/json",
        ]
        assert "text" in schema["properties"]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (mf.Int(load_default=3), {"type": "integer", "default": 3}),
        (mf.Float(), {"type": "number"}),
        (
            mf.Str(load_default=None, validate=validate.OneOf(["a", "b"])),
            {
                "type": "string",
                "default": None,
                "nullable": True,
                "enum": ["a", "b", None],
            },
        ),
        (
            # enum as metadata only: not checked, so not claimed.
            mf.Str(allow_none=True, metadata={"enum": ["x"]}),
            {
                "type": "string",
                "nullable": True,
                "description": "Suggested values: x (others are accepted too).",
                "example": "x",
            },
        ),
        (
            mf.Dict(keys=mf.Str(), values=mf.Int()),
            {"type": "object", "additionalProperties": {"type": "integer"}},
        ),
        (mf.Dict(), {"type": "object", "additionalProperties": {}}),
        (
            mf.Nested({"n": mf.Int(required=True)}),
            {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
                "additionalProperties": False,
            },
        ),
        (
            mf.List(mf.Float(), load_default=list),
            {"type": "array", "items": {"type": "number"}},
        ),
    ],
)
def test_field_descriptions_are_the_same_on_every_apispec(field, expected):
    """CI runs this on apispec 6.x and, in the DEEPaaS venv, on 3.3."""
    b = openapi._Builder()
    assert b.prop(field) == expected
