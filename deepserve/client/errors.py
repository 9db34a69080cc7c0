"""Errors the client raises.

Every one derives from :class:`ClientError` (itself a
:class:`deepserve.exceptions.DeepserveError`), so ``except ClientError``
catches whatever went wrong talking to a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from deepserve.exceptions import DeepserveError

if TYPE_CHECKING:
    from deepserve.client.results import Training


class ClientError(DeepserveError):
    """Base class of the client's errors."""


class ApiError(ClientError):
    """The server answered with an error status.

    :param status: the HTTP status code.
    :param body: the server's JSON error body (``{"code", "title",
        "message", ...}``); for an answer that is not deepserve's JSON (a
        proxy's error page, say) a body of that shape made from its text.
    :param method: the request's method.
    :param url: the request's URL.
    """

    def __init__(
        self, status: int, body: Mapping[str, Any], *, method: str, url: str
    ) -> None:
        self.status = status
        self.body = dict(body)
        self.method = method
        self.url = url
        title = str(body.get("title") or "")
        detail = str(body.get("message") or title or "no message")
        super().__init__(
            f"{status} {title + ': ' if title else ''}{detail} ({method} {url})"
        )

    @property
    def detail(self) -> str:
        """The server's own message, without status or URL."""
        return str(self.body.get("message") or "")

    @property
    def errors(self) -> dict[str, Any]:
        """Invalid arguments: name -> problems (for a ``422``), else empty."""
        found = self.body.get("errors")
        return dict(found) if isinstance(found, Mapping) else {}


class ConnectionFailed(ClientError):
    """The server could not be reached, or the connection broke.

    :param url: the URL that was being requested.
    :param reason: what broke, the last time.
    :param attempts: how many times the request was tried.
    :param seconds: how long the tries took, waits included.
    :param note: why the client gave up (or did not retry), when it is not
        plain.
    """

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        attempts: int = 1,
        seconds: float = 0.0,
        note: str | None = None,
    ) -> None:
        message = f"Cannot reach the deepserve server at {url}: {reason}"
        if attempts > 1:
            tried = f"gave up after {attempts} attempts in {seconds:.1f} s"
            message += f" ({tried}{': ' + note if note else ''})"
        elif note:
            message += f" ({note})"
        super().__init__(message)
        self.url = url
        self.reason = reason
        self.attempts = attempts
        self.seconds = seconds


class RequestTimeout(ClientError, TimeoutError):
    """The server did not answer a request in time."""

    def __init__(self, url: str, seconds: float | None) -> None:
        within = f" within {seconds:g} s" if seconds is not None else ""
        super().__init__(f"No answer from {url}{within}")
        self.url = url
        self.seconds = seconds


class ArgumentError(ClientError, TypeError):
    """A call named arguments the model does not take, or misused one.

    Raised before anything is sent. It is a :class:`TypeError` too, like a
    Python function called with an unexpected keyword.

    :param valid: the arguments the operation takes, listed in the message
        when given.
    """

    def __init__(self, message: str, *, valid: Iterable[str] | None = None) -> None:
        self.valid = sorted(valid) if valid is not None else None
        if self.valid is not None:
            listed = ", ".join(self.valid) if self.valid else "none"
            message = f"{message}; valid arguments: {listed}"
        super().__init__(message)


class TrainingFailed(ClientError):
    """A training that was waited for ended in error or was cancelled.

    :param training: the training's final record (its ``message`` says why).
    """

    def __init__(self, training: Training) -> None:
        what = f"Training '{training.id}' of model '{training.model}'"
        if training.status == "cancelled":
            message = f"{what} was cancelled"
        else:
            message = f"{what} failed: {training.message or 'no reason given'}"
        super().__init__(message)
        self.training = training


class WaitTimeout(ClientError, TimeoutError):
    """A training did not finish within the time waited for it.

    The training goes on; cancel it with ``cancel(name, id)`` if need be.

    :param training: its last record, still ``running``.
    """

    def __init__(self, training: Training, seconds: float) -> None:
        super().__init__(
            f"Training '{training.id}' of model '{training.model}' is still "
            f"{training.status} after {seconds:g} s"
        )
        self.training = training
        self.seconds = seconds
