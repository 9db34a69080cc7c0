"""The trainings one served model runs: started, watched, stopped, recorded.

:class:`Trainings` is what a served model does with trainings: it records
each in the :class:`~deepserve.jobs.store.JobStore`, runs it with its
executor's ``run_job`` (seen here only as :class:`RunJob`, so this package
imports no executor), stores its output as it comes
(:class:`TrainingOutput`) and its end, and stops it when a client, another
replica or the shutdown asks. Protocol-neutral: nothing here knows about
HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from deepserve.exceptions import DeepserveError, JobStoreError, ModelFailed
from deepserve.jobs.records import (
    INTERRUPTED_BY_SHUTDOWN,
    JobPage,
    LogEntry,
    LogPage,
    TrainingJob,
)
from deepserve.jobs.store import JobStore
from deepserve.model import Method

LOG = logging.getLogger(__name__)

#: How long a cancelled training may take to stop before we answer anyway.
CANCEL_WAIT = 10.0
#: Seconds between two looks at a training another server was asked to stop.
CANCEL_POLL = 0.2
#: Seconds between two writes of a running training's output.
FLUSH_INTERVAL = 0.5
#: Tries to store a training's last output before its end is recorded.
CLOSE_ATTEMPTS = 3
#: Longest wait for a running training's freshest output in a logs read.
FRESH_WAIT = 1.0
#: What a stopped training's record says.
STOP_MESSAGES = {
    "cancelled": "Cancelled by a client",
    "interrupted": INTERRUPTED_BY_SHUTDOWN,
}

__all__ = ["RunJob", "TrainingOutput", "Trainings"]


class TrainingOutput:
    """A running training's output, buffered and stored in batches.

    Lines arrive in the event loop as the job writes them; a database write
    per line would be too many, so they are stored every
    :data:`FLUSH_INTERVAL` seconds (and before a client reads them). At most
    the store's bound is buffered: when the database is slower than the
    job, the oldest lines go, counted as dropped.

    It is the ``watch`` an executor's ``run_job`` reports to.
    """

    def __init__(self, store: JobStore, job_id: str) -> None:
        self._store = store
        self._job_id = job_id
        self._limit = store.settings.max_log_bytes
        self._entries: collections.deque[LogEntry] = collections.deque()
        self._size = 0
        self._dropped = 0
        self._started: float | None = None
        self._lock = asyncio.Lock()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_often())

    def started(self) -> None:
        self._started = time.time()

    def output(self, stream: str, text: str, level: str | None, when: float) -> None:
        entry = LogEntry(stream=stream, time=when, text=text, level=level)
        self._entries.append(entry)
        self._size += entry.size
        while self._size > self._limit and self._entries:
            self._size -= self._entries.popleft().size
            self._dropped += 1

    async def flush(self) -> None:
        async with self._lock:
            if self._started is not None:
                await self._store.mark_started(self._job_id, self._started)
                self._started = None
            entries, self._entries = list(self._entries), collections.deque()
            dropped, self._dropped, self._size = self._dropped, 0, 0
            try:
                await self._store.append_logs(self._job_id, entries, dropped=dropped)
            except JobStoreError:
                # Not stored: back before what came meanwhile, within the
                # bound, for the next flush.
                newer = list(self._entries)
                self._entries, self._size = collections.deque(), 0
                self._dropped += dropped
                for entry in [*entries, *newer]:
                    self.output(entry.stream, entry.text, entry.level, entry.time)
                raise

    async def _flush_often(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except JobStoreError as exc:
                LOG.warning(
                    "Cannot store the output of training %s: %s", self._job_id, exc
                )

    async def close(self) -> None:
        """Store what is left, trying a few times over a busy database."""
        self._flusher.cancel()
        await asyncio.gather(self._flusher, return_exceptions=True)
        for attempt in range(CLOSE_ATTEMPTS):
            try:
                await self.flush()
                return
            except JobStoreError as exc:
                if attempt == CLOSE_ATTEMPTS - 1:
                    LOG.error(
                        "Cannot store the last output of training %s: %s",
                        self._job_id,
                        exc,
                    )
                    return
                await asyncio.sleep(FLUSH_INTERVAL)


class RunJob(Protocol):
    """Runs a training in a process of its own and returns its result,
    reporting its output to ``watch``; cancelling the awaiting task stops
    that process. An executor's ``run_job`` is one."""

    def __call__(
        self, method: Method, kwargs: Mapping[str, Any], *, watch: TrainingOutput
    ) -> Awaitable[Any]: ...


@dataclasses.dataclass(eq=False)
class _Training:
    """A training running in this server."""

    job: TrainingJob
    output: TrainingOutput
    task: asyncio.Task[None] | None = None
    #: Why it is being stopped: ``cancelled`` or ``interrupted``.
    stopping: str | None = None


