"""Adaptive batching: concurrent predictions merged into ``predict_batch``.

The pure part (:func:`take`, :func:`merge`, :func:`split`) decides what goes
into a batch and whose answer is whose; :class:`BatchingExecutor` is the
asyncio queue around it. A batch is formed when a worker is free: it takes
what is waiting, first come first served, up to ``max_batch_size``, waiting
at most ``max_latency`` after the first item for more to arrive. Under load
items pile up while workers are busy, so batches grow by themselves; when
idle, a lone request waits at most ``max_latency``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from deepserve import logs
from deepserve.exceptions import (
    BadModelOutput,
    DeadlineExceeded,
    DeepserveError,
    NotRunning,
)
from deepserve.executors import Executor, JobWatch, callspace, within
from deepserve.model import Method

#: Used when neither the config nor the model sets them.
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_LATENCY_MS = 5.0


@dataclasses.dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    #: Seconds a batch may wait to fill after its first item arrived.
    max_latency: float = DEFAULT_MAX_LATENCY_MS / 1000

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_latency < 0:
            raise ValueError("max_latency must not be negative")


@dataclasses.dataclass(eq=False)
class Item:
    """One prediction waiting for its batch."""

    kwargs: Mapping[str, Any]
    future: asyncio.Future[Any]
    arrived: float
    #: The id of the request it came from (its log lines carry it).
    request_id: str | None = dataclasses.field(default_factory=logs.REQUEST_ID.get)

    @property
    def wanted(self) -> bool:
        """False once its caller has gone (timed out, disconnected)."""
        return not self.future.done()


def batch_request_id(batch: Sequence[Item]) -> str | None:
    """The ids of a batch's requests, comma-separated, for the lines logged
    while it runs (a request id never holds a comma); ``None`` if none has
    an id."""
    ids = dict.fromkeys(item.request_id for item in batch if item.request_id)
    return ",".join(ids) or None


def take(pending: collections.deque[Item], max_size: int) -> list[Item]:
    """Pop up to ``max_size`` wanted items, oldest first; drop unwanted ones."""
    batch: list[Item] = []
    while pending and len(batch) < max_size:
        item = pending.popleft()
        if item.wanted:
            batch.append(item)
    return batch


def merge(batch: Sequence[Item]) -> dict[str, Any]:
    """The keyword arguments of one ``predict_batch`` call."""
    return {"items": [dict(item.kwargs) for item in batch]}


Outcome = tuple[bool, Any]


def split(model: str, results: Any, size: int) -> list[Outcome]:
    """Pair each item with its result: ``(True, value)`` or ``(False, error)``.

    A result that is not a list of ``size`` answers fails every item: the
    model broke its contract, and no answer can be trusted to be someone's.
    An error in place of one answer fails only that item.
    """
    if not isinstance(results, list | tuple) or len(results) != size:
        got = (
            f"{len(results)} results"
            if isinstance(results, list | tuple)
            else type(results).__name__
        )
        error = BadModelOutput(
            model, f"predict_batch must return a list of {size} results, got {got}"
        )
        return [(False, error)] * size
    return [(False, r) if isinstance(r, BaseException) else (True, r) for r in results]


class BatchingExecutor:
    """Wraps any executor; its ``predict`` calls go out as ``predict_batch``.

    :param inner: runs the batches (and every other call, unchanged).
    :param model: the model's name, for errors.
    :param timeout: deadline of each batch call, seconds (``None``: none).
    """

    def __init__(
        self,
        inner: Executor,
        policy: BatchPolicy,
        *,
        model: str,
        timeout: float | None = None,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._model = model
        self._timeout = timeout
        self._pending: collections.deque[Item] = collections.deque()
        self._arrived = asyncio.Event()
        self._slots: asyncio.Semaphore | None = None
        self._runner: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._outstanding = 0
        self._sizes: collections.Counter[int] = collections.Counter()

    @property
    def workers(self) -> int:
        return self._inner.workers

    @property
    def restarts(self) -> int:
        return self._inner.restarts

    @property
    def batch_sizes(self) -> Mapping[int, int]:
        """How many batches of each size went to the model so far (a few
        counters: sizes never exceed ``max_batch_size``)."""
        return self._sizes

    @property
    def unavailable(self) -> str | None:
        return self._inner.unavailable

    @property
    def capacity(self) -> int:
        return self._inner.workers * self._policy.max_batch_size

    @property
    def depth(self) -> int:
        return max(0, self._outstanding - self.capacity)

    @property
    def policy(self) -> BatchPolicy:
        return self._policy

    async def start(self) -> None:
        await self._inner.start()
        self._slots = asyncio.Semaphore(self._inner.workers)
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def call(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        if method != "predict":
            return await self._inner.call(method, kwargs, timeout=timeout)
        if self._runner is None or self._runner.done():
            raise NotRunning(self._model, "the batcher is not running")
        loop = asyncio.get_running_loop()
        item = Item(kwargs, loop.create_future(), loop.time())
        self._pending.append(item)
        self._arrived.set()
        self._outstanding += 1
        try:
            return await within(timeout, item.future)
        except TimeoutError:
            raise DeadlineExceeded(self._model, timeout or 0.0) from None
        finally:
            self._outstanding -= 1

    async def run_job(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        watch: JobWatch | None = None,
    ) -> Any:
        return await self._inner.run_job(method, kwargs, watch=watch)

    async def close(self) -> None:
        tasks = [t for t in (self._runner, *self._batches) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopping = NotRunning(self._model, "the server is stopping")
        for item in take(self._pending, len(self._pending)):
            item.future.set_exception(stopping)
        await self._inner.close()

    async def _run(self) -> None:
        assert self._slots is not None
        while True:
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.get_running_loop().create_task(self._dispatch(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            task.add_done_callback(lambda _task, b=batch: self._abandon(b))  # type: ignore[misc]

    def _abandon(self, batch: list[Item]) -> None:
        """Fail the callers a batch left unanswered (it was cancelled)."""
        stopping = NotRunning(self._model, "the server is stopping")
        for item in batch:
            if item.wanted:
                item.future.set_exception(stopping)

    async def _collect(self) -> list[Item]:
        """Wait for a first item, then for the batch to fill or time out."""
        loop = asyncio.get_running_loop()
        while True:
            while not any(item.wanted for item in self._pending):
                self._pending.clear()
                self._arrived.clear()
                await self._arrived.wait()
            first = next(item for item in self._pending if item.wanted)
            deadline = first.arrived + self._policy.max_latency
            while self._wanted() < self._policy.max_batch_size:
                self._arrived.clear()
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._arrived.wait()
                except TimeoutError:
                    break
            batch = take(self._pending, self._policy.max_batch_size)
            if batch:
                return batch
            if loop.time() > deadline:
                continue  # everyone left while we waited

    def _wanted(self) -> int:
        return sum(1 for item in self._pending if item.wanted)

    async def _dispatch(self, batch: list[Item]) -> None:
        assert self._slots is not None
        self._sizes[len(batch)] += 1
        # Its own task, so its own context: this reaches the batch's log
        # lines (the worker's too) and nothing else.
        logs.REQUEST_ID.set(batch_request_id(batch))
        try:
            try:
                results = await self._inner.call(
                    "predict_batch", merge(batch), timeout=self._timeout
                )
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, DeepserveError)
                    else DeepserveError(f"Batch failed: {type(exc).__name__}: {exc}")
                )
                outcomes: list[Outcome] = [(False, error)] * len(batch)
            else:
                outcomes = split(self._model, results, len(batch))
                if isinstance(results, list | tuple) and len(results) != len(batch):
                    # It broke its contract: nobody sends any of its files.
                    for result in results:
                        callspace.release(result)
            for item, (ok, value) in zip(batch, outcomes, strict=True):
                if not item.wanted:
                    if ok:
                        callspace.release(value)  # its caller left
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)
        finally:
            self._slots.release()
