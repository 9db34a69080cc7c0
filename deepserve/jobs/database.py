"""The job database, synchronously: every read and write of the job store.

Each method blocks: :class:`~deepserve.jobs.store.JobStore` runs them in
its own threads, never in the event loop.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from typing import Any

import sqlalchemy as sa

from deepserve.exceptions import JobNotFound
from deepserve.jobs.records import (
    INTERRUPTED_BY_LOSS,
    INTERRUPTED_BY_SHUTDOWN,
    JobPage,
    LogEntry,
    LogPage,
    TrainingEnd,
    TrainingJob,
)
from deepserve.jobs.schema import jobs_table, logs_table
from deepserve.model import json_default
from deepserve.settings import JobSettings

#: The largest integer a database holds (SQLite, PostgreSQL: 64 bits).
#: Offsets and cursors past it are past every row, and so are read as it:
#: the database driver would refuse them.
MAX_ROW_NUMBER = 2**63 - 1


class JobDatabase:
    """One server's reads and writes of a job database.

    :param engine: connected to a database at the current schema version.
    :param owner: the server instance whose jobs these are.
    :param settings: the bounds and times (``max_log_bytes``,
        ``heartbeat_timeout``, ``retention_days``).
    """

    def __init__(self, engine: sa.Engine, *, owner: str, settings: JobSettings) -> None:
        self.engine = engine
        self.owner = owner
        self.settings = settings

    def add(self, job: TrainingJob) -> None:
        """Insert ``job`` as running, this server's, with a fresh heartbeat."""
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                jobs_table.insert().values(
                    id=job.id,
                    model=job.model,
                    status="running",
                    args=_dumps(job.args),
                    created=job.created.timestamp(),
                    owner=self.owner,
                    heartbeat=now,
                )
            )

    def mark_started(self, job_id: str, when: float) -> None:
        """Record when the job's training began."""
        with self.engine.begin() as conn:
            conn.execute(
                jobs_table.update()
                .where(jobs_table.c.id == job_id)
                .values(started=when)
            )

    def finish(
        self, job_id: str, status: str, result: Any, message: str | None, now: float
    ) -> None:
        """Record how a job of this server ended, at ``now``."""
        j = jobs_table.c
        with self.engine.begin() as conn:
            conn.execute(
                jobs_table.update()
                # Ours only: a replica never overwrites another's job.
                .where(j.id == job_id, j.owner == self.owner)
                .values(
                    status=status,
                    result=None if result is None else _dumps(result),
                    error=message,
                    finished=now,
                    duration=now - j.created,
                    heartbeat=now,
                )
            )

    def recover(self, ends: list[TrainingEnd]) -> int:
        """Record ends kept in a recovery file by a server that stopped
        before the database took them, over ``running`` or the
        ``interrupted`` a sweep or shutdown wrote meanwhile, whichever
        server owns the job now. How many jobs were updated."""
        j = jobs_table.c
        done = 0
        with self.engine.begin() as conn:
            for end in ends:
                result = conn.execute(
                    jobs_table.update()
                    .where(j.id == end.job_id, j.status.in_(("running", "interrupted")))
                    .values(
                        status=end.status,
                        result=None if end.result is None else _dumps(end.result),
                        error=end.message,
                        finished=end.when,
                        duration=end.when - j.created,
                        heartbeat=end.when,
                    )
                )
                done += int(result.rowcount or 0)
        return done

    def get(self, model: str, job_id: str) -> TrainingJob:
        """:raises JobNotFound: when ``model`` has no such job."""
        j = jobs_table.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(jobs_table).where(j.id == job_id, j.model == model)
            ).first()
        if row is None:
            raise JobNotFound(model, job_id)
        return _job(row)

    def list_jobs(
        self, model: str, status: str | None, limit: int | None, offset: int
    ) -> JobPage:
        """``model``'s jobs, oldest first, optionally of one status."""
        j = jobs_table.c
        where = [j.model == model]
        if status is not None:
            where.append(j.status == status)
        query = sa.select(jobs_table).where(*where).order_by(j.created, j.id)
        with self.engine.connect() as conn:
            total = conn.scalar(
                sa.select(sa.func.count()).select_from(jobs_table).where(*where)
            )
            rows = conn.execute(
                query.offset(min(offset, MAX_ROW_NUMBER)).limit(limit)
            ).all()
        return JobPage([_job(r) for r in rows], int(total or 0))

    def count_by_status(self) -> dict[tuple[str, str], int]:
        """How many jobs each model has in each status."""
        j = jobs_table.c
        query = sa.select(j.model, j.status, sa.func.count()).group_by(
            j.model, j.status
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {(str(model), str(status)): int(n) for model, status, n in rows}

    def append_logs(self, job_id: str, entries: list[LogEntry], dropped: int) -> None:
        """Store ``entries``, then drop the job's oldest past ``max_log_bytes``."""
        limit = self.settings.max_log_bytes
        kept = [e for e in entries if e.size <= limit] if limit else []
        dropped += len(entries) - len(kept)
        j, lg = jobs_table.c, logs_table.c
        with self.engine.begin() as conn:
            added = sum(e.size for e in kept)
            conn.execute(
                jobs_table.update()
                .where(j.id == job_id)
                .values(
                    log_size=j.log_size + added, log_dropped=j.log_dropped + dropped
                )
            )
            if kept:
                conn.execute(
                    logs_table.insert(),
                    [
                        {
                            "job_id": job_id,
                            "stream": e.stream,
                            "time": e.time,
                            "level": e.level,
                            "text": e.text,
                            "size": e.size,
                        }
                        for e in kept
                    ],
                )
            size = conn.scalar(sa.select(j.log_size).where(j.id == job_id)) or 0
            if size <= limit:
                return
            # Past the bound: drop the oldest entries until within it.
            excess, cut, count = size - limit, 0, 0
            rows = conn.execute(
                sa.select(lg.seq, lg.size).where(lg.job_id == job_id).order_by(lg.seq)
            )
            for seq, entry_size in rows:
                excess -= entry_size
                cut, count = seq, count + 1
                if excess <= 0:
                    break
            rows.close()
            freed = conn.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(lg.size), 0)).where(
                    lg.job_id == job_id, lg.seq <= cut
                )
            )
            conn.execute(logs_table.delete().where(lg.job_id == job_id, lg.seq <= cut))
            conn.execute(
                jobs_table.update()
                .where(j.id == job_id)
                .values(
                    log_size=j.log_size - (freed or 0),
                    log_dropped=j.log_dropped + count,
                )
            )

    def logs(self, model: str, job_id: str, since: int, limit: int) -> LogPage:
        """Up to ``limit`` of the job's entries after cursor ``since``."""
        job = self.get(model, job_id)
        lg = logs_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(logs_table)
                .where(lg.job_id == job_id, lg.seq > _row_number(since))
                .order_by(lg.seq)
                .limit(limit)
            ).all()
        entries = [
            LogEntry(
                stream=r.stream, time=r.time, text=r.text, level=r.level, seq=r.seq
            )
            for r in rows
        ]
        cursor = entries[-1].seq if entries else since
        assert cursor is not None
        return LogPage(job, entries, cursor, job.log_dropped)

    def request_cancel(self, model: str, job_id: str) -> bool:
        """Ask the server running a job to cancel it; false when the job is
        not running (any more).

        :raises JobNotFound: when ``model`` has no such job.
        """
        j = jobs_table.c
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(j.id == job_id, j.model == model, j.status == "running")
                .values(
                    cancel_requested=sa.func.coalesce(j.cancel_requested, time.time())
                )
            )
        if result.rowcount:
            return True
        self.get(model, job_id)  # JobNotFound, or it just ended
        return False

    def beat(self, live: frozenset[str]) -> set[str]:
        """Refresh the heartbeat of this server's ``live`` jobs, :meth:`sweep`,
        and forget jobs past the retention time; which of the ``live`` jobs a
        client asked another server to cancel."""
        now = time.time()
        j = jobs_table.c
        cancel: set[str] = set()
        if live:
            mine = (j.owner == self.owner, j.id.in_(live), j.status == "running")
            with self.engine.begin() as conn:
                conn.execute(jobs_table.update().where(*mine).values(heartbeat=now))
                cancel = set(
                    conn.scalars(
                        sa.select(j.id).where(*mine, j.cancel_requested.is_not(None))
                    )
                )
        self.sweep(live, now)
        self._forget_old(now)
        return cancel

    def sweep(self, live: frozenset[str], now: float | None = None) -> int:
        """Interrupt running jobs whose heartbeat is stale: other servers',
        and this one's whose end could not be recorded."""
        now = now or time.time()
        j = jobs_table.c
        last_seen = sa.func.coalesce(j.heartbeat, j.started, j.created)
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(
                    j.status == "running",
                    sa.or_(j.owner != self.owner, j.id.not_in(live)),
                    last_seen < now - self.settings.heartbeat_timeout,
                )
                # It stopped some time after its last heartbeat: the best
                # estimate of when there is.
                .values(
                    status="interrupted",
                    error=INTERRUPTED_BY_LOSS,
                    finished=last_seen,
                    duration=last_seen - j.created,
                )
            )
            return int(result.rowcount or 0)

    def interrupt_own(self) -> int:
        """Mark this server's running jobs ``interrupted``; how many there were."""
        now = time.time()
        j = jobs_table.c
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs_table.update()
                .where(j.owner == self.owner, j.status == "running")
                .values(
                    status="interrupted",
                    error=INTERRUPTED_BY_SHUTDOWN,
                    finished=now,
                    duration=now - j.created,
                    heartbeat=now,
                )
            )
            return int(result.rowcount or 0)

    def _forget_old(self, now: float) -> None:
        days = self.settings.retention_days
        if not days:
            return
        j, lg = jobs_table.c, logs_table.c
        old = sa.select(j.id).where(
            j.status != "running", j.finished < now - days * 86400
        )
        with self.engine.begin() as conn:
            conn.execute(logs_table.delete().where(lg.job_id.in_(old)))
            conn.execute(jobs_table.delete().where(j.id.in_(old)))


