"""Run model code in spawn-started worker processes.

Each worker holds one model built once, so what ``warm()`` did stays for
every later call. A call sends only ``(method, kwargs)`` down a pipe; uploads
travel as paths. A reader thread per worker turns answers into
:class:`concurrent.futures.Future` results, which any event loop can await:
the executor is not tied to the loop that started it.

A worker that dies is replaced and re-warmed in the background; the call it
was serving fails with :class:`~deepserve.exceptions.WorkerDied`. A cancelled
call kills its worker (the model's work really stops) and replaces it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Mapping
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

from deepserve.exceptions import DeepserveError, LoaderError, ModelFailed, WorkerDied
from deepserve.executors import worker as worker_main
from deepserve.loader import ModelRef
from deepserve.model import Method
from deepserve.settings import ExecutorSettings

LOG = logging.getLogger(__name__)

#: Seconds a worker gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 2.0
#: Longest pause between attempts to replace a worker that fails to start.
MAX_RESTART_DELAY = 30.0


class _Worker:
    """One worker process, its pipe, and the thread reading its answers."""

    def __init__(
        self,
        ctx: SpawnContext,
        ref: ModelRef,
        warm: bool,
        on_idle_death: Callable[[_Worker], None] | None = None,
    ) -> None:
        self.model = ref.name
        self._on_idle_death = on_idle_death
        self.ready: cf.Future[int] = cf.Future()
        self._pending: cf.Future[Any] | None = None
        self._lock = threading.Lock()
        self._conn, child = ctx.Pipe(duplex=True)
        self.process: SpawnProcess = ctx.Process(
            target=worker_main.main,
            # Workers log at the server's level (the CLI configures it).
            args=(child, ref, warm, os.getpid(), logging.getLogger().level),
            name=f"deepserve-worker[{ref.name}]",
        )
        self.process.start()
        child.close()
        threading.Thread(
            target=self._read, name=f"deepserve-reader[{ref.name}]", daemon=True
        ).start()

    def request(self, method: Method, kwargs: Mapping[str, Any]) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        with self._lock:
            if not self.alive:
                future.set_exception(WorkerDied(self.model, self.death()))
                return future
            self._pending = future
        try:
            self._conn.send((method, dict(kwargs)))
        except (OSError, EOFError):
            pass  # the reader thread reports the death
        except Exception as exc:  # the arguments do not pickle
            with self._lock:
                self._pending = None
            future.set_exception(
                DeepserveError(f"Arguments cannot be sent to the worker: {exc}")
            )
        return future

    @property
    def alive(self) -> bool:
        return self.process.exitcode is None and not self._conn.closed

    def _read(self) -> None:
        while True:
            try:
                kind, payload = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # an answer that does not unpickle
                kind, payload = (
                    worker_main.ERR,
                    DeepserveError(f"Cannot read the worker's answer: {exc}"),
                )
            if kind == worker_main.READY:
                _settle(self.ready, payload)
                continue
            if not self.ready.done():
                _settle(self.ready, error=payload)
                continue
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                if kind == worker_main.OK:
                    _settle(pending, payload)
                else:
                    _settle(pending, error=payload)
        self.process.join(TERMINATE_GRACE)
        died = WorkerDied(self.model, self.death())
        with self._lock:
            pending, self._pending = self._pending, None
        was_ready = self.ready.done()
        _settle(self.ready, error=died)
        self._conn.close()
        if pending is not None:
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

    def stop(self) -> None:
        """Ask the worker to exit (it finishes its current call first)."""
        with contextlib.suppress(OSError, EOFError, ValueError):
            self._conn.send(None)

    def kill(self) -> None:
        """Terminate the worker now, escalating to SIGKILL, without blocking."""
        proc = self.process
        if proc.exitcode is None:
            proc.terminate()
        threading.Thread(target=_reap, args=(proc,), daemon=True).start()


def _reason(exc: DeepserveError) -> str:
    return exc.reason if isinstance(exc, ModelFailed) else str(exc)


def _reap(proc: SpawnProcess) -> None:
    proc.join(TERMINATE_GRACE)
    if proc.exitcode is None:
        proc.kill()
        proc.join()


def _settle(future: cf.Future[Any], result: Any = None, *, error: Any = None) -> None:
    if future.done() or not future.set_running_or_notify_cancel():
        return  # already settled, or cancelled by its caller
    if error is None:
        future.set_result(result)
    elif isinstance(error, BaseException):
        future.set_exception(error)
    else:
        future.set_exception(DeepserveError(str(error)))


class ProcessExecutor:
    """A pool of worker processes for one model, plus one process per job.

    :param ref: the model to build in each worker.
    :param settings: number of workers and whether to warm them.
    """

    def __init__(self, ref: ModelRef, settings: ExecutorSettings) -> None:
        self._ref = ref
        self._settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._jobs: set[_Worker] = set()
        self._waiters: collections.deque[cf.Future[_Worker]] = collections.deque()
        self._closed = False

    def start(self) -> None:
        """Spawn every worker and wait until each has built its model.

        :raises LoaderError: when a worker cannot build or warm the model.
        """
        workers = [self._spawn() for _ in range(max(1, self._settings.workers))]
        try:
            for w in workers:
                w.ready.result()
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

    async def call(self, method: Method, kwargs: Mapping[str, Any]) -> Any:
        worker = await self._acquire()
        while not worker.alive:
            # It died before this call reached it: nothing was lost, so the
            # call goes to another worker instead of failing.
            self._replace(worker, f"it died while idle ({worker.death()})")
            worker = await self._acquire()
        try:
            result = await asyncio.wrap_future(worker.request(method, kwargs))
        except asyncio.CancelledError:
            self._replace(worker, "its call was cancelled")
            raise
        except WorkerDied:
            self._replace(worker, "it died")
            raise
        except BaseException:
            self._release(worker)
            raise
        self._release(worker)
        return result

    async def run_job(self, method: Method, kwargs: Mapping[str, Any]) -> Any:
        worker = self._spawn(pooled=False)
        with self._lock:
            self._jobs.add(worker)
        try:
            await asyncio.wrap_future(worker.ready)
            return await asyncio.wrap_future(worker.request(method, kwargs))
        finally:
            with self._lock:
                self._jobs.discard(worker)
            # Whether it finished, failed or was cancelled, the job's process
            # goes: a cancelled training must really stop.
            worker.kill()

    def close(self) -> None:
        """Stop every worker and job; waiting callers get ``WorkerDied``."""
        with self._lock:
            self._closed = True
            workers = [*self._idle, *self._busy, *self._jobs]
            self._idle.clear()
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            _settle(waiter, error=WorkerDied(self._ref.name, "the server is stopping"))
        for w in workers:
            w.kill()
        for w in workers:
            _reap(w.process)

    def _spawn(self, pooled: bool = True) -> _Worker:
        return _Worker(
            self._ctx,
            self._ref,
            self._settings.warm,
            self._idle_death if pooled else None,
        )

    def _idle_death(self, worker: _Worker) -> None:
        """A worker died between calls (OOM killer, signal): replace it now."""
        with self._lock:
            if worker not in self._idle:
                return  # a call holds it and handles the death itself
            self._idle.remove(worker)
        self._replace(worker, f"it died while idle ({worker.death()})")

    async def _acquire(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise WorkerDied(self._ref.name, "the server is stopping")
            if self._idle:
                worker = self._idle.pop()
                self._busy.add(worker)
                return worker
            waiter: cf.Future[_Worker] = cf.Future()
            self._waiters.append(waiter)
        try:
            return await asyncio.wrap_future(waiter)
        except asyncio.CancelledError:
            if not waiter.cancel():
                # A worker was handed over just as we gave up: pass it on.
                self._release(waiter.result())
            raise

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            if self._closed:
                worker.kill()
                return
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.set_running_or_notify_cancel():
                    self._busy.add(worker)
                    waiter.set_result(worker)
                    return
            self._busy.discard(worker)
            self._idle.append(worker)

    def _replace(self, worker: _Worker, why: str) -> None:
        with self._lock:
            self._busy.discard(worker)
        worker.kill()
        LOG.warning("Replacing a worker of model '%s': %s", self._ref.name, why)
        threading.Thread(
            target=self._respawn,
            name=f"deepserve-respawn[{self._ref.name}]",
            daemon=True,
        ).start()

    def _respawn(self) -> None:
        delay = 0.5
        while not self._closed:
            fresh = self._spawn()
            try:
                fresh.ready.result()
            except DeepserveError as exc:
                fresh.kill()
                LOG.error(
                    "A new worker of model '%s' failed to start (%s); retrying in %.1fs",
                    self._ref.name,
                    _reason(exc),
                    delay,
                )
                threading.Event().wait(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)
                continue
            self._release(fresh)
            return
