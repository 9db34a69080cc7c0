"""One served model as an object: ``DeployedModel(url, name).predict(data)``.

In the spirit of Verta's deployed models: a model whose ``predict`` takes
one input (a stored model's ``data``, sent as the JSON body
``{"data": ...}``; or a DEEPaaS model's ``data`` file) is called with that
input alone, and the answer is the model's output, without the
``{"status": "OK", "predictions": ...}`` envelope. Models with other
arguments take them by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from deepserve.client import retry
from deepserve.client.async_client import (
    DEFAULT_CONNECT_RETRIES,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    AsyncClient,
)
from deepserve.client.errors import ArgumentError
from deepserve.client.loop_thread import Blocking

#: The argument that ``predict(data)`` fills.
DATA = "data"
_MISSING: Any = object()


class AsyncDeployedModel:
    """Model ``name`` of the server at ``url``, for asyncio code.

    :param url: the server's base URL.
    :param name: the model's name on that server.
    :param token: sent as ``Authorization: Bearer <token>``.
    :param timeout: seconds each call may take, retries included; None for
        no limit.
    :param retries: how many times a ``503`` with ``Retry-After`` is retried
        (see :class:`~deepserve.client.AsyncClient`).
    :param connect_retries: how many times a request is sent again when its
        connection failed before anything reached the server (see
        :class:`~deepserve.client.AsyncClient`).
    :param session: an aiohttp session to use (and leave open).
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        connect_retries: int = DEFAULT_CONNECT_RETRIES,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.client = AsyncClient(
            url,
            token=token,
            timeout=timeout,
            retries=retries,
            connect_retries=connect_retries,
            session=session,
        )

    async def __aenter__(self) -> AsyncDeployedModel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the underlying client."""
        await self.client.close()

    async def metadata(self) -> dict[str, Any]:
        """The model's metadata."""
        return await self.client.metadata(self.name)

    async def predict(
        self,
        data: Any = _MISSING,
        /,
        *,
        files: Mapping[str, Any] | None = None,
        accept: str | None = None,
        **arguments: Any,
    ) -> Any:
        """Predict on ``data`` (and/or the model's arguments by name).

        :param data: the model's input, for a model with a ``data`` argument:
            any JSON value where the server takes it as JSON, a file (path,
            binary file, bytes...) where it takes a file.
        :returns: the model's output: decoded JSON without the
            ``{"status": "OK", "predictions": ...}`` envelope, or a
            :class:`~deepserve.client.results.FileResult`.
        :raises ArgumentError: when the model has no ``data`` argument, or
            for names it does not take.
        """
        # Reading the operation and predicting fit in one timeout.
        with retry.call(self.client.timeout):
            return await self._predict(data, files, accept, arguments)

    async def _predict(
        self,
        data: Any,
        files: Mapping[str, Any] | None,
        accept: str | None,
        arguments: dict[str, Any],
    ) -> Any:
        op = await self.client.operation(self.name, "predict")
        if data is not _MISSING:
            if DATA not in op.arguments:
                raise ArgumentError(
                    f"Model '{self.name}' takes no '{DATA}' argument: call "
                    f"predict() with its arguments by name",
                    valid=op.arguments,
                )
            if DATA in arguments or DATA in (files or {}):
                raise ArgumentError(f"'{DATA}' given twice")
            arguments[DATA] = data
        result = await self.client.predict(
            self.name, files=files, accept=accept, **arguments
        )
        if op.envelope and isinstance(result, dict) and "predictions" in result:
            return result["predictions"]
        return result


class DeployedModel(Blocking):
    """Model ``name`` of the server at ``url``; blocking calls.

    ::

        model = DeployedModel("http://127.0.0.1:5000", "iris_clf")
        model.predict([[5.1, 3.5, 1.4, 0.2]])

    Use it as a context manager or call :meth:`close` (it closes itself
    when garbage-collected). See :class:`AsyncDeployedModel` for the
    parameters and methods.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        connect_retries: int = DEFAULT_CONNECT_RETRIES,
    ) -> None:
        self._model = AsyncDeployedModel(
            url,
            name,
            token=token,
            timeout=timeout,
            retries=retries,
            connect_retries=connect_retries,
        )
        super().__init__(self._model)

    @property
    def name(self) -> str:
        """The model's name."""
        return self._model.name

    def metadata(self) -> dict[str, Any]:
        """See :meth:`AsyncDeployedModel.metadata`."""
        return self._loop.run(self._model.metadata())

    def predict(
        self,
        data: Any = _MISSING,
        /,
        *,
        files: Mapping[str, Any] | None = None,
        accept: str | None = None,
        **arguments: Any,
    ) -> Any:
        """See :meth:`AsyncDeployedModel.predict`."""
        return self._loop.run(
            self._model.predict(data, files=files, accept=accept, **arguments)
        )
