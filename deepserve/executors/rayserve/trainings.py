"""Trainings on a Ray cluster: each in an actor of its own.

A :class:`TrainingActor` reserves the training's CPUs and GPUs
(``[ray] train_num_cpus``, ``train_num_gpus``) on some node, and there runs
the training exactly as the other executors do on the server's machine: in
a fresh process of its own (:class:`~deepserve.executors.jobrunner.
JobRunner`), its stdout, stderr and log records captured. The server polls
the actor for those lines and hands them to the job's
:class:`~deepserve.executors.JobWatch`, so they land in the job database as
today. Cancelling the training stops that process with what it started,
then kills the actor; so does the server's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from deepserve import loader
from deepserve.exceptions import DeepserveError, NotRunning, WorkerDied
from deepserve.executors import JobWatch
from deepserve.executors.messages import Answer, Failure
from deepserve.executors.rayserve import cluster, shipping
from deepserve.loader import ModelRef
from deepserve.model import Method
from deepserve.settings import ExecutorSettings

LOG = logging.getLogger(__name__)

#: Seconds between two collections of a training's output.
POLL_INTERVAL = 0.5
#: Seconds a cancelled training's actor gets to stop its process.
STOP_TIMEOUT = 10.0

#: One line of output: stream, text, level, time.
Line = tuple[str, str, str | None, float]


class TrainingActor:
    """Runs one training on the node Ray placed it on (see the module)."""

    def __init__(self, ref: ModelRef, warm: bool, store_url: str | None) -> None:
        self._ref = ref
        self._warm = warm
        self._store_url = store_url
        self._lines: list[Line] = []
        self._started = False
        self._task: asyncio.Task[Any] | None = None

    async def run(self, method: Method, kwargs: dict[str, Any]) -> Answer | Failure:
        """Run the training; its output is collected for :meth:`poll`."""
        from deepserve.executors.jobrunner import JobRunner

        uploads = tempfile.mkdtemp(prefix="deepserve-upload-")
        try:
            ref = self._ref
            if self._store_url is not None and ref.source == "store":
                ref = await asyncio.to_thread(
                    loader.from_remote, ref.tag, self._store_url
                )
            local = shipping.unpack(kwargs, uploads, cluster.get)
            runner = JobRunner(ref, warm=self._warm)
            self._task = asyncio.ensure_future(runner.run(method, local, watch=self))
            result = await self._task
            return Answer(shipping.pack_result(method, result))
        except DeepserveError as exc:
            return Failure(exc)
        except asyncio.CancelledError:
            return Failure(NotRunning(self._ref.tag, "the training was stopped"))
        except Exception as exc:
            from deepserve.executors.worker import unexpected

            return Failure(unexpected(self._ref.tag, exc))
        finally:
            shutil.rmtree(uploads, ignore_errors=True)

    async def poll(self) -> tuple[bool, list[Line]]:
        """Whether the training began, and its lines since the last poll."""
        lines, self._lines = self._lines, []
        return self._started, lines

    async def stop(self) -> None:
        """Stop the training's process (and what it started)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    # JobWatch, called by the JobRunner in this actor's event loop.

    def started(self) -> None:
        self._started = True

    def output(self, stream: str, text: str, level: str | None, when: float) -> None:
        self._lines.append((stream, text, level, when))


class RayJobRunner:
    """Starts a :class:`TrainingActor` per training and relays its output."""

    def __init__(self, ref: ModelRef, settings: ExecutorSettings) -> None:
        self._ref = ref
        self._warm = settings.warm
        self._ray = settings.ray
        self._running: set[Any] = set()

    async def run(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        watch: JobWatch | None = None,
    ) -> Any:
        actor = await asyncio.to_thread(self._spawn)
        self._running.add(actor)
        try:
            if shipping.has_files(kwargs):
                packed = await asyncio.to_thread(
                    shipping.pack, kwargs, cluster.put_file
                )
            else:
                packed = dict(kwargs)
            done = asyncio.wrap_future(actor.run.remote(method, packed).future())
            try:
                got = await self._relay(actor, done, watch)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception, asyncio.TimeoutError):
                    await asyncio.wait_for(
                        cluster.resolve(actor.stop.remote()), STOP_TIMEOUT
                    )
                raise
        finally:
            self._running.discard(actor)
            await asyncio.to_thread(_kill, actor)
        if isinstance(got, Answer):
            return await shipping.received(method, got.value)
        if isinstance(got, Failure):
            raise got.error
        raise WorkerDied(self._ref.tag, f"its training actor answered {got!r}")

    async def _relay(
        self, actor: Any, done: asyncio.Future[Any], watch: JobWatch | None
    ) -> Any:
        began = False
        while True:
            finished, _ = await asyncio.wait({done}, timeout=POLL_INTERVAL)
            try:
                started, lines = await cluster.resolve(actor.poll.remote())
            except Exception:
                started, lines = began, []
            if watch is not None:
                if started and not began:
                    watch.started()
                for stream, text, level, when in lines:
                    watch.output(stream, text, level, when)
            began = began or started
            if finished:
                try:
                    return done.result()
                except DeepserveError:
                    raise
                except Exception as exc:
                    raise WorkerDied(
                        self._ref.tag,
                        f"its training actor died: {cluster.first_line(exc)}",
                    ) from None

    def _spawn(self) -> Any:
        import ray

        remote = ray.remote(TrainingActor).options(
            num_cpus=self._ray.train_num_cpus,
            num_gpus=self._ray.train_num_gpus,
            max_restarts=0,
        )
        return remote.remote(self._ref, self._warm, self._ray.model_store_url)

    async def close(self) -> None:
        """Stop every training still running (the server stops)."""
        running, self._running = list(self._running), set()
        for actor in running:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(
                    cluster.resolve(actor.stop.remote()), STOP_TIMEOUT
                )
            await asyncio.to_thread(_kill, actor)


def _kill(actor: Any) -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)
