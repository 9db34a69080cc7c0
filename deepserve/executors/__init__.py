"""Ways to run model code; the rest of the server sees only :class:`Executor`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from deepserve.exceptions import DeepserveError, LoaderError, ModelFailed
from deepserve.model import Method

LOG = logging.getLogger(__name__)


class JobWatch(Protocol):
    """Told what a long call (a training) does while it runs.

    Called in the event loop; implementations must not block.
    """

    def started(self) -> None:
        """The call's process has built (and warmed) its model and begins."""
        ...

    def output(self, stream: str, text: str, level: str | None, when: float) -> None:
        """One line the call wrote to ``stdout`` or ``stderr``, or one log
        record (``stream`` ``log``, with its ``level``), at ``when``
        (seconds since the epoch)."""
        ...


class Executor(Protocol):
    """Runs one model's methods somewhere.

    ``start`` returns once every worker has built (and, if asked, warmed) its
    model. ``call`` runs short calls (predictions) on a pool; past
    ``timeout`` seconds it raises ``DeadlineExceeded`` and, where it can,
    stops the work. ``run_job`` runs a long call (a training) on its own
    process, so it never holds up the pool, and stops that process for real
    when the awaiting task is cancelled; its process's output and log
    records go to ``watch``. An executor belongs to the event loop that
    starts it.
    """

    @property
    def workers(self) -> int:
        """How many calls can run at once."""
        ...

    @property
    def capacity(self) -> int:
        """How many predictions can be in hand at once before one waits."""
        ...

    @property
    def depth(self) -> int:
        """Calls waiting for a worker."""
        ...

    @property
    def restarts(self) -> int:
        """Workers replaced so far, after dying or overrunning a deadline."""
        ...

    @property
    def batch_sizes(self) -> Mapping[int, int] | None:
        """Batches sent to the model so far, by size; ``None`` when this
        executor does not batch."""
        ...

    @property
    def unavailable(self) -> str | None:
        """Why the executor cannot take calls now although it started (the
        cluster it runs on lost the model); ``None`` when it can."""
        ...

    async def start(self) -> None: ...

    async def call(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any: ...

    async def run_job(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        watch: JobWatch | None = None,
    ) -> Any: ...

    async def close(self) -> None: ...


def describe(exc: DeepserveError) -> str:
    """Why a worker could not start, for operators (the model's own
    exception type and message, not the text clients see)."""
    return exc.reason if isinstance(exc, ModelFailed) else str(exc)


def start_failure(model: str, exc: DeepserveError) -> LoaderError:
    """The one-line start-up error for a model that failed to build or warm."""
    if isinstance(exc, ModelFailed):
        LOG.debug("Start-up of model '%s' failed:\n%s", model, exc.traceback)
    return LoaderError(f"Model '{model}' failed to start: {describe(exc)}")


_T = TypeVar("_T")


async def within(timeout: float | None, future: asyncio.Future[_T]) -> _T:
    """Await ``future``, raising ``TimeoutError`` past ``timeout`` seconds.

    Without a timeout, no timer is armed: most predictions have none, and
    ``asyncio.timeout`` is a noticeable part of a trivial call's cost.
    """
    if timeout is None:
        return await future
    async with asyncio.timeout(timeout):
        return await future
