"""Trainings through the DEEPaaS V2 HTTP API, with real training workers."""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deepserve.api import create_app
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings, ExecutorSettings
from tests.checks import wait_for_pidfile
from tests.conftest import start_registry

TRAIN = "/v2/models/{}/train/"
#: DEEPaaS's date format for trainings.
DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
#: ``str(datetime.timedelta)``, as DEEPaaS reports durations.
DURATION = re.compile(r"^\d+:\d{2}:\d{2}(\.\d{6})?$")
DEADLINE = 30.0


async def start(client: Any, model: str, **kwargs: Any) -> dict[str, Any]:
    resp = await client.post(TRAIN.format(model), **kwargs)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def get_job(client: Any, model: str, uuid: str) -> dict[str, Any]:
    resp = await client.get(TRAIN.format(model) + uuid)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_finished(
    client: Any, model: str, uuid: str, timeout: float = DEADLINE
) -> dict[str, Any]:
    """Poll a training until it is no longer running."""
    deadline = time.monotonic() + timeout
    while True:
        job = await get_job(client, model, uuid)
        if job["status"] != "running":
            return job
        assert time.monotonic() < deadline, f"training {uuid} still running"
        await asyncio.sleep(0.1)


async def cancel(client: Any, model: str, uuid: str) -> dict[str, Any]:
    resp = await client.delete(TRAIN.format(model) + uuid)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process {pid} still exists"
        await asyncio.sleep(0.05)


async def assert_error(resp: Any, status: int) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["code"] == status
    assert body["message"]
    return body


# -- the life of a training -------------------------------------------------


async def test_start_answers_running_job(client):
    job = await start(client, "classy", params={"seconds": "0.2"})

    assert set(job) == {"uuid", "date", "status", "args"}
    assert re.fullmatch(r"[0-9a-f]{32}", job["uuid"])
    assert job["status"] == "running"
    started = datetime.datetime.strptime(job["date"], DATE_FORMAT)
    assert abs(datetime.datetime.now() - started) < datetime.timedelta(minutes=1)
    assert job["args"] == {"seconds": 0.2, "fail": False, "pidfile": None, "data": None}
    await wait_finished(client, "classy", job["uuid"])


async def test_training_is_listed(client):
    job = await start(client, "classy")

    resp = await client.get(TRAIN.format("classy"))
    assert resp.status == 200
    listed = {j["uuid"]: j for j in await resp.json()}
    assert listed[job["uuid"]]["date"] == job["date"]
    assert listed[job["uuid"]]["args"] == job["args"]
    await wait_finished(client, "classy", job["uuid"])


async def test_training_ends_done_with_result(client):
    job = await start(client, "classy", params={"seconds": "0.3"})

    done = await wait_finished(client, "classy", job["uuid"])

    assert done["status"] == "done", done
    assert done["uuid"] == job["uuid"]
    assert done["date"] == job["date"]
    result = done["result"]
    assert set(result) == {"output", "finish_date", "duration"}
    # warm() ran once, in the training's own worker.
    assert result["output"] == {"seconds": 0.3, "upload_size": None, "warm_count": 1}
    assert DURATION.match(result["duration"])
    assert done["duration"] == result["duration"]
    started = datetime.datetime.strptime(done["date"], DATE_FORMAT)
    finished = datetime.datetime.strptime(result["finish_date"], DATE_FORMAT)
    assert finished - started >= datetime.timedelta(seconds=0.3)


