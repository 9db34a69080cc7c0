"""Adaptive batching through real HTTP: concurrent predictions of the
``batchy`` fake model arrive merged in its worker, answers go back split."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from deepserve.api import create_app
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings, ExecutorSettings
from tests.checks import assert_error
from tests.conftest import start_registry

PREDICT = "/v2/models/batchy/predict/"


@pytest_asyncio.fixture(scope="module")
async def batched(fake_site: Path) -> AsyncIterator[Registry]:
    """``batchy`` as the model declares it: batches of 4, 50 ms to fill."""
    registry = await start_registry(["batchy"], ExecutorSettings())
    yield registry
    await registry.close()


@pytest_asyncio.fixture(scope="module")
async def grouped(fake_site: Path) -> AsyncIterator[Registry]:
    """Batches of 4 that wait long to fill: four concurrent requests always
    share one batch."""
    registry = await start_registry(["batchy"], ExecutorSettings(max_latency_ms=5000))
    yield registry
    await registry.close()


@pytest_asyncio.fixture
async def registry_with(
    fake_site: Path,
) -> AsyncIterator[Any]:
    started: list[Registry] = []

    async def start(settings: ExecutorSettings) -> Registry:
        registry = await start_registry(["batchy"], settings)
        started.append(registry)
        return registry

    yield start
    for registry in started:
        await registry.close()


async def client_of(aiohttp_client: Any, registry: Registry) -> Any:
    return await aiohttp_client(create_app(registry, ApiSettings()))


async def predict(client: Any, x: int, delay: float = 0.0) -> Any:
    return await client.post(PREDICT, json={"x": x, "delay": delay})


async def prediction(client: Any, x: int, delay: float = 0.0) -> dict[str, Any]:
    resp = await predict(client, x, delay)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["status"] == "OK"
    result: dict[str, Any] = body["predictions"]
    return result


async def concurrent(client: Any, xs: list[int], delay: float = 0.0) -> list[Any]:
    return list(await asyncio.gather(*(prediction(client, x, delay) for x in xs)))


def check_batches(
    results: list[dict[str, Any]], limit: int
) -> collections.Counter[str]:
    """Each result is its caller's, and every batch is whole and in bounds."""
    sizes = collections.Counter(r["batch"] for r in results)
    for r in results:
        assert r["double"] == 2 * r["x"]
        assert r["size"] <= limit, r
        # All members of each batch were these requests: none lost, none extra.
        assert r["size"] == sizes[r["batch"]], r
    for batch in sizes:
        positions = sorted(r["position"] for r in results if r["batch"] == batch)
        assert positions == list(range(sizes[batch]))
    return sizes


async def test_concurrent_requests_are_merged_up_to_the_models_size(
    aiohttp_client: Any, batched: Registry
) -> None:
    client = await client_of(aiohttp_client, batched)

    # Each batch takes 0.1 s, so requests pile up behind it and merge.
    results = await concurrent(client, list(range(24)), delay=0.1)

    assert [r["x"] for r in results] == list(range(24))
    sizes = check_batches(results, 4)
    assert max(sizes.values()) == 4
    assert len(sizes) < 24


async def test_the_config_overrides_the_models_batch_size(
    aiohttp_client: Any, registry_with: Any
) -> None:
    registry = await registry_with(ExecutorSettings(max_batch_size=2))
    client = await client_of(aiohttp_client, registry)

    results = await concurrent(client, list(range(16)), delay=0.05)

    assert [r["x"] for r in results] == list(range(16))
    sizes = check_batches(results, 2)
    assert max(sizes.values()) == 2


async def test_batching_can_be_switched_off(
    aiohttp_client: Any, registry_with: Any
) -> None:
    registry = await registry_with(ExecutorSettings(batching=False))
    client = await client_of(aiohttp_client, registry)

    results = await concurrent(client, list(range(12)))

    assert [r["x"] for r in results] == list(range(12))
    assert [r["size"] for r in results] == [1] * 12
    assert len({r["batch"] for r in results}) == 12


async def test_a_lone_request_is_answered(
    aiohttp_client: Any, batched: Registry
) -> None:
    client = await client_of(aiohttp_client, batched)

    result = await prediction(client, 21)

    assert (result["x"], result["double"], result["size"]) == (21, 42, 1)


async def test_invalid_arguments_never_reach_a_batch(
    aiohttp_client: Any, grouped: Registry
) -> None:
    client = await client_of(aiohttp_client, grouped)

    bad = await client.post(PREDICT, json={"x": "many"})
    body = await assert_error(bad, 422)
    assert set(body["errors"]) == {"x"}
    # The batch still fills with four valid requests, none of them hurt.
    results = await concurrent(client, [1, 2, 3, 4])
    assert {r["size"] for r in results} == {4}


async def test_a_failing_item_fails_only_its_own_request(
    aiohttp_client: Any, grouped: Registry
) -> None:
    client = await client_of(aiohttp_client, grouped)

    first, refused, failed, last = await asyncio.gather(
        predict(client, 1),
        predict(client, -400),
        predict(client, -1),
        predict(client, 2),
    )

    assert first.status == 200, await first.text()
    assert last.status == 200, await last.text()
    good = [(await r.json())["predictions"] for r in (first, last)]
    # They were in the same batch as the failing ones.
    assert good[0]["batch"] == good[1]["batch"]
    assert [(g["x"], g["size"]) for g in good] == [(1, 4), (2, 4)]
    body = await assert_error(refused, 400)
    assert "negative" in body["message"]
    body = await assert_error(failed, 500)
    assert body["model"] == "batchy"
    assert body["error_type"] == "ValueError"


async def test_a_raising_batch_fails_each_of_its_requests(
    aiohttp_client: Any, grouped: Registry
) -> None:
    client = await client_of(aiohttp_client, grouped)

    responses = await asyncio.gather(*(predict(client, x) for x in (1, 999, 2, 3)))

    for resp in responses:
        body = await assert_error(resp, 500)
        assert body["model"] == "batchy"
        assert body["error_type"] == "RuntimeError"
    # The model goes on serving.
    results = await concurrent(client, [5, 6, 7, 8])
    assert [r["x"] for r in results] == [5, 6, 7, 8]


async def test_too_few_results_is_500_naming_the_model(
    aiohttp_client: Any, grouped: Registry
) -> None:
    client = await client_of(aiohttp_client, grouped)

    responses = await asyncio.gather(*(predict(client, x) for x in (1, 2, 998, 3)))

    for resp in responses:
        body = await assert_error(resp, 500)
        assert body["model"] == "batchy"
        assert "batchy" in body["message"]
        assert "4 results" in body["message"]


async def test_a_lone_998_is_500_naming_the_model(
    aiohttp_client: Any, batched: Registry
) -> None:
    client = await client_of(aiohttp_client, batched)

    body = await assert_error(await predict(client, 998), 500)

    assert body["model"] == "batchy"
    assert "batchy" in body["message"]
    assert "1 results, got 0" in body["message"]
