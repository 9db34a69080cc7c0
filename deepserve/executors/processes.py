"""Run model code in a pool of spawn-started worker processes.

Each worker (a :class:`~deepserve.executors.workers.Worker`) holds one model
built once, so what ``warm()`` did stays for every later call. A call sends
only its method and arguments down a pipe; uploads travel as paths. Calls
wait in one queue and are pipelined: while a worker runs one call, the next
already waits in its pipe, so the worker never idles between calls.

A worker that dies is replaced and re-warmed in the background. The call it
was running fails with :class:`~deepserve.exceptions.WorkerDied`; the calls
queued behind it never started, so they go to the other workers, and no
other request notices. A call past its deadline kills its worker (the work
really stops) and fails with :class:`~deepserve.exceptions.DeadlineExceeded`.
A caller that goes away (a client disconnecting) drops its call if it is
still queued; a running call is left to finish, so that a client cannot make
the server kill workers. Trainings run apart, each in a process of its own
(:class:`~deepserve.executors.jobrunner.JobRunner`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
from collections.abc import Mapping
from typing import Any

from deepserve.exceptions import DeadlineExceeded, DeepserveError, NotRunning
from deepserve.executors import JobWatch, describe, start_failure, within
from deepserve.executors.jobrunner import JobRunner
from deepserve.executors.workers import PendingCall, Worker, settle
from deepserve.loader import ModelRef
from deepserve.model import Method

LOG = logging.getLogger(__name__)

#: Longest pause between attempts to replace a worker that fails to start.
MAX_RESTART_DELAY = 30.0
#: Calls a worker may hold at once: one running, the next ready behind it,
#: so the worker does not idle while the server hands it the next call.
PIPELINE = 2
#: Calls a worker may hold when its calls take under :data:`FAST_CALL`
#: seconds: under load the server's event loop, busy with many connections,
#: takes longer than such a call to come back to the worker, which would
#: idle between calls with only one waiting (echo at 64 connections: 3.9k
#: req/s with 2, 7.3k with 8 on the 2-CPU VM of benchmarks/RESULTS.md).
DEEP_PIPELINE = 8
FAST_CALL = 0.002


def pipeline_depth(service: float | None) -> int:
    """How many calls a worker may hold, given how long its calls take
    (seconds, a running average; ``None``: not known yet)."""
    if service is not None and service < FAST_CALL:
        return DEEP_PIPELINE
    return PIPELINE


class ProcessExecutor:
    """A pool of worker processes for one model, plus one process per job.

    Calls wait in one FIFO queue and go to the worker with the fewest calls
    in its pipe (at most :data:`PIPELINE` each, :data:`DEEP_PIPELINE` for
    fast calls: :func:`pipeline_depth`). It belongs to the event loop that
    starts it.

    :param ref: the model to build in each worker.
    :param workers: how many pool workers.
    :param warm: whether workers run the model's ``warm()`` before serving.
    """

    def __init__(self, ref: ModelRef, *, workers: int = 1, warm: bool = True) -> None:
        self._ref = ref
        self._size = max(1, workers)
        self._warm = warm
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[Worker] = []
        self._queue: collections.deque[PendingCall] = collections.deque()
        self._jobs = JobRunner(ref, warm=warm)
        self._respawning: set[asyncio.Task[None]] = set()
        self._outstanding = 0
        self._restarts = 0
        self._started = False
        self._closed = False

    @property
    def workers(self) -> int:
        return self._size

    def pids(self) -> list[int]:
        """Process ids of the pool's workers (for operators and tests)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    @property
    def capacity(self) -> int:
        return self._size

    @property
    def depth(self) -> int:
        """Calls waiting for a worker to start them (counted in O(1): the
        server asks on every request)."""
        return max(0, self._outstanding - self._size)

    @property
    def restarts(self) -> int:
        """Workers replaced so far (dead, or killed past a deadline)."""
        return self._restarts

    @property
    def batch_sizes(self) -> None:
        return None  # a BatchingExecutor around the pool batches

    @property
    def unavailable(self) -> None:
        return None

    async def start(self) -> None:
        """Spawn every worker and wait until each has built its model.

        :raises LoaderError: when a worker cannot build or warm the model.
        """
        workers = [self._spawn() for _ in range(self._size)]
        try:
            outcomes = await asyncio.gather(
                *(w.ready for w in workers), return_exceptions=True
            )
        except asyncio.CancelledError:
            # A shutdown while the workers warm: they are not in the pool
            # yet, so close() would not see them.
            for w in workers:
                w.kill()
            await asyncio.gather(*(w.wait_gone() for w in workers))
            raise
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            for w in workers:
                w.kill()
            exc = failures[0]
            if not isinstance(exc, DeepserveError):
                raise exc
            raise start_failure(self._ref.name, exc) from exc
        self._workers.extend(workers)
        self._started = True
        self._dispatch()

    async def call(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        if self._closed or not self._started:
            raise NotRunning(self._ref.name, "the executor is not running")
        call = PendingCall(method, kwargs, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        self._dispatch()
        self._outstanding += 1
        try:
            # Not shielded: a cancelled answer still leaves the worker's pipe
            # in order (its entry stays until the worker replies).
            return await within(timeout, call.answer)
        except TimeoutError:
            if call.running:
                assert call.worker is not None
                self._retire(call.worker, f"a call ran past its {timeout:g} s deadline")
            else:
                self._drop(call)
            raise DeadlineExceeded(self._ref.name, timeout or 0.0) from None
        except asyncio.CancelledError:
            # The caller left. A call not yet started is dropped; a running
            # one runs to its end, so a client cannot make us kill workers.
            if not call.running:
                self._drop(call)
            raise
        finally:
            self._outstanding -= 1

    def _drop(self, call: PendingCall) -> None:
        """Make sure a call that has not started never does."""
        call.answer.cancel()  # still queued here: _dispatch skips it
        if call.worker is not None:
            call.worker.cancel(call)  # in a pipe: the worker skips it

    async def run_job(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        watch: JobWatch | None = None,
    ) -> Any:
        return await self._jobs.run(method, kwargs, watch=watch)

    async def close(self) -> None:
        """Stop every worker and job; waiting callers get ``WorkerDied``."""
        self._closed = True
        for task in self._respawning:
            task.cancel()
        stopping = NotRunning(self._ref.name, "the server is stopping")
        while self._queue:
            settle(self._queue.popleft().answer, error=stopping)
        workers, self._workers = self._workers, []
        for w in workers:
            w.kill()
        await asyncio.gather(self._jobs.close(), *(w.wait_gone() for w in workers))

    # -- the pool ---------------------------------------------------------

    def answered(self, worker: Worker) -> None:
        self._dispatch()

    def died(self, worker: Worker, unstarted: list[PendingCall]) -> None:
        # Calls behind the one that was running never started: they go back
        # to the front of the queue, in order, for the other workers.
        self._queue.extendleft(reversed(unstarted))
        if worker in self._workers:
            self._retire(worker, f"it {worker.death()}")
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand queued calls to workers with room in their pipe."""
        while self._queue:
            worker = self._pick()
            if worker is None:
                return
            call = self._queue.popleft()
            if not call.answer.done():
                worker.send(call)

    def _pick(self) -> Worker | None:
        best: Worker | None = None
        for w in self._workers:
            if w.dead:
                continue
            if not w.pending:
                return w
            if len(w.pending) < pipeline_depth(w.service) and (
                best is None or len(w.pending) < len(best.pending)
            ):
                best = w
        return best

    def _spawn(self) -> Worker:
        return Worker(self._ctx, self._ref, self._warm, self)

    def _retire(self, worker: Worker, why: str) -> None:
        """Take a worker out of the pool, kill it and start a replacement."""
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        worker.kill()
        if self._closed:
            return
        LOG.warning("Replacing a worker of model '%s': %s", self._ref.name, why)
        self._restarts += 1
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
                    describe(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RESTART_DELAY)
                continue
            except asyncio.CancelledError:
                fresh.kill()
                raise
            if self._closed:
                fresh.kill()
                return
            self._workers.append(fresh)
            self._dispatch()
            return
