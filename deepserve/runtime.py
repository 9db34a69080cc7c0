"""Served models and the registry of them; protocol-neutral (no HTTP here).

A served model's trainings are :class:`~deepserve.jobs.Trainings`; its
training methods here hand over to them once it is :attr:`ready`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from deepserve.exceptions import JobStoreError, ModelNotFound, NotRunning, Overloaded
from deepserve.executors import Executor, factory
from deepserve.jobs import JobPage, JobStore, LogPage, TrainingJob, Trainings
from deepserve.loader import ModelRef
from deepserve.model import Model
from deepserve.settings import ExecutorSettings, JobSettings

LOG = logging.getLogger(__name__)

__all__ = ["Registry", "ServedModel", "TrainingJob"]


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
        self._trainings: Trainings | None = None
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
        worker built and, if asked, warmed the model), has not lost the
        model since, and no shutdown began."""
        return (
            self._started and not self._draining and self.executor.unavailable is None
        )

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
        problem = self.executor.unavailable
        if problem is not None:
            raise NotRunning(self.name, problem, retry_after=5)

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
        self._trainings = Trainings(self.name, self.executor.run_job, store)

    @property
    def trainings(self) -> Trainings:
        """This model's trainings.

        :raises JobStoreError: before :meth:`use_jobs`.
        """
        if self._trainings is None:
            raise JobStoreError(f"Model '{self.name}' has no training-job store")
        return self._trainings

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
        return await self.trainings.start(kwargs, recorded_args, cleanup)

    async def jobs(
        self, *, status: str | None = None, limit: int | None = None, offset: int = 0
    ) -> JobPage:
        """This model's trainings, oldest first, from every server sharing
        the job database."""
        return await self.trainings.jobs(status=status, limit=limit, offset=offset)

    async def job(self, job_id: str) -> TrainingJob:
        """:raises JobNotFound: when this model has no such training."""
        return await self.trainings.job(job_id)

    async def logs(self, job_id: str, *, since: int = 0, limit: int = 1000) -> LogPage:
        """A training's output after cursor ``since``.

        :raises JobNotFound: when this model has no such training.
        """
        return await self.trainings.logs(job_id, since=since, limit=limit)

    async def cancel(self, job_id: str) -> TrainingJob:
        """Cancel a running training (see :meth:`Trainings.cancel`).

        :raises JobNotFound: when this model has no such training.
        """
        return await self.trainings.cancel(job_id)

    async def interrupt_trainings(self) -> None:
        """Stop every training this server runs, recording them
        ``interrupted`` (the server is stopping)."""
        if self._trainings is not None:
            await self._trainings.interrupt()


class Registry(Mapping[str, ServedModel]):
    """The served models by name; started and closed as one.

    A name may have several versions served side by side (stored models),
    each with its own executor and readiness: the mapping gives each name's
    default version, :meth:`version` any of them, :meth:`every` all.

    Its life: :meth:`start` (the models build and warm; :attr:`ready` turns
    true), :meth:`drain` (a shutdown began: :attr:`ready` turns false, new
    work is refused, accepted work carries on), :meth:`close` (trainings
    stopped and recorded ``interrupted``, then workers). A server lives
    inside :meth:`running`, which owns that order with the job store's
    opening and closing around it.

    :param jobs: where trainings are recorded; opened and closed by the
        caller or by :meth:`running`. Without one, an in-memory store that
        the registry opens and closes itself.
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

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The registry's life around a server, in its one order.

        1. The job store opens (a database it cannot use raises
           ``JobStoreError`` here, before any model starts).
        2. The body runs: the server listens, then calls :meth:`start` (the
           models build and warm while probes answer), serves, and on
           shutdown calls :meth:`drain` and closes its socket once the
           requests in progress ended.
        3. On exit, however the body ended, :meth:`close`: drained, the
           trainings stopped and recorded ``interrupted`` (while their
           executors and the job store still exist), then the executors;
           last, the job store closes.

        A job store the caller opened before stays open.
        """
        opened_here = not self.jobs.opened
        if opened_here:
            await self.jobs.open()
        try:
            yield
        finally:
            try:
                LOG.debug("Stopping the trainings and the models' workers")
                await self.close()
            finally:
                if opened_here and self.jobs.opened:
                    await self.jobs.close()

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
