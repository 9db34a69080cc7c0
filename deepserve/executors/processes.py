"""Run model code in spawn-started worker processes.

Each worker holds one model built once, so what ``warm()`` did stays for
every later call. A call sends only its method and arguments down a pipe
(the messages are in :mod:`deepserve.executors.messages`); uploads travel as
paths. The event loop reads the pipes itself (no reader threads),
and calls are pipelined: while a worker runs one call, the next already
waits in its pipe, so the worker never idles between calls.

A worker that dies is replaced and re-warmed in the background. The call it
was running fails with :class:`~deepserve.exceptions.WorkerDied`; the calls
queued behind it never started, so they go to the other workers, and no
other request notices. A call past its deadline kills its worker (the work
really stops) and fails with :class:`~deepserve.exceptions.DeadlineExceeded`.
A caller that goes away (a client disconnecting) drops its call if it is
still queued; a running call is left to finish, so that a client cannot make
the server kill workers.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Protocol

from deepserve import logs
from deepserve.exceptions import (
    DeadlineExceeded,
    DeepserveError,
    NotRunning,
    WorkerDied,
)
from deepserve.executors import JobWatch, callspace, describe, start_failure, within
from deepserve.executors import capture as capture_mod
from deepserve.executors import worker as worker_main
from deepserve.executors.messages import (
    Answer,
    Call,
    Cancel,
    Failure,
    FromWorker,
    Ready,
    Skipped,
    StartFailed,
)
from deepserve.loader import ModelRef
from deepserve.model import Method

LOG = logging.getLogger(__name__)

#: Seconds a worker gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 2.0
#: Longest pause between attempts to replace a worker that fails to start.
MAX_RESTART_DELAY = 30.0
#: Calls a worker may hold at once: one running, the next ready behind it,
#: so the worker does not idle while the server hands it the next call.
PIPELINE = 2


@dataclasses.dataclass(eq=False)
class _Call:
    """One call on its way to a worker and back."""

    method: Method
    kwargs: Mapping[str, Any]
    answer: asyncio.Future[Any]
    worker: _Worker | None = None
    id: int = dataclasses.field(default_factory=itertools.count().__next__)
    #: The request it serves, for the worker's log lines (taken from the
    #: caller's context; a batch, merged from several, has none).
    request_id: str | None = dataclasses.field(default_factory=logs.REQUEST_ID.get)

    @property
    def running(self) -> bool:
        """Sent, and the first in its worker's pipe: the worker is on it."""
        return self.worker is not None and self.worker.head is self


class _Listener(Protocol):
    def answered(self, worker: _Worker) -> None: ...

    def died(self, worker: _Worker, unstarted: list[_Call]) -> None: ...


