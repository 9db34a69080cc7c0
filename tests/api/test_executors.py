"""The HTTP layer cannot tell executors apart: the same requests give the
same answers whether a model runs in processes, threads or inline."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from deepserve.api import create_app
from deepserve.runtime import Registry
from deepserve.settings import (
    EXECUTOR_KINDS,
    ApiSettings,
    ExecutorKind,
    ExecutorSettings,
)
from tests.checks import DEADLINE, assert_error, wait_for_pidfile
from tests.conftest import start_registry

#: The kinds that run on this machine alone; the ray executor needs a Ray
#: cluster, and has its own tests on one (tests/test_ray.py).
LOCAL_KINDS = tuple(kind for kind in EXECUTOR_KINDS if kind != "ray")

PREDICT = "/v2/models/{}/predict/"
TRAIN = "/v2/models/{}/train/"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest_asyncio.fixture(scope="module", params=LOCAL_KINDS)
async def served(
    request: pytest.FixtureRequest, fake_site: Path
) -> AsyncIterator[Registry]:
    """``classy`` and ``oldstyle`` run by one kind of executor."""
    registry = await start_registry(
        ["classy", "oldstyle"], ExecutorSettings(kind=request.param)
    )
    yield registry
    await registry.close()


@pytest.fixture
async def api(aiohttp_client: Any, served: Registry) -> Any:
    return await aiohttp_client(create_app(served, ApiSettings()))


async def predict_json(client: Any, model: str, **kwargs: Any) -> Any:
    resp = await client.post(PREDICT.format(model), **kwargs)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def wait_finished(client: Any, model: str, uuid: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        resp = await client.get(TRAIN.format(model) + uuid)
        assert resp.status == 200, await resp.text()
        job: dict[str, Any] = await resp.json()
        if job["status"] != "running":
            return job
        assert time.monotonic() < deadline, f"training {uuid} still running"
        await asyncio.sleep(0.1)


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- predictions ----------------------------------------------------------------


async def test_class_model_prediction(api: Any) -> None:
    body = await predict_json(
        api,
        "classy",
        params={"x": "1.5", "label": "neg"},
        headers={"X-Token": "tok"},
    )

    assert set(body) == {"label", "score", "warm_count", "instance"}
    assert body["label"] == "neg:tok:0"
    assert body["score"] == 3.0
    assert body["warm_count"] == 1


async def test_class_model_is_built_and_warmed_once(api: Any) -> None:
    first = await predict_json(api, "classy", params={"x": "0"})
    rest = await asyncio.gather(
        *(predict_json(api, "classy", params={"x": str(x)}) for x in range(1, 9))
    )

    assert [r["score"] for r in rest] == [2.0 * x for x in range(1, 9)]
    # One instance for every call, warmed once: never a throw-away copy.
    assert {r["instance"] for r in [first, *rest]} == {first["instance"]}
    assert {r["warm_count"] for r in [first, *rest]} == {1}


async def test_module_model_prediction(api: Any) -> None:
    body = await predict_json(
        api,
        "oldstyle",
        params=[("text", "ab"), ("count", "2"), ("tags", "x"), ("tags", "y")],
    )

    assert body["status"] == "OK"
    predictions = body["predictions"]
    assert predictions["text"] == "abab"
    assert predictions["tags"] == ["x", "y"]
    # A module's state is shared by every executor of this process, so only
    # "warmed" can be said here.
    assert predictions["warm_calls"] >= 1


async def test_upload_reaches_the_model_as_a_file(api: Any) -> None:
    content = os.urandom(3000)
    form = aiohttp.FormData()
    form.add_field(
        "data", content, filename="in.bin", content_type="application/octet-stream"
    )

    body = await predict_json(api, "oldstyle", data=form)

    upload = body["predictions"]["file"]
    assert upload["size"] == 3000
    assert upload["sha256"] == hashlib.sha256(content).hexdigest()
    assert upload["original_filename"] == "in.bin"
    assert not Path(upload["path"]).exists()  # removed after the request


async def test_file_result(api: Any) -> None:
    resp = await api.post(PREDICT.format("oldstyle"), headers={"Accept": "image/png"})

    assert resp.status == 200, await resp.text()
    assert resp.content_type == "image/png"
    assert (await resp.read()).startswith(PNG_SIGNATURE)


async def test_metadata(api: Any) -> None:
    resp = await api.get("/v2/models/classy/")
    assert resp.status == 200
    meta = await resp.json()
    assert (meta["name"], meta["description"], meta["version"]) == (
        "classy",
        "A class model",
        "2.0",
    )

    resp = await api.get("/v2/models/oldstyle/")
    assert resp.status == 200
    meta = await resp.json()
    assert (meta["author"], meta["license"]) == ("Someone", "MIT")


# -- errors ---------------------------------------------------------------------


async def test_invalid_arguments_are_422(api: Any) -> None:
    resp = await api.post(
        PREDICT.format("classy"), params={"x": "not-a-number", "label": "maybe"}
    )

    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {"x", "label"}


async def test_model_http_error_is_kept(api: Any) -> None:
    resp = await api.post(PREDICT.format("oldstyle"), params={"mode": "badrequest"})

    body = await assert_error(resp, 400)
    assert "The text is not acceptable" in body["message"]


async def test_model_exception_is_500(api: Any) -> None:
    resp = await api.post(PREDICT.format("oldstyle"), params={"mode": "crash"})

    body = await assert_error(resp, 500)
    assert body["model"] == "oldstyle"
    assert body["error_type"] == "ValueError"
    # And the model serves on.
    again = await predict_json(api, "oldstyle", params={"text": "ok"})
    assert again["predictions"]["text"] == "ok"


async def test_invalid_model_output_is_500_naming_the_model(api: Any) -> None:
    resp = await api.post(
        PREDICT.format("classy"), params={"x": "1", "bad_output": "true"}
    )

    body = await assert_error(resp, 500)
    assert body["model"] == "classy"
    assert "classy" in body["message"]


# -- trainings ------------------------------------------------------------------


async def test_training_runs_to_its_result(api: Any) -> None:
    resp = await api.post(TRAIN.format("classy"), params={"seconds": "0.2"})
    assert resp.status == 200, await resp.text()
    job = await resp.json()
    assert job["status"] == "running"

    done = await wait_finished(api, "classy", job["uuid"])

    assert done["status"] == "done", done
    assert done["result"]["output"] == {
        "seconds": 0.2,
        "upload_size": None,
        "warm_count": 1,
    }


async def test_failing_training_ends_in_error(api: Any) -> None:
    resp = await api.post(TRAIN.format("classy"), params={"fail": "true"})
    assert resp.status == 200, await resp.text()

    failed = await wait_finished(api, "classy", (await resp.json())["uuid"])

    assert failed["status"] == "error"
    assert "the loss diverged" in failed["message"]


async def test_cancelled_training_stops_its_process(api: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "train.pid"
    resp = await api.post(
        TRAIN.format("classy"), params={"seconds": "60", "pidfile": str(pidfile)}
    )
    assert resp.status == 200, await resp.text()
    uuid = (await resp.json())["uuid"]
    pid = await wait_for_pidfile(pidfile)
    # Trainings always get a process of their own, whatever the kind.
    assert pid != os.getpid()

    resp = await api.delete(TRAIN.format("classy") + uuid)

    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "cancelled"
    deadline = time.monotonic() + DEADLINE
    while not is_gone(pid):
        assert time.monotonic() < deadline, f"training process {pid} still runs"
        await asyncio.sleep(0.05)
    assert (await wait_finished(api, "classy", uuid))["status"] == "cancelled"


# -- deadlines ------------------------------------------------------------------


@pytest.mark.parametrize("kind", LOCAL_KINDS)
async def test_a_prediction_past_its_deadline_is_504(
    aiohttp_client: Any, fake_site: Path, kind: ExecutorKind
) -> None:
    registry = await start_registry(
        ["oldstyle"], ExecutorSettings(kind=kind, predict_timeout=0.3)
    )
    try:
        client = await aiohttp_client(create_app(registry, ApiSettings()))

        began = time.monotonic()
        resp = await client.post(
            PREDICT.format("oldstyle"), params={"mode": "sleep", "text": "2"}
        )
        elapsed = time.monotonic() - began

        body = await assert_error(resp, 504)
        assert body["model"] == "oldstyle"
        assert "0.3 s" in body["message"]
        if kind != "inline":
            # The answer does not wait for the model: the deadline cuts it short.
            assert elapsed < 1.5, elapsed
        # The model answers again once it is free (the deadline counts the
        # time a call waits too, so a call may time out until then).
        deadline = time.monotonic() + DEADLINE
        while True:
            again = await client.post(PREDICT.format("oldstyle"), params={"text": "ok"})
            if again.status != 504:
                break
            assert time.monotonic() < deadline, "the model never answered again"
        assert again.status == 200, await again.text()
        assert (await again.json())["predictions"]["text"] == "ok"
    finally:
        await registry.close()
