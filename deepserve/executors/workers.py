"""One worker process, as the server sees it, and the safety nets around
worker processes.

:class:`Worker` starts a spawn-started process running
:func:`deepserve.executors.worker.main`, sends it calls and reads its answers
on the event loop (no reader threads); the pool
(:mod:`~deepserve.executors.processes`) and the job runner
(:mod:`~deepserve.executors.jobrunner`) both build on it. What crosses the
pipe is in :mod:`~deepserve.executors.messages`. Every worker is killed at
interpreter exit if nothing stopped it before, and reaped with whatever call
space it left behind.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Protocol

from deepserve import logs
from deepserve.exceptions import DeepserveError, WorkerDied
from deepserve.executors import callspace, frames
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
    WorkerStart,
)
from deepserve.loader import ModelRef
from deepserve.model import Method

#: Seconds a worker gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 2.0


@dataclasses.dataclass(eq=False)
class PendingCall:
    """One call on its way to a worker and back."""

    method: Method
    kwargs: Mapping[str, Any]
    answer: asyncio.Future[Any]
    worker: Worker | None = None
    id: int = dataclasses.field(default_factory=itertools.count().__next__)
    #: The request it serves, for the worker's log lines (taken from the
    #: caller's context; a batch, merged from several, has none).
    request_id: str | None = dataclasses.field(default_factory=logs.REQUEST_ID.get)
    #: When it went down the pipe (the event loop's clock).
    sent: float = 0.0

    @property
    def running(self) -> bool:
        """Sent, and the first in its worker's pipe: the worker is on it."""
        return self.worker is not None and self.worker.head is self


class Listener(Protocol):
    """Told when a worker answers a call (it has room for another) and when
    it dies, with the calls it held that never started."""

    def answered(self, worker: Worker) -> None: ...

    def died(self, worker: Worker, unstarted: list[PendingCall]) -> None: ...


class Worker:
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
        listener: Listener | None = None,
        capture: capture_mod.Capture | None = None,
        *,
        own_group: bool = False,
    ) -> None:
        self.model = ref.name
        self._own_group = own_group
        self._loop = asyncio.get_running_loop()
        self._listener = listener
        self.ready: asyncio.Future[int] = self._loop.create_future()
        self.pending: collections.deque[PendingCall] = collections.deque()
        self.dead = False
        #: How long its calls take, seconds (a running average from the
        #: server's side: from a call's start, when it was sent or when
        #: the call before it was answered, to its answer); ``None`` until
        #: one was answered.
        self.service: float | None = None
        self._answered_at: float | None = None
        self._conn, child = ctx.Pipe(duplex=True)
        self._frames = frames.Frames()
        self.process: SpawnProcess = ctx.Process(
            target=worker_main.main,
            # Workers log at the server's level and in its format (the CLI
            # configures them); a job's worker sends its output to ``capture``.
            args=(
                child,
                WorkerStart(
                    ref,
                    warm,
                    os.getpid(),
                    logging.getLogger().level,
                    logs.current_format(),
                    capture,
                    own_group,
                ),
            ),
            name=f"deepserve-worker[{ref.name}]",
        )
        self.process.start()
        _track(self.process)
        child.close()
        self._loop.add_reader(self._conn.fileno(), self._readable)

    @property
    def head(self) -> PendingCall | None:
        return self.pending[0] if self.pending else None

    def request(self, method: Method, kwargs: Mapping[str, Any]) -> asyncio.Future[Any]:
        """Send a call; its future settles when the worker answers or dies."""
        call = PendingCall(method, kwargs, self._loop.create_future())
        self.send(call)
        return call.answer

    def send(self, call: PendingCall) -> None:
        if self.dead:
            settle(call.answer, error=WorkerDied(self.model, self.death()))
            return
        try:
            self._conn.send(
                Call(call.id, call.method, dict(call.kwargs), call.request_id)
            )
        except (OSError, EOFError):
            pass  # _readable sees the death and fails the call
        except Exception as exc:  # the arguments do not pickle
            settle(
                call.answer,
                error=DeepserveError(f"Arguments cannot be sent to the worker: {exc}"),
            )
            return
        call.worker = self
        call.sent = self._loop.time()
        self.pending.append(call)

    def cancel(self, call: PendingCall) -> None:
        """Ask the worker to skip ``call`` if it has not started it yet."""
        with contextlib.suppress(OSError, EOFError):
            self._conn.send(Cancel(call.id))

    def _readable(self) -> None:
        # One read: the pipe is readable, so it returns at once with what
        # is there, often several answers (the worker runs ahead).
        try:
            data = os.read(self._conn.fileno(), frames.READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        answered = False
        for pickle in self._frames.feed(data):
            try:
                message = frames.load(pickle)
            except Exception as exc:  # an answer that does not unpickle
                error = DeepserveError(f"Cannot read the worker's answer: {exc}")
                message = Failure(error) if self.ready.done() else StartFailed(error)
            answered |= self._answer(message)
        # Told once for every answer read: the calls that fill the room go
        # out together.
        if answered and self._listener is not None:
            self._listener.answered(self)

    def _answer(self, message: FromWorker) -> bool:
        """Settle what ``message`` answers; whether it was a call's answer."""
        if isinstance(message, Ready):
            settle(self.ready, message.pid)
            return False
        if isinstance(message, StartFailed):
            settle(self.ready, error=message.error)
            return False
        if not self.pending:
            return False
        call = self.pending.popleft()
        if not isinstance(message, Skipped):
            self._timed(call)
        if isinstance(message, Answer):
            if call.answer.done():
                # Its caller left (a client that disconnected): nobody
                # will send the file it may have returned.
                callspace.release(message.value)
            settle(call.answer, message.value)
        elif isinstance(message, Skipped):
            call.answer.cancel()
        else:
            settle(call.answer, error=message.error)
        return True

    def _timed(self, call: PendingCall) -> None:
        """Count how long ``call`` took in :attr:`service`."""
        now = self._loop.time()
        began = max(call.sent, self._answered_at or call.sent)
        took = now - began
        self.service = took if self.service is None else 0.8 * self.service + 0.2 * took
        self._answered_at = now

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
        settle(self.ready, error=died)
        running = self.pending.popleft() if self.pending else None
        unstarted = list(self.pending)
        self.pending.clear()
        if running is not None:
            settle(running.answer, error=died)
        if self._listener is not None:
            self._listener.died(self, unstarted)
        else:
            for call in unstarted:
                settle(call.answer, error=died)

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


def settle(
    future: asyncio.Future[Any], result: Any = None, *, error: Any = None
) -> None:
    """Give ``future`` its result, or ``error``, unless it has one already."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, BaseException):
        future.set_exception(error)
    else:
        future.set_exception(DeepserveError(str(error)))
