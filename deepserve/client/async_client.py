"""The asynchronous client (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import http
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import aiohttp
import yarl

import deepserve
from deepserve.client import retry
from deepserve.client.errors import (
    ApiError,
    ClientError,
    ConnectionFailed,
    RequestTimeout,
    TrainingFailed,
    WaitTimeout,
)
from deepserve.client.operations import Encoded, Operation, undocumented
from deepserve.client.results import FileResult, Training

LOG = logging.getLogger(__name__)

#: Seconds a call may take, retries and the waits before them included,
#: unless told otherwise.
DEFAULT_TIMEOUT = 300.0
#: Seconds between two looks at a training that is waited for.
DEFAULT_POLL = 0.5
#: How many times a request answered ``503`` with ``Retry-After`` is sent
#: again, unless told otherwise.
DEFAULT_RETRIES = 3
#: The longest wait before one retry, whatever ``Retry-After`` says.
MAX_RETRY_WAIT = 30.0
#: How many times a request is sent again after its connection failed
#: before anything reached the server, unless told otherwise: with the
#: waits of :func:`deepserve.client.retry.backoff`, about 10 seconds in all
#: on average, 21 at most.
DEFAULT_CONNECT_RETRIES = 8
USER_AGENT = f"deepserve-client/{deepserve.__version__}"


@dataclasses.dataclass(frozen=True)
class _Answer:
    method: str
    url: str
    status: int
    content_type: str
    charset: str | None
    filename: str | None
    body: bytes
    #: Whether the answer has a ``Retry-After`` header...
    retry_asked: bool = False
    #: ... and the seconds it asks for, when it makes sense.
    retry_after: float | None = None

    def json(self) -> Any:
        """The body as JSON.

        :raises ClientError: when it is not JSON (not a deepserve server?).
        """
        try:
            return json.loads(self.body.decode(self.charset or "utf-8"))
        except ValueError:
            raise ClientError(
                f"{self.method} {self.url} answered {self.status} with a body "
                f"that is not JSON ({self.content_type}); is it a deepserve server?"
            ) from None


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _id(training: str | Training) -> str:
    return training.id if isinstance(training, Training) else training


P = ParamSpec("P")
R = TypeVar("R")


def _bounded(method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run ``method`` of :class:`AsyncClient` within one
    :class:`~deepserve.client.retry.Deadline` of the client's timeout,
    whatever requests it makes."""

    @functools.wraps(method)
    async def bounded(*args: P.args, **kwargs: P.kwargs) -> R:
        client = args[0]
        assert isinstance(client, AsyncClient)
        with retry.call(client.timeout):
            return await method(*args, **kwargs)

    return bounded


