"""deepserve.client's retries: a server that is not listening yet, one that
cuts connections, ``Retry-After`` as a date, all within the call's timeout.

The pure logic (waits, ``Retry-After`` values, which failures are worth
another try, deadlines) is tested first, without sleeping; then real
clients against a real ``deepserve run`` started after they began calling,
against ports where nothing listens, and against small servers on loopback
that answer what a deepserve server does not (``503`` with an HTTP date, a
connection closed without an answer).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from deepserve.client import (
    ApiError,
    AsyncClient,
    AsyncDeployedModel,
    ConnectionFailed,
    DeployedModel,
    RequestTimeout,
    retry,
)
from tests.conftest import VENV_MODELS
from tests.servers import Server, free_port
from tests.test_client import CLIENTS, open_calls

MODELS = {"async": AsyncDeployedModel, "sync": DeployedModel}
#: The OpenAPI document of the stand-in servers: model ``m`` predicts
#: with a query argument ``text`` and a file ``data``.
DOCUMENT = {
    "paths": {
        "/v2/models/m/predict/": {
            "post": {
                "parameters": [
                    {"name": "text", "in": "query", "schema": {"type": "string"}}
                ],
                "requestBody": {
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "properties": {
                                    "data": {"type": "string", "format": "binary"}
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the waits ---------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    almost_one = 1.0 - 1e-12
    ceilings = [retry.backoff(n, lambda: almost_one) for n in range(8)]
    assert ceilings == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    # However many retries: no overflow, the cap.
    assert retry.backoff(10_000, lambda: almost_one) == pytest.approx(5.0)
    assert retry.backoff(3, lambda: 0.5, base=1.0, cap=60.0) == 4.0


def test_backoff_is_full_jitter() -> None:
    assert retry.backoff(5, lambda: 0.0) == 0.0
    draws = [retry.backoff(4, random.Random(7).random) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]  # the source decides, alone
    spread = random.Random(42)
    waits = [retry.backoff(4, spread.random) for _ in range(1000)]
    assert all(0.0 <= wait < 3.2 for wait in waits)
    # Spread over the whole range, not bunched at the bound.
    assert min(waits) < 0.1 and max(waits) > 3.1
    assert 1.4 < sum(waits) / len(waits) < 1.8


def test_backoff_refuses_a_negative_retry() -> None:
    with pytest.raises(ValueError, match="negative"):
        retry.backoff(-1)


NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        # IMF-fixdate, and the obsolete forms RFC 9110 has recipients accept.
        ("Sun, 06 Nov 1994 08:49:40 GMT", 3.0),
        ("Sunday, 06-Nov-94 08:49:47 GMT", 10.0),
        ("Sun Nov  6 08:50:37 1994", 60.0),
        # Past: at once.
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        ("Sat, 05 Nov 1994 08:49:37 GMT", 0.0),
        # Nonsense: None, for the caller's own wait.
        ("soon", None),
        ("", None),
        ("-1", None),
        ("1.5", None),
        ("²", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
    ],
)
def test_retry_after_values(value: str, seconds: float | None) -> None:
    assert retry.retry_after(value, now=NOW) == seconds


def test_retry_after_date_from_the_clock() -> None:
    ahead = retry.retry_after(formatdate(time.time() + 30, usegmt=True))
    assert ahead is not None and 28 <= ahead <= 30


# -- which failures are worth another try -------------------------------------------

KEY: Any = SimpleNamespace(host="example.org", port=80, ssl=True)


def connector(error: OSError) -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(KEY, error)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (connector(ConnectionRefusedError(errno.ECONNREFUSED, "refused")), True),
        (connector(ConnectionResetError(errno.ECONNRESET, "reset")), True),
        (connector(OSError(errno.ECONNREFUSED, "refused")), True),
        (connector(socket.gaierror(socket.EAI_AGAIN, "try again")), True),
        (connector(socket.gaierror(socket.EAI_NONAME, "unknown name")), False),
        (connector(OSError(errno.ENETUNREACH, "unreachable")), False),
        (aiohttp.ClientConnectorSSLError(KEY, OSError(errno.ECONNRESET, "x")), False),
        (aiohttp.ServerDisconnectedError(), False),
        (aiohttp.ClientOSError(errno.ECONNRESET, "reset"), False),
    ],
)
def test_unreached(error: aiohttp.ClientError, expected: bool) -> None:
    assert retry.unreached(error) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientOSError(errno.ECONNRESET, "reset"), True),
        (aiohttp.ClientOSError(errno.EPIPE, "broken pipe"), True),
        (aiohttp.ClientOSError(errno.EACCES, "denied"), False),
        (aiohttp.ClientPayloadError("cut short"), False),
        (connector(ConnectionRefusedError(errno.ECONNREFUSED, "refused")), False),
    ],
)
def test_broken(error: aiohttp.ClientError, expected: bool) -> None:
    assert retry.broken(error) is expected


def test_a_lost_connection_is_broken() -> None:
    lost = getattr(aiohttp, "ClientConnectionResetError", None)
    if lost is None:
        pytest.skip(f"aiohttp {aiohttp.__version__} has no ClientConnectionResetError")
    assert retry.broken(lost("Connection lost"))
    assert retry.broken(lost("Cannot write to closing transport"))


# -- deadlines ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_counts_down() -> None:
    clock = Clock()
    deadline = retry.Deadline(10, clock)
    clock.now += 4
    assert deadline.elapsed() == 4 and deadline.left() == 6
    assert deadline.allows(5.9) and not deadline.allows(6)
    clock.now += 20
    assert deadline.left() == 0 and not deadline.allows(0)
    unlimited = retry.Deadline(None, clock)
    clock.now += 1e9
    assert unlimited.left() is None and unlimited.allows(1e9)


def test_a_call_inside_a_call_shares_its_deadline() -> None:
    with retry.call(10) as outer, retry.call(99) as inner:
        assert inner is outer
    with retry.call(99) as after:
        assert after is not outer and after.seconds == 99


def test_negative_connect_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="connect_retries"):
        AsyncClient("http://127.0.0.1:5000", connect_retries=-1)


# -- a server that is not there yet -------------------------------------------------


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("deepserve.client") and "trying again" in r.getMessage()
    ]


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.02)


@pytest.fixture
def late_server() -> Iterator[dict[str, Any]]:
    """A port nothing listens on, and ``start()`` to run ``deepserve run``
    (the demo model) on it."""
    port = free_port()
    started: list[Server] = []

    def start() -> Server:
        env = dict(os.environ)
        for var in ("PYTHONPATH", "DEEPSERVE_V2_MODEL", "DEEPAAS_V2_MODEL"):
            env.pop(var, None)
        args = ["--model-name", "demo"] if VENV_MODELS else []
        server = Server(args, env, port=port)
        started.append(server)
        return server

    try:
        yield {"url": f"http://127.0.0.1:{port}", "start": start}
    finally:
        for server in started:
            server.stop()


@pytest.mark.timeout(300)
async def test_a_call_made_before_the_server_starts_succeeds(
    late_server: dict[str, Any], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="deepserve.client")
    model = await open_calls(
        kind,
        MODELS,
        late_server["url"],
        "demo",
        timeout=180,
        connect_retries=200,
        retries=200,
    )
    try:
        call = asyncio.ensure_future(model.predict(text="early bird"))
        # Refused at least once: the server is started only now.
        await until(lambda: len(retries_logged(caplog)) >= 1)
        assert not call.done()
        late_server["start"]()
        answer = await call
    finally:
        await model.close()
    assert answer["text"] == "early bird"
    refused = retries_logged(caplog)[0]
    assert refused.startswith(f"GET {late_server['url']}/swagger.json: Cannot connect")


async def test_default_settings_wait_for_a_server_starting_a_second_later(
    kind: str,
) -> None:
    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": "m"}]})

    port = free_port()
    app = web.Application()
    app.router.add_get("/v2/models/", models)
    runner = web.AppRunner(app)
    await runner.setup()

    async def start_late() -> None:
        await asyncio.sleep(1.0)
        await web.TCPSite(runner, "127.0.0.1", port).start()

    late = asyncio.ensure_future(start_late())
    client = await open_calls(kind, CLIENTS, f"http://127.0.0.1:{port}")
    try:
        started = time.monotonic()
        assert await client.models() == [{"name": "m"}]
        assert time.monotonic() - started >= 0.9
    finally:
        await client.close()
        await late
        await runner.cleanup()


async def test_nobody_listening_gives_up_within_the_timeout(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = await open_calls(kind, CLIENTS, url, timeout=2, connect_retries=1000)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as err:
        await client.models()
    elapsed = time.monotonic() - started
    await client.close()
    assert elapsed < 3  # the timeout, and slack for a loaded machine
    message = str(err.value)
    found = re.fullmatch(
        rf"Cannot reach the deepserve server at {url}/v2/models/: Cannot connect to "
        rf".*\(gave up after (\d+) attempts in (\d+\.\d) s: the timeout of 2 s "
        r"leaves no time for another attempt\)",
        message,
    )
    assert found, message
    assert int(found[1]) == err.value.attempts >= 3
    assert float(found[2]) == pytest.approx(err.value.seconds, abs=0.05)
    assert err.value.seconds <= 2


async def test_connect_retries_bound_the_attempts(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = await open_calls(kind, CLIENTS, url, timeout=None, connect_retries=3)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as err:
        await client.metadata("m")
    elapsed = time.monotonic() - started
    await client.close()
    assert err.value.attempts == 4
    assert str(err.value).endswith(
        f"(gave up after 4 attempts in {err.value.seconds:.1f} s)"
    )
    assert elapsed < 0.2 + 0.4 + 0.8 + 1.0  # the three waits' bounds, and slack


async def test_no_connect_retries_gives_up_at_once(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = await open_calls(kind, CLIENTS, url, connect_retries=0)
    with pytest.raises(ConnectionFailed) as err:
        await client.models()
    await client.close()
    assert err.value.attempts == 1
    assert str(err.value) == (
        f"Cannot reach the deepserve server at {url}/v2/models/: {err.value.reason}"
    )
    assert "Connect call failed" in err.value.reason


async def test_deployed_models_take_connect_retries(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    model = await open_calls(kind, MODELS, url, "m", connect_retries=1)
    with pytest.raises(ConnectionFailed) as err:
        await model.metadata()
    await model.close()
    assert err.value.attempts == 2


async def test_a_name_that_does_not_exist_is_not_retried(kind: str) -> None:
    try:
        socket.getaddrinfo("deepserve-nowhere.invalid", 80)
    except socket.gaierror as err:
        if err.errno != socket.EAI_NONAME:
            pytest.skip(f"this resolver answers {err}: not a plain 'no such name'")
    client = await open_calls(kind, CLIENTS, "http://deepserve-nowhere.invalid:80")
    with pytest.raises(ConnectionFailed) as failed:
        await client.models()
    await client.close()
    assert failed.value.attempts == 1


# -- connections cut once open ------------------------------------------------------


@dataclass
class Cutting:
    """A raw HTTP server that closes connections without an answer: the
    first two ``GET /v2/models/``, and every ``POST``."""

    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def cutting() -> AsyncIterator[Cutting]:
    seen: list[str] = []

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target = head.decode("latin-1").split(" ")[:2]
            seen.append(f"{method} {target}")
            if method == "POST" or (
                target == "/v2/models/" and seen.count(seen[-1]) <= 2
            ):
                return  # closed in finally, unanswered
            body = DOCUMENT if target == "/swagger.json" else {"models": []}
            data = json.dumps(body).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(data), data)
            )
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield Cutting(f"http://127.0.0.1:{port}", seen)
    server.close()


async def test_a_get_whose_connection_was_cut_is_sent_again(
    cutting: Cutting, kind: str
) -> None:
    client = await open_calls(kind, CLIENTS, cutting.url)
    assert await client.models() == []
    await client.close()
    assert cutting.requests == ["GET /v2/models/"] * 3


async def test_a_post_whose_connection_was_cut_is_not_sent_again(
    cutting: Cutting, kind: str
) -> None:
    client = await open_calls(kind, CLIENTS, cutting.url)
    with pytest.raises(ConnectionFailed) as err:
        await client.predict("m", text="once")
    await client.close()
    assert cutting.requests == [
        "GET /swagger.json",
        "POST /v2/models/m/predict/?text=once",
    ]
    assert err.value.attempts == 1
    assert str(err.value).endswith(
        "(not retried: the server may have received the POST)"
    )


# -- a server gone after the client read its document ------------------------------


@pytest.fixture
async def gone(aiohttp_server: Any) -> AsyncIterator[AsyncClient]:
    """A client that read the OpenAPI document of a server that is now
    closed: its predict is refused."""

    async def document(_request: web.Request) -> web.Response:
        return web.json_response(DOCUMENT)

    app = web.Application()
    app.router.add_get("/swagger.json", document)
    server = await aiohttp_server(app)
    client = AsyncClient(str(server.make_url("")).rstrip("/"), connect_retries=2)
    await client.document()
    await server.close()
    yield client
    await client.close()


async def test_an_open_file_is_not_sent_again_after_a_refusal(
    gone: AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(b"x" * 100)
    with path.open("rb") as stream, pytest.raises(ConnectionFailed) as err:
        await gone.predict("m", files={"data": stream})
    assert err.value.attempts == 1
    assert "not retried: the attempt spent the open file it uploads" in str(err.value)
    # A path is opened again for each attempt.
    with pytest.raises(ConnectionFailed) as err:
        await gone.predict("m", files={"data": path})
    assert err.value.attempts == 3


# -- Retry-After -------------------------------------------------------------------


@dataclass
class Busy:
    """A server answering ``503`` with the ``Retry-After`` that ``/v2/models/
    <name>/`` asks for, once, then ``200``."""

    url: str
    times: list[float] = field(default_factory=list)


@pytest.fixture
async def busy(aiohttp_server: Any) -> Busy:
    times: list[float] = []

    async def model(request: web.Request) -> web.Response:
        times.append(time.monotonic())
        name = request.match_info["name"]
        if len(times) == 1:
            when = {
                "soon": "in a moment",
                "past": formatdate(time.time() - 3600, usegmt=True),
                "date2": formatdate(time.time() + 2, usegmt=True),
                "date60": formatdate(time.time() + 60, usegmt=True),
            }.get(name, name)
            return web.json_response(
                {"code": 503, "message": "busy"},
                status=503,
                headers={"Retry-After": when},
            )
        return web.json_response({"name": name})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        if request.path == "/swagger.json":
            return web.json_response(DOCUMENT)
        return web.json_response({"status": "OK", "predictions": "late"})

    app = web.Application()
    app.router.add_get("/v2/models/{name}/", model)
    app.router.add_get("/swagger.json", slow)
    app.router.add_post("/v2/models/{name}/predict/", slow)
    server = await aiohttp_server(app)
    return Busy(str(server.make_url("")).rstrip("/"), times)


async def test_retry_after_as_an_http_date(busy: Busy, kind: str) -> None:
    client = await open_calls(kind, CLIENTS, busy.url)
    assert await client.metadata("date2") == {"name": "date2"}
    await client.close()
    first, second = busy.times
    # The date has whole seconds: 2 s ahead is 1 to 2 s from now.
    assert 0.9 <= second - first < 4


@pytest.mark.parametrize("name", ["past", "soon"])
async def test_a_past_date_or_nonsense_retries_soon(
    busy: Busy, kind: str, name: str
) -> None:
    client = await open_calls(kind, CLIENTS, busy.url)
    assert await client.metadata(name) == {"name": name}
    await client.close()
    first, second = busy.times
    assert second - first < 0.2 + 0.8  # the first backoff's bound, and slack


@pytest.mark.parametrize("name", ["date60", "5"])
async def test_a_wait_past_the_timeout_is_not_waited(
    busy: Busy, kind: str, name: str
) -> None:
    client = await open_calls(kind, CLIENTS, busy.url, timeout=1)
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        await client.metadata(name)
    assert time.monotonic() - started < 0.9  # not 5 s, nor 60
    await client.close()
    assert err.value.status == 503
    assert len(busy.times) == 1


async def test_one_call_fits_in_one_timeout(busy: Busy, kind: str) -> None:
    # The document and the prediction take 0.6 s each: each would fit in
    # the timeout, both do not.
    client = await open_calls(kind, CLIENTS, busy.url, timeout=1)
    with pytest.raises(RequestTimeout, match="within 1 s"):
        await client.predict("m")
    # The document is kept now: the prediction alone fits.
    assert await client.predict("m") == {"status": "OK", "predictions": "late"}
    await client.close()
    model = await open_calls(kind, MODELS, busy.url, "m", timeout=1)
    with pytest.raises(RequestTimeout):
        await model.predict()
    await model.close()
