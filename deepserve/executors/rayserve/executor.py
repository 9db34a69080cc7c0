"""The ``ray`` executor: a model's calls on Ray Serve replicas.

The server keeps what makes it a server: the API, auth, metrics, the job
store, and the queue. Calls wait in this executor's own FIFO queue, and at
most *running replicas x max_ongoing_requests* are in Ray at once: requests
queued inside Serve made its throughput collapse, and backpressure (503 and
``Retry-After``) stays the server's. Each call is one Serve handle call to
the model's application (:mod:`.replica`), with its files shipped
(:mod:`.shipping`); a batch (:class:`~deepserve.executors.batching.
BatchingExecutor` around this one) is one call too.

The application is either owned (deployed on :meth:`start`, deleted on
:meth:`close`) or attached to (``[ray] attach = true``: deployed
beforehand, by ``deepserve ray deploy``, and never changed here). A watcher
asks Serve's controller every second how the application is: gone, failed,
or the controller unreachable, the model is unavailable (predictions and
readiness answer 503) until it is back.

Deadlines: the replica enforces the call's deadline, answers
:class:`~deepserve.executors.messages.Expired` and exits, which stops the
work; Serve replaces it. A replica that dies fails only the calls it held
(:class:`~deepserve.exceptions.WorkerDied`); each death seen is counted in
:attr:`restarts`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from deepserve import logs
from deepserve.exceptions import (
    BadModelOutput,
    DeadlineExceeded,
    DeepserveError,
    LoaderError,
    NotRunning,
    WorkerDied,
)
from deepserve.executors import JobWatch, within
from deepserve.executors.messages import Answer, Expired, Failure
from deepserve.executors.rayserve import cluster, shipping
from deepserve.executors.rayserve.trainings import RayJobRunner
from deepserve.loader import ModelRef
from deepserve.model import Method
from deepserve.settings import ExecutorSettings

LOG = logging.getLogger(__name__)

#: Seconds between two looks at the application.
WATCH_INTERVAL = 1.0
#: Seconds one look may take before the controller counts as unreachable.
WATCH_TIMEOUT = 10.0
#: Seconds the server waits past a call's deadline for the replica's own
#: answer before giving up on it.
DEADLINE_GRACE = 5.0


class RayExecutor:
    """Runs one model's calls on its Ray Serve application.

    :param ref: the model.
    :param settings: the model's executor settings, ``ray`` included.
    """

    def __init__(self, ref: ModelRef, settings: ExecutorSettings) -> None:
        self._ref = ref
        self._settings = settings
        self._ray = settings.ray
        self._app = cluster.app_name(self._ray, ref)
        self._per_replica = self._ray.max_ongoing_requests
        self._replicas = 0
        self._in_ray = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._handle: Any = None
        self._watcher: asyncio.Task[None] | None = None
        self._problem: str | None = None
        self._dead: set[str] = set()
        self._restarts = 0
        self._connected = False
        self._deployed = False
        self._started = False
        self._closed = False
        self._jobs = RayJobRunner(ref, settings)

    # -- what the server reads ----------------------------------------------

    @property
    def app_name(self) -> str:
        """The model's Serve application."""
        return self._app

    @property
    def workers(self) -> int:
        """Replicas: as many as may run (autoscaling's maximum), so that a
        batcher in front sizes itself for them; this executor's own queue
        holds what does not fit the replicas running now."""
        most = self._ray.max_replicas if self._ray.autoscaling else self._ray.replicas
        return max(1, self._replicas, most or 1)

    @property
    def running(self) -> int:
        """Replicas serving now, as Serve's controller last said."""
        return self._replicas

    @property
    def capacity(self) -> int:
        """Calls in Ray at once: running replicas x max_ongoing_requests."""
        return max(1, self._replicas) * self._per_replica

    @property
    def depth(self) -> int:
        return len(self._waiting)

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def batch_sizes(self) -> None:
        return None

    @property
    def unavailable(self) -> str | None:
        """Why calls cannot be taken now (the application or the
        controller is lost); ``None`` when they can."""
        return self._problem

    # -- life ---------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster, deploy (or find) the application and wait until
        its replicas run.

        :raises LoaderError: when the cluster cannot be reached, the
            application is missing (attached) or exists already (owned), or
            the replicas do not start within ``[ray] start_timeout``
            seconds; the message carries the replicas' own error.
        """
        await asyncio.to_thread(cluster.connect, self._ray)
        self._connected = True
        try:
            found = await asyncio.to_thread(cluster.state, self._app)
            if self._ray.own_app:
                await self._deploy(found)
            elif found.status == "MISSING":
                raise LoaderError(
                    f"Model '{self._ref.tag}': no Ray Serve application "
                    f"'{self._app}' on the cluster at {self._ray.address} to "
                    "attach to: deploy it first (deepserve ray deploy), or "
                    "run without --ray-attach"
                )
            ready = await self._wait_running()
            self._handle = await asyncio.to_thread(cluster.handle, self._app)
        except BaseException:
            await self._leave()
            raise
        self._replicas = ready.running
        self._started = True
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _deploy(self, found: cluster.AppState) -> None:
        if found.status != "MISSING":
            raise LoaderError(
                f"Model '{self._ref.tag}': Ray Serve application '{self._app}' "
                "exists already (another server owns it, or one that stopped "
                "without deleting it). Attach to it with --ray-attach, or "
                "delete it first: deepserve ray delete"
            )
        app = cluster.application(self._ref, self._settings)
        # Before the call: a start cancelled while it runs still deletes the
        # application (deleting a missing one is no error).
        self._deployed = True
        await asyncio.to_thread(cluster.deploy, self._app, app)

    async def _wait_running(self) -> cluster.AppState:
        deadline = time.monotonic() + self._ray.start_timeout
        while True:
            found = await asyncio.to_thread(cluster.state, self._app)
            if found.status == "RUNNING" and found.running > 0:
                return found
            error = cluster.start_error(found)
            if found.status == "DEPLOY_FAILED" or (
                error is not None and self._deployed and found.running == 0
            ):
                raise LoaderError(
                    f"Model '{self._ref.tag}' failed to start on Ray: "
                    f"{error or cluster.first_line(found.message) or found.status}"
                )
            if found.problem is not None and not self._deployed:
                raise LoaderError(f"Model '{self._ref.tag}': {found.problem}")
            if time.monotonic() > deadline:
                why = (
                    error
                    or cluster.first_line(found.message)
                    or f"status {found.status}"
                )
                raise LoaderError(
                    f"Model '{self._ref.tag}' did not start on Ray within "
                    f"{self._ray.start_timeout:g} s: {why}"
                )
            await asyncio.sleep(0.5)

    def keep_app(self) -> None:
        """Leave the application deployed when closing (``deepserve ray
        deploy``: deployed for servers that attach to it)."""
        self._deployed = False

    async def close(self) -> None:
        """Stop watching, fail waiting calls, stop trainings; delete the
        application if this server owns it; leave the cluster."""
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        stopping = NotRunning(self._ref.tag, "the server is stopping")
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(stopping)
        await self._jobs.close()
        await self._leave()

    async def _leave(self) -> None:
        if self._deployed:
            self._deployed = False
            try:
                await asyncio.to_thread(cluster.delete, self._app)
            except Exception as exc:
                LOG.warning(
                    "Could not delete the Ray Serve application '%s': %s",
                    self._app,
                    cluster.first_line(str(exc)),
                )
        if self._connected:
            self._connected = False
            await asyncio.to_thread(cluster.disconnect)

    async def _watch(self) -> None:
        """Keep :attr:`unavailable` and the replica count up to date."""
        look: asyncio.Future[cluster.AppState] | None = None
        while not self._closed:
            await asyncio.sleep(WATCH_INTERVAL)
            # One look at a time: a hung controller must not fill the
            # thread pool with looks that never return.
            if look is None or look.done():
                look = asyncio.ensure_future(
                    asyncio.to_thread(cluster.state, self._app)
                )
            try:
                found = await asyncio.wait_for(asyncio.shield(look), WATCH_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._set_problem(
                    f"the Ray Serve controller cannot be reached ({cluster.first_line(str(exc))})"
                )
                continue
            self._set_problem(found.problem)
            if found.problem is None and found.running != self._replicas:
                LOG.info(
                    "Model '%s' has %d replica(s) on Ray (was %d)",
                    self._ref.tag,
                    found.running,
                    self._replicas,
                )
                self._replicas = found.running
                self._admit()

    def _set_problem(self, problem: str | None) -> None:
        if problem != self._problem:
            if problem is None:
                LOG.info("Model '%s' is available on Ray again", self._ref.tag)
            else:
                LOG.error("Model '%s' is unavailable: %s", self._ref.tag, problem)
            self._problem = problem

    # -- calls --------------------------------------------------------------

    async def call(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> Any:
        if self._closed or not self._started:
            raise NotRunning(self._ref.tag, "the executor is not running")
        if self._problem is not None:
            raise NotRunning(self._ref.tag, self._problem, retry_after=5)
        started = time.monotonic()
        try:
            if timeout is None:
                await self._turn()
            else:
                async with asyncio.timeout(timeout):
                    await self._turn()
        except TimeoutError:
            raise DeadlineExceeded(self._ref.tag, timeout or 0.0) from None
        slot = _Slot()
        try:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                raise DeadlineExceeded(self._ref.tag, timeout or 0.0)
            return await self._send(method, kwargs, left, timeout, slot)
        finally:
            if slot.held:
                self._release()

    def _release(self) -> None:
        self._in_ray -= 1
        self._admit()

    async def _turn(self) -> None:
        """Wait until this call may go to Ray (FIFO)."""
        if not self._waiting and self._in_ray < self.capacity:
            self._in_ray += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Granted, then cancelled before it could go: pass it on.
                self._in_ray -= 1
                self._admit()
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
            raise

    def _admit(self) -> None:
        while self._waiting and self._in_ray < self.capacity:
            waiter = self._waiting.popleft()
            if not waiter.done():
                self._in_ray += 1
                waiter.set_result(None)

    async def _send(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        left: float | None,
        timeout: float | None,
        slot: _Slot,
    ) -> Any:
        if shipping.has_files(kwargs):
            packed = await asyncio.to_thread(shipping.pack, kwargs, cluster.put_file)
        else:
            packed = dict(kwargs)
        response = self._handle.call.remote(method, packed, logs.REQUEST_ID.get(), left)
        # Shielded: a caller that goes away (a client disconnecting) leaves
        # the call to finish, as with the other executors; only a deadline
        # stops work, and the replica does that itself.
        answer = asyncio.ensure_future(cluster.resolve(response))
        try:
            got = await within(
                None if left is None else left + DEADLINE_GRACE, asyncio.shield(answer)
            )
        except (TimeoutError, asyncio.CancelledError) as exc:
            # The call is still in Ray: its slot stays taken until it ends,
            # so that Serve never holds more than its share.
            slot.held = False
            answer.add_done_callback(self._ended)
            if isinstance(exc, TimeoutError):
                response.cancel()
                raise DeadlineExceeded(self._ref.tag, timeout or 0.0) from None
            raise
        except DeepserveError:
            raise
        except Exception as exc:
            raise self._lost(exc) from None
        if isinstance(got, Answer):
            return await shipping.received(method, got.value)
        if isinstance(got, Expired):
            self._died(got.replica)
            raise got.error
        if isinstance(got, Failure):
            raise got.error
        raise WorkerDied(self._ref.tag, f"a replica answered {type(got).__name__}")

    def _ended(self, answer: asyncio.Future[Any]) -> None:
        """A call whose caller left (or whose deadline passed) ended in Ray."""
        if not answer.cancelled():
            exc = answer.exception()
            if exc is not None and getattr(exc, "actor_id", None) is not None:
                self._died(str(exc.actor_id))  # type: ignore[attr-defined]
        self._release()

    def _lost(self, exc: Exception) -> DeepserveError:
        """What a call that Ray failed becomes."""
        actor = getattr(exc, "actor_id", None)
        if actor is not None:
            self._died(str(actor))
            return WorkerDied(self._ref.tag, "its Ray replica died")
        if type(exc).__name__ == "RayTaskError" or "RayTaskError" in {
            c.__name__ for c in type(exc).__mro__
        }:
            # The replica ran, but its answer could not come back (it does
            # not pickle, say): the model's fault, not worth a retry.
            return BadModelOutput(
                self._ref.tag, f"its answer cannot be sent: {cluster.first_line(exc)}"
            )
        LOG.warning("A call to model '%s' failed in Ray: %s", self._ref.tag, exc)
        return WorkerDied(self._ref.tag, f"Ray: {cluster.first_line(str(exc))}")

    def _died(self, replica: str) -> None:
        if replica and replica not in self._dead:
            self._dead.add(replica)
            self._restarts += 1
            LOG.warning(
                "A Ray replica of model '%s' died; Serve replaces it", self._ref.tag
            )

    # -- trainings ----------------------------------------------------------

    async def run_job(
        self,
        method: Method,
        kwargs: Mapping[str, Any],
        *,
        watch: JobWatch | None = None,
    ) -> Any:
        return await self._jobs.run(method, kwargs, watch=watch)


class _Slot:
    """Whether a call still holds its place among the calls in Ray."""

    held = True
