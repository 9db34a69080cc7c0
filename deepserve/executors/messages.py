"""What the server and its worker processes say to each other.

A worker process is spawned with one :class:`WorkerStart`. Every value
sent down its pipe is one of the types below, and so is every log record a
job process sends up its log pipe; nothing else crosses. The server sends
:data:`ToWorker` messages, the worker answers with :data:`FromWorker` ones.

A worker answers its calls in the order they came, one answer each
(:class:`Answer`, :class:`Failure` or :class:`Skipped`): the first call in
its pipe is the one answered, so answers carry no call id.

They are :class:`~typing.NamedTuple` classes: a prediction's round trip
pickles two of them, and a named tuple pickles as little more than the bare
tuple it is (a reference to its class, then its fields).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NamedTuple

from deepserve.exceptions import DeepserveError
from deepserve.loader import ModelRef
from deepserve.model import Method
from deepserve.settings import LogFormat

if TYPE_CHECKING:  # capture.py reads LogLine from here
    from deepserve.executors.capture import Capture

# -- to a worker being spawned -----------------------------------------------


class WorkerStart(NamedTuple):
    """What a worker process is spawned with, besides its pipe: the
    argument of :func:`deepserve.executors.worker.main`."""

    #: The model it builds.
    ref: ModelRef
    #: Whether it warms the model before it reports :class:`Ready`.
    warm: bool
    #: The server's pid: the worker exits once that process is gone.
    parent_pid: int
    #: The server's log level and format, which the worker's logging takes.
    log_level: int
    log_format: LogFormat = "text"
    #: A job process's output pipes; ``None``: the server's stdout and stderr.
    capture: Capture | None = None
    #: Lead a process group (a session) of its own, so that the processes a
    #: training starts stop with it when it is cancelled.
    own_group: bool = False


# -- from the server ---------------------------------------------------------


class Call(NamedTuple):
    """Run ``method`` with ``kwargs``; while it runs, ``request_id`` tags
    the worker's log lines."""

    id: int
    method: Method
    kwargs: dict[str, Any]
    request_id: str | None


class Cancel(NamedTuple):
    """Skip call ``id`` if it has not started yet."""

    id: int


ToWorker = Call | Cancel


# -- from the worker ---------------------------------------------------------


class Ready(NamedTuple):
    """The model is built (and warmed, if asked): calls may come."""

    pid: int


class StartFailed(NamedTuple):
    """The model could not be built or warmed; the worker exits."""

    error: DeepserveError


class Answer(NamedTuple):
    """What the call returned."""

    value: Any


class Failure(NamedTuple):
    """Why the call failed."""

    error: DeepserveError


class Skipped(NamedTuple):
    """The call was cancelled before it started."""


FromWorker = Ready | StartFailed | Answer | Failure | Skipped


# -- across a Ray cluster (the ``ray`` executor) ------------------------------


class ShippedFile(NamedTuple):
    """An uploaded file on its way to a Ray replica or training actor, which
    writes it to a file of its own and passes the model an
    :class:`~deepserve.model.UploadedFile` with that path."""

    name: str | None
    content_type: str | None
    original_filename: str | None
    #: The file's bytes, or a Ray object reference to them (large files go
    #: through Ray's object store, read from disk once).
    data: Any


class ReturnedBytes(NamedTuple):
    """A file a model on Ray returned, with its bytes: the server writes it
    to a call space of its own and sends it from there."""

    #: ``path`` for a bare path, ``tuple`` for a ``ReturnedFile``-like one.
    kind: str
    #: The file's base name on the replica.
    basename: str
    name: str | None
    content_type: str | None
    original_filename: str | None
    data: bytes


class Expired(NamedTuple):
    """A Ray replica's answer to a call that ran past its deadline: the
    replica exits right after sending it, so that the work stops."""

    error: DeepserveError
    #: The replica's Ray actor id (its death is counted once).
    replica: str


# -- up a job process's log pipe ---------------------------------------------


class LogLine(NamedTuple):
    """One log record of a job process, written to its log pipe as one line
    of JSON (the server reads that pipe line by line, as it reads the
    process's stdout and stderr)."""

    time: float
    level: str
    text: str

    def encode(self) -> bytes:
        """The line, newline included."""
        line = json.dumps({"time": self.time, "level": self.level, "text": self.text})
        return line.encode() + b"\n"

    @classmethod
    def decode(cls, line: str) -> LogLine:
        """:raises ValueError: when ``line`` is not one."""
        try:
            record: Any = json.loads(line)
            return cls(float(record["time"]), str(record["level"]), str(record["text"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a log line: {line!r}") from exc
