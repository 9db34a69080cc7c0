"""The blocking client: :class:`AsyncClient` run on a private event loop.

See :mod:`deepserve.client.loop_thread` for why it is built this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deepserve.client.async_client import (
    DEFAULT_CONNECT_RETRIES,
    DEFAULT_POLL,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    AsyncClient,
)
from deepserve.client.loop_thread import Blocking
from deepserve.client.operations import Operation
from deepserve.client.results import Training


class Client(Blocking):
    """A blocking client of one deepserve (or DEEPaaS V2) server.

    It has the methods of :class:`AsyncClient`, returning their results
    directly. Use it as a context manager or call :meth:`close` (a client
    that is garbage-collected closes itself)::

        with Client("http://127.0.0.1:5000") as client:
            print(client.predict("demo", text="hello"))

    :param url: the server's base URL, with its base path if it has one.
    :param token: sent as ``Authorization: Bearer <token>``.
    :param timeout: seconds each call may take, retries included; None for
        no limit.
    :param retries: how many times a ``503`` with ``Retry-After`` is retried
        (see :class:`AsyncClient`).
    :param connect_retries: how many times a request is sent again when
        its connection failed before anything reached the server (see
        :class:`AsyncClient`).
    :raises ValueError: for a URL that is not ``http(s)://host...``, or
        negative ``retries`` or ``connect_retries``.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        connect_retries: int = DEFAULT_CONNECT_RETRIES,
    ) -> None:
        self._client = AsyncClient(
            url,
            token=token,
            timeout=timeout,
            retries=retries,
            connect_retries=connect_retries,
        )
        super().__init__(self._client)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self._client.url

    def document(self, *, refresh: bool = False) -> dict[str, Any]:
        """See :meth:`AsyncClient.document`."""
        return self._loop.run(self._client.document(refresh=refresh))

    def models(self) -> list[dict[str, Any]]:
        """See :meth:`AsyncClient.models`."""
        return self._loop.run(self._client.models())

    def metadata(self, name: str) -> dict[str, Any]:
        """See :meth:`AsyncClient.metadata`."""
        return self._loop.run(self._client.metadata(name))

    def operation(self, name: str, operation: str = "predict") -> Operation:
        """See :meth:`AsyncClient.operation`."""
        return self._loop.run(self._client.operation(name, operation))

    def predict(
        self,
        name: str,
        *,
        files: Mapping[str, Any] | None = None,
        accept: str | None = None,
        **arguments: Any,
    ) -> Any:
        """See :meth:`AsyncClient.predict`."""
        return self._loop.run(
            self._client.predict(name, files=files, accept=accept, **arguments)
        )

    def train(
        self, name: str, *, files: Mapping[str, Any] | None = None, **arguments: Any
    ) -> Training:
        """See :meth:`AsyncClient.train`."""
        return self._loop.run(self._client.train(name, files=files, **arguments))

    def training(self, name: str, id: str | Training) -> Training:
        """See :meth:`AsyncClient.training`."""
        return self._loop.run(self._client.training(name, id))

    def trainings(self, name: str) -> list[Training]:
        """See :meth:`AsyncClient.trainings`."""
        return self._loop.run(self._client.trainings(name))

    def cancel(self, name: str, id: str | Training) -> Training:
        """See :meth:`AsyncClient.cancel`."""
        return self._loop.run(self._client.cancel(name, id))

    def wait(
        self,
        name: str,
        id: str | Training,
        *,
        timeout: float | None = None,
        poll: float = DEFAULT_POLL,
    ) -> Training:
        """See :meth:`AsyncClient.wait`."""
        return self._loop.run(self._client.wait(name, id, timeout=timeout, poll=poll))
