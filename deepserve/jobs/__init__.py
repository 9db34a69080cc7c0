"""Training-job records in a database that outlives the server.

One :class:`JobStore` per server. It records each training (arguments,
status, result, error, times) and its captured output in any database
SQLAlchemy reaches: an SQLite file by default, PostgreSQL when several
replicas share their jobs. Protocol-neutral: nothing here knows about HTTP.

Every database call runs in the store's own threads, never in the event
loop. A server marks its running jobs with its owner id and refreshes their
heartbeat every few seconds; any server that opens or shares the database
marks ``interrupted`` the running jobs whose heartbeat went stale, so a
crashed replica's jobs do not look alive forever, and a live replica's jobs
are never touched.

The modules: :mod:`~deepserve.jobs.records` (the values recorded),
:mod:`~deepserve.jobs.schema` (tables, engine set-up and migrations),
:mod:`~deepserve.jobs.database` (every read and write, blocking),
:mod:`~deepserve.jobs.recovery` (the ends kept for the next start),
:mod:`~deepserve.jobs.store` (:class:`JobStore`, the asynchronous API) and
:mod:`~deepserve.jobs.trainings` (:class:`Trainings`, one served model's
trainings: run, watched, stopped and recorded).
"""

from __future__ import annotations

from deepserve.jobs.records import (
    INTERRUPTED_BY_LOSS,
    INTERRUPTED_BY_SHUTDOWN,
    STATUSES,
    JobPage,
    LogEntry,
    LogPage,
    TrainingJob,
)
from deepserve.jobs.schema import SCHEMA_VERSION
from deepserve.jobs.store import JobStore
from deepserve.jobs.trainings import Trainings

__all__ = [
    "INTERRUPTED_BY_LOSS",
    "INTERRUPTED_BY_SHUTDOWN",
    "SCHEMA_VERSION",
    "STATUSES",
    "JobPage",
    "JobStore",
    "LogEntry",
    "LogPage",
    "TrainingJob",
    "Trainings",
]
