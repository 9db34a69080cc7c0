"""Domain errors.

Nothing here knows about HTTP: :mod:`deepserve.api.errors` is the one place
that maps these classes to status codes. Every error is picklable, because
errors raised inside a worker process travel back to the server.
"""

from __future__ import annotations

from typing import Any


class DeepserveError(Exception):
    """Base class of every error deepserve raises on purpose."""

    #: Seconds after which the same request may succeed (an HTTP
    #: ``Retry-After``), or ``None`` when retrying is not expected to help.
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[DeepserveError], state: dict[str, Any]) -> DeepserveError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ConfigError(DeepserveError):
    """The configuration is invalid."""


class LoaderError(DeepserveError):
    """A model could not be found or imported at start-up.

    :param hint: a line for the person at the terminal, e.g. a suggestion
        for a mistyped model name.
    """

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class ModelNotFound(DeepserveError, KeyError):
    """A request named a model that is not served.

    It is a ``KeyError`` too, so the registry behaves as a mapping.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"Model '{name}' is not served here")
        self.model = name


class JobNotFound(DeepserveError):
    """A request named a training job that does not exist."""

    def __init__(self, model: str, job_id: str) -> None:
        super().__init__(f"Training '{job_id}' not found for model '{model}'")
        self.model = model
        self.job_id = job_id


class JobStoreError(DeepserveError):
    """The training-job database cannot be used (unreachable, or a schema
    this version does not understand)."""


class BadInput(DeepserveError):
    """The request's arguments are invalid.

    :param errors: field name -> list of messages, one entry per bad field.
    """

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class MalformedRequest(DeepserveError):
    """The request body cannot be read (bad JSON, broken multipart)."""


class InsufficientStorage(DeepserveError):
    """The disk filled up while a request's upload was written to it."""

    def __init__(self) -> None:
        super().__init__(
            "Not enough disk space to receive the upload; nothing was kept "
            "(the server's upload directory is full)"
        )


class PayloadTooLarge(DeepserveError):
    """The request body is larger than the configured limit.

    :param option: the option that sets the limit, named in the message.
    """

    def __init__(self, limit: int, option: str = "client-max-size") -> None:
        super().__init__(
            f"Request body exceeds the limit of {limit} bytes (option {option})"
        )
        self.limit = limit
        self.option = option


class Unauthorized(DeepserveError):
    """The request needs a valid bearer token and did not carry one.

    :param invalid: a token was given but is not accepted (RFC 6750's
        ``invalid_token``), rather than missing.
    """

    def __init__(self, *, invalid: bool) -> None:
        super().__init__(
            "The bearer token is not valid"
            if invalid
            else "This endpoint needs an 'Authorization: Bearer <token>' header"
        )
        self.invalid = invalid


class NotSupported(DeepserveError):
    """The model does not implement the requested operation."""

    def __init__(self, model: str, operation: str) -> None:
        super().__init__(f"Model '{model}' does not implement '{operation}'")
        self.model = model
        self.operation = operation


class ModelHTTPError(DeepserveError):
    """The model raised an HTTP error of its own (e.g. ``HTTPBadRequest``).

    Its status and text are kept as the model chose them.
    """

    def __init__(self, model: str, status: int, message: str) -> None:
        super().__init__(message)
        self.model = model
        self.status = status


class ModelFailed(DeepserveError):
    """The model raised an unexpected exception.

    The traceback stays on the server (it is logged); clients only see the
    model's name and the exception's type.
    """

    def __init__(
        self, model: str, error_type: str, detail: str, traceback: str = ""
    ) -> None:
        super().__init__(f"Model '{model}' failed with {error_type}")
        self.model = model
        self.error_type = error_type
        self.detail = detail
        self.traceback = traceback

    @property
    def reason(self) -> str:
        """The exception's type and message, for logs and operators."""
        return f"{self.error_type}: {self.detail}"


class BadModelOutput(DeepserveError):
    """The model returned something that does not fit its declared contract."""

    def __init__(self, model: str, problem: str) -> None:
        super().__init__(f"Model '{model}' returned an invalid response: {problem}")
        self.model = model
        self.problem = problem


class WorkerDied(DeepserveError):
    """The worker process running a call died before answering.

    A replacement worker starts at once, so a retry usually succeeds.
    """

    retry_after: int | None = 1

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"The worker of model '{model}' died: {reason}")
        self.model = model
        self.reason = reason


class NotRunning(WorkerDied):
    """The model's workers are not running (the server starts or stops).

    :param retry_after: seconds after which it may be running (while it
        starts); ``None`` when it is stopping or stopped.
    """

    def __init__(
        self, model: str, reason: str, *, retry_after: int | None = None
    ) -> None:
        DeepserveError.__init__(self, f"Model '{model}' is not available: {reason}")
        self.model = model
        self.reason = reason
        self.retry_after = retry_after


class DeadlineExceeded(DeepserveError):
    """A call ran past the model's deadline; its worker was replaced."""

    def __init__(self, model: str, seconds: float) -> None:
        super().__init__(f"Model '{model}' did not answer within {seconds:g} s")
        self.model = model
        self.seconds = seconds


class Overloaded(DeepserveError):
    """The model's queue is full; the client should retry later."""

    def __init__(self, model: str, queued: int, retry_after: int = 1) -> None:
        super().__init__(
            f"Model '{model}' is busy ({queued} requests queued); retry later"
        )
        self.model = model
        self.queued = queued
        self.retry_after = retry_after


class StoreError(DeepserveError):
    """The model store cannot do what was asked (a damaged entry, a bad save)."""


class BadArchive(StoreError):
    """A model archive is unsafe or damaged; nothing of it was imported."""


class BadTag(StoreError, ValueError):
    """A model tag is not ``name``, ``name:latest`` or ``name:version``.

    Tags are rejected, never silently altered.
    """

    def __init__(self, tag: str, problem: str) -> None:
        super().__init__(f"Invalid model tag '{tag}': {problem}")
        self.tag = tag
        self.problem = problem


class ModelTagNotFound(ModelNotFound, StoreError):
    """No stored model has this tag."""

    def __init__(self, tag: str, root: str) -> None:
        DeepserveError.__init__(self, f"Model '{tag}' is not in the store at {root}")
        self.model = tag
        self.tag = tag
        self.root = root


class TagExists(StoreError):
    """The store already holds a model with this tag."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"Model '{tag}' already exists in the store")
        self.tag = tag


class WrongModule(StoreError):
    """A stored model was saved by another framework module than the one asked."""

    def __init__(self, tag: str, saved_by: str, wanted: str) -> None:
        super().__init__(
            f"Model '{tag}' was saved with {saved_by}, not {wanted}; "
            f"load it with {saved_by}.load_model"
        )
        self.tag = tag
        self.saved_by = saved_by
        self.wanted = wanted


class InvalidModel(StoreError):
    """A model cannot be saved as given (a missing method, a bad argument)."""


class StoreWarning(UserWarning):
    """A stored model may not work here: a requirement or framework version
    differs from what the model was saved with, or is missing."""
