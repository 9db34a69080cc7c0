"""The training-job store: :class:`JobStore`, an asynchronous API whose
database work (:class:`~deepserve.jobs.database.JobDatabase`) runs in the
store's own threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

from deepserve.exceptions import JobStoreError
from deepserve.jobs.database import JobDatabase, storable
from deepserve.jobs.records import STATUSES, JobPage, LogEntry, LogPage, TrainingJob
from deepserve.jobs.schema import make_engine, migrate
from deepserve.settings import JobSettings

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")
_P = ParamSpec("_P")


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
        self._db: JobDatabase | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._beating: asyncio.Task[None] | None = None
        #: Jobs this server runs and has not recorded the end of: the only
        #: ones its heartbeat keeps alive.
        self._live: set[str] = set()
        #: Called with a live job's id when another server asks to cancel it.
        self._on_cancel: list[Callable[[str], None]] = []
        self._cancel_seen: set[str] = set()

    @property
    def opened(self) -> bool:
        return self._db is not None

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
            await self._run_with(migrate, engine)
        except BaseException:
            self._pool.shutdown(wait=False)
            self._pool = None
            engine.dispose()
            raise
        self._db = JobDatabase(engine, owner=self.owner, settings=self.settings)
        lost = await self._run(JobDatabase.sweep, frozenset(self._live))
        if lost:
            LOG.warning("Marked %d orphaned training(s) interrupted", lost)
        self._beating = asyncio.get_running_loop().create_task(self._beat_forever())

    async def close(self) -> None:
        """Mark this server's still running jobs ``interrupted`` and disconnect."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        if self._db is None:
            return
        try:
            left = await self._run(JobDatabase.interrupt_own)
            if left:
                LOG.warning("Marked %d running training(s) interrupted", left)
        finally:
            engine, self._db = self._db.engine, None
            pool, self._pool = self._pool, None
            assert pool is not None
            # First let the calls still in the store's threads end (a
            # heartbeat cancelled above may still run there): disposing of
            # the engine closes only the connections not in use.
            await asyncio.to_thread(pool.shutdown, wait=True)
            await asyncio.to_thread(engine.dispose)

    # -- records ------------------------------------------------------------

    async def add(self, job: TrainingJob) -> None:
        """Record a new running job of this server."""
        await self._run(JobDatabase.add, job)
        self._live.add(job.id)

    async def mark_started(self, job_id: str, when: float | None = None) -> None:
        """The job's model is built and its training begins."""
        await self._run(JobDatabase.mark_started, job_id, when or time.time())

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
            await self._run(
                JobDatabase.finish, job_id, status, result, message, time.time()
            )
        finally:
            # Even when the end cannot be recorded: its heartbeat stops, so
            # the job ends up ``interrupted`` instead of running forever.
            self._live.discard(job_id)
            self._cancel_seen.discard(job_id)

    async def get(self, model: str, job_id: str) -> TrainingJob:
        """:raises JobNotFound: when ``model`` has no such job."""
        return await self._run(JobDatabase.get, model, job_id)

    async def list_jobs(
        self,
        model: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> JobPage:
        """``model``'s jobs, oldest first, optionally of one status."""
        return await self._run(JobDatabase.list_jobs, model, status, limit, offset)

    async def count_by_status(self) -> dict[tuple[str, str], int]:
        """How many jobs each model has in each status: ``{(model, status): n}``."""
        return await self._run(JobDatabase.count_by_status)

    # -- output -------------------------------------------------------------

    async def append_logs(
        self, job_id: str, entries: Sequence[LogEntry], *, dropped: int = 0
    ) -> None:
        """Store output entries, dropping the job's oldest past the bound.

        :param dropped: entries the caller dropped already.
        """
        if entries or dropped:
            kept = [dataclasses.replace(e, text=storable(e.text)) for e in entries]
            await self._run(JobDatabase.append_logs, job_id, kept, dropped)

    async def logs(
        self, model: str, job_id: str, *, since: int = 0, limit: int = 1000
    ) -> LogPage:
        """The job's stored entries after cursor ``since``, oldest first.

        :raises JobNotFound: when ``model`` has no such job.
        """
        return await self._run(JobDatabase.logs, model, job_id, since, limit)

    async def request_cancel(self, model: str, job_id: str) -> bool:
        """Ask whichever server runs a job to cancel it (it does at its next
        heartbeat); false when the job is not running.

        :raises JobNotFound: when ``model`` has no such job.
        """
        return await self._run(JobDatabase.request_cancel, model, job_id)

    def on_cancel_request(self, handler: Callable[[str], None]) -> None:
        """Call ``handler(job_id)``, once, when a client asked another server
        to cancel a job this server runs."""
        self._on_cancel.append(handler)

    # -- heartbeat ----------------------------------------------------------

    async def beat(self) -> None:
        """Refresh this server's running jobs' heartbeat, interrupt other
        servers' stale ones, forget jobs past the retention time, and pass
        on the cancel requests for this server's jobs."""
        wanted = await self._run(JobDatabase.beat, frozenset(self._live))
        for job_id in sorted(wanted & self._live - self._cancel_seen):
            self._cancel_seen.add(job_id)
            LOG.info("Training %s: cancel requested through another server", job_id)
            for handler in self._on_cancel:
                handler(job_id)

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

    async def _run(
        self,
        fn: Callable[Concatenate[JobDatabase, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """``fn(database, *args, **kwargs)`` in the store's threads."""
        if self._db is None:
            raise JobStoreError("The training-job store is not open")
        return await self._run_with(fn, self._db, *args, **kwargs)

    async def _run_with(
        self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        if self._pool is None:
            raise JobStoreError("The training-job store is not open")
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        try:
            return await loop.run_in_executor(self._pool, call)
        except sa.exc.SQLAlchemyError as exc:
            raise JobStoreError(f"The training-job database failed: {exc}") from exc
