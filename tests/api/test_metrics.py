"""Prometheus metrics, read back with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from deepserve.api import create_app
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings, ExecutorSettings
from tests.checks import DEADLINE, assert_error
from tests.conftest import start_registry

PREDICT = "/v2/models/{}/predict/"
PREDICT_ROUTE = "/v2/models/{name}/predict"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
StartRegistry = Callable[..., Awaitable[Registry]]


async def scrape(client: Any, **kwargs: Any) -> Samples:
    resp = await client.get("/metrics", **kwargs)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def request_labels(model: str, endpoint: str, status: str, method: str = "POST"):
    return {"model": model, "endpoint": endpoint, "method": method, "status": status}


@pytest_asyncio.fixture
async def start(fake_site: Path) -> AsyncIterator[StartRegistry]:
    started: list[Registry] = []

    async def make(names: list[str], settings: ExecutorSettings) -> Registry:
        registry = await start_registry(names, settings)
        started.append(registry)
        return registry

    yield make
    for registry in started:
        await registry.close()


async def test_requests_are_counted_by_model_route_and_status(client):
    for i in range(5):
        resp = await client.post(PREDICT.format("oldstyle"), params={"count": i})
        assert resp.status == 200
    for _ in range(2):
        await assert_error(await client.post(PREDICT.format("oldstyle"), params={"count": "x"}), 422)  # fmt: skip
    await assert_error(await client.post(PREDICT.format("nosuchmodel")), 404)
    for path in ("/a", "/b/c", "/v2/models/x/y/z"):
        await assert_error(await client.get(path), 404)
    assert (await client.get("/v2/models/")).status == 200

    samples = await scrape(client)
    ok = request_labels("oldstyle", PREDICT_ROUTE, "200")
    assert value(samples, "deepserve_requests_total", **ok) == 5
    assert value(samples, "deepserve_request_duration_seconds_count", **ok) == 5
    assert value(samples, "deepserve_request_duration_seconds_bucket", **ok, le="+Inf") == 5  # fmt: skip
    assert value(samples, "deepserve_request_duration_seconds_sum", **ok) > 0
    bad = request_labels("oldstyle", PREDICT_ROUTE, "422")
    assert value(samples, "deepserve_requests_total", **bad) == 2
    # An unknown model is no label value of its own.
    unknown = request_labels("", PREDICT_ROUTE, "404")
    assert value(samples, "deepserve_requests_total", **unknown) == 1
    # Unknown paths share one label: clients cannot make new series.
    unmatched = request_labels("", "unmatched", "404", method="GET")
    assert value(samples, "deepserve_requests_total", **unmatched) == 3
    listing = request_labels("", "/v2/models", "200", method="GET")
    assert value(samples, "deepserve_requests_total", **listing) == 1
    endpoints = {dict(labels)["endpoint"] for name, labels in samples if name == "deepserve_requests_total"}  # fmt: skip
    assert endpoints == {PREDICT_ROUTE, "unmatched", "/v2/models"}

    # The scrape itself is counted once answered.
    again = await scrape(client)
    scraped = request_labels("", "/metrics", "200", method="GET")
    assert value(again, "deepserve_requests_total", **scraped) == 1


async def test_every_app_counts_from_zero(aiohttp_client, registry):
    first = await aiohttp_client(create_app(registry, ApiSettings()))
    assert (await first.post(PREDICT.format("oldstyle"))).status == 200
    second = await aiohttp_client(create_app(registry, ApiSettings()))
    samples = await scrape(second)
    ok = request_labels("oldstyle", PREDICT_ROUTE, "200")
    assert value(samples, "deepserve_requests_total", **ok) == 0
    assert value(await scrape(first), "deepserve_requests_total", **ok) == 1


async def test_behind_a_base_path(aiohttp_client, registry):
    client = await aiohttp_client(create_app(registry, ApiSettings(base_path="/deep")))
    assert (await client.post("/deep" + PREDICT.format("minimal"))).status in (200, 422)
    resp = await client.get("/deep/metrics")
    assert resp.status == 200
    assert 'endpoint="/v2/models/{name}/predict"' in await resp.text()


async def test_queue_depth_for_every_model(client):
    samples = await scrape(client)
    for model in ("oldstyle", "classy", "minimal", "files", "batchy"):
        assert ("deepserve_queue_depth", frozenset({("model", model)})) in samples


async def test_queue_depth_counts_waiting_predictions(aiohttp_client, start):
    registry = await start(["oldstyle"], ExecutorSettings(workers=1))
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    slow = [
        asyncio.ensure_future(
            client.post(
                PREDICT.format("oldstyle"), params={"mode": "sleep", "text": "1"}
            )
        )
        for _ in range(4)
    ]
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while True:
        depth = value(await scrape(client), "deepserve_queue_depth", model="oldstyle")
        if depth >= 2:
            break
        assert asyncio.get_running_loop().time() < deadline, "nothing ever queued"
        await asyncio.sleep(0.05)
    for resp in await asyncio.gather(*slow):
        assert resp.status == 200
    assert value(await scrape(client), "deepserve_queue_depth", model="oldstyle") == 0


async def test_worker_restarts_are_counted(aiohttp_client, start):
    registry = await start(["oldstyle"], ExecutorSettings(workers=1))
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    before = await scrape(client)
    assert value(before, "deepserve_worker_restarts_total", model="oldstyle") == 0
    resp = await client.post(PREDICT.format("oldstyle"))
    pid = int((await resp.json())["predictions"]["pid"])
    os.kill(pid, signal.SIGKILL)
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while value(await scrape(client), "deepserve_worker_restarts_total", model="oldstyle") < 1:  # fmt: skip
        assert asyncio.get_running_loop().time() < deadline, "restart not counted"
        await asyncio.sleep(0.05)
    # The replacement serves again.
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while (await client.post(PREDICT.format("oldstyle"))).status != 200:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    samples = await scrape(client)
    assert value(samples, "deepserve_worker_restarts_total", model="oldstyle") == 1


async def test_batch_sizes_are_observed(aiohttp_client, start):
    registry = await start(["batchy"], ExecutorSettings(kind="thread", workers=1))
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    responses = await asyncio.gather(
        *(
            client.post(PREDICT.format("batchy"), params={"x": i, "delay": 0.05})
            for i in range(10)
        )
    )
    batches: dict[str, int] = {}
    for resp in responses:
        assert resp.status == 200, await resp.text()
        result = (await resp.json())["predictions"]
        batches[result["batch"]] = result["size"]
    samples = await scrape(client)

    def observed(suffix: str, **labels: str) -> float:
        return value(
            samples, f"deepserve_batch_size_{suffix}", model="batchy", **labels
        )

    assert observed("count") == len(batches)
    assert observed("sum") == 10
    for bound in ("1", "2", "4", "8"):
        expected = sum(1 for size in batches.values() if size <= int(bound))
        assert observed("bucket", le=bound) == expected
    assert observed("bucket", le="+Inf") == len(batches)


async def test_no_batch_histogram_without_batching(client):
    samples = await scrape(client)
    models = {dict(labels).get("model") for name, labels in samples if name.startswith("deepserve_batch_size")}  # fmt: skip
    assert models == {"batchy"}  # the only model of the registry that batches


async def test_training_jobs_by_status(aiohttp_client, start, tmp_path):
    registry = await start(["oldstyle"], ExecutorSettings(kind="inline"))
    client = await aiohttp_client(create_app(registry, ApiSettings()))
    train = "/v2/models/oldstyle/train/"
    done = await (await client.post(train, params={"seconds": 0})).json()
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while (await (await client.get(train + done["uuid"])).json())[
        "status"
    ] == "running":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    running = await (await client.post(train, params={"seconds": 60})).json()
    samples = await scrape(client)
    assert (
        value(samples, "deepserve_training_jobs", model="oldstyle", status="done") == 1
    )
    assert (
        value(samples, "deepserve_training_jobs", model="oldstyle", status="running")
        == 1
    )
    assert (await client.delete(train + running["uuid"])).status == 200
    samples = await scrape(client)
    assert (
        value(samples, "deepserve_training_jobs", model="oldstyle", status="cancelled")
        == 1
    )
    assert (
        value(samples, "deepserve_training_jobs", model="oldstyle", status="running")
        == 0
    )


async def test_metrics_can_be_turned_off(aiohttp_client, registry):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(metrics_endpoint=False))
    )
    await assert_error(await client.get("/metrics"), 404)
    spec = await (await client.get("/swagger.json")).json()
    assert "/metrics" not in spec["paths"]


async def test_metrics_with_a_token(aiohttp_client, registry):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(auth_tokens=("t0ken",)))
    )
    await assert_error(await client.get("/metrics"), 401)
    samples = await scrape(client, headers={"Authorization": "Bearer t0ken"})
    refused = request_labels("", "/metrics", "401", method="GET")
    assert value(samples, "deepserve_requests_total", **refused) == 1
