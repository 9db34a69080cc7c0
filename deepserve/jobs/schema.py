"""The job database: its tables, engine set-up, schema versions and migrations.

The schema is versioned in table ``deepserve_schema``; opening a database
brings it to :data:`SCHEMA_VERSION` one :data:`MIGRATIONS` step at a time and
refuses one newer than this code.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from deepserve.exceptions import JobStoreError

LOG = logging.getLogger(__name__)

#: The schema this code reads and writes (see :data:`MIGRATIONS`).
SCHEMA_VERSION = 3
#: Seconds SQLite waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT = 15.0
#: How long a call made for a client waits for a locked SQLite database
#: before the client gets a 503 with Retry-After (see :func:`busy_timeout`).
QUICK_BUSY_TIMEOUT = 1.0

meta = sa.MetaData()
schema_table = sa.Table(
    "deepserve_schema", meta, sa.Column("version", sa.Integer, nullable=False)
)
jobs_table = sa.Table(
    "deepserve_jobs",
    meta,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("started", sa.Float),
    sa.Column("finished", sa.Float),
    sa.Column("duration", sa.Float),
    sa.Column("owner", sa.String(255), nullable=False),
    # Version 2:
    sa.Column("heartbeat", sa.Float),
    sa.Column("log_size", sa.Integer, nullable=False, server_default="0"),
    sa.Column("log_dropped", sa.Integer, nullable=False, server_default="0"),
    # Version 3: when a client asked, through another replica, to cancel it.
    sa.Column("cancel_requested", sa.Float),
)
# Step 2 creates this table from this definition (so a new database gets the
# 64-bit seq at once, and step 3's widening does nothing there). To change it
# otherwise, first make _v2 create the table as it is now, then add a step.
logs_table = sa.Table(
    "deepserve_job_logs",
    meta,
    # 64 bits everywhere (version 3): SQLite's INTEGER already is, and its
    # AUTOINCREMENT needs that exact type name.
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("stream", sa.String(16), nullable=False),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("level", sa.String(16)),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    # Sequence numbers are cursors: never reuse one, even after deletes.
    sqlite_autoincrement=True,
)


def _v1(conn: sa.Connection) -> None:
    """The first schema: job records only."""
    conn.execute(
        sa.text(
            "CREATE TABLE deepserve_jobs ("
            " id VARCHAR(64) NOT NULL PRIMARY KEY,"
            " model VARCHAR(255) NOT NULL,"
            " status VARCHAR(16) NOT NULL,"
            " args TEXT NOT NULL,"
            " result TEXT,"
            " error TEXT,"
            " created FLOAT NOT NULL,"
            " started FLOAT,"
            " finished FLOAT,"
            " duration FLOAT,"
            " owner VARCHAR(255) NOT NULL)"
        )
    )
    conn.execute(
        sa.text(
            "CREATE INDEX ix_deepserve_jobs_model_created"
            " ON deepserve_jobs (model, created)"
        )
    )


def _v2(conn: sa.Connection) -> None:
    """Owner heartbeats, and captured output with its bound."""
    for column in (
        "heartbeat FLOAT",
        "log_size INTEGER NOT NULL DEFAULT 0",
        "log_dropped INTEGER NOT NULL DEFAULT 0",
    ):
        conn.execute(sa.text(f"ALTER TABLE deepserve_jobs ADD COLUMN {column}"))
    logs_table.create(conn)


def _v3(conn: sa.Connection) -> None:
    """Cancel requests, for a training that another replica runs; 64-bit
    log cursors on PostgreSQL, whose ``SERIAL`` ran out after 2**31 lines."""
    conn.execute(
        sa.text("ALTER TABLE deepserve_jobs ADD COLUMN cancel_requested FLOAT")
    )
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("ALTER TABLE deepserve_job_logs ALTER COLUMN seq TYPE BIGINT")
        )
        sequence = conn.scalar(
            sa.text("SELECT pg_get_serial_sequence('deepserve_job_logs', 'seq')")
        )
        if sequence:
            conn.execute(sa.text(f"ALTER SEQUENCE {sequence} AS BIGINT"))


#: Migration steps in order: step ``i`` turns version ``i`` into ``i + 1``.
MIGRATIONS: tuple[Callable[[sa.Connection], None], ...] = (_v1, _v2, _v3)
assert len(MIGRATIONS) == SCHEMA_VERSION


def _shown(url_text: str) -> str:
    """``url_text`` fit for a log line: any password replaced by ``***``."""
    try:
        return sa.make_url(url_text).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        scheme, sep, _ = url_text.partition("://")
        return f"{scheme}://..." if sep else "(unreadable)"


def make_engine(url_text: str) -> tuple[sa.Engine, int]:
    """An engine for ``url_text`` and how many threads may use it at once.

    :raises JobStoreError: for a URL SQLAlchemy cannot use.
    """
    try:
        url = sa.make_url(url_text)
        if url.get_backend_name() != "sqlite":
            return sa.create_engine(url, pool_pre_ping=True), 4
        if url.database in (None, "", ":memory:"):
            # One connection shared by one thread: the only way an
            # in-memory database is the same database for every call.
            engine = sa.create_engine(
                url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
            return engine, 1
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise JobStoreError(
            f"Cannot use job database '{_shown(url_text)}': {exc}"
        ) from exc
    except (sa.exc.ArgumentError, ValueError) as exc:
        # SQLAlchemy's message quotes the whole URL, password included.
        raise JobStoreError(
            f"Cannot use job database '{_shown(url_text)}': not a database URL "
            "SQLAlchemy can read"
        ) from exc
    except OSError as exc:
        raise JobStoreError(
            f"Cannot create the directory of job database '{_shown(url_text)}': {exc}"
        ) from exc
    sa.event.listen(engine, "connect", _sqlite_setup)
    sa.event.listen(engine, "checkout", _sqlite_checkout)
    return engine, 4


_busy = threading.local()


@contextlib.contextmanager
def busy_timeout(seconds: float) -> Iterator[None]:
    """How long the calls this thread makes wait for a locked SQLite
    database, in this block (others: :data:`SQLITE_BUSY_TIMEOUT`)."""
    before = getattr(_busy, "seconds", None)
    _busy.seconds = seconds
    try:
        yield
    finally:
        _busy.seconds = before


def _sqlite_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    seconds = getattr(_busy, "seconds", None) or SQLITE_BUSY_TIMEOUT
    if record.info.get("busy_timeout") != seconds:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")
        cursor.close()
        record.info["busy_timeout"] = seconds


def _sqlite_setup(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL: readers never wait for the writer, and replicas on one host can
    # share the file; the busy timeout makes writers queue, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrate(engine: sa.Engine, attempts: int = 3) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, one step at a time.

    Replicas starting together may race to migrate: the loser's transaction
    fails, and it tries again, finding the work done.

    :raises JobStoreError: when the database's schema is newer, or it
        cannot be migrated.
    """
    for attempt in range(attempts):
        try:
            _migrate_once(engine)
            return
        except _Newer:
            raise
        except JobStoreError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))  # in the store's thread


