"""Served models and their training jobs; protocol-neutral (no HTTP here)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from deepserve.exceptions import (
    DeepserveError,
    JobStoreError,
    ModelFailed,
    ModelNotFound,
    NotRunning,
    Overloaded,
)
from deepserve.executors import Executor, factory
from deepserve.jobs import (
    INTERRUPTED_BY_SHUTDOWN,
    JobPage,
    JobStore,
    LogEntry,
    LogPage,
    TrainingJob,
)
from deepserve.loader import ModelRef
from deepserve.model import Model
from deepserve.settings import ExecutorSettings, JobSettings

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

__all__ = ["Registry", "ServedModel", "TrainingJob"]


class _Output:
    """A running training's output, buffered and stored in batches.

    Lines arrive in the event loop as the job writes them; a database write
    per line would be too many, so they are stored every
    :data:`FLUSH_INTERVAL` seconds (and before a client reads them). At most
    the store's bound is buffered: when the database is slower than the
    job, the oldest lines go, counted as dropped.
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


@dataclasses.dataclass(eq=False)
class _Training:
    """A training running in this server."""

    job: TrainingJob
    output: _Output
    task: asyncio.Task[None] | None = None
    #: Why it is being stopped: ``cancelled`` or ``interrupted``.
    stopping: str | None = None


