"""Crashes, deadlines, backpressure and disconnects, through real HTTP.

Every test starts the registry it needs, so a crash or a full queue here
never reaches another test's models.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from deepserve.api import create_app
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings, ExecutorSettings
from tests.checks import DEADLINE, assert_error, wait_for_pidfile
from tests.conftest import oldstyle_args, start_registry
from tests.servers import children, gone

PREDICT = "/v2/models/{}/predict/"
TRAIN = "/v2/models/{}/train/"

StartRegistry = Callable[..., Awaitable[Registry]]


@pytest_asyncio.fixture
async def start(fake_site: Path) -> AsyncIterator[StartRegistry]:
    """Start registries with given settings; all are closed afterwards."""
    started: list[Registry] = []

    async def make(names: list[str], settings: ExecutorSettings) -> Registry:
        registry = await start_registry(names, settings)
        started.append(registry)
        return registry

    yield make
    for registry in started:
        await registry.close()


async def until(
    check: Callable[[], bool], what: str, timeout: float = DEADLINE
) -> None:
    """Wait for ``check()`` to hold, without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def predict(client: Any, model: str, **params: Any) -> Any:
    return await client.post(PREDICT.format(model), params=params)


async def oldstyle_pid(client: Any) -> int:
    resp = await predict(client, "oldstyle")
    assert resp.status == 200, await resp.text()
    return int((await resp.json())["predictions"]["pid"])


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def worker_processes(before: set[int]) -> set[int]:
    """This process's children that are not in ``before``, the resource
    tracker of multiprocessing aside; zombies count."""
    return {
        pid
        for pid in set(children(os.getpid())) - before
        if b"resource_tracker" not in cmdline(pid)
    }


# -- crashes ----------------------------------------------------------------------


@pytest.mark.timeout(600)  # not timed: a hundred spawns on a busy machine
async def test_a_hundred_crashes_then_a_normal_answer_and_no_leftovers(
    aiohttp_client: Any, start: StartRegistry
) -> None:
    before = set(children(os.getpid()))
    registry = await start(["oldstyle"], ExecutorSettings(workers=2))
    client = await aiohttp_client(create_app(registry, ApiSettings()))

    for n in range(100):
        resp = await predict(client, "oldstyle", mode="exit")
        body = await assert_error(resp, 503)
        assert body["model"] == "oldstyle", n
        assert "exited with code 3" in body["message"], (n, body)

    pids = {await oldstyle_pid(client) for _ in range(6)}
    # Dead workers are reaped and only the pool's two remain, alive.
    await until(lambda: len(worker_processes(before)) == 2, "two workers remain")
    workers = worker_processes(before)
    assert pids <= workers
    assert not any(gone(pid) for pid in workers)

    await registry.close()
    await until(lambda: not worker_processes(before), "no worker remains")


async def test_other_models_are_unaffected_by_a_crashing_one(
    aiohttp_client: Any, start: StartRegistry
) -> None:
    registry = await start(["classy", "oldstyle"], ExecutorSettings())
    client = await aiohttp_client(create_app(registry, ApiSettings()))

    async def crash(times: int) -> list[int]:
        return [
            (await predict(client, "oldstyle", mode="exit")).status
            for _ in range(times)
        ]

    crashing = asyncio.ensure_future(crash(8))
    answers: list[dict[str, Any]] = []
    while not crashing.done():
        began = time.monotonic()
        resp = await predict(client, "classy", x=len(answers))
        assert resp.status == 200, await resp.text()
        assert time.monotonic() - began < 5
        answers.append(await resp.json())

    assert await crashing == [503] * 8
    assert len(answers) >= 8
    assert [a["score"] for a in answers] == [2.0 * x for x in range(len(answers))]
    # Never restarted: one instance, warmed once.
    assert {a["instance"] for a in answers} == {answers[0]["instance"]}
    assert {a["warm_count"] for a in answers} == {1}


async def test_upload_is_removed_when_the_worker_crashes(
    aiohttp_client: Any, start: StartRegistry, tmp_path: Path
) -> None:
    registry = await start(["oldstyle"], ExecutorSettings())
    client = await aiohttp_client(
        create_app(registry, ApiSettings(upload_dir=str(tmp_path)))
    )

    def form(mode: str) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("data", b"x" * 4096, filename="in.bin")
        data.add_field("mode", mode)
        return data

    ok = await client.post(PREDICT.format("oldstyle"), data=form("echo"))
    assert ok.status == 200, await ok.text()
    # The uploads do go to upload_dir, and are gone after the request.
    assert (await ok.json())["predictions"]["file"]["path"].startswith(str(tmp_path))
    assert list(tmp_path.iterdir()) == []

    crashed = await client.post(PREDICT.format("oldstyle"), data=form("exit"))

    body = await assert_error(crashed, 503)
    assert "exited with code 3" in body["message"]
    assert crashed.headers["Retry-After"] == "1"  # a replacement is starting
    assert list(tmp_path.iterdir()) == []


