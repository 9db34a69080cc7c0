"""Ways to run model code; the rest of the server sees only :class:`Executor`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from deepserve.model import Method


class Executor(Protocol):
    """Runs one model's methods somewhere.

    ``start`` blocks until every worker has built (and, if asked, warmed) its
    model. ``call`` runs short calls (predictions) on a pool; ``run_job`` runs
    a long call (a training) on its own worker, so it never holds up the
    pool, and stops that worker for real when the awaiting task is cancelled.
    """

    def start(self) -> None: ...

    async def call(self, method: Method, kwargs: Mapping[str, Any]) -> Any: ...

    async def run_job(self, method: Method, kwargs: Mapping[str, Any]) -> Any: ...

    def close(self) -> None: ...
