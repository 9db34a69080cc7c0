"""A throwaway PostgreSQL server for the tests that share jobs through one.

:func:`postgres` starts one server per test session, in a temporary
directory, listening on a Unix socket only, and stops and removes it at the
end. Each test asks :meth:`Cluster.new_database` for an empty database of
its own. ``DEEPSERVE_TEST_POSTGRES`` may name a server of your own instead
(a libpq connection string, e.g. ``host=/run/postgresql user=me``; its user
must be allowed to create databases).

Tests that need PostgreSQL are skipped, saying why, when neither the server
programs (``initdb``, ``pg_ctl``: Debian's ``postgresql`` package) nor the
``psycopg`` driver are installed. PostgreSQL refuses to run as root, so
under root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV = "DEEPSERVE_TEST_POSTGRES"
#: The server's superuser (trusted on its socket only).
USER = "deepserve"


class Cluster:
    """A PostgreSQL server reached with ``conninfo``."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._names = itertools.count()

    def new_database(self) -> str:
        """Create an empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"deepserve_test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.conninfo, dbname="postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        params = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        params["dbname"] = name
        query = "&".join(f"{k}={v}" for k, v in params.items() if k != "dbname")
        return f"postgresql+psycopg:///{name}?{query}"


def _program(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or where Debian puts it."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return versions[-1] if versions else None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.getuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str]) -> None:
    done = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL server for the session (see the module's docstring)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed")
    given = os.environ.get(ENV)
    if given:
        yield Cluster(given)
        return
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    if os.getuid() == 0:
        try:
            server_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user")
    # Short: the socket's path must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="dspg-"))
    if os.getuid() == 0:
        os.chown(root, server_user.pw_uid, server_user.pw_gid)
    data = root / "data"
    try:
        _run([initdb, "-D", str(data), "-U", USER, "-A", "trust", "-N", "-E", "UTF8"])
        options = f"-k {root} -c listen_addresses='' -F"
        _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
              "start"])  # fmt: skip
        yield Cluster(f"host={root} user={USER}")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