def _migrate_once(engine: sa.Engine) -> None:
    try:
        with engine.begin() as conn:
            version = _version(conn)
            if version > SCHEMA_VERSION:
                raise _Newer(
                    f"The job database {engine.url.render_as_string()} has schema "
                    f"version {version}, newer than this deepserve understands "
                    f"({SCHEMA_VERSION}): upgrade deepserve, or use another database"
                )
            for step in range(version, SCHEMA_VERSION):
                LOG.debug("Migrating the job database to schema version %d", step + 1)
                MIGRATIONS[step](conn)
            if version == 0:
                conn.execute(schema_table.insert().values(version=SCHEMA_VERSION))
            elif version < SCHEMA_VERSION:
                conn.execute(schema_table.update().values(version=SCHEMA_VERSION))
        # A new database is no news; an upgrade of one that holds jobs is.
        if version == 0:
            LOG.debug("Created the job database %s", engine.url.render_as_string())
        elif version < SCHEMA_VERSION:
            LOG.info(
                "Upgraded the job database %s from schema version %d to %d",
                engine.url.render_as_string(),
                version,
                SCHEMA_VERSION,
            )
    except sa.exc.SQLAlchemyError as exc:
        raise JobStoreError(
            f"Cannot open job database {engine.url.render_as_string()}: {exc}"
        ) from exc


class _Newer(JobStoreError):
    """The database is newer than this code: trying again cannot help."""


def _version(conn: sa.Connection) -> int:
    if not sa.inspect(conn).has_table(schema_table.name):
        schema_table.create(conn)
        return 0
    version = conn.scalar(sa.select(sa.func.max(schema_table.c.version)))
    return int(version or 0)
