"""An event loop in a thread of its own, for the blocking clients.

The blocking clients run the asynchronous ones on such a loop rather than
re-implementing the protocol with blocking HTTP: one code path decides
where arguments go, how files are streamed and how errors read, so the two
cannot drift apart; and unlike ``asyncio.run`` per call, it works where the
calling thread already runs a loop (Jupyter, an async web app) and keeps
connections alive between calls. Its cost is one idle thread per client.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from deepserve.client.errors import ClientError

T = TypeVar("T")


class LoopThread:
    """A private event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "deepserve-client") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=name, daemon=True
        )
        self._thread.start()
        self._stopped = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result.

        :raises ClientError: once the loop is stopped.
        :raises RuntimeError: when called from the loop's own thread, where
            waiting would deadlock.
        """
        if self._stopped:
            coro.close()  # never awaited otherwise: a RuntimeWarning
            raise ClientError("The client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("A blocking client cannot be called from its own loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C while waiting: stop the request too, not just the wait.
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop and its thread; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _Closable(Protocol):
    async def close(self) -> None: ...


class Blocking:
    """Base of the blocking wrappers: a :class:`LoopThread` on which the
    wrapped asynchronous object runs, closed by :meth:`close`, by leaving a
    ``with`` block, or when the wrapper is garbage-collected.

    :param inner: the asynchronous object; its ``close()`` runs on the loop
        before the loop stops.
    """

    def __init__(self, inner: _Closable) -> None:
        self._loop = LoopThread()
        # Holds no reference to self, so that an unclosed wrapper can be
        # collected, and closed then.
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, inner)

    def close(self) -> None:
        """Close the connections and stop the thread; idempotent."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _shutdown(loop: LoopThread, inner: _Closable) -> None:
    try:
        loop.run(inner.close())
    finally:
        loop.stop()