async def test_a_training_whose_process_dies_ends_in_error(
    aiohttp_client: Any, start: StartRegistry, tmp_path: Path
) -> None:
    registry = await start(["classy"], ExecutorSettings())
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    pidfile = tmp_path / "train.pid"
    resp = await client.post(
        TRAIN.format("classy"), params={"seconds": "60", "pidfile": str(pidfile)}
    )
    assert resp.status == 200, await resp.text()
    uuid = (await resp.json())["uuid"]
    pid = await wait_for_pidfile(pidfile)

    os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + DEADLINE
    while True:
        resp = await client.get(TRAIN.format("classy") + uuid)
        assert resp.status == 200, await resp.text()
        job = await resp.json()
        if job["status"] != "running":
            break
        assert time.monotonic() < deadline, "the training still runs"
        await asyncio.sleep(0.1)
    assert job["status"] == "error", job
    assert "killed by SIGKILL" in job["message"]
    assert "result" not in job
    await until(lambda: gone(pid), f"process {pid} is gone")
    # The model's predictions never noticed.
    again = await predict(client, "classy", x=1)
    assert again.status == 200, await again.text()


# -- deadlines --------------------------------------------------------------------


async def test_a_prediction_past_its_deadline_is_504_and_its_worker_replaced(
    aiohttp_client: Any, start: StartRegistry
) -> None:
    registry = await start(["oldstyle"], ExecutorSettings(predict_timeout=0.5))
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    before = await oldstyle_pid(client)

    began = time.monotonic()
    resp = await predict(client, "oldstyle", mode="sleep", text="30")
    body = await assert_error(resp, 504)

    assert time.monotonic() - began < 5
    assert body["model"] == "oldstyle"
    assert "0.5 s" in body["message"]
    await until(lambda: gone(before), "the late worker is gone", timeout=10)
    # The deadline counts the time a call waits for a worker too: a call
    # may time out while the replacement starts.
    deadline = time.monotonic() + DEADLINE
    while True:
        resp = await predict(client, "oldstyle")
        if resp.status != 504:
            break
        assert time.monotonic() < deadline, "no worker ever answered again"
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["pid"] != before
    assert time.monotonic() - began < 15  # not stuck behind the 30 s sleep


# -- backpressure -----------------------------------------------------------------


async def test_a_full_queue_answers_503_at_once_with_retry_after(
    aiohttp_client: Any, start: StartRegistry
) -> None:
    registry = await start(["oldstyle"], ExecutorSettings(workers=1, max_queue=2))
    served = registry["oldstyle"]
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    await oldstyle_pid(client)  # the worker is up

    # Straight to the model, so that it is surely the one the worker runs.
    slow = asyncio.ensure_future(served.predict(oldstyle_args(mode="sleep", text="2")))
    await asyncio.sleep(0)
    queued = [
        asyncio.ensure_future(predict(client, "oldstyle", text=str(n)))
        for n in range(2)
    ]
    await until(lambda: served.queue_depth == 2, "two requests are queued")

    began = time.monotonic()
    refused = [await predict(client, "oldstyle", text=str(n)) for n in range(5)]
    elapsed = time.monotonic() - began

    assert elapsed < 0.4, elapsed
    assert served.queue_depth == 2
    for resp in refused:
        body = await assert_error(resp, 503)
        assert body["model"] == "oldstyle"
        assert int(resp.headers["Retry-After"]) >= 1
    assert (await slow)["text"] == "2"
    for resp in await asyncio.gather(*queued):
        assert resp.status == 200, await resp.text()
    assert served.queue_depth == 0
    # Room again: the next request is served.
    await oldstyle_pid(client)


# -- disconnects -------------------------------------------------------------------


async def test_a_client_that_disconnects_cancels_its_queued_work(
    aiohttp_server: Any, start: StartRegistry
) -> None:
    registry = await start(["oldstyle"], ExecutorSettings(workers=1))
    served = registry["oldstyle"]
    # aiohttp's test server cancels handlers when their client goes, as
    # deepserve's own server does (handler_cancellation=True).
    server = await aiohttp_server(create_app(registry, ApiSettings()))
    url = str(server.make_url(PREDICT.format("oldstyle")))
    async with aiohttp.ClientSession() as session:

        async def call(**params: str) -> dict[str, Any]:
            async with session.post(url, params=params) as resp:
                assert resp.status == 200, await resp.text()
                return dict((await resp.json())["predictions"])

        before = (await call())["pid"]
        # Straight to the model, so that it is surely the one the worker runs.
        busy = asyncio.ensure_future(
            served.predict(oldstyle_args(mode="sleep", text="1"))
        )
        await asyncio.sleep(0)

        # A request that would kill the worker, queued behind the sleep...
        _reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            f"POST {PREDICT.format('oldstyle')}?mode=exit HTTP/1.1\r\n"
            f"Host: {server.host}:{server.port}\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        await writer.drain()
        await until(lambda: served.queue_depth == 1, "the crash is queued")
        # ...whose client goes away before it is served.
        writer.close()
        await writer.wait_closed()
        await until(lambda: served.queue_depth == 0, "the crash left the queue")
        assert not busy.done()

        assert (await busy)["pid"] == before
        # The crash never ran: the same worker serves on.
        for _ in range(3):
            assert (await call())["pid"] == before