class Trainings:
    """One served model's trainings.

    :param model: the model's name, as its jobs are recorded.
    :param run: runs one training (the model's executor's ``run_job``).
    :param store: where the trainings are recorded; it also hands over the
        cancel requests other replicas recorded for this server's trainings.
    """

    def __init__(self, model: str, run: RunJob, store: JobStore) -> None:
        self.model = model
        self.store = store
        self._run = run
        #: Trainings running in this server, by id.
        self._running: dict[str, _Training] = {}
        #: Trainings that ended and are storing their output and end.
        self._endings: set[asyncio.Future[None]] = set()
        #: Stops asked for through another server, until they are done.
        self._stopping: set[asyncio.Task[None]] = set()
        store.on_cancel_request(self._cancel_requested)

    def _cancel_requested(self, job_id: str) -> None:
        """A client asked another server to cancel a training: stop it if it
        is this model's."""
        training = self._running.get(job_id)
        if training is None:
            return
        task = asyncio.get_running_loop().create_task(self._stop(training, "cancelled"))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def start(
        self,
        kwargs: Mapping[str, Any],
        recorded_args: dict[str, Any],
        cleanup: Callable[[], None] | None = None,
    ) -> TrainingJob:
        """Record a training and start it; ``cleanup`` runs when it ends.

        :raises JobStoreError: when the job cannot be recorded (nothing
            started then, and ``cleanup`` is left to the caller).
        """
        store = self.store
        job = TrainingJob(
            id=uuid.uuid4().hex,
            model=self.model,
            status="running",
            args=recorded_args,
            created=datetime.datetime.now(datetime.UTC),
            owner=store.owner,
        )
        await store.add(job)
        training = _Training(job, TrainingOutput(store, job.id))
        training.task = asyncio.get_running_loop().create_task(
            self._train(training, dict(kwargs), cleanup)
        )
        self._running[job.id] = training
        return job

    async def _train(
        self,
        training: _Training,
        kwargs: dict[str, Any],
        cleanup: Callable[[], None] | None,
    ) -> None:
        job = training.job
        status, result, message = "error", None, None
        try:
            result = await self._run("train", kwargs, watch=training.output)
            status = "done"
        except asyncio.CancelledError:
            status = training.stopping or "cancelled"
            message = STOP_MESSAGES[status]
            LOG.info("Training %s of model '%s' %s", job.id, self.model, status)
        except DeepserveError as exc:
            message = exc.reason if isinstance(exc, ModelFailed) else str(exc)
            LOG.error("Training %s of model '%s' failed: %s", job.id, self.model, exc)
            if getattr(exc, "traceback", ""):
                LOG.error("%s", exc.traceback)  # type: ignore[attr-defined]
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            LOG.exception("Training %s of model '%s' failed", job.id, self.model)
        finally:
            # The store has the end from here on, whatever happens to this
            # task (a second cancel, a shutdown): it records it, or keeps it
            # in its recovery file when it closes first.
            self.store.expect(job.id, status, result=result, message=message)
            ending = asyncio.ensure_future(self._end(training, cleanup))
            self._endings.add(ending)
            ending.add_done_callback(self._endings.discard)
            await asyncio.shield(ending)

    async def _end(
        self, training: _Training, cleanup: Callable[[], None] | None
    ) -> None:
        """A training's last output, then its end (which the store has):
        in a task of its own, never cancelled with the training's."""
        try:
            # Output first: a client that sees the end finds all of it.
            await training.output.close()
            await self.store.record(training.job.id)
        finally:
            self._running.pop(training.job.id, None)
            if cleanup is not None:
                cleanup()

    async def jobs(
        self, *, status: str | None = None, limit: int | None = None, offset: int = 0
    ) -> JobPage:
        """This model's trainings, oldest first, from every server sharing
        the job database."""
        return await self.store.list_jobs(
            self.model, status=status, limit=limit, offset=offset
        )

    async def job(self, job_id: str) -> TrainingJob:
        """:raises JobNotFound: when this model has no such training."""
        return await self.store.get(self.model, job_id)

    async def logs(self, job_id: str, *, since: int = 0, limit: int = 1000) -> LogPage:
        """A training's output after cursor ``since``.

        :raises JobNotFound: when this model has no such training.
        """
        running = self._running.get(job_id)
        if running is not None:
            # The freshest lines, not 0.5 s old; but a client never waits
            # long for them: over a locked database, what is stored.
            with contextlib.suppress(asyncio.TimeoutError, JobStoreError):
                await asyncio.wait_for(
                    asyncio.shield(running.output.flush()), FRESH_WAIT
                )
        return await self.store.logs(self.model, job_id, since=since, limit=limit)

    async def cancel(self, job_id: str) -> TrainingJob:
        """Cancel a running training; its process is terminated.

        A training another server (a replica sharing the job database) runs
        is asked to stop through the database: that server stops it at its
        next heartbeat. The answer waits for that, up to a heartbeat
        interval and :data:`CANCEL_WAIT`, then gives the job as it is.

        :raises JobNotFound: when this model has no such training.
        """
        training = self._running.get(job_id)
        if training is not None:
            await self._stop(training, "cancelled")
            return await self.job(job_id)
        if not await self.store.request_cancel(self.model, job_id):
            return await self.job(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.store.settings.heartbeat_interval + CANCEL_WAIT
        while True:
            job = await self.job(job_id)
            if job.status != "running" or loop.time() >= deadline:
                return job
            await asyncio.sleep(CANCEL_POLL)

    async def interrupt(self) -> None:
        """Stop every training this server runs, recording them
        ``interrupted`` (the server is stopping)."""
        running = list(self._running.values())
        if running:
            LOG.info("Stopping %d training(s) of model '%s'", len(running), self.model)
        await asyncio.gather(*(self._stop(t, "interrupted") for t in running))
        if self._endings:
            # Their output and ends, stored; over a locked database the
            # store's close keeps the ends in its recovery file.
            await asyncio.wait(set(self._endings), timeout=CANCEL_WAIT)

    async def _stop(self, training: _Training, why: str) -> None:
        task = training.task
        if task is None or task.done():
            return
        training.stopping = why
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=CANCEL_WAIT)
        if not done:
            LOG.warning("Training %s is slow to stop", training.job.id)
