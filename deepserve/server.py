"""Running the HTTP server: listen, warm, serve, and shut down gracefully.

The order of a server's life: :func:`serve` owns the HTTP side of it
(signal handling included, so that a second Ctrl-C cannot interrupt the
clean-up half-way), and runs it inside the registry's
:meth:`~deepserve.runtime.Registry.running`, which owns the models' side:
the job store, the executors and the trainings. Nobody else orders them.

1. The job store opens (``Registry.running``); a database the server
   cannot use ends it with exit status 1 before it listens.
2. The application starts (its ``cleanup_ctx`` resources open) and the
   socket listens: ``/v2/health/live`` answers at once, while
   ``/v2/health/ready`` says 503 and predictions get a 503 JSON error until
   every model has started and warmed.
3. The registry starts its executors; a model that fails to start ends the
   server with exit status 1.
4. On SIGTERM or SIGINT the registry *drains*: readiness turns false, new
   predictions and trainings are refused with 503, and the requests in
   progress get ``shutdown_grace`` seconds to finish. The socket stays
   open meanwhile, so that probes and late clients get that clear answer
   rather than a refused connection. A second signal ends the wait at once.
   Listeners beside HTTP (the gRPC service) start after the socket and
   stop, with the same grace, while the HTTP requests finish.
5. The socket closes and the requests still running are cancelled (their
   uploads removed); the application's ``cleanup_ctx`` closes.
6. ``Registry.running`` ends: the trainings stop (the point where running
   jobs are recorded as interrupted), then the models' workers, then the
   job store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

from aiohttp import web

from deepserve.api import access, protocol
from deepserve.api.inflight import IN_FLIGHT
from deepserve.exceptions import DeepserveError, LoaderError
from deepserve.runtime import Registry
from deepserve.settings import ServerSettings

LOG = logging.getLogger(__name__)

#: Seconds the requests still running after the grace period get to unwind
#: once cancelled (aiohttp waits this long twice at most, and never 0: a 0
#: would mean no limit).
CUT_WAIT = 1.0
#: Seconds an idle keep-alive connection stays open.
KEEPALIVE = 75.0


class Listener(Protocol):
    """A listener beside HTTP, such as the gRPC service."""

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the address cannot be bound."""
        ...

    async def stop(self, grace: float) -> None:
        """Refuse new calls; the calls in progress get ``grace`` seconds."""
        ...


class Signals:
    """SIGTERM and SIGINT as two events: shutdown asked, and asked again."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()

    def received(self, sig: signal.Signals) -> None:
        if not self.stop.is_set():
            LOG.info("%s received: shutting down", sig.name)
            self.stop.set()
        elif not self.hurry.is_set():
            LOG.warning(
                "%s received again: cutting off the requests still running", sig.name
            )
            self.hurry.set()

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.received, sig)


async def serve(
    app: web.Application,
    registry: Registry,
    settings: ServerSettings,
    *,
    announce: Callable[[int], None],
    fail: Callable[[str], int],
    listeners: Sequence[tuple[str, Listener]] = (),
) -> int:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down gracefully.

    :param announce: called with the port once the socket listens (prints
        the banner; the port is the one the system chose for port 0).
    :param fail: reports a start-up error; returns the exit status.
    :param listeners: other listeners and what they are (for errors),
        started once HTTP listens and stopped with the same grace.
    :returns: the exit status: 0 after a signal, ``fail``'s on failure.
    """
    signals = Signals()
    signals.install(asyncio.get_running_loop())
    async with contextlib.AsyncExitStack() as stack:
        try:
            # First: a job database the server cannot use ends it before it
            # listens. Left last, after the socket closed: trainings, then
            # workers, then the job store.
            await stack.enter_async_context(registry.running())
        except DeepserveError as exc:
            return fail(str(exc))
        status = await _serve(
            app,
            registry,
            settings,
            signals,
            announce=announce,
            fail=fail,
            listeners=listeners,
        )
    LOG.debug("Shutdown complete")
    return status


