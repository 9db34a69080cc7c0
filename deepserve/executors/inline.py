"""Run model code in the event loop itself.

The shortest path there is, for tests and for trivial models: a call blocks
the server while it runs, so a deadline cannot interrupt it (a call that
overran is still answered 504). Trainings still run in processes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from deepserve.exceptions import DeadlineExceeded, DeepserveError
from deepserve.executors import JobWatch, start_failure
from deepserve.executors.jobrunner import JobRunner
from deepserve.loader import ModelRef
from deepserve.model import Method, Model


class InlineExecutor:
    """Calls the server's own model instance directly."""

    def __init__(self, ref: ModelRef, model: Model, *, warm: bool = True) -> None:
        self._model = model
        self._warm = warm
        self._jobs = JobRunner(ref, warm=warm)

    @property
    def workers(self) -> int:
        return 1

    @property
    def capacity(self) -> int:
        return 1

    @property
    def depth(self) -> int:
        return 0

    @property
    def restarts(self) -> int:
        return 0  # nothing to restart: the model runs in the server

    @property
    def batch_sizes(self) -> None:
        return None

    @property
    def unavailable(self) -> None:
        return None

    async def start(self) -> None:
        if self._warm:
            try:
                self._model.call("warm", {})
            except DeepserveError as exc:
                raise start_failure(self._model.name, exc) from exc

    async def call(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        started = time.monotonic()
        result = self._model.call(method, kwargs)
        if timeout and time.monotonic() - started > timeout:
            raise DeadlineExceeded(self._model.name, timeout)
        return result

    async def run_job(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        watch: JobWatch | None = None,
    ) -> Any:
        return await self._jobs.run(method, kwargs, watch=watch)

    async def close(self) -> None:
        await self._jobs.close()