async def test_failed_training_ends_in_error(client):
    job = await start(client, "classy", params={"fail": "true"})

    failed = await wait_finished(client, "classy", job["uuid"])

    assert failed["status"] == "error"
    assert "the loss diverged" in failed["message"]
    assert "result" not in failed
    assert "Traceback" not in failed["message"]
    # The server goes on serving.
    resp = await client.post("/v2/models/classy/predict/", params={"x": "1"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["score"] == 2.0
    assert (await get_job(client, "classy", job["uuid"]))["status"] == "error"


async def test_cancel_stops_the_training_process(client, tmp_path):
    pidfile = tmp_path / "train.pid"
    job = await start(
        client, "classy", params={"seconds": "60", "pidfile": str(pidfile)}
    )
    pid = await wait_for_pidfile(pidfile)

    began = time.monotonic()
    cancelled = await cancel(client, "classy", job["uuid"])

    assert cancelled["status"] == "cancelled"
    assert cancelled["uuid"] == job["uuid"]
    assert time.monotonic() - began < 15
    await wait_gone(pid)
    after = await get_job(client, "classy", job["uuid"])
    assert after["status"] == "cancelled"
    assert "result" not in after


async def test_cancel_of_a_finished_training_keeps_it_done(client):
    job = await start(client, "classy")
    assert (await wait_finished(client, "classy", job["uuid"]))["status"] == "done"

    assert (await cancel(client, "classy", job["uuid"]))["status"] == "done"


# -- trainings and predictions side by side --------------------------------


@pytest.fixture
async def single_worker(fake_site: Path) -> AsyncIterator[Registry]:
    registry = await start_registry(["classy"], ExecutorSettings(workers=1))
    try:
        yield registry
    finally:
        await registry.close()


async def test_training_never_blocks_predictions(aiohttp_client, single_worker):
    client = await aiohttp_client(create_app(single_worker, ApiSettings()))
    job = await start(client, "classy", params={"seconds": "60"})
    try:
        for x in range(10):
            began = time.monotonic()
            resp = await client.post("/v2/models/classy/predict/", params={"x": x})
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["score"] == 2.0 * x
            assert time.monotonic() - began < 5
        assert (await get_job(client, "classy", job["uuid"]))["status"] == "running"
    finally:
        assert (await cancel(client, "classy", job["uuid"]))["status"] == "cancelled"


# -- uploads ----------------------------------------------------------------


async def test_uploaded_file_lives_until_the_training_ends(
    aiohttp_client, registry, tmp_path
):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(upload_dir=str(tmp_path)))
    )
    form = aiohttp.FormData()
    form.add_field(
        "data",
        b"\x00\x01" * 617,
        filename="weights.bin",
        content_type="application/octet-stream",
    )
    form.add_field("seconds", "0.5")

    resp = await client.post(TRAIN.format("classy"), data=form)
    assert resp.status == 200, await resp.text()
    text = await resp.text()
    job = await resp.json()

    assert job["args"]["data"] == {
        "name": "data",
        "original_filename": "weights.bin",
        "content_type": "application/octet-stream",
    }
    assert job["args"]["seconds"] == 0.5
    assert str(tmp_path) not in text
    done = await wait_finished(client, "classy", job["uuid"])
    assert done["status"] == "done", done
    assert done["result"]["output"]["upload_size"] == 1234
    assert str(tmp_path) not in str(done)
    assert list(tmp_path.iterdir()) == []


async def test_uploads_removed_when_training_fails(aiohttp_client, registry, tmp_path):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(upload_dir=str(tmp_path)))
    )
    form = aiohttp.FormData()
    form.add_field("data", b"abc", filename="a.txt", content_type="text/plain")
    form.add_field("fail", "true")

    job = await start(client, "classy", data=form)

    assert (await wait_finished(client, "classy", job["uuid"]))["status"] == "error"
    assert list(tmp_path.iterdir()) == []


async def test_uploads_removed_when_arguments_are_invalid(
    aiohttp_client, registry, tmp_path
):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(upload_dir=str(tmp_path)))
    )
    form = aiohttp.FormData()
    form.add_field("data", b"abc", filename="a.txt", content_type="text/plain")
    form.add_field("seconds", "abc")

    resp = await client.post(TRAIN.format("classy"), data=form)

    await assert_error(resp, 422)
    assert list(tmp_path.iterdir()) == []


# -- errors and the old-style model ------------------------------------------


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_training_is_404(client, method):
    resp = await client.request(method, TRAIN.format("classy") + "0" * 32)

    body = await assert_error(resp, 404)
    assert "0" * 32 in body["message"]


async def test_invalid_train_arguments_are_422(client):
    resp = await client.post(TRAIN.format("classy"), params={"seconds": "abc"})

    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {"seconds"}
    listed = await (await client.get(TRAIN.format("classy"))).json()
    assert all(j["args"].get("seconds") != "abc" for j in listed)


async def test_oldstyle_training_with_query_arguments(client):
    job = await start(client, "oldstyle", params={"epochs": "3"})

    assert job["args"] == {"epochs": 3, "pidfile": None, "seconds": 0.0}
    done = await wait_finished(client, "oldstyle", job["uuid"])
    assert done["status"] == "done", done
    assert done["result"]["output"] == {"epochs": 3, "warm_calls": 1}