async def _serve(
    app: web.Application,
    registry: Registry,
    settings: ServerSettings,
    signals: Signals,
    *,
    announce: Callable[[int], None],
    fail: Callable[[str], int],
    listeners: Sequence[tuple[str, Listener]],
) -> int:
    """Listen, start the registry, serve until a signal, drain; the socket
    closes and the requests still running are cancelled on the way out."""
    runner = protocol.AppRunner(
        app,
        handle_signals=False,  # ours, installed by serve
        access_log=logging.getLogger("deepserve.access")
        if settings.access_log
        else None,
        access_log_class=access.AccessLogger,
        # A client that goes away cancels its request's queued work.
        handler_cancellation=True,
        shutdown_timeout=CUT_WAIT,
        # What web.run_app uses; an AppRunner's own default keeps idle
        # connections for an hour.
        keepalive_timeout=KEEPALIVE,
        limits=protocol.Limits(settings.header_timeout, settings.max_connections),
    )
    await runner.setup()
    starting: asyncio.Task[None] | None = None
    started: list[Listener] = []
    try:
        site = web.TCPSite(runner, settings.listen_ip, settings.listen_port)
        try:
            await site.start()
        except OSError as exc:  # the address is taken, or not ours to bind
            return fail(
                f"cannot listen on {settings.listen_ip}:{settings.listen_port}: "
                f"{exc.strerror or exc}"
            )
        for what, listener in listeners:
            try:
                await listener.start()
            except OSError as exc:
                return fail(f"cannot start {what}: {exc.strerror or exc}")
            started.append(listener)
        announce(runner.addresses[0][1])
        starting = asyncio.create_task(registry.start())
        stopping = asyncio.create_task(signals.stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            error = starting.exception()
            if isinstance(error, LoaderError):
                stopping.cancel()
                return fail(str(error))
            if error is not None:
                raise error
            LOG.info("Ready: every model has started")
            settle_heap()
            await stopping
        grace = settings.shutdown_grace
        await asyncio.gather(
            _drain(app, registry, signals, grace, starting),
            *(listener.stop(grace) for listener in started),
        )
        return 0
    finally:
        registry.drain()
        for listener in started:  # at once, if not yet stopped
            with contextlib.suppress(Exception):
                await listener.stop(0)
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        # Stops listening, cancels what still runs, closes the app's
        # cleanup_ctx; the registry's running() closes after this.
        await runner.cleanup()
        access.flush()


def settle_heap() -> None:
    """Take what start-up built (modules, schemas, the models) out of the
    garbage collector's way (:func:`gc.freeze`).

    A full collection walks every object it tracks, and under load one runs
    every second or so: with start-up's objects in it, each held the event
    loop for 30-70 ms on the machine of ``benchmarks/RESULTS.md``, and the
    slowest percent of batched predictions waited for them (p99 90 ms
    against 30 ms frozen). Frozen objects are never collected: start-up's
    are kept for the server's life anyway.
    """
    gc.collect()
    gc.freeze()


async def _drain(
    app: web.Application,
    registry: Registry,
    signals: Signals,
    grace: float,
    starting: asyncio.Task[None],
) -> None:
    """Refuse new work and wait up to ``grace`` s for requests in progress."""
    registry.drain()
    if not starting.done():
        # Models still warming: no prediction can be running.
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
    in_flight = app[IN_FLIGHT]
    if in_flight.count:
        LOG.info(
            "Waiting up to %g s for %d request(s) in progress", grace, in_flight.count
        )
    idle = asyncio.create_task(in_flight.wait_idle())
    hurry = asyncio.create_task(signals.hurry.wait())
    try:
        await asyncio.wait(
            {idle, hurry}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        idle.cancel()
        hurry.cancel()
    if in_flight.count:
        LOG.warning("Cutting off %d request(s) still in progress", in_flight.count)
