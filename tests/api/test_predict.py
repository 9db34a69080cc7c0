"""Predictions and the DEEPaaS V2 resources, through real HTTP and workers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from marshmallow import fields as mf

from deepserve import adapters, loader
from deepserve.api import create_app
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ApiSettings, ExecutorSettings
from tests.checks import assert_error

PREDICT = "/v2/models/{}/predict/"


def multipart(*pairs: tuple[str, str]) -> aiohttp.FormData:
    """A multipart body of plain (non-file) fields, repeated names allowed."""
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in pairs:
        form.add_field(name, value)
    return form


async def predict_json(client: Any, model: str, **kwargs: Any) -> Any:
    resp = await client.post(PREDICT.format(model), **kwargs)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def test_oldstyle_answer_has_the_deepaas_shape(client):
    body = await predict_json(client, "oldstyle")
    assert set(body) == {"status", "predictions"}
    assert body["status"] == "OK"
    assert body["predictions"]["text"] == "hello"


async def test_oldstyle_missing_defaults_are_applied(client):
    body = await predict_json(client, "oldstyle")
    # text missing="hello", count missing=1, tags missing=[], data missing=None
    assert body["predictions"]["text"] == "hello"
    assert body["predictions"]["tags"] == []
    assert "file" not in body["predictions"]


async def test_args_from_query_string(client):
    body = await predict_json(client, "oldstyle", params={"text": "ab", "count": "3"})
    assert body["predictions"]["text"] == "ababab"


async def test_args_from_urlencoded_form(client):
    form = aiohttp.FormData(
        [("text", "xy"), ("count", "2"), ("tags", "a"), ("tags", "b")]
    )
    resp = await client.post(PREDICT.format("oldstyle"), data=form)
    assert resp.status == 200, await resp.text()
    assert resp.request_info.headers["Content-Type"].startswith(
        "application/x-www-form-urlencoded"
    )
    predictions = (await resp.json())["predictions"]
    assert predictions["text"] == "xyxy"
    assert predictions["tags"] == ["a", "b"]


async def test_args_from_multipart_form(client):
    form = multipart(("text", "mp"), ("count", "2"), ("tags", "t1"), ("tags", "t2"))
    resp = await client.post(PREDICT.format("oldstyle"), data=form)
    assert resp.status == 200, await resp.text()
    assert resp.request_info.headers["Content-Type"].startswith("multipart/form-data")
    predictions = (await resp.json())["predictions"]
    assert predictions["text"] == "mpmp"
    assert predictions["tags"] == ["t1", "t2"]


async def test_args_from_json_body_with_typed_values(client):
    body = await predict_json(
        client, "oldstyle", json={"text": "j", "count": 4, "tags": ["x", "y", "z"]}
    )
    assert body["predictions"]["text"] == "jjjj"
    assert body["predictions"]["tags"] == ["x", "y", "z"]


async def test_query_and_json_body_together(client):
    body = await predict_json(
        client, "oldstyle", params={"text": "q"}, json={"count": 2}
    )
    # text from the query, count (absent there) from the JSON body.
    assert body["predictions"]["text"] == "qq"


async def test_list_arg_from_repeated_query_params(client):
    resp = await client.post(PREDICT.format("oldstyle") + "?tags=a&tags=b")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["tags"] == ["a", "b"]


async def test_list_arg_from_json_list(client):
    body = await predict_json(client, "oldstyle", json={"tags": ["only"]})
    assert body["predictions"]["tags"] == ["only"]


async def test_invalid_oldstyle_arg_is_422(client):
    resp = await client.post(PREDICT.format("oldstyle"), params={"count": "x"})
    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {"count"}
    assert "count" in body["message"]


# -- validation errors ---------------------------------------------------------


async def test_422_names_every_bad_field(client):
    resp = await client.post(
        PREDICT.format("classy"), params={"x": "not-a-number", "label": "maybe"}
    )
    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {"x", "label"}
    assert "x" in body["message"] and "label" in body["message"]
    assert any("number" in m.lower() for m in body["errors"]["x"])
    assert any("pos" in m and "neg" in m for m in body["errors"]["label"])


async def test_missing_required_arg_is_422(client):
    resp = await client.post(PREDICT.format("classy"))
    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {"x"}
    assert body["errors"]["x"] == ["Missing data for required field."]


# -- the class model with a response schema ------------------------------------


async def test_classy_schema_response_is_returned_as_is(client):
    body = await predict_json(client, "classy", params={"x": "1.5", "label": "neg"})
    assert set(body) == {"label", "score", "warm_count", "instance"}
    assert body["label"] == "neg:none:0"
    assert body["score"] == 3.0
    assert body["warm_count"] == 1


async def test_classy_header_arg(client):
    body = await predict_json(
        client, "classy", params={"x": "0"}, headers={"X-Token": "secret"}
    )
    assert body["label"] == "pos:secret:0"


async def test_classy_form_list_arg_from_repeated_multipart_fields(client):
    form = multipart(("x", "1"), ("weights", "1.5"), ("weights", "2.5"))
    body = await predict_json(client, "classy", data=form)
    assert body["label"] == "pos:none:2"
    assert body["score"] == 2 + 1.5 + 2.5


async def test_invalid_model_output_is_500_naming_the_model(client):
    resp = await client.post(
        PREDICT.format("classy"), params={"x": "1", "bad_output": "true"}
    )
    body = await assert_error(resp, 500)
    assert body["model"] == "classy"
    assert "classy" in body["message"]


# -- the minimal model -----------------------------------------------------------


async def test_minimal_predict_without_args(client):
    body = await predict_json(client, "minimal")
    assert body == {"status": "OK", "predictions": ["minimal", {}]}


async def test_minimal_has_generated_metadata(client):
    resp = await client.get("/v2/models/minimal/")
    assert resp.status == 200
    meta = await resp.json()
    assert "id" in meta
    assert meta["name"] == "minimal"
    assert "minimal" in meta["description"]


async def test_minimal_train_is_501(client):
    resp = await client.post("/v2/models/minimal/train/")
    body = await assert_error(resp, 501)
    assert body["model"] == "minimal"
    assert "train" in body["message"]


# -- errors raised by the model --------------------------------------------------


async def test_model_http_error_keeps_status_and_text(client):
    resp = await client.post(PREDICT.format("oldstyle"), params={"mode": "badrequest"})
    body = await assert_error(resp, 400)
    assert "The text is not acceptable" in body["message"]


async def test_model_exception_is_500_and_server_keeps_serving(client):
    resp = await client.post(PREDICT.format("oldstyle"), params={"mode": "crash"})
    body = await assert_error(resp, 500)
    assert body["model"] == "oldstyle"
    assert body["error_type"] == "ValueError"

    again = await predict_json(client, "oldstyle", params={"text": "ok"})
    assert again["predictions"]["text"] == "ok"


async def test_worker_death_is_503_then_the_worker_is_replaced(client):
    before = (await predict_json(client, "oldstyle"))["predictions"]["pid"]
    resp = await client.post(PREDICT.format("oldstyle"), params={"mode": "exit"})
    body = await assert_error(resp, 503)
    assert body["model"] == "oldstyle"
    assert "oldstyle" in body["message"]

    deadline = time.monotonic() + 20
    while True:
        resp = await client.post(PREDICT.format("oldstyle"))
        if resp.status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["pid"] != before


# -- routing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v2/models/oldstyle/predict", PREDICT.format("oldstyle")]
)
async def test_trailing_slash_is_optional(client, path):
    resp = await client.post(path, params={"text": "s"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["text"] == "s"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/nope/"),
        ("POST", "/v2/models/nope/predict/"),
        ("GET", "/v2/nothing-here"),
    ],
)
async def test_unknown_resource_is_404_json(client, method, path):
    resp = await client.request(method, path)
    await assert_error(resp, 404)


async def test_unknown_model_is_named(client):
    body = await assert_error(await client.get("/v2/models/nope/"), 404)
    assert "nope" in body["message"]


async def test_wrong_method_is_405_json_with_allow(client):
    resp = await client.get(PREDICT.format("oldstyle"))
    await assert_error(resp, 405)
    assert "POST" in resp.headers["Allow"]
    assert "GET" not in resp.headers["Allow"]


async def test_root_lists_versions(client):
    resp = await client.get("/")
    assert resp.status == 200
    body = await resp.json()
    assert [v["id"] for v in body["versions"]] == ["v2"]
    version = body["versions"][0]
    assert version["version"] == "stable"
    assert {"rel": "self", "type": "application/json", "href": "/v2/"} in version[
        "links"
    ]
    assert any(link["rel"] == "describedby" for link in body["links"])


async def test_v2_describes_the_version(client):
    resp = await client.get("/v2/")
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == "v2"
    assert body["version"] == "stable"
    assert any(link["rel"] == "self" for link in body["links"])


async def test_models_lists_every_model(client):
    resp = await client.get("/v2/models/")
    assert resp.status == 200
    models = {m["id"]: m for m in (await resp.json())["models"]}
    assert {"oldstyle", "classy", "minimal"} <= {m["name"] for m in models.values()}
    assert models["oldstyle"]["description"] == "An old DEEPaaS model"


async def test_model_meta_merges_get_metadata(client):
    resp = await client.get("/v2/models/oldstyle/")
    assert resp.status == 200
    meta = await resp.json()
    assert meta["id"] == "oldstyle"
    assert meta["name"] == "oldstyle"
    assert meta["author"] == "Someone"
    assert meta["license"] == "MIT"
    assert meta["version"] == "0.1.0"
    selfs = [link for link in meta["links"] if link["rel"] == "self"]
    assert len(selfs) == 1
    assert selfs[0]["href"].rstrip("/").endswith("/v2/models/oldstyle")


async def test_malformed_json_body_is_400(client):
    resp = await client.post(
        PREDICT.format("oldstyle"),
        data=b'{"text": ',
        headers={"Content-Type": "application/json"},
    )
    await assert_error(resp, 400)


async def test_json_body_nested_too_deeply_is_400_without_a_traceback(client, caplog):
    """100,000 levels in 200 KB: the parser gives up with RecursionError,
    which is no decode error to it; a 500 and a logged traceback per
    request before (cheap log flooding)."""
    depth = 100_000
    body = '{"text": ' + "[" * depth + "]" * depth + "}"
    resp = await client.post(
        "/v2/models/oldstyle/predict/",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    err = await assert_error(resp, 400)
    assert err["message"] == "The JSON body is nested too deeply (over 100 levels)"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(("depth", "status"), [(99, 200), (101, 400), (700, 400)])
async def test_json_nesting_is_capped_below_what_a_worker_can_take(
    client, depth, status
):
    """700 levels parse, but the arguments could not be pickled to a worker
    (a 500): the cap answers 400 first. Under it, the model gets the data."""
    body = '{"tags": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    resp = await client.post(
        "/v2/models/oldstyle/predict/",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status in (status, 422), await resp.text()
    if status == 400:
        await assert_error(resp, 400)


async def test_json_body_that_is_a_list_is_400(client):
    resp = await client.post(PREDICT.format("oldstyle"), json=["text", "x"])
    await assert_error(resp, 400)


# -- settings ------------------------------------------------------------------------


async def test_disabled_predict_endpoint_is_absent(aiohttp_client, registry):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(predict_endpoint=False))
    )
    await assert_error(await client.post(PREDICT.format("oldstyle")), 404)
    assert (await client.get("/v2/models/oldstyle/")).status == 200


async def test_disabled_train_endpoint_is_absent(aiohttp_client, registry):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(train_endpoint=False))
    )
    await assert_error(await client.post("/v2/models/oldstyle/train/"), 404)
    await assert_error(await client.get("/v2/models/oldstyle/train/"), 404)
    await assert_error(await client.get("/v2/models/oldstyle/train/abc/"), 404)
    await assert_error(await client.delete("/v2/models/oldstyle/train/abc/"), 404)
    assert (await client.post(PREDICT.format("minimal"))).status == 200


async def test_base_path(aiohttp_client, registry):
    client = await aiohttp_client(create_app(registry, ApiSettings(base_path="/deep")))
    resp = await client.get("/deep/v2/models/")
    assert resp.status == 200
    assert "oldstyle" in {m["name"] for m in (await resp.json())["models"]}
    resp = await client.post("/deep" + PREDICT.format("minimal"))
    assert resp.status == 200, await resp.text()
    await assert_error(await client.get("/v2/models/"), 404)
    await assert_error(await client.post(PREDICT.format("minimal")), 404)


async def test_debug_endpoint_absent_by_default(client):
    await assert_error(await client.get("/v2/debug/"), 404)


async def test_debug_endpoint_when_enabled(aiohttp_client, registry):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(debug_endpoint=True))
    )
    crash = await client.post(
        PREDICT.format("oldstyle"),
        params={"mode": "crash"},
        headers={"X-Request-ID": "dbg-1"},
    )
    assert crash.status == 500
    resp = await client.get("/v2/debug/")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    assert "ValueError" in text
    assert "[dbg-1]: Model 'oldstyle' failed with ValueError" in text


# -- the plugin's fields are never changed -----------------------------------------


def snapshot(value: Any) -> Any:
    """A comparable deep copy of a field's state, by value."""
    if isinstance(value, mf.Field):
        state = {}
        for key, item in sorted(vars(value).items()):
            # A bound field points back to its parent: record what, not how.
            state[key] = (
                type(item).__name__
                if key in ("parent", "root") and item
                else snapshot(item)
            )
        return (type(value).__name__, state)
    if isinstance(value, Mapping):
        return {repr(k): snapshot(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [snapshot(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


async def test_plugin_fields_are_never_mutated(aiohttp_client, registry):
    available = loader.discover(loader.installed_entry_points())
    refs = loader.select(available, ["oldstyle", "classy"])
    models = [adapters.build(ref) for ref in refs]

    def state() -> Any:
        return {
            m.name: {
                op: {n: (id(f), snapshot(f)) for n, f in args.items()}
                for op, args in (
                    ("predict", m.predict_args()),
                    ("train", m.train_args()),
                )
            }
            for m in models
        }

    before = state()
    # Spot checks that the snapshot sees what matters.
    old = before["oldstyle"]["predict"]
    assert "'hello'" in repr(old["text"][1]) and "'location'" in repr(old["data"][1])
    assert "'X-Token'" in repr(before["classy"]["predict"]["token"][1])

    # Inline executors: the calls run on these very model objects.
    inline = ExecutorSettings(kind="inline")
    mine = Registry(
        [ServedModel.create(r, m, inline) for r, m in zip(refs, models, strict=True)]
    )
    await mine.start()
    client = await aiohttp_client(create_app(mine, ApiSettings()))

    assert (await client.get("/swagger.json")).status == 200
    resp = await client.post(
        PREDICT.format("oldstyle"), params={"text": "a", "tags": ["p", "q"]}
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(PREDICT.format("oldstyle"), json={"count": 2})
    assert resp.status == 200, await resp.text()
    form = aiohttp.FormData()
    form.add_field("data", b"payload", filename="f.bin")
    form.add_field("count", "2")
    resp = await client.post(PREDICT.format("oldstyle"), data=form)
    assert resp.status == 200, await resp.text()
    assert (
        await client.post(PREDICT.format("oldstyle"), params={"count": "x"})
    ).status == 422
    resp = await client.post(
        PREDICT.format("oldstyle"), headers={"Accept": "text/plain"}
    )
    assert resp.status == 200, await resp.text()
    form = multipart(("x", "1"), ("weights", "1"), ("weights", "2"))
    resp = await client.post(
        PREDICT.format("classy"), data=form, headers={"X-Token": "t"}
    )
    assert resp.status == 200, await resp.text()
    assert (
        await client.post(PREDICT.format("classy"), params={"label": "?"})
    ).status == 422
    await mine.close()

    assert state() == before