# -- values -------------------------------------------------------------------


def _job(row: sa.Row[Any]) -> TrainingJob:
    return TrainingJob(
        id=row.id,
        model=row.model,
        status=row.status,
        args=json.loads(row.args),
        created=_utc(row.created),
        started=None if row.started is None else _utc(row.started),
        finished=None if row.finished is None else _utc(row.finished),
        duration=None
        if row.duration is None
        else datetime.timedelta(seconds=row.duration),
        result=None if row.result is None else json.loads(row.result),
        message=row.error,
        owner=row.owner,
        log_dropped=row.log_dropped,
    )


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


#: NUL, and the surrogates that stand for undecodable bytes.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as every database stores it: PostgreSQL's text holds no NUL
    character, and no database lone surrogates (from undecodable bytes);
    both become replacement characters."""
    return _UNSTORABLE.sub("\ufffd", text)


def _dumps(value: Any) -> str:
    # Stored as clients would see it over HTTP (the same conversions).
    return json.dumps(value, default=json_default)


def _row_number(value: int) -> sa.BindParameter[int]:
    """``value`` as a 64-bit SQL integer, at most :data:`MAX_ROW_NUMBER`.

    64-bit even where the column it is compared with is narrower (a
    PostgreSQL ``INTEGER``, before schema version 3), so that a number past
    the column's range is past its rows instead of an error."""
    return sa.literal(min(value, MAX_ROW_NUMBER), sa.BigInteger)
