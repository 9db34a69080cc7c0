"""Models from the model store served over HTTP, end to end.

One real ``deepserve run`` subprocess serves a model of every kind the store
knows (picklable object, scikit-learn estimator, class model, python model)
from a store on disk, each in its own worker process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from deepserve import class_model, loader, picklable_model, python_model
from deepserve import sklearn as ds_sklearn
from deepserve.client import AsyncDeployedModel, DeployedModel
from deepserve.exceptions import LoaderError
from deepserve.store import Store
from tests.checks import assert_error
from tests.conftest import subprocess_env
from tests.servers import DEEPSERVE, Server, get_json

pytestmark = pytest.mark.timeout(180)


def fill_store(root: Path, tmp: Path) -> dict[str, Any]:
    """Save one model of each kind; return what the tests compare against."""
    import fake_stored  # on sys.path through the fake_site fixture
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    store = Store(root)
    picklable_model.save_model(
        "scaler",
        fake_stored.Scaler(2.0),
        signatures={
            "predict": {"batchable": True},
            "count": {},
            "fail": {},
            "__call__": {},
        },
        labels={"team": "tests"},
        metadata={"description": "Doubles every value"},
        store=store,
    )
    iris = load_iris()
    clf = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    ds_sklearn.save_model(
        "iris_clf",
        clf,
        signatures={
            "predict": {"batchable": True},
            "predict_proba": {"batchable": True},
        },
        store=store,
    )
    (tmp / "greeting.txt").write_text("Hello\n")
    people = tmp / "people"
    people.mkdir()
    for name in ("ada", "grace"):
        (people / name).write_text("")
    class_model.save_model(
        "greeter",
        fake_stored.Greeter,
        artifacts={"greeting": str(tmp / "greeting.txt"), "people": str(people)},
        store=store,
    )
    (tmp / "suffix.txt").write_text("!\n")
    python_model.save_model(
        "shouter",
        fake_stored.Shouter(),
        artifacts={"suffix": str(tmp / "suffix.txt")},
        store=store,
    )
    rows = iris.data[[0, 60, 120]].tolist()
    return {
        "rows": rows,
        "iris_predict": clf.predict(rows).tolist(),
        "iris_proba": clf.predict_proba(rows).tolist(),
    }


@pytest.fixture(scope="module")
def stored(
    fake_site: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("store")
    expected = fill_store(root, tmp_path_factory.mktemp("artifacts"))
    return root, expected


@pytest.fixture(scope="module")
def server(fake_site: Path, stored: tuple[Path, dict[str, Any]]) -> Iterator[Server]:
    root, _ = stored
    srv = Server(
        [
            "--model-name",
            "scaler:latest,iris_clf,greeter,shouter",
            "--model-store",
            str(root),
            "--max-batch-size",
            "64",
            "--max-latency-ms",
            "20",
        ],
        subprocess_env(fake_site),
    )
    try:
        srv.wait_ready("", timeout=120)
        yield srv
    finally:
        srv.stop()


async def post(server: Server, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.base + path, **kwargs) as resp,
    ):
        return resp.status, await resp.json()


def test_stored_models_are_listed_with_metadata_from_the_store(server):
    listed = get_json(server.base + "/v2/models/")
    names = {m["name"] for m in listed["models"]}  # type: ignore[index]
    assert names == {"scaler", "iris_clf", "greeter", "shouter"}
    meta = get_json(server.base + "/v2/models/scaler/")
    assert meta["description"] == "Doubles every value"  # type: ignore[index]
    assert meta["tag"].startswith("scaler:")  # type: ignore[index]
    assert meta["labels"] == {"team": "tests"}  # type: ignore[index]
    assert meta["module"] == "deepserve.picklable_model"  # type: ignore[index]


def test_openapi_document_describes_every_signature(server):
    spec = get_json(server.base + "/swagger.json")
    validate(spec)  # type: ignore[arg-type]
    op = spec["paths"]["/v2/models/scaler/predict/"]["post"]  # type: ignore[index]
    (param,) = [p for p in op["parameters"] if p["name"] == "signature"]
    assert set(param["schema"]["enum"]) == {"predict", "count", "fail", "__call__"}
    assert param["schema"]["default"] == "predict"
    body = spec["paths"]["/v2/models/greeter/predict/"]["post"]["requestBody"]  # type: ignore[index]
    assert "multipart/form-data" in body["content"]
    assert "application/json" in body["content"]


async def test_sklearn_iris_predicts_like_the_estimator(server, stored):
    _, expected = stored
    status, body = await post(
        server, "/v2/models/iris_clf/predict/", json={"data": expected["rows"]}
    )
    assert status == 200, body
    assert body["predictions"] == expected["iris_predict"]
    status, body = await post(
        server,
        "/v2/models/iris_clf/predict/?signature=predict_proba",
        json={"data": expected["rows"]},
    )
    assert status == 200, body
    for got, want in zip(body["predictions"], expected["iris_proba"], strict=True):
        assert got == pytest.approx(want)


async def test_concurrent_batchable_calls_each_get_their_own_rows(server, stored):
    _, expected = stored
    rows, labels = expected["rows"], expected["iris_predict"]

    async def one(i: int) -> list[int]:
        status, body = await post(
            server,
            "/v2/models/iris_clf/predict/",
            json={"data": [rows[i % 3]] * (i % 4 + 1)},
        )
        assert status == 200, body
        return body["predictions"]  # type: ignore[no-any-return]

    results = await asyncio.gather(*(one(i) for i in range(30)))
    for i, got in enumerate(results):
        assert got == [labels[i % 3]] * (i % 4 + 1)


async def test_every_signature_is_reachable_by_name(server):
    status, body = await post(
        server, "/v2/models/scaler/predict/", json={"data": [[1, 2], [3]]}
    )
    assert (status, body["predictions"]) == (200, [[2.0, 4.0], [6.0]])
    status, body = await post(
        server, "/v2/models/scaler/predict/?signature=count", json={"data": [1, 2, 3]}
    )
    assert status == 200 and body["predictions"]["rows"] == 3
    status, body = await post(
        server,
        "/v2/models/scaler/predict/",
        json={"data": "x", "signature": "__call__"},
    )
    assert (status, body["predictions"]) == (200, "called with 'x'")


async def test_state_survives_between_calls_in_the_worker(server):
    _, first = await post(
        server, "/v2/models/scaler/predict/?signature=count", json={"data": []}
    )
    _, second = await post(
        server, "/v2/models/scaler/predict/?signature=count", json={"data": []}
    )
    assert second["predictions"]["calls"] > first["predictions"]["calls"]


async def test_bad_requests_get_json_errors_naming_the_field(server):
    async with aiohttp.ClientSession() as session:
        url = server.base + "/v2/models/scaler/predict/"
        async with session.post(url + "?signature=nope", json={"data": [1]}) as resp:
            body = await assert_error(resp, 422)
            assert "signature" in body["errors"]
        async with session.post(url, json={}) as resp:
            body = await assert_error(resp, 422)
            assert "data" in body["errors"]
        async with session.post(url + "?signature=fail", json={"data": 7}) as resp:
            body = await assert_error(resp, 500)
            assert body["error_type"] == "ValueError"
            assert "cannot handle 7" in body["detail"]
        # a batchable signature needs a list of rows
        async with session.post(url, json={"data": 7}) as resp:
            body = await assert_error(resp, 422)
            assert "data" in body["errors"]


async def test_class_model_reads_its_artifacts_and_takes_json_or_a_file(server):
    status, body = await post(server, "/v2/models/greeter/predict/", json={"data": []})
    assert (status, body["predictions"]) == (200, ["Hello, ada", "Hello, grace"])
    form = aiohttp.FormData()
    form.add_field(
        "file",
        json.dumps({"x": "Bob"}).encode(),
        filename="input.json",
        content_type="application/json",
    )
    status, body = await post(server, "/v2/models/greeter/predict/", data=form)
    assert (status, body["predictions"]) == (200, {"x": "Hello, Bob"})
    form = aiohttp.FormData()
    form.add_field(
        "file",
        b"\x00\x01\x02",
        filename="blob.bin",
        content_type="application/octet-stream",
    )
    status, body = await post(server, "/v2/models/greeter/predict/", data=form)
    assert (status, body["predictions"]) == (200, {"bytes": 3, "greeting": "Hello"})


async def test_both_data_and_file_is_refused(server):
    form = aiohttp.FormData()
    form.add_field("data", "[1]")
    form.add_field("file", b"[]", filename="a.json", content_type="application/json")
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.base + "/v2/models/greeter/predict/", data=form) as resp,
    ):
        body = await assert_error(resp, 422)
        assert "file" in body["errors"]


async def test_python_model_gets_its_context(server):
    status, body = await post(
        server, "/v2/models/shouter/predict/", json={"data": ["hi", "there"]}
    )
    assert (status, body["predictions"]) == (200, ["HI!", "THERE!"])
    form = aiohttp.FormData()
    form.add_field("file", b"a b", filename="words.txt", content_type="text/plain")
    status, body = await post(server, "/v2/models/shouter/predict/", data=form)
    assert (status, body["predictions"]) == (200, ["A!", "B!"])


def test_select_resolves_latest_to_an_exact_version(stored):
    root, _ = stored
    store = Store(root)
    (ref,) = loader.select({}, ["scaler"], store=store)
    assert ref.source == loader.STORE
    assert ref.target == str(store.get("scaler:latest").tag)
    assert ref.name == "scaler"


def test_select_takes_versions_side_by_side_and_refuses_clashes(fake_site, tmp_path):
    import fake_stored

    store = Store(tmp_path)
    tags = [
        str(picklable_model.save_model("twin", fake_stored.Scaler(k), store=store).tag)
        for k in (1.0, 2.0)
    ]
    with pytest.raises(LoaderError, match="nothing"):
        loader.select({}, ["nothing:latest"], store=store)
    both = loader.select({}, tags, store=store)
    assert [ref.tag for ref in both] == tags
    assert {ref.name for ref in both} == {"twin"}
    # the same version asked for twice is served once
    assert len(loader.select({}, [tags[1], "twin:latest", "twin"], store=store)) == 1
    # an installed model and a stored one cannot share a name
    installed = {"twin": loader.ModelRef("twin", "fake_classy", "deepserve.v2.model")}
    with pytest.raises(LoaderError, match="both be served"):
        loader.select(installed, ["twin", tags[0]], store=store)


async def test_deepserve_call_predicts_like_the_server(
    server, stored, fake_site, tmp_path
):
    root, expected = stored
    conf = tmp_path / "deepserve.conf"
    conf.write_text(f"[DEFAULT]\nmodel_store = {root}\n")
    rows = json.dumps(expected["rows"])
    proc = subprocess.run(
        [*DEEPSERVE, "call", "--config-file", str(conf), "--model-name", "iris_clf",
         "predict", "--data", rows, "--signature", "predict_proba"],
        env=subprocess_env(fake_site),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _, over_http = await post(
        server,
        "/v2/models/iris_clf/predict/?signature=predict_proba",
        json={"data": expected["rows"]},
    )
    assert json.loads(proc.stdout) == over_http


async def test_deployed_model_predicts_on_every_kind(server, stored):
    _, expected = stored
    async with AsyncDeployedModel(server.base, "greeter") as greeter:
        assert await greeter.predict(["Bob"]) == ["Hello, Bob"]
        assert (await greeter.metadata())["module"] == "deepserve.class_model"
    async with AsyncDeployedModel(server.base, "iris_clf") as iris:
        assert await iris.predict(expected["rows"]) == expected["iris_predict"]
        proba = await iris.predict(expected["rows"], signature="predict_proba")
        assert len(proba) == len(expected["rows"])
    async with AsyncDeployedModel(server.base, "shouter") as shouter:
        assert await shouter.predict(["ok"]) == ["OK!"]
    # the sync flavour, as in a notebook
    with DeployedModel(server.base, "scaler") as scaler:
        assert scaler.predict([[1, 2]]) == [[2.0, 4.0]]


async def test_a_wrongly_shaped_input_is_the_clients_mistake(server):
    # iris_clf's predict takes [-1, 4] (inferred when saved): a 422 naming
    # 'data', before scikit-learn would fail with a 500
    for rows in ([[5.1, 3.5]], [5.1, 3.5, 1.4, 0.2], [[1, 2, 3, 4], [1, 2]]):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                server.base + "/v2/models/iris_clf/predict/", json={"data": rows}
            ) as resp,
        ):
            body = await assert_error(resp, 422)
        assert "[-1, 4]" in body["errors"]["data"][0], rows
    status, answer = await post(
        server, "/v2/models/iris_clf/predict/", json={"data": [[5.1, 3.5, 1.4, 0.2]]}
    )
    assert status == 200, answer
