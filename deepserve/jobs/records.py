"""What the job store records: training jobs and their output, as values.

Plain frozen dataclasses and the constants they take; no database here.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

#: Every status a job can have; only ``running`` ever changes.
STATUSES = ("running", "done", "error", "cancelled", "interrupted")
#: Why a job is ``interrupted``.
INTERRUPTED_BY_SHUTDOWN = "Interrupted: the server stopped while it ran"
INTERRUPTED_BY_LOSS = "Interrupted: the server running it stopped answering"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingJob:
    """One training run as recorded; times are timezone-aware (UTC).

    :param args: the arguments as shown to clients (files by name).
    :param message: why it failed, was cancelled or interrupted.
    :param owner: the server instance that ran it.
    :param log_dropped: output entries dropped to honour the bound.
    """

    id: str
    model: str
    status: str
    args: dict[str, Any]
    created: datetime.datetime
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None
    duration: datetime.timedelta | None = None
    result: Any = None
    message: str | None = None
    owner: str = ""
    log_dropped: int = 0


@dataclasses.dataclass(frozen=True)
class TrainingEnd:
    """How a training ended, until the database has it."""

    job_id: str
    status: str
    result: Any
    message: str | None
    #: When it ended (seconds since the epoch).
    when: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogEntry:
    """One line of a job's output, or one of its log records.

    :param stream: ``stdout``, ``stderr`` or ``log``.
    :param time: seconds since the epoch.
    :param level: the record's level name (``log`` entries only).
    :param seq: its position, once stored; a cursor for ``since``.
    """

    stream: str
    time: float
    text: str
    level: str | None = None
    seq: int | None = None

    @property
    def size(self) -> int:
        return len(self.text.encode("utf-8", "replace"))


@dataclasses.dataclass(frozen=True)
class JobPage:
    """Some of a model's jobs, and how many there are in all."""

    jobs: list[TrainingJob]
    total: int


@dataclasses.dataclass(frozen=True)
class LogPage:
    """Entries of a job's output after a cursor.

    :param next: the cursor to pass as ``since`` for the entries after these.
    :param dropped: entries dropped (the oldest) to keep within the bound.
    """

    job: TrainingJob
    entries: list[LogEntry]
    next: int
    dropped: int
