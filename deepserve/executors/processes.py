"""Run model code in spawn-started worker processes.

Each worker holds one model built once, so what ``warm()`` did stays for
every later call. A call sends only ``(method, kwargs)`` down a pipe; uploads
travel as paths. The event loop reads the pipes itself (no reader threads):
an answer settles its call's future in the same loop iteration that reads
it, and the freed worker goes straight to the next waiting call.

A worker that dies is replaced and re-warmed in the background; the call it
was serving fails with :class:`~deepserve.exceptions.WorkerDied`, other calls
are untouched. A call past its deadline kills its worker (the work really
stops) and fails with :class:`~deepserve.exceptions.DeadlineExceeded`. A call
whose caller goes away (the client disconnected) is left to finish and its
answer dropped, so that a client cannot make the server kill workers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Mapping
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

from deepserve.exceptions import (
    DeadlineExceeded,
    DeepserveError,
    LoaderError,
    ModelFailed,
    WorkerDied,
)
from deepserve.executors import worker as worker_main
from deepserve.loader import ModelRef
from deepserve.model import Method

LOG = logging.getLogger(__name__)

#: Seconds a worker gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 2.0
#: Longest pause between attempts to replace a worker that fails to start.
MAX_RESTART_DELAY = 30.0


class _Worker:
    """One worker process and its pipe, read by the event loop."""

    def __init__(
        self,
        ctx: SpawnContext,
        ref: ModelRef,
        warm: bool,
        on_idle_death: Callable[[_Worker], None] | None = None,
    ) -> None:
        self.model = ref.name
        self._loop = asyncio.get_running_loop()
        self._on_idle_death = on_idle_death
        self.ready: asyncio.Future[int] = self._loop.create_future()
        self._pending: asyncio.Future[Any] | None = None
        self.dead = False
        self._conn, child = ctx.Pipe(duplex=True)
        self.process: SpawnProcess = ctx.Process(
            target=worker_main.main,
            # Workers log at the server's level (the CLI configures it).
            args=(child, ref, warm, os.getpid(), logging.getLogger().level),
            name=f"deepserve-worker[{ref.name}]",
        )
        self.process.start()
        child.close()
        self._loop.add_reader(self._conn.fileno(), self._readable)

    def request(self, method: Method, kwargs: Mapping[str, Any]) -> asyncio.Future[Any]:
        """Send a call; its future settles when the worker answers or dies."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.dead:
            future.set_exception(WorkerDied(self.model, self.death()))
            return future
        try:
            self._conn.send((method, dict(kwargs)))
        except (OSError, EOFError):
            pass  # _readable sees the death and fails the future
        except Exception as exc:  # the arguments do not pickle
            future.set_exception(
                DeepserveError(f"Arguments cannot be sent to the worker: {exc}")
            )
            return future
        self._pending = future
        return future

    @property
    def busy(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def _readable(self) -> None:
        try:
            while self._conn.poll():
                kind, payload = self._conn.recv()
                self._answer(kind, payload)
        except (EOFError, OSError):
            self._lost()
        except Exception as exc:  # an answer that does not unpickle
            self._answer(
                worker_main.ERR,
                DeepserveError(f"Cannot read the worker's answer: {exc}"),
            )

    def _answer(self, kind: str, payload: Any) -> None:
        if kind == worker_main.READY:
            _settle(self.ready, payload)
            return
        if not self.ready.done():
            _settle(self.ready, error=payload)
            return
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if kind == worker_main.OK:
            _settle(pending, payload)
        else:
            _settle(pending, error=payload)

    def _lost(self) -> None:
        """The pipe closed: the process died or is dying."""
        if self.dead:
            return
        self.dead = True
        self._loop.remove_reader(self._conn.fileno())
        self._conn.close()
        self._loop.create_task(self._report_death())

    async def _report_death(self) -> None:
        # The exit status says why; it is there as soon as the process is
        # reaped, which takes a moment after its pipe closes.
        await self._loop.run_in_executor(None, self.process.join, TERMINATE_GRACE)
        died = WorkerDied(self.model, self.death())
        was_ready = self.ready.done()
        _settle(self.ready, error=died)
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            _settle(pending, error=died)
        elif was_ready and self._on_idle_death is not None:
            self._on_idle_death(self)

    def death(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "its pipe closed"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def kill(self) -> None:
        """Terminate the worker now (SIGTERM, then SIGKILL), without waiting."""
        self._on_idle_death = None
        if self.process.exitcode is None:
            self.process.terminate()
        self._loop.run_in_executor(None, _reap, self.process)

    async def wait_gone(self) -> None:
        await self._loop.run_in_executor(None, _reap, self.process)


def _reap(proc: SpawnProcess) -> None:
    proc.join(TERMINATE_GRACE)
    if proc.exitcode is None:
        proc.kill()
        proc.join()


def _settle(
    future: asyncio.Future[Any], result: Any = None, *, error: Any = None
) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, BaseException):
        future.set_exception(error)
    else:
        future.set_exception(DeepserveError(str(error)))


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned future's outcome as seen."""
    if not future.cancelled():
        future.exception()


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, ModelFailed) else str(exc)


