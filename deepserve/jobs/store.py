"""The training-job store: :class:`JobStore`, an asynchronous API whose
database work (:class:`~deepserve.jobs.database.JobDatabase`) runs in the
store's own threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

from deepserve.exceptions import JobStoreError
from deepserve.jobs import recovery
from deepserve.jobs.database import JobDatabase, storable
from deepserve.jobs.records import (
    STATUSES,
    JobPage,
    LogEntry,
    LogPage,
    TrainingEnd,
    TrainingJob,
)
from deepserve.jobs.schema import (
    QUICK_BUSY_TIMEOUT,
    SQLITE_BUSY_TIMEOUT,
    busy_timeout,
    make_engine,
    migrate,
)
from deepserve.model import json_default
from deepserve.settings import JobSettings

LOG = logging.getLogger(__name__)

#: The first pause before recording a training's end again, and the longest.
RETRY_FIRST = 0.2
RETRY_MAX = 5.0

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
        #: Threads for the calls clients wait on, so that background work
        #: waiting on a lock never queues them.
        self._quick: concurrent.futures.ThreadPoolExecutor | None = None
        self._beating: asyncio.Task[None] | None = None
        #: Jobs this server runs and has not recorded the end of: the only
        #: ones its heartbeat keeps alive.
        self._live: set[str] = set()
        #: Called with a live job's id when another server asks to cancel it.
        self._on_cancel: list[Callable[[str], None]] = []
        self._cancel_seen: set[str] = set()
        #: Ends of this server's jobs the database has not taken yet.
        self._ending: dict[str, TrainingEnd] = {}
        self._closing = asyncio.Event()

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
        self._closing = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="deepserve-jobs"
        )
        # One connection, one thread (an in-memory database): shared.
        self._quick = (
            self._pool
            if threads == 1
            else concurrent.futures.ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="deepserve-jobs-quick"
            )
        )
        try:
            await self._run_with(SQLITE_BUSY_TIMEOUT, migrate, engine)
        except BaseException:
            self._pool.shutdown(wait=False)
            self._quick.shutdown(wait=False)
            self._pool = self._quick = None
            engine.dispose()
            raise
        self._db = JobDatabase(engine, owner=self.owner, settings=self.settings)
        await self._replay()
        lost = await self._run(JobDatabase.sweep, frozenset(self._live))
        if lost:
            LOG.warning("Marked %d orphaned training(s) interrupted", lost)
        self._beating = asyncio.get_running_loop().create_task(self._beat_forever())

    async def close(self) -> None:
        """Record the ends still waiting for the database (or keep them in
        the recovery file), mark this server's still running jobs
        ``interrupted`` and disconnect."""
        self._closing.set()
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        if self._db is None:
            return
        try:
            await self._last_ends()
            left = await self._run(JobDatabase.interrupt_own)
            if left:
                LOG.warning("Marked %d running training(s) interrupted", left)
        except JobStoreError as exc:
            LOG.error(
                "Cannot mark this server's running trainings interrupted: %s", exc
            )
        finally:
            engine, self._db = self._db.engine, None
            pool, self._pool = self._pool, None
            quick, self._quick = self._quick, None
            assert pool is not None and quick is not None
            # First let the calls still in the store's threads end (a
            # heartbeat cancelled above may still run there): disposing of
            # the engine closes only the connections not in use.
            await asyncio.to_thread(pool.shutdown, wait=True)
            await asyncio.to_thread(quick.shutdown, wait=True)
            await asyncio.to_thread(engine.dispose)

    # -- records ------------------------------------------------------------

    async def add(self, job: TrainingJob) -> None:
        """Record a new running job of this server."""
        await self._ask(JobDatabase.add, job)
        self._live.add(job.id)

    async def mark_started(self, job_id: str, when: float | None = None) -> None:
        """The job's model is built and its training begins."""
        await self._run(JobDatabase.mark_started, job_id, when or time.time())

    def expect(
        self,
        job_id: str,
        status: str,
        *,
        result: Any = None,
        message: str | None = None,
    ) -> None:
        """Take how a job of this server ended, at once: from here on it is
        not lost, whatever happens to the caller. :meth:`record` writes it;
        :meth:`close` keeps it in the recovery file if it is still waiting
        then, and after the close it goes to that file at once."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"not a final status: {status!r}")
        if message is not None:
            message = storable(message)
        end = TrainingEnd(
            job_id, status, _jsonable(job_id, result), message, time.time()
        )
        if self._closing.is_set():
            self._keep([end])
            return
        self._ending[job_id] = end

    async def record(self, job_id: str) -> None:
        """Write the end :meth:`expect` took: tried again, with a growing
        pause, until written (the job stays alive, its heartbeat refreshed,
        meanwhile), or until the store closes and keeps it."""
        pause = RETRY_FIRST
        while (end := self._ending.get(job_id)) is not None:
            if self._closing.is_set():
                return  # close() keeps it
            try:
                await self._write(end, quick=False)
            except JobStoreError as exc:
                if pause == RETRY_FIRST:
                    LOG.warning(
                        "Cannot record the end of training %s yet (%s); trying "
                        "again until it is recorded",
                        job_id,
                        exc,
                    )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), pause)
                pause = min(pause * 2, RETRY_MAX)
            else:
                if pause != RETRY_FIRST:
                    LOG.info("Recorded the end of training %s", job_id)
                if self._ending.get(job_id) is end:
                    del self._ending[job_id]
        self._live.discard(job_id)
        self._cancel_seen.discard(job_id)

    async def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: Any = None,
        message: str | None = None,
    ) -> None:
        """Record how a job of this server ended: :meth:`expect`, then
        :meth:`record`."""
        self.expect(job_id, status, result=result, message=message)
        await self.record(job_id)

    async def _last_ends(self) -> None:
        """At close: one more, short, try for each end still waiting, then
        the recovery file for those the database does not take."""
        for job_id, end in list(self._ending.items()):
            try:
                await self._write(end, quick=True)
            except Exception as exc:
                LOG.debug("Last try for training %s failed: %s", job_id, exc)
                continue
            if self._ending.get(job_id) is end:
                del self._ending[job_id]
        ends = list(self._ending.values())
        if ends:
            self._keep(ends)
            for end in ends:
                if self._ending.get(end.job_id) is end:
                    del self._ending[end.job_id]

    async def _write(self, end: TrainingEnd, *, quick: bool) -> None:
        """One try at writing an end; ``quick``: waiting briefly on a lock."""
        run = self._ask if quick else self._run
        await run(
            JobDatabase.finish,
            end.job_id,
            end.status,
            end.result,
            end.message,
            end.when,
        )

    def _keep(self, ends: list[TrainingEnd]) -> None:
        """Put ends in the recovery file (blocking: a few lines, fsynced)."""
        path = self.settings.recovery_file
        if path is None:
            for end in ends:
                LOG.error("The end of training %s is lost: %s", end.job_id, end)
            return
        try:
            recovery.save(path, ends)
        except OSError as exc:
            LOG.error("Cannot write %s (%s); lost: %s", path, exc, ends)
            return
        LOG.warning(
            "Kept the end of %d training(s) in %s; the next start records them",
            len(ends),
            path,
        )

    async def _replay(self) -> None:
        """Record the ends a stopped server kept in the recovery file."""
        path = self.settings.recovery_file
        if path is None:
            return
        taken = await asyncio.to_thread(recovery.take, path)
        if taken is None:
            return
        ends = [
            e
            for e in await asyncio.to_thread(recovery.load, taken)
            if e.status in STATUSES and e.status != "running"
        ]
        try:
            done = await self._run(JobDatabase.recover, ends) if ends else 0
        except JobStoreError as exc:
            LOG.error("Cannot record the trainings kept in %s yet: %s", path, exc)
            await asyncio.to_thread(recovery.save, path, ends)  # for next time
            await asyncio.to_thread(recovery.remove, taken)
            return
        LOG.warning("Recorded the end of %d training(s) kept in %s", done, path)
        if done < len(ends):
            LOG.warning(
                "%d kept end(s) matched no running or interrupted training of "
                "this database (another deployment's file?): %s",
                len(ends) - done,
                ", ".join(e.job_id for e in ends),
            )
        await asyncio.to_thread(recovery.remove, taken)

    async def get(self, model: str, job_id: str) -> TrainingJob:
        """:raises JobNotFound: when ``model`` has no such job."""
        return await self._ask(JobDatabase.get, model, job_id)

    async def list_jobs(
        self,
        model: str,
        *,
        status: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> JobPage:
        """``model``'s jobs, oldest first, optionally of one status."""
        return await self._ask(JobDatabase.list_jobs, model, status, limit, offset)

    async def count_by_status(self) -> dict[tuple[str, str], int]:
        """How many jobs each model has in each status: ``{(model, status): n}``."""
        return await self._ask(JobDatabase.count_by_status)

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
        return await self._ask(JobDatabase.logs, model, job_id, since, limit)

    async def request_cancel(self, model: str, job_id: str) -> bool:
        """Ask whichever server runs a job to cancel it (it does at its next
        heartbeat); false when the job is not running.

        :raises JobNotFound: when ``model`` has no such job.
        """
        return await self._ask(JobDatabase.request_cancel, model, job_id)

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
        """``fn(database, *args, **kwargs)`` in the store's threads, waiting
        as long as background work may for a locked database."""
        if self._db is None:
            raise JobStoreError("The training-job store is not open")
        return await self._run_with(SQLITE_BUSY_TIMEOUT, fn, self._db, *args, **kwargs)

    async def _ask(
        self,
        fn: Callable[Concatenate[JobDatabase, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """As :meth:`_run`, for a client waiting: a locked database is a
        :class:`JobStoreError` (a 503 with Retry-After) after
        :data:`QUICK_BUSY_TIMEOUT`, not after the full busy timeout."""
        if self._db is None:
            raise JobStoreError("The training-job store is not open")
        return await self._run_with(QUICK_BUSY_TIMEOUT, fn, self._db, *args, **kwargs)

    async def _run_with(
        self, wait: float, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        pool = self._quick if wait == QUICK_BUSY_TIMEOUT else self._pool
        if pool is None:
            raise JobStoreError("The training-job store is not open")
        loop = asyncio.get_running_loop()
        call = functools.partial(_waiting, wait, fn, *args, **kwargs)
        try:
            return await loop.run_in_executor(pool, call)
        except sa.exc.SQLAlchemyError as exc:
            raise _failure(exc) from exc


def _jsonable(job_id: str, result: Any) -> Any:
    """``result`` as JSON will store it (checked once, here); a result JSON
    cannot hold (a dict with tuple keys, say) is kept as its text."""
    try:
        return json.loads(json.dumps(result, default=json_default))
    except (TypeError, ValueError, RecursionError) as exc:
        LOG.error(
            "The result of training %s cannot be stored as JSON (%s); its text "
            "is stored instead",
            job_id,
            exc,
        )
        return str(result)


def _waiting(
    wait: float, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    with busy_timeout(wait):
        return fn(*args, **kwargs)


def _failure(exc: sa.exc.SQLAlchemyError) -> JobStoreError:
    """The error a client may see: what happened, never the statement or
    its parameters (training arguments among them); the driver's own
    one-line reason goes to the log."""
    orig = getattr(exc, "orig", None)
    reason = str(orig if orig is not None else type(exc).__name__).strip()
    reason = reason.splitlines()[0] if reason else type(exc).__name__
    busy = _busy(exc, reason)
    # A lock is ordinary (callers say what waits on it); anything else is
    # worth an operator's look.
    LOG.log(
        logging.DEBUG if busy else logging.WARNING,
        "Training-job database: %s: %s",
        type(orig or exc).__name__,
        reason,
    )
    if busy:
        error = JobStoreError("The training-job database is busy; try again shortly")
        error.retry_after = 1
        return error
    return JobStoreError("The training-job database failed; the server's log says why")


def _busy(exc: sa.exc.SQLAlchemyError, reason: str) -> bool:
    """A lock held by someone else: SQLite's, or PostgreSQL's (55P03)."""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code == "55P03" or "locked" in reason.lower()
