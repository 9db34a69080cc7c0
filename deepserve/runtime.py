"""Served models and their training jobs; protocol-neutral (no HTTP here)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from deepserve.exceptions import (
    DeepserveError,
    JobNotFound,
    ModelNotFound,
    NotRunning,
    Overloaded,
)
from deepserve.executors import Executor, factory
from deepserve.executors.batching import BatchingExecutor
from deepserve.loader import ModelRef
from deepserve.model import Model
from deepserve.settings import ExecutorSettings

LOG = logging.getLogger(__name__)

#: How long a cancelled training may take to stop before we answer anyway.
CANCEL_WAIT = 10.0


@dataclasses.dataclass
class TrainingJob:
    """One training run of a model.

    :param args: the arguments as recorded for clients (files by name).
    """

    id: str
    model: str
    args: dict[str, Any]
    started: datetime.datetime
    task: asyncio.Task[Any] | None = None
    finished: datetime.datetime | None = None
    result: Any = None
    error: DeepserveError | None = None
    cancelled: bool = False

    @property
    def status(self) -> str:
        if self.cancelled:
            return "cancelled"
        if self.finished is None:
            return "running"
        return "error" if self.error is not None else "done"

    @property
    def duration(self) -> datetime.timedelta | None:
        return None if self.finished is None else self.finished - self.started


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
    ) -> None:
        self.model = model
        self.executor = executor
        self.predict_timeout = predict_timeout
        self.max_queue = max_queue
        self._jobs: dict[str, TrainingJob] = {}
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
        )

    @property
    def name(self) -> str:
        return self.model.name

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
            raise NotRunning(self.name, "it is still starting; retry shortly")

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
        if isinstance(self.executor, BatchingExecutor):
            return self.executor.batch_sizes
        return None

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

    def start_training(
        self,
        kwargs: Mapping[str, Any],
        recorded_args: dict[str, Any],
        cleanup: Callable[[], None] | None = None,
    ) -> TrainingJob:
        """Start a training in its own worker; ``cleanup`` runs when it ends.

        Must be called from a running event loop.

        :raises NotRunning: when the model is not :attr:`ready`.
        """
        self.check_ready()
        job = TrainingJob(
            id=uuid.uuid4().hex,
            model=self.name,
            args=recorded_args,
            started=datetime.datetime.now(),
        )
        job.task = asyncio.get_running_loop().create_task(
            self._train(job, dict(kwargs), cleanup)
        )
        self._jobs[job.id] = job
        return job

    async def _train(
        self,
        job: TrainingJob,
        kwargs: dict[str, Any],
        cleanup: Callable[[], None] | None,
    ) -> None:
        try:
            job.result = await self.executor.run_job("train", kwargs)
        except asyncio.CancelledError:
            job.cancelled = True
            LOG.info("Training %s of model '%s' cancelled", job.id, self.name)
        except DeepserveError as exc:
            job.error = exc
            LOG.error("Training %s of model '%s' failed: %s", job.id, self.name, exc)
            if getattr(exc, "traceback", ""):
                LOG.error("%s", exc.traceback)  # type: ignore[attr-defined]
        except Exception as exc:
            job.error = DeepserveError(f"{type(exc).__name__}: {exc}")
            LOG.exception("Training %s of model '%s' failed", job.id, self.name)
        finally:
            job.finished = datetime.datetime.now()
            if cleanup is not None:
                cleanup()

    def jobs(self) -> list[TrainingJob]:
        return list(self._jobs.values())

    def job(self, job_id: str) -> TrainingJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(self.name, job_id) from None

    async def cancel(self, job_id: str) -> TrainingJob:
        """Cancel a running training; its worker process is terminated."""
        job = self.job(job_id)
        task = job.task
        if task is not None and not task.done():
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=CANCEL_WAIT)
            if not done:
                LOG.warning("Training %s is slow to stop", job_id)
        return job

    async def stop_trainings(self) -> None:
        """Cancel every running training and wait for each to end (its
        worker stopped, its uploads removed)."""
        tasks = [j.task for j in self._jobs.values() if j.task and not j.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            LOG.info("Stopping %d training(s) of model '%s'", len(tasks), self.name)
            _done, slow = await asyncio.wait(tasks, timeout=CANCEL_WAIT)
            if slow:
                LOG.warning("%d training(s) were slow to stop", len(slow))


class Registry(Mapping[str, ServedModel]):
    """The served models by name; started and closed as one.

    Its life: :meth:`start` (the models build and warm; :attr:`ready` turns
    true), :meth:`drain` (a shutdown began: :attr:`ready` turns false, new
    work is refused, accepted work carries on), :meth:`close` (trainings
    stopped, then workers).
    """

    def __init__(self, served: list[ServedModel]) -> None:
        self._served = {s.name: s for s in served}
        self._draining = False

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

    @property
    def ready(self) -> bool:
        """Every model started and warmed, and no shutdown begun."""
        return not self._draining and all(s.ready for s in self._served.values())

    @property
    def draining(self) -> bool:
        """Whether a shutdown began (:meth:`drain` was called)."""
        return self._draining

    def drain(self) -> None:
        """Mark the registry not ready and refuse new work; idempotent."""
        self._draining = True
        for s in self._served.values():
            s.drain()

    async def start(self) -> None:
        """Start every executor at once; on failure, stop them all again."""
        results = await asyncio.gather(
            *(s.start() for s in self._served.values()),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.close()
            raise failures[0]

    async def close(self) -> None:
        """Stop the trainings, then every worker; drains first.

        The order matters: a training is stopped (and its record settled)
        while its model's executor still exists; only then do the
        executors stop their pools.
        """
        self.drain()
        served = list(self._served.values())
        await asyncio.gather(*(s.stop_trainings() for s in served))
        await asyncio.gather(*(s.executor.close() for s in served))
