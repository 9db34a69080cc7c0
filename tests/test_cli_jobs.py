"""Training jobs across server restarts and replicas: real ``deepserve run``
servers sharing a real SQLite file (or a real PostgreSQL database)."""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deepserve.jobs import INTERRUPTED_BY_LOSS, INTERRUPTED_BY_SHUTDOWN
from tests.conftest import subprocess_env
from tests.servers import Server, gone

DEADLINE = 60.0
TRAIN = "/v2/models/chatty/train/"

Serve = Callable[[Path | str], Server]


@pytest.fixture
def serve(fake_site: Path) -> Iterator[Serve]:
    """Start servers of the chatty model on a job database file; fast
    heartbeats, so that a lost server's jobs are noticed in seconds."""
    started: list[Server] = []

    def start(database: Path | str) -> Server:
        args = [
            "--model-name", "chatty",
            "--jobs-database", str(database),
            "--jobs-heartbeat-interval", "0.2",
            "--jobs-heartbeat-timeout", "1.5",
        ]  # fmt: skip
        server = Server(args, subprocess_env(fake_site))
        started.append(server)
        server.wait_ready("")
        return server

    yield start
    for server in started:
        kill9(server)


def kill9(server: Server) -> None:
    """``kill -9`` the server: nothing gets to record anything."""
    server.kill()


