"""The training-job store, on real SQLite files and a real PostgreSQL server.

Every test that is not about SQLite itself runs on both (see
:mod:`tests.postgres`: the PostgreSQL runs are skipped, saying why, where
PostgreSQL is not installed).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from deepserve.exceptions import JobNotFound, JobStoreError
from deepserve.jobs import (
    INTERRUPTED_BY_LOSS,
    INTERRUPTED_BY_SHUTDOWN,
    SCHEMA_VERSION,
    JobStore,
    LogEntry,
    TrainingJob,
)
from deepserve.settings import JobSettings

Opener = Callable[..., Any]
MS = datetime.timedelta(milliseconds=1)


def url(path: Path) -> str:
    return f"sqlite:///{path}"


class Database:
    """The database the stores of a test share, reached directly too."""

    def __init__(self, url: str) -> None:
        self.url = url

    def raw(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """Run SQL on the database directly, as another program would."""
        engine = sa.create_engine(self.url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(sql), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """An empty database: a file in ``tmp_path``, or one on the session's
    PostgreSQL server."""
    if request.param == "sqlite":
        return Database(url(tmp_path / "jobs.sqlite"))
    return Database(request.getfixturevalue("postgres").new_database())


@pytest.fixture
async def opened(db: Database) -> AsyncIterator[Opener]:
    """Open stores on ``db``; close them at the end."""
    stores: list[JobStore] = []

    async def open_store(**settings: Any) -> JobStore:
        settings.setdefault("database", db.url)
        store = JobStore(JobSettings(**settings))
        await store.open()
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        if store.opened:
            await store.close()


def new_job(model: str = "m", **args: Any) -> TrainingJob:
    import uuid

    return TrainingJob(
        id=uuid.uuid4().hex,
        model=model,
        status="running",
        args=args,
        created=datetime.datetime.now(datetime.UTC),
    )


def raw(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Run SQL on an SQLite file directly, as another program would."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


# -- records ----------------------------------------------------------------


async def test_finished_job_is_kept_across_reopening(opened):
    store = await opened()
    job = new_job(epochs=3, data={"name": "data", "original_filename": "a.txt"})
    await store.add(job)
    await store.mark_started(job.id)
    await store.finish(job.id, "done", result={"loss": 0.25, "shape": (2, 3)})
    await store.close()

    again = await opened()
    got = await again.get("m", job.id)

    assert got.status == "done"
    assert got.args == {
        "epochs": 3,
        "data": {"name": "data", "original_filename": "a.txt"},
    }
    assert got.result == {"loss": 0.25, "shape": [2, 3]}
    assert got.message is None
    assert got.owner == store.owner != again.owner
    assert abs(got.created - job.created) < MS
    assert got.started is not None and got.finished is not None
    assert got.created <= got.started <= got.finished
    assert got.duration is not None
    assert abs(got.duration - (got.finished - got.created)) < MS


async def test_unknown_job_or_other_model_is_not_found(opened):
    store = await opened()
    job = new_job("m")
    await store.add(job)

    with pytest.raises(JobNotFound):
        await store.get("m", "nope")
    with pytest.raises(JobNotFound):
        await store.get("other", job.id)
    with pytest.raises(JobNotFound):
        await store.logs("other", job.id)


async def test_list_filters_by_status_and_pages_oldest_first(opened):
    store = await opened()
    ids = []
    for i, status in enumerate(["done", "error", "done", "running", "done"]):
        job = new_job(i=i)
        ids.append(job.id)
        await store.add(job)
        if status != "running":
            await store.finish(
                job.id, status, message="bad" if status == "error" else None
            )
        await asyncio.sleep(0.002)  # distinct creation times
    await store.add(new_job("other"))

    everything = await store.list_jobs("m")
    assert [j.id for j in everything.jobs] == ids and everything.total == 5

    done = await store.list_jobs("m", status="done")
    assert [j.args["i"] for j in done.jobs] == [0, 2, 4] and done.total == 3

    page = await store.list_jobs("m", status="done", limit=2, offset=1)
    assert [j.args["i"] for j in page.jobs] == [2, 4] and page.total == 3
    assert (await store.list_jobs("m", limit=2, offset=4)).jobs[0].id == ids[4]
    assert (await store.list_jobs("m", offset=9)).jobs == []
    assert (await store.list_jobs("m", status="error")).jobs[0].message == "bad"


async def test_offsets_and_cursors_past_any_database_integer_are_the_end(opened):
    store = await opened()
    job = new_job()
    await store.add(job)
    await store.append_logs(job.id, [entry("one")])

    page = await store.list_jobs("m", limit=10, offset=2**64)
    assert page.jobs == [] and page.total == 1
    logs = await store.logs("m", job.id, since=2**64)
    assert logs.entries == [] and logs.next == 2**64


# -- output -----------------------------------------------------------------


def entry(text: str, stream: str = "stdout", level: str | None = None) -> LogEntry:
    return LogEntry(stream=stream, time=time.time(), text=text, level=level)


async def test_logs_after_a_cursor(opened):
    store = await opened()
    job = new_job()
    await store.add(job)
    await store.append_logs(job.id, [entry("one"), entry("two", "stderr")])

    first = await store.logs("m", job.id)
    assert [(e.stream, e.text) for e in first.entries] == [
        ("stdout", "one"), ("stderr", "two")
    ]  # fmt: skip
    assert first.dropped == 0

    await store.append_logs(job.id, [entry("three", "log", "WARNING")])
    after = await store.logs("m", job.id, since=first.next)
    assert [(e.text, e.level) for e in after.entries] == [("three", "WARNING")]
    assert (await store.logs("m", job.id, since=after.next)).entries == []
    limited = await store.logs("m", job.id, limit=1)
    assert [e.text for e in limited.entries] == ["one"]


async def test_logs_keep_the_newest_within_the_bound(opened):
    store = await opened(max_log_bytes=100)
    job = new_job()
    await store.add(job)
    for i in range(10):
        await store.append_logs(job.id, [entry(f"line {i} " + "x" * 12)])  # 20 bytes

    page = await store.logs("m", job.id)

    assert [e.text[:6] for e in page.entries] == [f"line {i}" for i in range(5, 10)]
    assert sum(e.size for e in page.entries) <= 100
    assert page.dropped == 5
    assert (await store.get("m", job.id)).log_dropped == 5


async def test_an_entry_larger_than_the_bound_is_dropped(opened):
    store = await opened(max_log_bytes=10)
    job = new_job()
    await store.add(job)

    await store.append_logs(job.id, [entry("x" * 11), entry("short")], dropped=2)

    page = await store.logs("m", job.id)
    assert [e.text for e in page.entries] == ["short"]
    assert page.dropped == 3


# -- schema -------------------------------------------------------------------

#: The first schema version, as version 1 of deepserve wrote it.
V1_SCHEMA = """
CREATE TABLE deepserve_schema (version INTEGER NOT NULL);
INSERT INTO deepserve_schema (version) VALUES (1);
CREATE TABLE deepserve_jobs (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    model VARCHAR(255) NOT NULL,
    status VARCHAR(16) NOT NULL,
    args TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created FLOAT NOT NULL,
    started FLOAT,
    finished FLOAT,
    duration FLOAT,
    owner VARCHAR(255) NOT NULL
);
CREATE INDEX ix_deepserve_jobs_model_created ON deepserve_jobs (model, created);
"""


async def test_an_older_database_is_migrated_with_its_data(opened, db):
    for statement in filter(str.strip, V1_SCHEMA.split(";")):
        db.raw(statement)
    db.raw(
        "INSERT INTO deepserve_jobs VALUES (:id, 'm', 'done', :args, :result, NULL,"
        " 1000.0, 1000.5, 1010.0, 10.0, 'old-server')",
        id="a" * 32, args=json.dumps({"epochs": 2}), result=json.dumps([1, 2]),
    )  # fmt: skip

    store = await opened()

    job = await store.get("m", "a" * 32)
    assert (job.status, job.args, job.result) == ("done", {"epochs": 2}, [1, 2])
    assert job.created.timestamp() == 1000.0
    assert job.duration == datetime.timedelta(seconds=10)
    assert job.log_dropped == 0
    assert db.raw("SELECT version FROM deepserve_schema") == [(SCHEMA_VERSION,)]
    # What version 2 added works on the migrated database.
    await store.append_logs(job.id, [entry("hello")])
    assert [e.text for e in (await store.logs("m", job.id)).entries] == ["hello"]


async def test_a_newer_database_is_refused(opened, db):
    store = await opened()
    await store.close()
    db.raw("UPDATE deepserve_schema SET version = :v", v=SCHEMA_VERSION + 1)

    newer = f"schema version {SCHEMA_VERSION + 1}, newer"
    with pytest.raises(JobStoreError, match=newer) as excinfo:
        await opened()
    assert "upgrade deepserve" in str(excinfo.value)


async def test_sqlite_file_uses_wal_and_a_missing_directory_is_made(tmp_path):
    path = tmp_path / "a" / "b" / "jobs.sqlite"
    store = JobStore(JobSettings(database=url(path)))
    await store.open()
    try:
        assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    finally:
        await store.close()


@pytest.mark.parametrize("database", ["nosuchdialect://x", "not a url at all"])
async def test_an_unusable_database_url_is_a_clear_error(database):
    store = JobStore(JobSettings(database=database))
    with pytest.raises(JobStoreError, match="job database"):
        await store.open()
    assert not store.opened


# -- owners and heartbeats ------------------------------------------------------


async def test_a_dead_servers_stale_jobs_are_interrupted_on_opening(opened, db):
    await (await opened()).close()
    beat = time.time() - 60
    # What a server killed mid-training leaves behind.
    db.raw(
        "INSERT INTO deepserve_jobs (id, model, status, args, created, owner,"
        " heartbeat) VALUES (:id, 'm', 'running', '{}', :created, 'dead-server',"
        " :beat)",
        id="d" * 32, created=beat - 5, beat=beat,
    )  # fmt: skip

    store = await opened(heartbeat_timeout=30)

    job = await store.get("m", "d" * 32)
    assert job.status == "interrupted"
    assert job.message == INTERRUPTED_BY_LOSS
    assert job.finished is not None and job.finished.timestamp() == pytest.approx(beat)
    assert job.duration is not None
    assert abs(job.duration - datetime.timedelta(seconds=5)) < MS


async def test_a_live_replicas_jobs_are_left_alone(opened):
    fast = {"heartbeat_interval": 0.1, "heartbeat_timeout": 0.6}
    alive = await opened(**fast)
    job = new_job()
    await alive.add(job)

    other = await opened(**fast)
    await asyncio.sleep(1.5)  # several timeouts; `alive` keeps beating
    await other.beat()

    assert (await other.get("m", job.id)).status == "running"
    # The replica cannot finish a job it does not own.
    await other.finish(job.id, "done", result=1)
    assert (await other.get("m", job.id)).status == "running"


async def test_a_replica_interrupts_jobs_whose_heartbeat_stopped(opened, db):
    fast = {"heartbeat_interval": 0.1, "heartbeat_timeout": 0.6}
    other = await opened(**fast)
    gone = await opened(**fast)
    job = new_job()
    await gone.add(job)
    assert (await other.get("m", job.id)).status == "running"
    # Hand the job to an owner that never beats, as a killed server would
    # leave it (`gone` goes on beating, for its own jobs only).
    db.raw("UPDATE deepserve_jobs SET owner = 'killed'")

    deadline = time.monotonic() + 10
    while (await other.get("m", job.id)).status == "running":
        assert time.monotonic() < deadline, "never interrupted"
        await asyncio.sleep(0.1)

    assert (await other.get("m", job.id)).message == INTERRUPTED_BY_LOSS


async def test_closing_interrupts_own_running_jobs_only(opened):
    mine = await opened()
    theirs = await opened()
    running, done, other = new_job(), new_job(), new_job()
    for job in (running, done):
        await mine.add(job)
    await mine.finish(done.id, "done", result=True)
    await theirs.add(other)

    await mine.close()

    got = {j.id: j for j in (await theirs.list_jobs("m")).jobs}
    assert got[running.id].status == "interrupted"
    assert got[running.id].message == INTERRUPTED_BY_SHUTDOWN
    assert got[done.id].status == "done"
    assert got[other.id].status == "running"


async def test_retention_forgets_old_finished_jobs(opened, db):
    store = await opened(retention_days=1)
    old, recent, running = new_job(), new_job(), new_job()
    for job in (old, recent, running):
        await store.add(job)
    for job in (old, recent):
        await store.finish(job.id, "done")
        await store.append_logs(job.id, [entry("x")])
    two_days_ago = time.time() - 2 * 86400
    db.raw(
        "UPDATE deepserve_jobs SET finished = :when WHERE id = :id",
        when=two_days_ago,
        id=old.id,
    )

    await store.beat()

    left = {j.id for j in (await store.list_jobs("m")).jobs}
    assert left == {recent.id, running.id}
    assert db.raw("SELECT DISTINCT job_id FROM deepserve_job_logs") == [(recent.id,)]


async def test_replicas_opening_a_new_database_together(opened, db):
    stores = await asyncio.gather(*(opened() for _ in range(4)))

    assert db.raw("SELECT version FROM deepserve_schema") == [(SCHEMA_VERSION,)]
    job = new_job()
    await stores[0].add(job)
    assert (await stores[3].get("m", job.id)).id == job.id


async def test_output_with_nul_characters_is_kept_readable(opened):
    """PostgreSQL text cannot hold NUL: a training printing one must not
    lose its output (nor fail), on any database."""
    store = await opened()
    job = new_job()
    await store.add(job)

    # A NUL, and a lone surrogate as undecodable bytes leave in a str.
    await store.append_logs(job.id, [entry("a\x00b"), entry("c\udcffd"), entry("é")])
    await store.finish(job.id, "error", message="bad\x00 input")

    page = await store.logs("m", job.id)
    assert [e.text for e in page.entries] == ["a\ufffdb", "c\ufffdd", "é"]
    assert page.dropped == 0
    assert (await store.get("m", job.id)).message == "bad\ufffd input"


# -- cancel requests across servers ---------------------------------------------


async def test_a_cancel_request_reaches_the_server_running_the_job_once(opened):
    owner, other = await opened(), await opened()
    job, done = new_job(), new_job()
    await owner.add(job)
    await owner.add(done)
    await owner.finish(done.id, "done")
    asked: list[str] = []
    owner.on_cancel_request(asked.append)
    other.on_cancel_request(asked.append)  # it runs none of them

    assert await other.request_cancel("m", job.id) is True
    assert await other.request_cancel("m", job.id) is True  # still running
    assert await other.request_cancel("m", done.id) is False  # already ended
    with pytest.raises(JobNotFound):
        await other.request_cancel("m", "nope")
    with pytest.raises(JobNotFound):
        await other.request_cancel("other", job.id)

    await other.beat()
    assert asked == []  # only the owner acts on it
    await owner.beat()
    await owner.beat()
    assert asked == [job.id]  # once, however many heartbeats see it
    # The job is the owner's to end: the request itself changes nothing.
    assert (await other.get("m", job.id)).status == "running"


# -- 64-bit log cursors -------------------------------------------------------------


def jump_log_counter(db: Database, to: int) -> None:
    """Make the next stored log entry's number ``to + 1``, as a long-lived
    database would after ``to`` lines."""
    if db.url.startswith("sqlite"):
        db.raw(
            "UPDATE sqlite_sequence SET seq = :to WHERE name = 'deepserve_job_logs'",
            to=to,
        )
    else:
        db.raw(
            "SELECT setval(pg_get_serial_sequence('deepserve_job_logs', 'seq'), :to)",
            to=to,
        )


async def past_32_bits(store: JobStore, db: Database) -> None:
    job = new_job()
    await store.add(job)
    await store.append_logs(job.id, [entry("first")])
    jump_log_counter(db, 2**31 + 10)

    await store.append_logs(job.id, [entry("far"), entry("further")])

    page = await store.logs("m", job.id)
    assert [e.text for e in page.entries] == ["first", "far", "further"]
    assert page.next == 2**31 + 12
    after = await store.logs("m", job.id, since=page.entries[0].seq or 0)
    assert [e.text for e in after.entries] == ["far", "further"]


async def test_log_cursors_go_past_32_bits(opened, db):
    await past_32_bits(await opened(), db)


async def test_a_version_2_postgresql_database_gets_64_bit_log_cursors(postgres):
    db = Database(postgres.new_database())
    for statement in filter(str.strip, V1_SCHEMA.split(";")):
        db.raw(statement)
    # What version 2 added, as its code made it on PostgreSQL (SERIAL).
    for statement in [
        "ALTER TABLE deepserve_jobs ADD COLUMN heartbeat FLOAT",
        "ALTER TABLE deepserve_jobs ADD COLUMN log_size INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deepserve_jobs ADD COLUMN log_dropped INTEGER NOT NULL DEFAULT 0",
        "CREATE TABLE deepserve_job_logs (seq SERIAL NOT NULL PRIMARY KEY,"
        " job_id VARCHAR(64) NOT NULL, stream VARCHAR(16) NOT NULL,"
        " time FLOAT NOT NULL, level VARCHAR(16), text TEXT NOT NULL,"
        " size INTEGER NOT NULL)",
        "UPDATE deepserve_schema SET version = 2",
    ]:
        db.raw(statement)
    store = JobStore(JobSettings(database=db.url))
    await store.open()
    try:
        assert db.raw("SELECT version FROM deepserve_schema") == [(SCHEMA_VERSION,)]
        assert db.raw(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'deepserve_job_logs' AND column_name = 'seq'"
        ) == [("bigint",)]
        await past_32_bits(store, db)
    finally:
        await store.close()