class ServedModel:
    """A model, the executor that runs it and its training jobs.

    :param model: the model as seen in the server process (arguments,
        schema, metadata); its methods run on ``executor``.
    """

    def __init__(
        self,
        model: Model,
        executor: Executor,
        *,
        predict_timeout: float | None = None,
        max_queue: int | None = None,
        version: str | None = None,
    ) -> None:
        self.model = model
        self.executor = executor
        #: The stored version served (``None`` for an installed model).
        self.version = version
        self.predict_timeout = predict_timeout
        self.max_queue = max_queue
        self._store: JobStore | None = None
        #: Trainings running in this server, by id.
        self._running: dict[str, _Training] = {}
        #: Trainings that ended and are storing their output and end.
        self._endings: set[asyncio.Future[None]] = set()
        #: Stops asked for through another server, until they are done.
        self._stopping: set[asyncio.Task[None]] = set()
        #: Predictions accepted and not yet answered.
        self._in_hand = 0
        self._started = False
        self._draining = False

    @classmethod
    def create(
        cls, ref: ModelRef, model: Model, settings: ExecutorSettings
    ) -> ServedModel:
        """Serve ``model`` with the executor and limits ``settings`` ask for."""
        return cls(
            model,
            factory.create(ref, model, settings),
            predict_timeout=settings.predict_timeout,
            max_queue=settings.max_queue,
            version=ref.version,
        )

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def tag(self) -> str:
        """``name:version``, or the name alone for an unversioned model."""
        return f"{self.name}:{self.version}" if self.version else self.name

    @property
    def ready(self) -> bool:
        """Whether new work is accepted: the executor has started (every
        worker built and, if asked, warmed the model) and no shutdown began."""
        return self._started and not self._draining

    async def start(self) -> None:
        """Start the executor; the model is :attr:`ready` once it returns.

        :raises LoaderError: when the model cannot be built or warmed.
        """
        await self.executor.start()
        self._started = True

    def drain(self) -> None:
        """Refuse new predictions and trainings from now on (a shutdown
        began); work already accepted carries on."""
        self._draining = True

    def check_ready(self) -> None:
        """:raises NotRunning: when the model is not :attr:`ready`."""
        if self._draining:
            raise NotRunning(self.name, "the server is shutting down")
        if not self._started:
            raise NotRunning(
                self.name, "it is still starting; retry shortly", retry_after=1
            )

    @property
    def queue_depth(self) -> int:
        """Predictions waiting for a worker."""
        return self.executor.depth

    @property
    def worker_restarts(self) -> int:
        """Workers replaced so far, after dying or overrunning a deadline."""
        return self.executor.restarts

    @property
    def batch_sizes(self) -> Mapping[int, int] | None:
        """Batches sent so far by size, or ``None`` when not batching."""
        return self.executor.batch_sizes

    def admit(self) -> None:
        """Refuse a prediction at once when the model is not ready or
        ``max_queue`` already wait.

        Called before a request's body is read, so that a full server does
        not first receive an upload it will refuse. :meth:`predict` checks
        the queue again, but not readiness: a request admitted before a
        shutdown began still gets its answer.

        :raises NotRunning: when the model is not :attr:`ready`.
        :raises Overloaded: when the queue is full.
        """
        self.check_ready()
        self._check_queue()

    def _check_queue(self) -> None:
        if self.max_queue is None:
            return
        if self._in_hand >= self.executor.capacity + self.max_queue:
            raise Overloaded(self.name, self.executor.depth)

    async def predict(self, kwargs: Mapping[str, Any]) -> Any:
        """Run a prediction, or refuse it at once when the queue is full.

        :raises Overloaded: when ``max_queue`` predictions already wait.
        :raises DeadlineExceeded: past ``predict_timeout``.
        """
        self._check_queue()
        self._in_hand += 1
        try:
            return await self.executor.call(
                "predict", kwargs, timeout=self.predict_timeout
            )
        finally:
            self._in_hand -= 1

    def use_jobs(self, store: JobStore) -> None:
        """Record this model's trainings in ``store`` (the registry's)."""
        self._store = store
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

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise JobStoreError(f"Model '{self.name}' has no training-job store")
        return self._store

    async def start_training(
        self,
        kwargs: Mapping[str, Any],
        recorded_args: dict[str, Any],
        cleanup: Callable[[], None] | None = None,
    ) -> TrainingJob:
        """Record a training and start it in its own worker; ``cleanup``
        runs when it ends.

        :raises NotRunning: when the model is not :attr:`ready`.
        :raises JobStoreError: when the job cannot be recorded (nothing
            started then, and ``cleanup`` is left to the caller).
        """
        self.check_ready()
        store = self.store
        job = TrainingJob(
            id=uuid.uuid4().hex,
            model=self.name,
            status="running",
            args=recorded_args,
            created=datetime.datetime.now(datetime.UTC),
            owner=store.owner,
        )
        await store.add(job)
        training = _Training(job, _Output(store, job.id))
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
            result = await self.executor.run_job("train", kwargs, watch=training.output)
            status = "done"
        except asyncio.CancelledError:
            status = training.stopping or "cancelled"
            message = STOP_MESSAGES[status]
            LOG.info("Training %s of model '%s' %s", job.id, self.name, status)
        except DeepserveError as exc:
            message = exc.reason if isinstance(exc, ModelFailed) else str(exc)
            LOG.error("Training %s of model '%s' failed: %s", job.id, self.name, exc)
            if getattr(exc, "traceback", ""):
                LOG.error("%s", exc.traceback)  # type: ignore[attr-defined]
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            LOG.exception("Training %s of model '%s' failed", job.id, self.name)
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
            self.name, status=status, limit=limit, offset=offset
        )

    async def job(self, job_id: str) -> TrainingJob:
        """:raises JobNotFound: when this model has no such training."""
        return await self.store.get(self.name, job_id)

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
        return await self.store.logs(self.name, job_id, since=since, limit=limit)

    async def cancel(self, job_id: str) -> TrainingJob:
        """Cancel a running training; its worker process is terminated.

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
        if not await self.store.request_cancel(self.name, job_id):
            return await self.job(job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.store.settings.heartbeat_interval + CANCEL_WAIT
        while True:
            job = await self.job(job_id)
            if job.status != "running" or loop.time() >= deadline:
                return job
            await asyncio.sleep(CANCEL_POLL)

    async def interrupt_trainings(self) -> None:
        """Stop every training this server runs, recording them
        ``interrupted`` (the server is stopping)."""
        running = list(self._running.values())
        if running:
            LOG.info("Stopping %d training(s) of model '%s'", len(running), self.name)
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


class Registry(Mapping[str, ServedModel]):
    """The served models by name; started and closed as one.

    A name may have several versions served side by side (stored models),
    each with its own executor and readiness: the mapping gives each name's
    default version, :meth:`version` any of them, :meth:`every` all.

    Its life: :meth:`start` (the models build and warm; :attr:`ready` turns
    true), :meth:`drain` (a shutdown began: :attr:`ready` turns false, new
    work is refused, accepted work carries on), :meth:`close` (trainings
    stopped and recorded ``interrupted``, then workers).

    :param jobs: where trainings are recorded; opened and closed by the
        caller. Without one, an in-memory store that the registry opens
        and closes itself.
    :param defaults: name -> the version its unversioned paths reach; for
        a name not in it, the version listed last in ``served`` (the newest,
        as the CLI orders them).
    :raises ValueError: when ``defaults`` names a version not served.
    """

    def __init__(
        self,
        served: list[ServedModel],
        *,
        jobs: JobStore | None = None,
        defaults: Mapping[str, str] | None = None,
    ) -> None:
        self._all = list(served)
        self._versions: dict[str, dict[str, ServedModel]] = {}
        self._served: dict[str, ServedModel] = {}
        for s in served:
            self._versions.setdefault(s.name, {})[s.version or ""] = s
            self._served[s.name] = s  # the last one, unless defaults say
        for name, version in (defaults or {}).items():
            chosen = self._versions.get(name, {}).get(version)
            if chosen is None:
                raise ValueError(
                    f"default version {name}:{version} is not served "
                    f"(served: {', '.join(x.tag for x in served) or 'none'})"
                )
            self._served[name] = chosen
        self._draining = False
        self._owns_jobs = jobs is None
        self.jobs = jobs if jobs is not None else JobStore(JobSettings())
        for s in served:
            s.use_jobs(self.jobs)

    def __getitem__(self, name: str) -> ServedModel:
        try:
            return self._served[name]
        except KeyError:
            raise ModelNotFound(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._served

    def __iter__(self) -> Iterator[str]:
        return iter(self._served)

    def __len__(self) -> int:
        return len(self._served)

    def version(self, name: str, version: str | None) -> ServedModel:
        """The served version ``version`` of ``name``; its default for
        ``None``.

        :raises ModelNotFound: for a name or version not served.
        """
        if version is None:
            return self[name]
        versions = self._versions.get(name, {})
        found = versions.get(version)
        if found is None:
            known = name in self._versions
            raise ModelNotFound(f"{name}:{version}" if known else name)
        return found

    def versions(self, name: str) -> list[str]:
        """The versions served under ``name``, the default first; empty for
        an unversioned model.

        :raises ModelNotFound: for a name not served.
        """
        default = self[name]
        rest = [v for v in self._versions[name] if v and v != default.version]
        return [default.version, *rest] if default.version else rest

    def every(self) -> list[ServedModel]:
        """Every served model, every version, in the order given."""
        return list(self._all)

    def label(self, served: ServedModel) -> str:
        """The name ``served`` is counted under: its name, or ``name:version``
        when the name has several versions served."""
        return served.tag if len(self._versions[served.name]) > 1 else served.name

    @property
    def ready(self) -> bool:
        """Every model started and warmed, and no shutdown begun."""
        return not self._draining and all(s.ready for s in self._all)

    @property
    def draining(self) -> bool:
        """Whether a shutdown began (:meth:`drain` was called)."""
        return self._draining

    def drain(self) -> None:
        """Mark the registry not ready and refuse new work; idempotent."""
        self._draining = True
        for s in self._all:
            s.drain()

    async def start(self) -> None:
        """Start every executor at once; on failure, stop them all again."""
        if self._owns_jobs and not self.jobs.opened:
            await self.jobs.open()
        results = await asyncio.gather(
            *(s.start() for s in self._all),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close()
            raise failures[0]

    async def close(self) -> None:
        """Drain, stop the trainings (recorded ``interrupted``), then every
        worker.

        The order matters: a training is stopped (and its record settled)
        while its model's executor still exists; only then do the
        executors stop their pools.
        """
        self.drain()
        served = self.every()
        if self.jobs.opened:
            await asyncio.gather(*(s.interrupt_trainings() for s in served))
        await asyncio.gather(*(s.executor.close() for s in served))
        if self._owns_jobs and self.jobs.opened:
            await self.jobs.close()
