"""Run model code in a thread pool inside the server process.

For light models, or models whose work releases the GIL (NumPy, most
native inference libraries): a call costs a thread hand-off instead of a
process round trip. The model is the server's own instance, warmed once.
A thread cannot be stopped, so a call past its deadline is answered with
504 and its thread left to finish; trainings still run in processes.

The hand-off is kept short: threads take calls from one queue and put
answers on another, and the event loop is woken once for however many
answers are waiting, not once per answer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

from deepserve import logs
from deepserve.exceptions import (
    DeadlineExceeded,
    DeepserveError,
    NotRunning,
)
from deepserve.executors import JobWatch, start_failure, within
from deepserve.executors.jobrunner import JobRunner
from deepserve.loader import ModelRef
from deepserve.model import Method, Model

LOG = logging.getLogger(__name__)

#: A future, the call, and the request id for the thread's log lines.
_Call = tuple[asyncio.Future[Any], Method, Mapping[str, Any], str | None]
_Answer = tuple[asyncio.Future[Any], bool, Any]


class ThreadExecutor:
    """``workers`` threads calling one shared model instance."""

    def __init__(
        self, ref: ModelRef, model: Model, *, workers: int = 1, warm: bool = True
    ) -> None:
        self._model = model
        self._size = max(1, workers)
        self._warm = warm
        self._jobs = JobRunner(ref, warm=warm)
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._answers: collections.deque[_Answer] = collections.deque()
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        #: Calls a thread has started (and cannot be stopped).
        self._running: set[asyncio.Future[Any]] = set()
        self._outstanding = 0

    @property
    def workers(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return self._size

    @property
    def depth(self) -> int:
        return max(0, self._outstanding - self._size)

    @property
    def restarts(self) -> int:
        return 0  # threads are never replaced

    @property
    def batch_sizes(self) -> None:
        return None

    @property
    def unavailable(self) -> None:
        return None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for i in range(self._size):
            thread = threading.Thread(
                target=self._work, name=f"deepserve-{self._model.name}-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self._warm:
            try:
                await self.call("warm", {})
            except DeepserveError as exc:
                await self.close()
                raise start_failure(self._model.name, exc) from exc

    async def call(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        if self._loop is None or not self._threads:
            raise NotRunning(self._model.name, "the executor is not running")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._calls.put((future, method, kwargs, logs.REQUEST_ID.get()))
        self._outstanding += 1
        try:
            # Cancelling a call that has not started makes its thread skip it.
            return await within(timeout, future)
        except TimeoutError:
            if future in self._running:
                LOG.warning(
                    "A call of model '%s' ran past its %g s deadline; its thread "
                    "cannot be stopped and runs on",
                    self._model.name,
                    timeout,
                )
            raise DeadlineExceeded(self._model.name, timeout or 0.0) from None
        finally:
            self._outstanding -= 1

    async def run_job(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        watch: JobWatch | None = None,
    ) -> Any:
        return await self._jobs.run(method, kwargs, watch=watch)

    async def close(self) -> None:
        for _ in self._threads:
            self._calls.put(None)
        self._threads.clear()
        await self._jobs.close()

    def _work(self) -> None:
        """A pool thread: run calls until told to stop."""
        while (call := self._calls.get()) is not None:
            future, method, kwargs, request_id = call
            if future.done():  # its caller left before it started
                continue
            self._running.add(future)
            token = logs.REQUEST_ID.set(request_id)
            try:
                answer: _Answer = (future, True, self._model.call(method, kwargs))
            except DeepserveError as exc:
                answer = (future, False, exc)
            except BaseException as exc:
                answer = (future, False, DeepserveError(f"{type(exc).__name__}: {exc}"))
            finally:
                logs.REQUEST_ID.reset(token)
            self._running.discard(future)
            self._answers.append(answer)
            if not self._wake_scheduled:
                self._wake_scheduled = True
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: nobody waits
                    return

    def _deliver(self) -> None:
        """In the loop: settle every answer the threads have left."""
        self._wake_scheduled = False
        while self._answers:
            future, ok, value = self._answers.popleft()
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
