"""The list of trainings: filtered by status, paged, with its headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from deepserve.api import create_app
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings
from tests.api.test_training import TRAIN, start, wait_finished
from tests.checks import assert_error
from tests.conftest import start_registry

LIST = TRAIN.format("chatty")


@pytest.fixture
async def fresh(fake_site: Path) -> AsyncIterator[Registry]:
    """A registry of its own (and so a job store of its own)."""
    registry = await start_registry(["chatty"])
    try:
        yield registry
    finally:
        await registry.close()


@pytest.fixture
async def three(aiohttp_client: Any, fresh: Registry) -> tuple[Any, list[str]]:
    """A client, and three ended trainings: done, error, done."""
    client = await aiohttp_client(create_app(fresh, ApiSettings()))
    ids = []
    for fail in ("false", "true", "false"):
        job = await start(client, "chatty", params={"fail": fail})
        ids.append(job["uuid"])
        await wait_finished(client, "chatty", job["uuid"])
    return client, ids


async def listed(client: Any, **params: Any) -> tuple[list[str], Any]:
    resp = await client.get(LIST, params=params)
    assert resp.status == 200, await resp.text()
    return [j["uuid"] for j in await resp.json()], resp.headers


async def test_whole_list_has_a_total_and_no_links(three):
    client, ids = three

    got, headers = await listed(client)

    assert got == ids
    assert headers["X-Total-Count"] == "3"
    assert "Link" not in headers


async def test_pages_with_links(three):
    client, ids = three

    first, headers = await listed(client, limit=2)
    assert first == ids[:2]
    assert headers["X-Total-Count"] == "3"
    links = headers["Link"]
    assert f'<{LIST}?limit=2&offset=2>; rel="next"' in links
    assert f'<{LIST}?limit=2&offset=0>; rel="first"' in links
    assert f'<{LIST}?limit=2&offset=2>; rel="last"' in links
    assert 'rel="prev"' not in links

    second, headers = await listed(client, limit=2, offset=2)
    assert second == ids[2:]
    assert f'<{LIST}?limit=2&offset=0>; rel="prev"' in headers["Link"]
    assert 'rel="next"' not in headers["Link"]

    assert (await listed(client, offset=5))[0] == []


async def test_filter_by_status(three):
    client, ids = three

    done, headers = await listed(client, status="done")
    assert done == [ids[0], ids[2]]
    assert headers["X-Total-Count"] == "2"
    assert (await listed(client, status="error"))[0] == [ids[1]]
    assert (await listed(client, status="running"))[0] == []
    assert (await listed(client, status="done", limit=1, offset=1))[0] == [ids[2]]
    resp = await client.get(LIST, params={"status": "error"})
    assert (await resp.json())[0]["message"] == "ValueError: chatty failed"


async def test_an_offset_past_any_database_integer_is_an_empty_page(client):
    # SQL integers stop at 2**63 - 1; an offset past them is past every row.
    got, headers = await listed(client, offset=2**64, limit=10)

    assert got == []
    assert f'offset={2**64 - 10}&limit=10>; rel="prev"' in headers["Link"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "finished"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "1.5"}, "offset"),
    ],
)
async def test_bad_parameters_are_422_naming_them(client, params, field):
    resp = await client.get(LIST, params=params)

    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {field}
    assert f"'{field}'" in body["message"]