class _Worker:
    """One worker process and its pipe, read by the event loop.

    Calls are pipelined: a worker may hold a few, which it runs in order, so
    it never waits for the server between two calls. Only the first one in
    the pipe is running; if the worker dies, the others never started.
    """

    def __init__(
        self,
        ctx: SpawnContext,
        ref: ModelRef,
        warm: bool,
        listener: _Listener | None = None,
        capture: capture_mod.Capture | None = None,
        *,
        own_group: bool = False,
    ) -> None:
        self.model = ref.name
        self._own_group = own_group
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        self.ready: asyncio.Future[int] = self._loop.create_future()
        self.pending: collections.deque[_Call] = collections.deque()
        self.dead = False
        self._conn, child = ctx.Pipe(duplex=True)
        self.process: SpawnProcess = ctx.Process(
            target=worker_main.main,
            # Workers log at the server's level and in its format (the CLI
            # configures them); a job's worker sends its output to ``capture``.
            args=(
                child,
                ref,
                warm,
                os.getpid(),
                logging.getLogger().level,
                logs.current_format(),
                capture,
                own_group,
            ),
            name=f"deepserve-worker[{ref.name}]",
        )
        self.process.start()
        _track(self.process)
        child.close()
        self._loop.add_reader(self._conn.fileno(), self._readable)

    @property
    def head(self) -> _Call | None:
        return self.pending[0] if self.pending else None

    def request(self, method: Method, kwargs: Mapping[str, Any]) -> asyncio.Future[Any]:
        """Send a call; its future settles when the worker answers or dies."""
        call = _Call(method, kwargs, self._loop.create_future())
        self.send(call)
        return call.answer

    def send(self, call: _Call) -> None:
        if self.dead:
            _settle(call.answer, error=WorkerDied(self.model, self.death()))
            return
        try:
            self._conn.send(
                Call(call.id, call.method, dict(call.kwargs), call.request_id)
            )
        except (OSError, EOFError):
            pass  # _readable sees the death and fails the call
        except Exception as exc:  # the arguments do not pickle
            _settle(
                call.answer,
                error=DeepserveError(f"Arguments cannot be sent to the worker: {exc}"),
            )
            return
        call.worker = self
        self.pending.append(call)

    def cancel(self, call: _Call) -> None:
        """Ask the worker to skip ``call`` if it has not started it yet."""
        with contextlib.suppress(OSError, EOFError):
            self._conn.send(Cancel(call.id))

    def _readable(self) -> None:
        try:
            while self._conn.poll():
                self._answer(self._conn.recv())
        except (EOFError, OSError):
            self._lost()
        except Exception as exc:  # an answer that does not unpickle
            error = DeepserveError(f"Cannot read the worker's answer: {exc}")
            self._answer(Failure(error) if self.ready.done() else StartFailed(error))

    def _answer(self, message: FromWorker) -> None:
        if isinstance(message, Ready):
            _settle(self.ready, message.pid)
            return
        if isinstance(message, StartFailed):
            _settle(self.ready, error=message.error)
            return
        if not self.pending:
            return
        call = self.pending.popleft()
        if isinstance(message, Answer):
            if call.answer.done():
                # Its caller left (a client that disconnected): nobody
                # will send the file it may have returned.
                callspace.release(message.value)
            _settle(call.answer, message.value)
        elif isinstance(message, Skipped):
            call.answer.cancel()
        else:
            _settle(call.answer, error=message.error)
        if self._listener is not None:
            self._listener.answered(self)

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
        # RuntimeError: the loop is shutting down (a worker killed on the
        # way out); the calls are settled all the same.
        with contextlib.suppress(RuntimeError):
            await self._loop.run_in_executor(None, self.process.join, TERMINATE_GRACE)
        died = WorkerDied(self.model, self.death())
        _settle(self.ready, error=died)
        running = self.pending.popleft() if self.pending else None
        unstarted = list(self.pending)
        self.pending.clear()
        if running is not None:
            _settle(running.answer, error=died)
        if self._listener is not None:
            self._listener.died(self, unstarted)
        else:
            for call in unstarted:
                _settle(call.answer, error=died)

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

    def kill(self, *, with_children: bool = False) -> None:
        """Terminate the worker now (SIGTERM, then SIGKILL), without waiting;
        ``with_children``: its whole process group too, when it leads one."""
        group = with_children and self._own_group
        if self.process.exitcode is None:
            if group and self.process.pid is not None:
                _signal_group(self.process.pid, signal.SIGTERM)
            else:
                self.process.terminate()
        self._loop.run_in_executor(None, _reap, self.process, group)

    async def wait_gone(self) -> None:
        await self._loop.run_in_executor(None, _reap, self.process)


# Every worker process still running, for the exit-time safety net below.
# Process-wide on purpose: it guards the interpreter's exit, which is
# process-wide too.
_LIVE: weakref.WeakSet[SpawnProcess] = weakref.WeakSet()
_exit_guard = threading.Lock()
_exit_guarded = False