class ProcessExecutor:
    """A pool of worker processes for one model, plus one process per job.

    It belongs to the event loop that starts it.

    :param ref: the model to build in each worker.
    :param workers: how many pool workers.
    :param warm: whether workers run the model's ``warm()`` before serving.
    """

    def __init__(self, ref: ModelRef, *, workers: int = 1, warm: bool = True) -> None:
        self._ref = ref
        self._size = max(1, workers)
        self._warm = warm
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._jobs = JobRunner(ref, warm=warm)
        self._waiters: collections.deque[asyncio.Future[_Worker]] = collections.deque()
        self._respawning: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def workers(self) -> int:
        return self._size

    async def start(self) -> None:
        """Spawn every worker and wait until each has built its model.

        :raises LoaderError: when a worker cannot build or warm the model.
        """
        workers = [self._spawn() for _ in range(self._size)]
        try:
            await asyncio.gather(*(w.ready for w in workers))
        except DeepserveError as exc:
            for w in workers:
                w.kill()
            if isinstance(exc, ModelFailed):
                LOG.debug(
                    "Start-up of model '%s' failed:\n%s", exc.model, exc.traceback
                )
            raise LoaderError(
                f"Model '{self._ref.name}' failed to start: {_reason(exc)}"
            ) from exc
        for w in workers:
            self._release(w)

    async def call(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        worker = await self._acquire()
        while worker.dead:
            # It died before this call reached it: nothing was lost, so the
            # call goes to another worker instead of failing.
            self._replace(worker, f"it died while idle ({worker.death()})")
            worker = await self._acquire()
        answer = worker.request(method, kwargs)
        try:
            async with asyncio.timeout(timeout):
                result = await asyncio.shield(answer)
        except TimeoutError:
            answer.add_done_callback(_consume)  # it fails when the worker dies
            self._replace(worker, f"a call ran past its {timeout:g} s deadline")
            raise DeadlineExceeded(self._ref.name, timeout or 0.0) from None
        except asyncio.CancelledError:
            # The caller left; the worker finishes the call, then serves others.
            answer.add_done_callback(lambda _f: self._after_call(worker, answer))
            raise
        except BaseException:
            self._after_call(worker, answer)
            raise
        self._release(worker)
        return result

    def _after_call(self, worker: _Worker, answer: asyncio.Future[Any]) -> None:
        if not answer.cancelled() and isinstance(answer.exception(), WorkerDied):
            self._replace(worker, "it died")
        else:
            self._release(worker)

    async def run_job(self, method: Method, kwargs: Mapping[str, Any]) -> Any:
        return await self._jobs.run(method, kwargs)

    @property
    def depth(self) -> int:
        """Calls waiting for a worker."""
        return sum(1 for w in self._waiters if not w.done())

    async def close(self) -> None:
        """Stop every worker and job; waiting callers get ``WorkerDied``."""
        self._closed = True
        for task in self._respawning:
            task.cancel()
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        while self._waiters:
            _settle(
                self._waiters.popleft(),
                error=WorkerDied(self._ref.name, "the server is stopping"),
            )
        for w in workers:
            w.kill()
        await asyncio.gather(self._jobs.close(), *(w.wait_gone() for w in workers))

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self._ref, self._warm, self._idle_death)

    def _idle_death(self, worker: _Worker) -> None:
        """A worker died between calls (OOM killer, signal): replace it now."""
        if worker in self._idle:
            self._idle.remove(worker)
            self._replace(worker, f"it died while idle ({worker.death()})")

    async def _acquire(self) -> _Worker:
        if self._closed:
            raise WorkerDied(self._ref.name, "the server is stopping")
        if self._idle:
            worker = self._idle.pop()
            self._busy.add(worker)
            return worker
        waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # A worker was handed over just as we gave up: pass it on.
                self._release(waiter.result())
            raise

    def _release(self, worker: _Worker) -> None:
        if self._closed:
            worker.kill()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._busy.add(worker)
                waiter.set_result(worker)
                return
        self._busy.discard(worker)
        self._idle.append(worker)

    def _replace(self, worker: _Worker, why: str) -> None:
        self._busy.discard(worker)
        worker.kill()
        if self._closed:
            return
        LOG.warning("Replacing a worker of model '%s': %s", self._ref.name, why)
        task = asyncio.get_running_loop().create_task(self._respawn())
        self._respawning.add(task)
        task.add_done_callback(self._respawning.discard)

    async def _respawn(self) -> None:
        delay = 0.5
        while not self._closed:
            fresh = self._spawn()
            try:
                await fresh.ready
            except DeepserveError as exc:
                fresh.kill()
                LOG.error(
                    "A new worker of model '%s' failed to start (%s); retrying in %.1fs",
                    self._ref.name,
                    _reason(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)
                continue
            except asyncio.CancelledError:
                fresh.kill()
                raise
            self._release(fresh)
            return


class JobRunner:
    """Runs each long call (a training) in a fresh process of its own.

    Every executor kind uses it, so that cancelling a training always stops
    it for real, which a thread cannot promise.
    """

    def __init__(self, ref: ModelRef, *, warm: bool) -> None:
        self._ref = ref
        self._warm = warm
        self._ctx = multiprocessing.get_context("spawn")
        self._running: set[_Worker] = set()

    async def run(self, method: Method, kwargs: Mapping[str, Any]) -> Any:
        worker = _Worker(self._ctx, self._ref, self._warm)
        self._running.add(worker)
        try:
            await worker.ready
            return await worker.request(method, kwargs)
        finally:
            self._running.discard(worker)
            # Finished, failed or cancelled, the job's process goes: a
            # cancelled training must really stop.
            worker.kill()

    async def close(self) -> None:
        running = list(self._running)
        for w in running:
            w.kill()
        await asyncio.gather(*(w.wait_gone() for w in running))