class AsyncClient:
    """A client of one deepserve (or DEEPaaS V2) server, for asyncio code.

    Use it as an async context manager, or call :meth:`close` when done::

        async with AsyncClient("http://127.0.0.1:5000") as client:
            print(await client.predict("demo", text="hello"))

    Arguments are named as in the API and placed where the server's OpenAPI
    document (``/swagger.json``, fetched once and kept) says the server reads
    them.

    :param url: the server's base URL, with its base path if it has one
        (``http://host:5000/api``).
    :param token: sent as ``Authorization: Bearer <token>`` on every request.
    :param timeout: seconds each call may take, all its requests, retries
        and the waits before them included; None for no limit. No retry is
        started that could not end in time.
    :param retries: how many times a request answered ``503`` with a
        ``Retry-After`` header (a worker being replaced, a model still
        starting, a full queue) is sent again, after waiting as the header
        says (seconds or an HTTP date; at most :data:`MAX_RETRY_WAIT`
        seconds; a backoff wait when the value makes no sense); 0 never
        retries. A ``503`` without the header (the server is shutting down)
        is never retried.
    :param connect_retries: how many times a request is sent again when
        its connection failed before anything reached the server (refused:
        the server is starting or restarting), after a wait that grows
        exponentially, at random below a bound (see
        :func:`~deepserve.client.retry.backoff`); a ``GET`` also when the
        connection broke once sent. 0 never retries. A request that may
        have reached the server (a ``POST`` whose connection broke) is
        never sent again. Neither kind of retry sends an open file again
        (the first attempt spends it).
    :param session: an aiohttp session to use (and leave open); by default
        the client opens its own and closes it in :meth:`close`.
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
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"Not an http(s) URL of a server: {url!r}")
        if retries < 0:
            raise ValueError(f"retries must not be negative: {retries}")
        if connect_retries < 0:
            raise ValueError(f"connect_retries must not be negative: {connect_retries}")
        self.url = str(parsed).rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.connect_retries = connect_retries
        self._headers = {"User-Agent": USER_AGENT}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session = session
        self._own_session = session is None
        self._document: dict[str, Any] | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client's own session (a session passed in stays open)."""
        self._closed = True
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    # -- the API ---------------------------------------------------------

    @_bounded
    async def document(self, *, refresh: bool = False) -> dict[str, Any]:
        """The server's OpenAPI document (kept after the first fetch).

        :param refresh: fetch it again (after the server restarted with
            other models, say).
        """
        if self._document is None or refresh:
            answer = await self._request("GET", "/swagger.json")
            self._document = dict(answer.json())
        return self._document

    @_bounded
    async def models(self) -> list[dict[str, Any]]:
        """The served models' metadata, one dict each (``name``, ...)."""
        answer = await self._request("GET", "/v2/models/")
        return list(answer.json()["models"])

    @_bounded
    async def metadata(self, name: str) -> dict[str, Any]:
        """Model ``name``'s metadata.

        :raises ApiError: ``404`` when the server does not serve it.
        """
        answer = await self._request("GET", f"/v2/models/{_quote(name)}/")
        return dict(answer.json())

    @_bounded
    async def operation(self, name: str, operation: str = "predict") -> Operation:
        """Model ``name``'s ``predict`` (or ``train``) as the server documents
        it: its :attr:`~Operation.arguments` and where each goes.

        :raises ApiError: ``404`` when the server does not serve the model.
        :raises ClientError: when the model does not offer ``operation``.
        """
        op = await self._operation(name, operation)
        if op is None:
            await self.metadata(name)  # the server's 404 for an unknown model
            raise ClientError(
                f"Model '{name}' does not offer '{operation}' on {self.url}"
            )
        return op

    @_bounded
    async def predict(
        self,
        name: str,
        *,
        files: Mapping[str, Any] | None = None,
        accept: str | None = None,
        **arguments: Any,
    ) -> Any:
        """Run model ``name``'s prediction.

        :param files: values of file arguments (see
            :data:`deepserve.client.uploads.FileValue`): paths, open binary
            files, bytes or ``(filename, content[, content type])``. File
            arguments may be given as keywords too.
        :param accept: the media type wanted (sent as ``Accept``).
        :param arguments: the model's other arguments, by their API names
            (``**{"X-Token": ...}`` for names that are not identifiers).
        :returns: a JSON answer decoded (DEEPaaS's ``{"status": "OK",
            "predictions": ...}`` unless the model has a response schema);
            any other media type as a :class:`FileResult`.
        :raises ArgumentError: for an argument the model does not take
            (nothing is sent).
        :raises ApiError: for the server's errors (``404``, ``422``...).
        """
        encoded = await self._encode(name, "predict", arguments, files or {})
        headers = {"Accept": accept} if accept is not None else {}
        answer = await self._request(
            "POST", f"/v2/models/{_quote(name)}/predict/", encoded, headers=headers
        )
        if _is_json(answer.content_type):
            return answer.json()
        return FileResult(
            answer.body, answer.content_type, answer.filename, answer.charset
        )

    @_bounded
    async def train(
        self, name: str, *, files: Mapping[str, Any] | None = None, **arguments: Any
    ) -> Training:
        """Start a training of model ``name``; it runs on the server.

        :param files: values of file arguments, as for :meth:`predict`.
        :returns: its record, usually ``running``; see :meth:`wait`.
        """
        encoded = await self._encode(name, "train", arguments, files or {})
        answer = await self._request(
            "POST", f"/v2/models/{_quote(name)}/train/", encoded
        )
        return Training.from_json(name, answer.json())

    @_bounded
    async def training(self, name: str, id: str | Training) -> Training:
        """The current record of training ``id`` of model ``name``."""
        answer = await self._request("GET", self._training_path(name, id))
        return Training.from_json(name, answer.json())

    @_bounded
    async def trainings(self, name: str) -> list[Training]:
        """Every training of model ``name`` the server knows."""
        answer = await self._request("GET", f"/v2/models/{_quote(name)}/train/")
        return [Training.from_json(name, raw) for raw in answer.json()]

    @_bounded
    async def cancel(self, name: str, id: str | Training) -> Training:
        """Cancel training ``id``; returns its record, ``cancelled``."""
        answer = await self._request("DELETE", self._training_path(name, id))
        return Training.from_json(name, answer.json())

    async def wait(
        self,
        name: str,
        id: str | Training,
        *,
        timeout: float | None = None,
        poll: float = DEFAULT_POLL,
    ) -> Training:
        """Wait until training ``id`` ends.

        :param timeout: seconds to wait at most; None waits as long as it runs.
        :param poll: seconds between two looks at it.
        :returns: its final record, ``done`` (``output`` holds the result).
        :raises TrainingFailed: when it ended in error or was cancelled.
        :raises WaitTimeout: when it still runs after ``timeout`` seconds
            (it goes on running).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = await self.training(name, id)
            if record.status in ("error", "cancelled"):
                raise TrainingFailed(record)
            if record.done:
                return record
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(record, timeout or 0.0)
                await asyncio.sleep(min(poll, left))
            else:
                await asyncio.sleep(poll)

    # -- plumbing --------------------------------------------------------

    def _training_path(self, name: str, id: str | Training) -> str:
        return f"/v2/models/{_quote(name)}/train/{_quote(_id(id))}"

    async def _operation(self, name: str, operation: str) -> Operation | None:
        found = Operation.find(await self.document(), name, operation)
        if found is None:
            # The server may have been restarted with other models.
            found = Operation.find(await self.document(refresh=True), name, operation)
        return found

    async def _encode(
        self,
        name: str,
        operation: str,
        arguments: Mapping[str, Any],
        files: Mapping[str, Any],
    ) -> Encoded:
        op = await self._operation(name, operation)
        if op is None:
            # Unknown model, operation not offered or disabled: the server
            # answers with the precise error.
            return undocumented(arguments, files)
        return op.encode(arguments, files)

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientError(f"The client of {self.url} is closed")
        if self._session is None:
            # Made here, in a coroutine: a session belongs to the running loop.
            self._session = aiohttp.ClientSession()
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        encoded: Encoded | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        encoded = encoded or Encoded()
        url = self.url + path
        all_headers = {**self._headers, **encoded.headers, **(headers or {})}
        # Bytes and paths can be sent again; an open file is spent.
        resendable = all(
            isinstance(upload.content, bytes | Path) for _, upload in encoded.uploads
        )
        with retry.call(self.timeout) as deadline:
            attempts = reconnects = busy = 0
            while True:
                attempts += 1
                try:
                    answer = await self._send(
                        method, url, encoded, all_headers, deadline
                    )
                except aiohttp.ClientError as err:
                    reason = str(err) or type(err).__name__
                    wait = self._reconnect_wait(
                        err, method, resendable, reconnects, deadline
                    )
                    if isinstance(wait, str | None):
                        raise ConnectionFailed(
                            url,
                            reason,
                            attempts=attempts,
                            seconds=deadline.elapsed(),
                            note=wait,
                        ) from err
                    reconnects += 1
                    LOG.info(
                        "%s %s: %s; trying again in %.2f s", method, url, reason, wait
                    )
                    await asyncio.sleep(wait)
                    continue
                wait = self._busy_wait(answer, resendable, busy, deadline)
                if wait is None:
                    break
                busy += 1
                LOG.info(
                    "%s %s answered 503; trying again in %.2f s", method, url, wait
                )
                await asyncio.sleep(wait)
        if answer.status >= 400:
            raise ApiError(answer.status, _error_body(answer), method=method, url=url)
        return answer

    def _reconnect_wait(
        self,
        err: aiohttp.ClientError,
        method: str,
        resendable: bool,
        reconnects: int,
        deadline: retry.Deadline,
    ) -> float | str | None:
        """Seconds to wait before sending again a request whose connection
        failed; else why not (None: nothing worth saying)."""
        if retry.broken(err) and method not in retry.SAFE_METHODS:
            return f"not retried: the server may have received the {method}"
        if not (retry.unreached(err) or retry.broken(err)):
            return None  # a name that does not exist, TLS...: no use waiting
        if not resendable:
            return (
                "not retried: the attempt spent the open file it uploads; "
                "give a path or bytes to have it retried"
            )
        if reconnects >= self.connect_retries:
            return None
        wait = retry.backoff(reconnects)
        if not deadline.allows(wait):
            return (
                f"the timeout of {deadline.seconds:g} s leaves no time "
                f"for another attempt"
            )
        return wait

    def _busy_wait(
        self, answer: _Answer, resendable: bool, busy: int, deadline: retry.Deadline
    ) -> float | None:
        """Seconds to wait before sending again a request answered ``503``
        with ``Retry-After``; None not to."""
        if (
            answer.status != 503
            or not answer.retry_asked
            or busy >= self.retries
            or not resendable
        ):
            return None
        asked = answer.retry_after
        wait = min(retry.backoff(busy) if asked is None else asked, MAX_RETRY_WAIT)
        return wait if deadline.allows(wait) else None

    async def _send(
        self,
        method: str,
        url: str,
        encoded: Encoded,
        headers: Mapping[str, str],
        deadline: retry.Deadline,
    ) -> _Answer:
        """One attempt, within what is left of ``deadline``.

        :raises aiohttp.ClientError: when the exchange broke.
        """
        session = await self._get_session()
        left = deadline.left()
        # A total of 0 would be no limit at all to aiohttp.
        total = None if left is None else max(left, 0.001)
        with contextlib.ExitStack() as opened:
            data = _multipart(encoded, opened) if encoded.uploads else None
            try:
                async with session.request(
                    method,
                    url,
                    params=encoded.query or None,
                    headers=headers,
                    json=encoded.json,
                    data=data,
                    timeout=aiohttp.ClientTimeout(total=total),
                ) as resp:
                    asked = resp.headers.get("Retry-After")
                    answer = _Answer(
                        method=method,
                        url=url,
                        status=resp.status,
                        content_type=resp.content_type,
                        charset=resp.charset,
                        filename=resp.content_disposition.filename
                        if resp.content_disposition
                        else None,
                        body=await resp.read(),
                        retry_asked=asked is not None,
                        retry_after=None if asked is None else retry.retry_after(asked),
                    )
            except TimeoutError:
                raise RequestTimeout(url, deadline.seconds) from None
        return answer


def _multipart(encoded: Encoded, opened: contextlib.ExitStack) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in encoded.form:
        form.add_field(name, value)
    for name, upload in encoded.uploads:
        content = upload.content
        if isinstance(content, Path):
            # Streamed from disk by aiohttp, closed when the request is over.
            content = opened.enter_context(content.open("rb"))
        form.add_field(
            name, content, filename=upload.filename, content_type=upload.content_type
        )
    return form


def _error_body(answer: _Answer) -> dict[str, Any]:
    """deepserve's JSON error body, or one of that shape made from the text."""
    if _is_json(answer.content_type):
        with contextlib.suppress(ClientError):
            body = answer.json()
            if isinstance(body, dict):
                return body
    text = answer.body.decode(answer.charset or "utf-8", errors="replace").strip()
    try:
        title = http.HTTPStatus(answer.status).phrase
    except ValueError:
        title = "Error"
    return {"code": answer.status, "title": title, "message": text[:1000]}
