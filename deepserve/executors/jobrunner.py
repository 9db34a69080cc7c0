"""Run each long call (a training) in a fresh process of its own.

The job's process is a :class:`~deepserve.executors.workers.Worker` leading
a process group of its own, so that cancelling a training stops it with
whatever it started; its output and log records are captured
(:mod:`~deepserve.executors.capture`) and handed to a
:class:`~deepserve.executors.JobWatch`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping
from typing import Any

from deepserve.executors import JobWatch
from deepserve.executors import capture as capture_mod
from deepserve.executors.workers import Worker
from deepserve.loader import ModelRef
from deepserve.model import Method


class JobRunner:
    """Runs each long call (a training) in a fresh process of its own.

    Every executor kind uses it, so that cancelling a training always stops
    it for real, which a thread cannot promise.
    """

    def __init__(self, ref: ModelRef, *, warm: bool) -> None:
        self._ref = ref
        self._warm = warm
        self._ctx = multiprocessing.get_context("spawn")
        self._running: set[Worker] = set()

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
            worker = Worker(
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