def _track(proc: SpawnProcess) -> None:
    """Kill ``proc`` at interpreter exit if nothing stopped it before.

    Workers are not daemonic (a model may start processes of its own), so
    multiprocessing joins them at exit; if an orderly shutdown was cut
    short (a second Ctrl-C during cleanup), that join would wait forever.
    Our hook is registered after multiprocessing's, so it runs first.
    """
    global _exit_guarded
    with _exit_guard:
        if not _exit_guarded:
            atexit.register(_kill_leftovers)
            _exit_guarded = True
    _LIVE.add(proc)


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.exitcode is None:
            proc.kill()
            proc.join(TERMINATE_GRACE)


def _reap(proc: SpawnProcess, group: bool = False) -> None:
    if group and proc.pid is not None:
        # Wait for the leader without reaping it: while it is not reaped,
        # its pid, the group's id, is nobody else's; then what is left of
        # the group (what the training started) is killed.
        deadline = time.monotonic() + TERMINATE_GRACE
        while time.monotonic() < deadline and not _exited(proc.pid):
            time.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)
    proc.join(TERMINATE_GRACE)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    if proc.pid is not None:
        # A worker killed or dead mid-call leaves its call space behind.
        callspace.sweep(proc.pid)


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited, without reaping it."""
    try:
        return (
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        )
    except ChildProcessError:
        return True  # reaped already


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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


class ProcessExecutor:
    """A pool of worker processes for one model, plus one process per job.

    Calls wait in one FIFO queue and go to the worker with the fewest calls
    in its pipe (at most :data:`PIPELINE` each). It belongs to the event loop
    that starts it.

    :param ref: the model to build in each worker.
    :param workers: how many pool workers.
    :param warm: whether workers run the model's ``warm()`` before serving.
    """

    def __init__(self, ref: ModelRef, *, workers: int = 1, warm: bool = True) -> None:
        self._ref = ref
        self._size = max(1, workers)
        self._warm = warm
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._queue: collections.deque[_Call] = collections.deque()
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
        call = _Call(method, kwargs, asyncio.get_running_loop().create_future())
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

    def _drop(self, call: _Call) -> None:
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
            _settle(self._queue.popleft().answer, error=stopping)
        workers, self._workers = self._workers, []
        for w in workers:
            w.kill()
        await asyncio.gather(self._jobs.close(), *(w.wait_gone() for w in workers))

    # -- the pool ---------------------------------------------------------

    def answered(self, worker: _Worker) -> None:
        self._dispatch()

    def died(self, worker: _Worker, unstarted: list[_Call]) -> None:
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

    def _pick(self) -> _Worker | None:
        best: _Worker | None = None
        for w in self._workers:
            if w.dead:
                continue
            if not w.pending:
                return w
            if len(w.pending) < PIPELINE and (
                best is None or len(w.pending) < len(best.pending)
            ):
                best = w
        return best

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self._ref, self._warm, self)

    def _retire(self, worker: _Worker, why: str) -> None:
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

    async def run(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        watch: JobWatch | None = None,
    ) -> Any:
        """Run one call in a new process; its output goes to ``watch``."""
        reader = capture_mod.Reader(self._ctx, watch) if watch is not None else None
        try:
            worker = _Worker(
                self._ctx,
                self._ref,
                self._warm,
                capture=reader.child if reader is not None else None,
                own_group=True,
            )
        except BaseException:
            if reader is not None:
                reader.close()
            raise
        if reader is not None:
            reader.start()
        self._running.add(worker)
        cancelled = False
        try:
            await worker.ready
            if watch is not None:
                watch.started()
            return await worker.request(method, kwargs)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._running.discard(worker)
            # Finished, failed or cancelled, the job's process goes: a
            # cancelled training must really stop, with what it started
            # (processes a training that ended left running are its own,
            # as under DEEPaaS).
            worker.kill(with_children=cancelled)
            if reader is not None:
                reader.close()

    async def close(self) -> None:
        running = list(self._running)
        for w in running:
            w.kill(with_children=True)
        await asyncio.gather(*(w.wait_gone() for w in running))
