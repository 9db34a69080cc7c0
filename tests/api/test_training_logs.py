"""A training's output over HTTP: captured from its process, while it runs
and after, followed with a cursor, and bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from deepserve.api import create_app
from deepserve.jobs import JobStore
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings, JobSettings
from tests.api.test_training import cancel, start, wait_finished
from tests.checks import DEADLINE, assert_error, wait_for_pidfile
from tests.conftest import start_registry

LOGS = "/v2/models/chatty/train/{}/logs"


async def get_logs(client: Any, uuid: str, **params: Any) -> dict[str, Any]:
    resp = await client.get(LOGS.format(uuid), params=params)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


def lines(body: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(e["stream"], e["level"], e["text"]) for e in body["logs"]]


async def wait_for_line(client: Any, uuid: str, text: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        body = await get_logs(client, uuid)
        if any(e["text"] == text for e in body["logs"]):
            return body
        assert time.monotonic() < deadline, f"never logged {text!r}: {body}"
        await asyncio.sleep(0.1)


#: What fake_chatty's train writes first, in order within each stream.
EXPECTED = [
    ("stdout", None, "epoch 1: printed to stdout"),
    ("stderr", None, "epoch 1: printed to stderr"),
    ("stdout", None, "written to fd 1 directly"),
    ("log", "INFO", "fake_chatty: a log record at INFO"),
    ("log", "WARNING", "fake_chatty: a log record at WARNING"),
    ("stdout", None, "waiting"),
]


def by_stream(entries: list[tuple[str, str | None, str]]) -> dict[str, list[Any]]:
    # Streams are separate pipes: the order within one is kept, across
    # them it is the order the server read them in.
    out: dict[str, list[Any]] = {}
    for e in entries:
        out.setdefault(e[0], []).append(e)
    return out


async def test_output_is_readable_while_the_training_runs(client, tmp_path):
    pidfile = tmp_path / "train.pid"
    job = await start(
        client, "chatty", params={"seconds": "60", "pidfile": str(pidfile)}
    )
    await wait_for_pidfile(pidfile)

    body = await wait_for_line(client, job["uuid"], "waiting")

    assert body["uuid"] == job["uuid"]
    assert body["status"] == "running"
    assert body["truncated"] is False and body["dropped"] == 0
    assert by_stream(lines(body)) == by_stream(EXPECTED)
    for entry in body["logs"]:
        assert entry["time"].endswith("+00:00")
    assert [e["seq"] for e in body["logs"]] == sorted(e["seq"] for e in body["logs"])
    assert body["next"] == body["logs"][-1]["seq"]
    # Nothing new after the cursor yet.
    assert (await get_logs(client, job["uuid"], since=body["next"]))["logs"] == []

    await cancel(client, "chatty", job["uuid"])
    after = await get_logs(client, job["uuid"])
    assert after["status"] == "cancelled"
    assert lines(after)[: len(EXPECTED)] == lines(body)


async def test_output_of_an_ended_training_followed_with_a_cursor(client):
    job = await start(client, "chatty", params={"lines": "3"})
    assert (await wait_finished(client, "chatty", job["uuid"]))["status"] == "done"

    whole = await get_logs(client, job["uuid"])
    stdout = [text for stream, _, text in lines(whole) if stream == "stdout"]
    assert stdout == [
        "epoch 1: printed to stdout",
        "written to fd 1 directly",
        *(f"line {i:06d} " + "x" * 10 for i in range(3)),
        "waiting",
        "the end",
    ]

    # Page through it two entries at a time.
    seen: list[Any] = []
    cursor = 0
    while True:
        page = await get_logs(client, job["uuid"], since=cursor, limit=2)
        assert len(page["logs"]) <= 2
        if not page["logs"]:
            assert page["next"] == cursor
            break
        seen.extend(page["logs"])
        cursor = page["next"]
    assert seen == whole["logs"]


async def test_a_cursor_past_any_database_integer_is_the_end(client):
    job = await start(client, "chatty", params={"lines": "0"})
    await wait_finished(client, "chatty", job["uuid"])

    page = await get_logs(client, job["uuid"], since=2**64)

    assert page["logs"] == []
    assert page["next"] == 2**64


@pytest.fixture
async def bounded(fake_site: Path, tmp_path: Path) -> AsyncIterator[Registry]:
    store = JobStore(
        JobSettings(
            database=f"sqlite:///{tmp_path / 'jobs.sqlite'}", max_log_bytes=2048
        )
    )
    await store.open()
    registry = await start_registry(["chatty"], jobs=store)
    try:
        yield registry
    finally:
        await registry.close()
        await store.close()


async def test_output_past_the_bound_keeps_the_newest(aiohttp_client, bounded):
    client = await aiohttp_client(create_app(bounded, ApiSettings()))
    job = await start(client, "chatty", params={"lines": "200", "line_size": "100"})
    await wait_finished(client, "chatty", job["uuid"])

    body = await get_logs(client, job["uuid"])

    assert body["truncated"] is True
    assert body["dropped"] > 150
    texts = [e["text"] for e in body["logs"]]
    assert sum(len(t.encode()) for t in texts) <= 2048
    stdout = [e["text"] for e in body["logs"] if e["stream"] == "stdout"]
    assert stdout[-2:] == ["waiting", "the end"]
    assert "line 000199 " + "x" * 100 in texts
    assert "epoch 1: printed to stdout" not in texts


async def test_logs_of_an_unknown_training_are_404(client):
    resp = await client.get(LOGS.format("0" * 32))

    body = await assert_error(resp, 404)
    assert "0" * 32 in body["message"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "-1"}, "since"),
        ({"since": "soon"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
    ],
)
async def test_bad_log_parameters_are_422(client, params, field):
    resp = await client.get(LOGS.format("0" * 32), params=params)

    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {field}
    assert f"'{field}'" in body["message"]