def call(server: Server, method: str, path: str, **params: Any) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    req = urllib.request.Request(server.base + path + query, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def wait_status(server: Server, uuid: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        job: dict[str, Any] = call(server, "GET", TRAIN + uuid)
        if job["status"] == wanted:
            return job
        assert time.monotonic() < deadline, f"still {job['status']}: {job}"
        time.sleep(0.1)


def wait_line(server: Server, uuid: str, text: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while text not in log_texts(server, uuid):
        assert time.monotonic() < deadline, f"never logged {text!r}"
        time.sleep(0.1)


def log_texts(server: Server, uuid: str) -> list[str]:
    return [e["text"] for e in call(server, "GET", f"{TRAIN}{uuid}/logs")["logs"]]


def start_long(server: Server, tmp_path: Path) -> tuple[str, int]:
    pidfile = tmp_path / f"train-{time.monotonic_ns()}.pid"
    job = call(server, "POST", TRAIN, seconds=120, pidfile=str(pidfile))
    wait_line(server, job["uuid"], "waiting")
    return job["uuid"], int(pidfile.read_text())


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 20
    while not gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.1)


def test_jobs_survive_a_restart(serve, tmp_path):
    database = tmp_path / "jobs.sqlite"
    first = serve(database)
    done = call(first, "POST", TRAIN, lines=2)
    ended = wait_status(first, done["uuid"], "done")
    running, pid = start_long(first, tmp_path)

    out = first.stop()  # SIGTERM: an orderly shutdown
    assert first.proc.returncode == 0, out
    wait_gone(pid)

    second = serve(database)
    listed = {j["uuid"]: j for j in call(second, "GET", TRAIN)}
    assert list(listed) == [done["uuid"], running]
    again = listed[done["uuid"]]
    assert again == ended
    assert again["result"]["output"]["lines"] == 2
    assert again["args"] == done["args"]
    assert "the end" in log_texts(second, done["uuid"])

    interrupted = listed[running]
    assert interrupted["status"] == "interrupted"
    assert interrupted["message"] == INTERRUPTED_BY_SHUTDOWN
    assert "duration" in interrupted and "finish_date" in interrupted
    assert "waiting" in log_texts(second, running)
    assert call(second, "GET", TRAIN, status="interrupted") == [interrupted]


def test_a_killed_servers_training_is_interrupted_after_a_restart(serve, tmp_path):
    database = tmp_path / "jobs.sqlite"
    first = serve(database)
    uuid, pid = start_long(first, tmp_path)

    kill9(first)
    wait_gone(pid)  # the training process follows its server
    assert call_raw(database, uuid) == "running"

    second = serve(database)
    job = wait_status(second, uuid, "interrupted")

    assert job["message"] == INTERRUPTED_BY_LOSS
    assert "waiting" in log_texts(second, uuid)


def test_a_replica_leaves_live_jobs_alone_and_notices_lost_ones(serve, tmp_path):
    database = tmp_path / "jobs.sqlite"
    owner = serve(database)
    replica = serve(database)
    uuid, pid = start_long(owner, tmp_path)

    # Several heartbeat timeouts pass: the owner's heartbeats keep its job
    # alive in the replica's eyes.
    time.sleep(4)
    seen = call(replica, "GET", TRAIN + uuid)
    assert seen["status"] == "running"
    assert "waiting" in log_texts(replica, uuid)
    assert [j["uuid"] for j in call(replica, "GET", TRAIN, status="running")] == [uuid]
    assert not gone(pid)

    kill9(owner)
    job = wait_status(replica, uuid, "interrupted")

    assert job["message"] == INTERRUPTED_BY_LOSS
    wait_gone(pid)
    assert os.path.exists(database)


def call_raw(database: Path, uuid: str) -> str:
    """A job's status read from the file itself, with no server."""
    import sqlite3

    with sqlite3.connect(database) as conn:
        (status,) = conn.execute(
            "SELECT status FROM deepserve_jobs WHERE id = ?", (uuid,)
        ).fetchone()
    conn.close()
    return str(status)


@pytest.mark.parametrize("problem", ["newer", "unusable", "no driver", "not a url"])
def test_a_database_the_server_cannot_use_stops_it_with_one_line(
    fake_site, tmp_path, problem
):
    import sqlite3
    import subprocess

    from tests.servers import DEEPSERVE, free_port

    if problem == "newer":
        database = str(tmp_path / "jobs.sqlite")
        with sqlite3.connect(database) as conn:
            conn.execute("CREATE TABLE deepserve_schema (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO deepserve_schema VALUES (99)")
        conn.close()
        expected = "schema version 99, newer than this deepserve understands"
    elif problem == "unusable":
        database = "nosuchdialect://somewhere/jobs"
        expected = "Cannot use job database 'nosuchdialect://somewhere/jobs'"
    elif problem == "no driver":  # the password never reaches the log
        database = "postgresql+nosuchdriver://me:s3cretpw@db.example.org/jobs"
        expected = (
            "Cannot use job database 'postgresql+nosuchdriver://me:***@"
            "db.example.org/jobs': Can't load plugin"
        )
    else:
        database = "postgresql://me:s3cretpw@db.example.org:port/jobs"
        expected = (
            "Cannot use job database 'postgresql://...': not a database URL "
            "SQLAlchemy can read"
        )

    result = subprocess.run(
        [*DEEPSERVE, "run", "--model-name", "chatty",
         "--listen-port", str(free_port()), "--jobs-database", database],
        env=subprocess_env(fake_site), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("deepserve run: error: ")
    assert expected in lines[0]
    assert "s3cretpw" not in result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_training_is_cancelled_through_any_replica(serve, tmp_path, request, backend):
    if backend == "sqlite":
        database: Path | str = tmp_path / "jobs.sqlite"
    else:
        database = request.getfixturevalue("postgres").new_database()
    owner = serve(database)
    replica = serve(database)
    uuid, pid = start_long(owner, tmp_path)

    # The replica asks through the database; the owner stops it at its next
    # heartbeat, and the replica's answer waits for that.
    job = call(replica, "DELETE", TRAIN + uuid)

    assert job["status"] == "cancelled", job
    assert job["message"] == "Cancelled by a client"
    wait_gone(pid)
    assert call(owner, "GET", TRAIN + uuid) == job
    # Cancelling what has ended answers it as it is.
    assert call(replica, "DELETE", TRAIN + uuid) == job
