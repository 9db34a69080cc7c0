"""Requests aiohttp cannot parse: answered in JSON, logged in one line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from deepserve.api import create_app, protocol
from deepserve.settings import ApiSettings
from tests.servers import free_port

MALFORMED = {
    "long request line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "long header": b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"b" * 9000
    + b"\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
    "bad method": b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n",
    "bad header": b"GET /v2/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "bad length": b"POST /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
}


@pytest_asyncio.fixture
async def address(registry) -> AsyncIterator[tuple[str, int]]:  # type: ignore[no-untyped-def]
    """A real server of the app, through deepserve's runner."""
    runner = protocol.AppRunner(create_app(registry, ApiSettings()))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield "127.0.0.1", port
    await runner.cleanup()


async def exchange(address: tuple[str, int], data: bytes) -> tuple[str, dict, bytes]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(data)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=30)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return status, headers, body


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
async def test_malformed_requests_get_json_and_one_log_line(address, caplog, case):
    caplog.set_level(logging.DEBUG)
    status, headers, body = await exchange(address, MALFORMED[case])
    assert re.match(r"HTTP/1\.[01] 4\d\d ", status), status
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    assert error["code"] == int(status.split()[1])
    assert error["message"].startswith("The HTTP request cannot be read: ")
    assert "Traceback" not in error["message"]
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].name == "deepserve.api.protocol"
    assert records[0].exc_info is None and "\n" not in records[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


async def test_well_formed_requests_are_served_as_usual(address):
    status, _headers, body = await exchange(
        address, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == "HTTP/1.1 200 OK"
    assert json.loads(body)["id"] == "v2"
