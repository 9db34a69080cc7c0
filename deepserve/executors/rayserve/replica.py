"""The code a Ray Serve replica runs: one model, built once, called in turn.

Each replica of a model's Serve deployment is a :class:`Replica`. It builds
the model from its :class:`~deepserve.loader.ModelRef` (fetching a stored
model from the model store's URL into a node-local cache first, when there
is one), warms it, and then runs the calls the server hands it one at a
time, as a process worker does: DEEPaaS models were written for one call at
a time. Uploaded files arrive as bytes and are written to a directory of
the call's own; returned files go back as bytes (see :mod:`.shipping`).

Every answer is a typed value of :mod:`deepserve.executors.messages`
(:class:`Answer`, :class:`Failure`, :class:`Expired`), never an exception,
so that what the server sees does not depend on how Ray wraps errors.

This module is imported on every node of the cluster: deepserve and the
model's package must be installed there.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
import time
from typing import Any

from deepserve import adapters, loader, logs
from deepserve.exceptions import (
    BadModelOutput,
    DeadlineExceeded,
    DeepserveError,
    WorkerDied,
)
from deepserve.executors import callspace
from deepserve.executors.messages import Answer, Expired, Failure
from deepserve.executors.rayserve import cluster, shipping
from deepserve.executors.worker import run_call, unexpected
from deepserve.loader import ModelRef
from deepserve.model import Method, Model

LOG = logging.getLogger(__name__)

#: Seconds between sending an :class:`Expired` answer and exiting.
EXIT_DELAY = 0.2


class ReplicaStartError(RuntimeError):
    """The model could not be built or warmed on this replica; its message
    is the one line the server shows."""


class Replica:
    """One replica of a model's deployment (see the module's docstring).

    :param ref: the model to build.
    :param warm: run the model's ``warm()`` before serving.
    :param store_url: where a stored model is fetched from; ``None``: its
        store directory, which this node must see.
    """

    def __init__(self, ref: ModelRef, warm: bool, store_url: str | None = None) -> None:
        try:
            if store_url is not None and ref.source == "store":
                ref = loader.from_remote(ref.tag, store_url)
            self._model: Model = adapters.build(ref)
            if warm:
                self._model.call("warm", {})
        except DeepserveError as exc:
            raise ReplicaStartError(_one_line(exc)) from None
        except BaseException as exc:
            raise ReplicaStartError(
                f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            ) from None
        self._name = ref.name
        self._base = os.path.realpath(tempfile.gettempdir())
        # Calls run one at a time (``_turn``): one call space at a time,
        # reused while calls leave it empty; removed when the replica exits.
        self._spaces = callspace.Spaces(self._base)
        atexit.register(self._spaces.close)
        self._turn: asyncio.Lock | None = None
        self._actor = _actor_id()
        #: Why this replica is about to exit (a call overran its deadline
        #: and still runs): later calls are refused, never run beside it.
        self._dying: str | None = None

    async def call(
        self,
        method: Method,
        kwargs: dict[str, Any],
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Answer | Failure | Expired:
        """Run one call after the ones before it; past ``timeout`` seconds
        answer :class:`Expired` and exit, so that the work really stops."""
        if self._turn is None:
            self._turn = asyncio.Lock()
        started = time.monotonic()
        async with self._turn:
            if self._dying is not None:
                return Failure(WorkerDied(self._name, self._dying))
            # Time spent waiting for the turn counts against the deadline.
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                return Failure(DeadlineExceeded(self._name, timeout or 0.0))
            work = asyncio.ensure_future(
                asyncio.to_thread(self._run, method, kwargs, request_id)
            )
            try:
                return await asyncio.wait_for(asyncio.shield(work), left)
            except TimeoutError:
                self._exit_soon(f"a call ran past its {timeout:g} s deadline")
                return Expired(
                    DeadlineExceeded(self._name, timeout or 0.0), self._actor
                )
            except asyncio.CancelledError:
                # The server gave up on a call already running (it never
                # does on its own; an operator's cancel might): stop it.
                self._exit_soon("a running call was cancelled")
                raise

    def where(self) -> tuple[int, str]:
        """This replica's process id and Ray node id (for operators and tests)."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def _run(
        self, method: Method, kwargs: dict[str, Any], request_id: str | None
    ) -> Answer | Failure:
        token = logs.REQUEST_ID.set(request_id)
        # A directory for the call's uploads only when it has some: most
        # calls have none, and making and removing one costs a replica
        # about a tenth of its time on a trivial model.
        uploads = (
            tempfile.mkdtemp(prefix="deepserve-upload-", dir=self._base)
            if shipping.has_shipped(kwargs)
            else None
        )
        try:
            local = shipping.unpack(kwargs, uploads, cluster.get) if uploads else kwargs
            result = run_call(self._model, method, local, self._spaces)
            try:
                return Answer(shipping.pack_result(method, result))
            except OSError as exc:
                return Failure(
                    BadModelOutput(self._name, f"the file it returned: {exc}")
                )
            finally:
                _release(method, result)
        except DeepserveError as exc:
            return Failure(exc)
        except BaseException as exc:
            return Failure(unexpected(self._name, exc))
        finally:
            if uploads is not None:
                shutil.rmtree(uploads, ignore_errors=True)
            logs.REQUEST_ID.reset(token)

    def _exit_soon(self, why: str) -> None:
        LOG.warning("Replica of model '%s' exits: %s", self._name, why)
        self._dying = f"its Ray replica exits: {why}"
        asyncio.get_running_loop().call_later(EXIT_DELAY, os._exit, 70)


def _release(method: str, result: Any) -> None:
    """Remove the call spaces of returned files (their bytes are packed)."""
    batch = method == "predict_batch" and isinstance(result, list | tuple)
    items = list(result) if batch else [result]
    for item in items:
        callspace.release(item)


def _actor_id() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_actor_id() or "")
    except Exception:  # outside Ray (unit tests)
        return ""


def _one_line(exc: DeepserveError) -> str:
    from deepserve.executors import describe

    return describe(exc).splitlines()[0] if str(exc) else type(exc).__name__
