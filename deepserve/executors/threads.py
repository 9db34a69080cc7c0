"""Run model code in a thread pool inside the server process.

For light models, or models whose work releases the GIL (NumPy, most
native inference libraries): a call costs a thread hand-off instead of a
process round trip. The model is the server's own instance, warmed once.
A thread cannot be stopped, so a call past its deadline is answered with
504 and its thread left to finish; trainings still run in processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Mapping
from typing import Any

from deepserve.exceptions import DeadlineExceeded, WorkerDied
from deepserve.executors.processes import JobRunner
from deepserve.loader import ModelRef
from deepserve.model import Method, Model

LOG = logging.getLogger(__name__)


class ThreadExecutor:
    """A pool of ``workers`` threads calling one shared model instance."""

    def __init__(
        self, ref: ModelRef, model: Model, *, workers: int = 1, warm: bool = True
    ) -> None:
        self._model = model
        self._size = max(1, workers)
        self._warm = warm
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._jobs = JobRunner(ref, warm=warm)
        self._outstanding = 0

    @property
    def workers(self) -> int:
        return self._size

    @property
    def depth(self) -> int:
        return max(0, self._outstanding - self._size)

    async def start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._size, thread_name_prefix=f"deepserve-{self._model.name}"
        )
        if self._warm:
            await self.call("warm", {})

    async def call(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        if self._pool is None:
            raise WorkerDied(self._model.name, "the executor is not running")
        # Cancelling a call that has not started removes it from the queue.
        future = asyncio.get_running_loop().run_in_executor(
            self._pool, self._model.call, method, kwargs
        )
        self._outstanding += 1
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            LOG.warning(
                "A call of model '%s' ran past its %g s deadline; its thread "
                "cannot be stopped and runs on",
                self._model.name,
                timeout,
            )
            raise DeadlineExceeded(self._model.name, timeout or 0.0) from None
        finally:
            self._outstanding -= 1

    async def run_job(self, method: Method, kwargs: Mapping[str, Any]) -> Any:
        return await self._jobs.run(method, kwargs)

    async def close(self) -> None:
        await self._jobs.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
