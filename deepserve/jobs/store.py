"""The training-job store: :class:`JobStore`, an asynchronous API whose
database work runs in the store's own threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import functools
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from deepserve.exceptions import JobNotFound, JobStoreError
from deepserve.jobs.records import (
    INTERRUPTED_BY_LOSS,
    INTERRUPTED_BY_SHUTDOWN,
    STATUSES,
    JobPage,
    LogEntry,
    LogPage,
    TrainingJob,
)
from deepserve.jobs.schema import jobs_table, logs_table, make_engine, migrate
from deepserve.model import json_default
from deepserve.settings import JobSettings

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")


def new_owner() -> str:
    """An id for one server instance: readable, and unique across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobStore:
    """Training-job records and their output, in a database.

    Construct it cheaply, :meth:`open` it in the server's lifecycle and
    :meth:`close` it at the end; it belongs to the event loop that opens it.

    :param settings: the database URL and the bounds.
    :param owner: this server instance's id (default: a new one).
    """

    def __init__(self, settings: JobSettings, *, owner: str | None = None) -> None:
        self.settings = settings
        self.owner = owner or new_owner()
        self._engine: sa.Engine | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._beating: asyncio.Task[None] | None = None
        #: Jobs this server runs and has not recorded the end of: the only
        #: ones its heartbeat keeps alive.
        self._live: set[str] = set()

    @property
    def opened(self) -> bool:
        return self._engine is not None

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Connect, bring the schema up to date, interrupt orphaned jobs and
        start the heartbeat.

        :raises JobStoreError: when the database cannot be reached, or its
            schema is newer than this server understands.
        """
        engine, threads = make_engine(self.settings.database)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="deepserve-jobs"
        )
        try:
            await self._run(migrate, engine)
        except BaseException:
            self._pool.shutdown(wait=False)
            self._pool = None
            engine.dispose()
            raise
        self._engine = engine
        lost = await self._run(self._sweep, frozenset(self._live))
        if lost:
            LOG.warning("Marked %d orphaned training(s) interrupted", lost)
        self._beating = asyncio.get_running_loop().create_task(self._beat_forever())

    async def close(self) -> None:
        """Mark this server's still running jobs ``interrupted`` and disconnect."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        if self._engine is None:
            return
        try:
            left = await self._run(self._interrupt_own)
            if left:
                LOG.warning("Marked %d running training(s) interrupted", left)
        finally:
            engine, self._engine = self._engine, None
            await self._run_with(engine.dispose)
            assert self._pool is not None
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- records ------------------------------------------------------------

    async def add(self, job: TrainingJob) -> None:
        """Record a new running job of this server."""
        await self._run(self._add, job)
        self._live.add(job.id)

    async def mark_started(self, job_id: str, when: float | None = None) -> None:
        """The job's model is built and its training begins."""
        await self._run(self._mark_started, job_id, when or time.time())

    async def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: Any = None,
        message: str | None = None,
    ) -> None:
        """Record how a job of this server ended."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"not a final status: {status!r}")
        try:
            if message is not None:
                message = storable(message)
            await self._run(self._finish, job_id, status, result, message, time.time())
        finally:
            # Even when the end cannot be recorded: its heartbeat stops, so
            # the job ends up ``interrupted`` instead of running forever.
            self._live.discard(job_id)

    async def get(self, model: str, job_id: str) -> TrainingJob:
        """:raises JobNotFound: when ``model`` has no such job."""
        return await self._run(self._get, model, job_id)

    async def list_jobs(
        self,
        model: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> JobPage:
        """``model``'s jobs, oldest first, optionally of one status."""
        return await self._run(self._list, model, status, limit, offset)

    async def count_by_status(self) -> dict[tuple[str, str], int]:
        """How many jobs each model has in each status: ``{(model, status): n}``."""
        return await self._run(self._count_by_status)

    # -- output -------------------------------------------------------------

    async def append_logs(
        self, job_id: str, entries: Sequence[LogEntry], *, dropped: int = 0
    ) -> None:
        """Store output entries, dropping the job's oldest past the bound.

        :param dropped: entries the caller dropped already.
        """
        if entries or dropped:
            kept = [dataclasses.replace(e, text=storable(e.text)) for e in entries]
            await self._run(self._append_logs, job_id, kept, dropped)

    async def logs(
        self, model: str, job_id: str, *, since: int = 0, limit: int = 1000
    ) -> LogPage:
        """The job's stored entries after cursor ``since``, oldest first.

        :raises JobNotFound: when ``model`` has no such job.
        """
        return await self._run(self._logs, model, job_id, since, limit)

    # -- heartbeat ----------------------------------------------------------

    async def beat(self) -> None:
        """Refresh this server's running jobs' heartbeat, interrupt other
        servers' stale ones, and forget jobs past the retention time."""
        await self._run(self._beat, frozenset(self._live))

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database hiccup: try again next time
                LOG.warning("Training-job heartbeat failed: %s", exc)

    # -- the synchronous side, run in the store's threads ---------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        if fn is not migrate and self._engine is None:
            raise JobStoreError("The training-job store is not open")
        return await self._run_with(fn, *args)

    async def _run_with(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._pool is None:
            raise JobStoreError("The training-job store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args))
        except sa.exc.SQLAlchemyError as exc:
            raise JobStoreError(f"The training-job database failed: {exc}") from exc

    @property
    def _db(self) -> sa.Engine:
        assert self._engine is not None
        return self._engine

    def _add(self, job: TrainingJob) -> None:
        now = time.time()
        with self._db.begin() as conn:
            conn.execute(
                jobs_table.insert().values(
                    id=job.id,
                    model=job.model,
                    status="running",
                    args=_dumps(job.args),
                    created=job.created.timestamp(),
                    owner=self.owner,
                    heartbeat=now,
                )
            )

    def _mark_started(self, job_id: str, when: float) -> None:
        with self._db.begin() as conn:
            conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id)
                .values(started=when)
            )

    def _finish(
        self, job_id: str, status: str, result: Any, message: str | None, now: float
    ) -> None:
        j = jobs_table.c
        with self._db.begin() as conn:
            conn.execute(
                jobs_table.update()
                # Ours only: a replica never overwrites another's job.
                .where(j.id == job_id, j.owner == self.owner)
                .values(
                    status=status,
                    result=None if result is None else _dumps(result),
                    error=message,
                    finished=now,
                    duration=now - j.created,
                    heartbeat=now,
                )
            )

    def _get(self, model: str, job_id: str) -> TrainingJob:
        j = jobs_table.c
        with self._db.connect() as conn:
            row = conn.execute(
                sa.select(jobs_table).where(j.id == job_id, j.model == model)
            ).first()
        if row is None:
            raise JobNotFound(model, job_id)
        return _job(row)

    def _list(
        self, model: str, status: str | None, limit: int | None, offset: int
    ) -> JobPage:
        j = jobs_table.c
        where = [j.model == model]
        if status is not None:
            where.append(j.status == status)
        query = sa.select(jobs_table).where(*where).order_by(j.created, j.id)
        with self._db.connect() as conn:
            total = conn.scalar(
                sa.select(sa.func.count()).select_from(jobs_table).where(*where)
            )
            rows = conn.execute(query.offset(offset).limit(limit)).all()
        return JobPage([_job(r) for r in rows], int(total or 0))

    def _count_by_status(self) -> dict[tuple[str, str], int]:
        j = jobs_table.c
        query = sa.select(j.model, j.status, sa.func.count()).group_by(
            j.model, j.status
        )
        with self._db.connect() as conn:
            rows = conn.execute(query).all()
        return {(str(model), str(status)): int(n) for model, status, n in rows}

    def _append_logs(self, job_id: str, entries: list[LogEntry], dropped: int) -> None:
        limit = self.settings.max_log_bytes
        kept = [e for e in entries if e.size <= limit] if limit else []
        dropped += len(entries) - len(kept)
        j, lg = jobs_table.c, logs_table.c
        with self._db.begin() as conn:
            added = sum(e.size for e in kept)
            conn.execute(
                jobs_table.update()
                .where(j.id == job_id)
                .values(
                    log_size=j.log_size + added, log_dropped=j.log_dropped + dropped
                )
            )
            if kept:
                conn.execute(
                    logs_table.insert(),
                    [
                        {
                            "job_id": job_id,
                            "stream": e.stream,
                            "time": e.time,
                            "level": e.level,
                            "text": e.text,
                            "size": e.size,
                        }
                        for e in kept
                    ],
                )
            size = conn.scalar(sa.select(j.log_size).where(j.id == job_id)) or 0
            if size <= limit:
                return
            # Past the bound: drop the oldest entries until within it.
            excess, cut, count = size - limit, 0, 0
            rows = conn.execute(
                sa.select(lg.seq, lg.size).where(lg.job_id == job_id).order_by(lg.seq)
            )
            for seq, entry_size in rows:
                excess -= entry_size
                cut, count = seq, count + 1
                if excess <= 0:
                    break
            rows.close()
            freed = conn.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(lg.size), 0)).where(
                    lg.job_id == job_id, lg.seq <= cut
                )
            )
            conn.execute(logs_table.delete().where(lg.job_id == job_id, lg.seq <= cut))
            conn.execute(
                jobs_table.update()
                .where(j.id == job_id)
                .values(
                    log_size=j.log_size - (freed or 0),
                    log_dropped=j.log_dropped + count,
                )
            )

    def _logs(self, model: str, job_id: str, since: int, limit: int) -> LogPage:
        job = self._get(model, job_id)
        lg = logs_table.c
        with self._db.connect() as conn:
            rows = conn.execute(
                sa.select(logs_table)
                .where(lg.job_id == job_id, lg.seq > since)
                .order_by(lg.seq)
                .limit(limit)
            ).all()
        entries = [
            LogEntry(
                stream=r.stream, time=r.time, text=r.text, level=r.level, seq=r.seq
            )
            for r in rows
        ]
        cursor = entries[-1].seq if entries else since
        assert cursor is not None
        return LogPage(job, entries, cursor, job.log_dropped)

    def _beat(self, live: frozenset[str]) -> None:
        now = time.time()
        j = jobs_table.c
        if live:
            with self._db.begin() as conn:
                conn.execute(
                    jobs_table.update()
                    .where(j.owner == self.owner, j.id.in_(live), j.status == "running")
                    .values(heartbeat=now)
                )
        self._sweep(live, now)
        self._forget_old(now)

    def _sweep(self, live: frozenset[str], now: float | None = None) -> int:
        """Interrupt running jobs whose heartbeat is stale: other servers',
        and this one's whose end could not be recorded."""
        now = now or time.time()
        j = jobs_table.c
        last_seen = sa.func.coalesce(j.heartbeat, j.started, j.created)
        with self._db.begin() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(
                    j.status == "running",
                    sa.or_(j.owner != self.owner, j.id.not_in(live)),
                    last_seen < now - self.settings.heartbeat_timeout,
                )
                # It stopped some time after its last heartbeat: the best
                # estimate of when there is.
                .values(
                    status="interrupted",
                    error=INTERRUPTED_BY_LOSS,
                    finished=last_seen,
                    duration=last_seen - j.created,
                )
            )
            return int(result.rowcount or 0)

    def _interrupt_own(self) -> int:
        now = time.time()
        j = jobs_table.c
        with self._db.begin() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(j.owner == self.owner, j.status == "running")
                .values(
                    status="interrupted",
                    error=INTERRUPTED_BY_SHUTDOWN,
                    finished=now,
                    duration=now - j.created,
                    heartbeat=now,
                )
            )
            return int(result.rowcount or 0)

    def _forget_old(self, now: float) -> None:
        days = self.settings.retention_days
        if not days:
            return
        j, lg = jobs_table.c, logs_table.c
        old = sa.select(j.id).where(
            j.status != "running", j.finished < now - days * 86400
        )
        with self._db.begin() as conn:
            conn.execute(logs_table.delete().where(lg.job_id.in_(old)))
            conn.execute(jobs_table.delete().where(j.id.in_(old)))


# -- values -------------------------------------------------------------------


def _job(row: sa.Row[Any]) -> TrainingJob:
    return TrainingJob(
        id=row.id,
        model=row.model,
        status=row.status,
        args=json.loads(row.args),
        created=_utc(row.created),
        started=None if row.started is None else _utc(row.started),
        finished=None if row.finished is None else _utc(row.finished),
        duration=None
        if row.duration is None
        else datetime.timedelta(seconds=row.duration),
        result=None if row.result is None else json.loads(row.result),
        message=row.error,
        owner=row.owner,
        log_dropped=row.log_dropped,
    )


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


#: NUL, and the surrogates that stand for undecodable bytes.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as every database stores it: PostgreSQL's text holds no NUL
    character, and no database lone surrogates (from undecodable bytes);
    both become replacement characters."""
    return _UNSTORABLE.sub("\ufffd", text)


def _dumps(value: Any) -> str:
    # Stored as clients would see it over HTTP (the same conversions).
    return json.dumps(value, default=json_default)
