"""A locked job database loses no training's end, and keeps clients waiting
no longer than a second (a real SQLite file, locked by another connection,
as another program or replica would)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from deepserve.api import create_app
from deepserve.exceptions import JobStoreError
from deepserve.jobs import JobStore, recovery
from deepserve.jobs import store as store_mod
from deepserve.jobs.records import TrainingEnd
from deepserve.jobs.schema import QUICK_BUSY_TIMEOUT
from deepserve.settings import ApiSettings, JobSettings
from tests.conftest import start_registry
from tests.test_jobs import new_job


class Lock:
    """A write lock on the database file, held by another connection."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._held = False

    def take(self) -> None:
        self._conn.execute("BEGIN EXCLUSIVE")
        self._held = True

    def release(self) -> None:
        if self._held:
            self._conn.execute("COMMIT")
            self._held = False

    def close(self) -> None:
        self.release()
        self._conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite"


@pytest.fixture
def settings(path: Path, tmp_path: Path) -> JobSettings:
    return JobSettings(
        database=f"sqlite:///{path}",
        recovery_file=str(tmp_path / "ends.jsonl"),
    )


@pytest.fixture
async def store(settings: JobSettings) -> AsyncIterator[JobStore]:
    s = JobStore(settings)
    await s.open()
    yield s
    if s.opened:
        await s.close()


@pytest.fixture
def lock(path: Path, store: JobStore) -> Iterator[Lock]:
    held = Lock(path)
    yield held
    held.close()


@pytest.fixture
def short_busy_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Background writes wait 0.3 s for the lock instead of 15, so that a
    lock of a few seconds exercises their retries."""
    monkeypatch.setattr(store_mod, "SQLITE_BUSY_TIMEOUT", 0.3)


async def test_a_client_gets_a_busy_error_in_a_second_without_sql(store, lock):
    job = new_job(secret_argument="do-not-echo-me")
    lock.take()
    started = time.monotonic()
    with pytest.raises(JobStoreError) as err:
        await store.add(job)
    waited = time.monotonic() - started
    assert waited < QUICK_BUSY_TIMEOUT + 5, waited  # not the 15 s busy timeout
    message = str(err.value)
    assert message == "The training-job database is busy; try again shortly"
    assert err.value.retry_after == 1
    lock.release()
    await store.add(job)  # and it works once the lock is gone
    assert (await store.get("m", job.id)).status == "running"


async def test_the_end_of_a_training_waits_out_the_lock(
    store, lock, short_busy_wait, caplog
):
    caplog.set_level(logging.INFO)
    job = new_job()
    await store.add(job)
    lock.take()
    ending = asyncio.create_task(store.finish(job.id, "done", result={"acc": 0.9}))
    await asyncio.sleep(2)  # several failed tries, each after 0.3 s
    assert not ending.done()
    lock.release()
    await asyncio.wait_for(ending, 30)
    recorded = await store.get("m", job.id)
    assert recorded.status == "done"
    assert recorded.result == {"acc": 0.9}
    messages = [r.getMessage() for r in caplog.records]
    assert any("Cannot record the end of training" in m for m in messages)
    assert any(f"Recorded the end of training {job.id}" in m for m in messages)


async def test_ends_still_waiting_at_close_are_recorded_at_the_next_start(
    settings, lock, short_busy_wait, caplog
):
    first = JobStore(settings)
    await first.open()
    job = new_job()
    await first.add(job)
    lock.take()
    ending = asyncio.create_task(first.finish(job.id, "done", result=[1, 2]))
    await asyncio.sleep(1)
    await first.close()  # the server stops; the database is still locked
    await asyncio.wait_for(ending, 10)
    kept = Path(settings.recovery_file or "")
    (line,) = kept.read_text().splitlines()
    assert json.loads(line)["job_id"] == job.id
    lock.release()

    caplog.set_level(logging.INFO)
    second = JobStore(settings)  # the next start: another owner
    await second.open()
    try:
        recorded = await second.get("m", job.id)
        assert recorded.status == "done"
        assert recorded.result == [1, 2]
        assert not kept.exists()
    finally:
        await second.close()


async def test_a_recovered_end_overrides_the_interrupted_a_sweep_wrote(settings, store):
    """The job was marked interrupted meanwhile (its heartbeat stopped):
    the true end, from the recovery file, wins."""
    job = new_job()
    await store.add(job)
    await store.close()  # marks it interrupted, as a shutdown would
    assert recovery.save(
        settings.recovery_file or "",
        [TrainingEnd(job.id, "error", None, "ValueError: x", time.time())],
    )
    reopened = JobStore(settings)
    await reopened.open()
    try:
        recorded = await reopened.get("m", job.id)
        assert (recorded.status, recorded.message) == ("error", "ValueError: x")
    finally:
        await reopened.close()


async def test_a_training_request_over_a_locked_database_is_a_503(
    aiohttp_client: Any, fake_site: Path, settings: JobSettings, path: Path
):
    jobs = JobStore(settings)
    await jobs.open()
    registry = await start_registry(["chatty"], jobs=jobs)
    lock = Lock(path)
    try:
        client = await aiohttp_client(create_app(registry, ApiSettings()))
        lock.take()
        resp = await client.post(
            "/v2/models/chatty/train/",
            json={"lines": 1, "pidfile": "/nonexistent/secret-arg"},
        )
        text = await resp.text()
        assert resp.status == 503, text
        assert resp.headers["Retry-After"] == "1"
        body = json.loads(text)
        assert body["message"] == "The training-job database is busy; try again shortly"
        assert "INSERT" not in text and "secret-arg" not in text
    finally:
        lock.close()
        await registry.close()
        await jobs.close()


async def test_an_end_taken_after_close_goes_to_the_recovery_file(settings, store):
    job = new_job()
    await store.add(job)
    await store.close()
    store.expect(job.id, "done", result={"late": True})
    (line,) = Path(settings.recovery_file or "").read_text().splitlines()
    assert json.loads(line)["result"] == {"late": True}


async def test_a_cancelled_recording_keeps_the_end_for_close(
    settings, lock, short_busy_wait
):
    first = JobStore(settings)
    await first.open()
    job = new_job()
    await first.add(job)
    lock.take()
    recording = asyncio.create_task(first.finish(job.id, "done", result=7))
    await asyncio.sleep(0.8)
    recording.cancel()  # a second cancel of the training, a shutdown...
    with pytest.raises(asyncio.CancelledError):
        await recording
    await first.close()
    (line,) = Path(settings.recovery_file or "").read_text().splitlines()
    assert json.loads(line)["result"] == 7


async def test_a_result_json_cannot_hold_is_stored_as_text(store):
    job = new_job()
    await store.add(job)
    await store.finish(job.id, "done", result={(1, 2): "tuple key"})
    recorded = await store.get("m", job.id)
    assert recorded.status == "done"
    assert recorded.result == "{(1, 2): 'tuple key'}"


def test_the_recovery_file_survives_a_torn_line_and_is_taken_atomically(tmp_path):
    path = tmp_path / "ends.jsonl"
    path.write_text('{"job_id": "torn", "sta')  # a write cut short
    end = TrainingEnd("j1", "done", {"a": 1}, None, 1.0)
    assert recovery.save(str(path), [end]) == 1
    taken = recovery.take(str(path))
    assert taken is not None and not path.exists()
    assert recovery.load(taken) == [end]  # the torn line skipped, logged
    assert recovery.take(str(path)) is None
