"""Request ids: accepted or made up, echoed, and on the request's log lines."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from deepserve import adapters, loader, logs
from deepserve.api import create_app, requestids
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ApiSettings, ExecutorSettings

PREDICT = "/v2/models/oldstyle/predict/"


class Records(logging.Handler):
    """Keeps the records of logger ``deepserve``, filtered as the CLI does."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.addFilter(logs.RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    names = ("deepserve", "fake_slow", "fake_batchy")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


@pytest.fixture(params=["thread", "inline"])
async def slow_client(  # type: ignore[no-untyped-def]
    request, aiohttp_client, fake_site: Path, slow_site: Path
) -> AsyncIterator[object]:
    """A client of the ``slow`` model (it logs from ``predict``), run in
    the server process by the executor kind of the parameter."""
    sys.path.insert(0, str(slow_site))
    try:
        available = loader.discover(loader.installed_entry_points())
    finally:
        sys.path.remove(str(slow_site))
    (ref,) = loader.select(available, ["slow"])
    settings = ExecutorSettings(kind=request.param)
    registry = Registry([ServedModel.create(ref, adapters.build(ref), settings)])
    await registry.start()
    yield await aiohttp_client(create_app(registry, ApiSettings()))
    await registry.close()


def is_generated(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


async def test_given_id_is_echoed(client):
    resp = await client.get("/v2/models/", headers={"X-Request-ID": "abc-123"})
    assert resp.status == 200
    assert resp.headers["X-Request-ID"] == "abc-123"


async def test_id_is_generated_when_absent_and_differs_per_request(client):
    first = (await client.get("/v2/")).headers["X-Request-ID"]
    second = (await client.get("/v2/")).headers["X-Request-ID"]
    assert is_generated(first) and is_generated(second)
    assert first != second


@pytest.mark.parametrize(
    "given",
    ["x" * (requestids.MAX_LENGTH + 1), "two words", 'quote"d', "tab\there", "é"],
)
async def test_unsafe_ids_are_replaced(client, given):
    resp = await client.get("/v2/", headers={"X-Request-ID": given})
    assert is_generated(resp.headers["X-Request-ID"])


async def test_longest_safe_id_is_kept(client):
    given = "A0._:/+=@-" + "z" * (requestids.MAX_LENGTH - 10)
    resp = await client.get("/v2/", headers={"X-Request-ID": given})
    assert resp.headers["X-Request-ID"] == given


async def test_errors_carry_the_id(client):
    for method, path, status in (
        ("GET", "/no/such/path", 404),
        ("POST", PREDICT + "?count=x", 422),
        ("DELETE", "/v2/models/", 405),
    ):
        resp = await client.request(method, path, headers={"X-Request-ID": "err-1"})
        assert resp.status == status
        assert resp.headers["X-Request-ID"] == "err-1"


async def test_streamed_file_responses_carry_the_id(client):
    resp = await client.post(
        PREDICT, headers={"Accept": "image/png", "X-Request-ID": "png-1"}
    )
    assert resp.status == 200 and resp.content_type == "image/png"
    assert resp.headers["X-Request-ID"] == "png-1"


async def test_log_lines_of_a_request_carry_its_id(client, records):
    resp = await client.post(
        PREDICT, params={"mode": "crash"}, headers={"X-Request-ID": "crash-7"}
    )
    assert resp.status == 500
    errors = [r for r in records.records if r.levelno >= logging.ERROR]
    assert errors, "the model's failure was not logged"
    assert {r.request_id for r in errors} == {"crash-7"}  # type: ignore[attr-defined]
    assert " [crash-7]" in errors[0].request_tag  # type: ignore[attr-defined]

    # Outside any request, records say so.
    logging.getLogger("deepserve.test").warning("between requests")
    assert records.records[-1].request_id is None  # type: ignore[attr-defined]
    assert records.records[-1].request_tag == ""  # type: ignore[attr-defined]


async def test_model_log_lines_carry_the_id_in_threads_too(slow_client, records):
    resp = await slow_client.post(
        "/v2/models/slow/predict/", headers={"X-Request-ID": "model-3"}
    )
    assert resp.status == 200, await resp.text()
    (line,) = [r for r in records.records if r.name == "fake_slow"]
    assert line.getMessage() == "sleeping 0.0 s"
    assert line.request_id == "model-3"  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["inline", "thread", "process"])
async def test_lines_logged_in_a_merged_batch_carry_every_request_id(  # type: ignore[no-untyped-def]
    aiohttp_client, fake_site: Path, records, capfd, kind
):
    (ref,) = loader.select(loader.discover(loader.installed_entry_points()), ["batchy"])
    settings = ExecutorSettings(kind=kind, max_batch_size=4, max_latency_ms=10_000)
    registry = Registry([ServedModel.create(ref, adapters.build(ref), settings)])
    await registry.start()
    try:
        client = await aiohttp_client(create_app(registry, ApiSettings()))
        ids = [f"batch-{n}" for n in range(4)]
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v2/models/batchy/predict/",
                    params={"x": n},
                    headers={"X-Request-ID": rid},
                )
                for n, rid in enumerate(ids)
            )
        )
        bodies = [await resp.json() for resp in answers]
        assert [resp.status for resp in answers] == [200] * 4, bodies
        assert {b["predictions"]["size"] for b in bodies} == {4}  # one batch
        # Each answer still carries its own request's id.
        assert [resp.headers["X-Request-ID"] for resp in answers] == ids
    finally:
        await registry.close()

    if kind == "process":  # the worker writes its lines to its stderr
        (line,) = [x for x in capfd.readouterr().err.splitlines() if "a batch of" in x]
        tag = line.split("] [", 1)[1].split("]", 1)[0]  # "[worker N] [ids]: "
    else:
        (record,) = [r for r in records.records if r.name == "fake_batchy"]
        tag = record.request_id
    assert sorted(tag.split(",")) == ids


async def test_generated_ids_differ_between_apps_and_requests(aiohttp_client, registry):
    """Two servers (two apps) never hand out the same ids."""
    seen: set[str] = set()
    for _ in range(2):
        app_client = await aiohttp_client(create_app(registry, ApiSettings()))
        for _ in range(50):
            seen.add((await app_client.get("/v2/")).headers["X-Request-ID"])
    assert len(seen) == 100 and all(is_generated(i) for i in seen)


def test_a_forked_child_makes_ids_of_its_own():
    """Ids are a random half and a counter; a child of fork() must not
    repeat its parent's (request ids would collide in the logs)."""
    import os

    from deepserve.api.requestids import _Ids

    fresh = _Ids()
    parent = [fresh() for _ in range(3)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(fresh() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    assert len(child) == 3 and all(len(i) == 32 for i in child)
    assert {i[:16] for i in child} != {i[:16] for i in parent}
    assert not set(child) & {*parent, fresh(), fresh(), fresh()}
