"""deepserve.client's HTTP plumbing: headers, timeouts, foreign errors, threads.

These need answers a deepserve server does not give (a slow one, a proxy's
error page, a record of the headers received), so a small aiohttp server
stands in for it; every request still goes over real HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from deepserve.api import create_app
from deepserve.client import (
    ApiError,
    AsyncClient,
    AsyncDeployedModel,
    Client,
    ClientError,
    DeployedModel,
    RequestTimeout,
)
from deepserve.settings import ApiSettings
from tests.test_client import CLIENTS, open_calls


@dataclass
class Stub:
    url: str
    headers: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def stub(aiohttp_server: Any) -> Stub:
    seen: list[dict[str, str]] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"models": [{"name": "m"}]})

    async def model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "slow":
            await asyncio.sleep(2)
        if name == "proxied":
            return web.Response(status=502, text="Bad gateway page\n")
        return web.json_response({"name": name})

    app = web.Application()
    app.router.add_get("/v2/models/", models)
    app.router.add_get("/v2/models/{name}/", model)
    server = await aiohttp_server(app)
    return Stub(str(server.make_url("")).rstrip("/"), seen)


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_token_is_sent_as_a_bearer_header(stub: Stub, kind: str) -> None:
    client = await open_calls(kind, CLIENTS, stub.url, token="s3cret")
    assert await client.models() == [{"name": "m"}]
    await client.close()
    anonymous = await open_calls(kind, CLIENTS, stub.url)
    await anonymous.models()
    await anonymous.close()
    with_token, without = stub.headers
    assert with_token["Authorization"] == "Bearer s3cret"
    assert with_token["User-Agent"].startswith("deepserve-client/")
    assert "Authorization" not in without


async def test_slow_server_raises_a_timeout(stub: Stub, kind: str) -> None:
    client = await open_calls(kind, CLIENTS, stub.url, timeout=0.2)
    with pytest.raises(RequestTimeout) as err:
        await client.metadata("slow")
    assert isinstance(err.value, TimeoutError)
    assert str(err.value) == f"No answer from {stub.url}/v2/models/slow/ within 0.2 s"
    await client.close()


async def test_an_error_page_becomes_an_api_error(stub: Stub, kind: str) -> None:
    client = await open_calls(kind, CLIENTS, stub.url)
    with pytest.raises(ApiError) as err:
        await client.metadata("proxied")
    await client.close()
    assert err.value.status == 502
    assert err.value.detail == "Bad gateway page"
    assert err.value.errors == {}
    assert str(err.value) == (
        f"502 Bad Gateway: Bad gateway page (GET {stub.url}/v2/models/proxied/)"
    )


@pytest.mark.parametrize("url", ["localhost:5000", "ftp://host/", "http://"])
@pytest.mark.parametrize(
    "make",
    [
        AsyncClient,
        Client,
        lambda url: DeployedModel(url, "m"),
        lambda url: AsyncDeployedModel(url, "m"),
    ],
)
def test_a_url_that_is_not_http_is_refused(
    make: Callable[[str], Any], url: str
) -> None:
    threads = threading.active_count()
    with pytest.raises(ValueError, match="Not an http"):
        make(url)
    assert threading.active_count() == threads


async def test_a_closed_client_refuses_calls(stub: Stub, kind: str) -> None:
    client = await open_calls(kind, CLIENTS, stub.url)
    await client.models()
    await client.close()
    await client.close()  # closing twice is harmless
    with pytest.raises(ClientError, match="closed"):
        await client.models()


async def test_a_given_session_is_used_and_left_open(stub: Stub) -> None:
    async with aiohttp.ClientSession(headers={"X-Mine": "yes"}) as session:
        async with AsyncClient(stub.url, session=session) as client:
            await client.models()
        assert not session.closed
        assert stub.headers[-1]["X-Mine"] == "yes"
        async with AsyncClient(stub.url, session=session) as client:
            assert await client.metadata("again") == {"name": "again"}


def client_threads() -> int:
    return sum(t.name == "deepserve-client" for t in threading.enumerate())


async def test_blocking_clients_stop_their_thread(stub: Stub) -> None:
    before = client_threads()
    with Client(stub.url) as client:
        assert client_threads() == before + 1
        await asyncio.to_thread(client.models)
    assert client_threads() == before
    # One that is never closed stops when it is collected. (The worker
    # thread of to_thread may hold the call, and so the client, a moment
    # after the answer: collect until it is let go.)
    forgotten = Client(stub.url)
    await asyncio.to_thread(forgotten.models)
    del forgotten
    deadline = time.monotonic() + 10
    while True:
        gc.collect()
        if client_threads() == before:
            break
        assert time.monotonic() < deadline, "the forgotten client's thread runs on"
        await asyncio.sleep(0.05)


async def test_a_blocking_client_serves_many_threads(stub: Stub) -> None:
    with Client(stub.url) as client:
        names = [f"m{i}" for i in range(16)]
        results = await asyncio.gather(
            *(asyncio.to_thread(client.metadata, name) for name in names)
        )
    assert [r["name"] for r in results] == names


async def test_a_blocking_client_works_inside_a_running_loop(stub: Stub) -> None:
    # Where the caller's thread runs a loop already (Jupyter, an async app),
    # asyncio.run() would fail; the client's own loop thread does not care.
    async def inside() -> Any:
        with DeployedModel(stub.url, "m") as model:
            return model.metadata()

    assert await asyncio.to_thread(asyncio.run, inside()) == {"name": "m"}


async def test_a_server_under_a_base_path(
    aiohttp_server: Any, registry: Any, kind: str
) -> None:
    # The real app, in this process: the URL's path is the base path, for
    # the OpenAPI document and every operation.
    server = await aiohttp_server(create_app(registry, ApiSettings(base_path="/api")))
    url = str(server.make_url("/api"))
    client = await open_calls(kind, CLIENTS, url)
    try:
        assert "classy" in {m["name"] for m in await client.models()}
        answer = await client.predict("classy", x=2, **{"X-Token": "t"})
        assert answer["label"] == "pos:t:0"
        done = await client.wait("classy", await client.train("classy"), timeout=60)
        assert done.status == "done"
    finally:
        await client.close()


async def test_a_server_that_does_not_speak_json(
    aiohttp_server: Any, kind: str
) -> None:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="<html>Welcome</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/v2/models/", page)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    client = await open_calls(kind, CLIENTS, url)
    with pytest.raises(ClientError, match="is it a deepserve server") as err:
        await client.models()
    await client.close()
    assert f"GET {url}/v2/models/ answered 200" in str(err.value)


# -- retries -----------------------------------------------------------------------


@dataclass
class Flaky:
    """A server answering ``503`` a number of times before it succeeds."""

    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def flaky(aiohttp_server: Any) -> Flaky:
    """``/v2/models/busy-N/``: 503 + ``Retry-After: 0`` to the first N
    requests; ``stopping``: always 503 without ``Retry-After``; predict:
    503 once, then the size of the file it received."""
    seen: list[str] = []

    async def model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        seen.append(name)
        if name == "stopping":
            return web.json_response({"code": 503, "message": "bye"}, status=503)
        refusals = int(name.split("-")[1])
        if seen.count(name) <= refusals:
            return web.json_response(
                {"code": 503, "message": "busy"},
                status=503,
                headers={"Retry-After": "0"},
            )
        return web.json_response({"name": name})

    async def predict(request: web.Request) -> web.Response:
        seen.append("predict")
        form = await request.post()
        if seen.count("predict") == 1:
            return web.json_response(
                {"code": 503, "message": "starting"},
                status=503,
                headers={"Retry-After": "0"},
            )
        upload = form["data"]
        assert isinstance(upload, web.FileField)
        return web.json_response({"size": len(upload.file.read())})

    async def document(_request: web.Request) -> web.Response:
        return web.json_response({"paths": {}})  # every call is undocumented

    app = web.Application()
    app.router.add_get("/swagger.json", document)
    app.router.add_get("/v2/models/{name}/", model)
    app.router.add_post("/v2/models/{name}/predict/", predict)
    server = await aiohttp_server(app)
    return Flaky(str(server.make_url("")).rstrip("/"), seen)


async def test_a_503_with_retry_after_is_retried(flaky: Flaky, kind: str) -> None:
    client = await open_calls(kind, CLIENTS, flaky.url)
    assert await client.metadata("busy-3") == {"name": "busy-3"}
    await client.close()
    assert flaky.requests == ["busy-3"] * 4  # three refusals, the default


@pytest.mark.parametrize("retries", [0, 1])
async def test_retries_are_bounded(flaky: Flaky, kind: str, retries: int) -> None:
    client = await open_calls(kind, CLIENTS, flaky.url, retries=retries)
    with pytest.raises(ApiError) as err:
        await client.metadata("busy-5")
    await client.close()
    assert err.value.status == 503
    assert flaky.requests == ["busy-5"] * (retries + 1)


async def test_a_503_without_retry_after_is_not_retried(flaky: Flaky) -> None:
    async with AsyncClient(flaky.url) as client:
        with pytest.raises(ApiError) as err:
            await client.metadata("stopping")
    assert err.value.status == 503
    assert flaky.requests == ["stopping"]


@pytest.mark.parametrize("given", ["path", "bytes"])
async def test_paths_and_bytes_are_uploaded_again(
    flaky: Flaky, tmp_path: Any, given: str
) -> None:
    content = b"x" * 70_000
    path = tmp_path / "in.bin"
    path.write_bytes(content)
    value = path if given == "path" else ("in.bin", content)
    async with AsyncClient(flaky.url) as client:
        answer = await client.predict("m", files={"data": value})
    assert answer == {"size": 70_000}
    assert flaky.requests == ["predict", "predict"]


async def test_an_open_file_is_not_uploaded_again(flaky: Flaky, tmp_path: Any) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(b"x" * 1000)
    async with AsyncClient(flaky.url) as client:
        with path.open("rb") as stream, pytest.raises(ApiError) as err:
            await client.predict("m", files={"data": stream})
    assert err.value.status == 503
    assert flaky.requests == ["predict"]


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="retries"):
        AsyncClient("http://127.0.0.1:5000", retries=-1)
