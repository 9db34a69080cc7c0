"""A real server's life: listening while warming, draining, shutting down.

Every test runs ``deepserve run`` in a subprocess with the ``slow`` fake
model (tests/fakes/fake_slow.py), whose warm-up and predictions wait for
files the test creates, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import subprocess_env, write_dist
from tests.servers import Server, children, gone

#: How long a test waits for something a server does.
DEADLINE = 60.0


@pytest.fixture
def serve(fake_site: Path, slow_site: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        split: bool = False,
        models: str = "slow",
    ) -> Server:
        env = {**subprocess_env(fake_site, slow_site), **(env or {})}
        server = Server(["--model-name", models, *args], env, split_stderr=split)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def call(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers, errors included."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE) as resp:
            return resp.status, json.load(resp), dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.load(err), dict(err.headers)


def predict_url(server: Server, **params: Any) -> str:
    query = urllib.parse.urlencode(params)
    return f"{server.base}/v2/models/slow/predict/?{query}"


def wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def workers_of(server: Server) -> list[int]:
    """The server's child processes: workers and multiprocessing's tracker."""
    pids = children(server.proc.pid)
    assert pids, "the server has no worker processes"
    return pids


def assert_all_gone(pids: list[int]) -> None:
    wait_until(lambda: all(gone(pid) for pid in pids), "the workers to exit")


def test_live_at_once_ready_only_once_warm(serve, tmp_path):
    gate = tmp_path / "warm"
    server = serve([], env={"FAKE_SLOW_WARM_GATE": str(gate)})
    server.wait_live()

    status, body, headers = call(server.base + "/v2/health/live")
    assert (status, body) == (200, {"live": True})
    assert headers["Cache-Control"] == "no-store"
    assert call(server.base + "/v2/health/ready")[:2] == (503, {"ready": False})
    status, body, _ = call(server.base + "/v2/models/slow/ready")
    assert (status, body) == (503, {"name": "slow", "ready": False})
    # A prediction before the model is warm: a clear 503 at once, no hang.
    status, body, _ = call(predict_url(server), method="POST")
    assert status == 503
    assert body["code"] == 503
    assert "'slow'" in body["message"] and "still starting" in body["message"]

    gate.touch()
    server.wait_ready()
    assert call(server.base + "/v2/health/ready")[:2] == (200, {"ready": True})
    status, body, _ = call(server.base + "/v2/models/slow/ready")
    assert (status, body) == (200, {"name": "slow", "ready": True})
    assert call(predict_url(server, seconds=0), method="POST")[0] == 200

    workers = workers_of(server)
    server.stop()
    assert server.proc.returncode == 0
    assert_all_gone(workers)


def test_signal_while_warming_stops_cleanly(serve, tmp_path):
    server = serve([], env={"FAKE_SLOW_WARM_GATE": str(tmp_path / "never")})
    server.wait_live()
    wait_until(lambda: len(children(server.proc.pid)) >= 2, "the worker to spawn")
    workers = children(server.proc.pid)
    out = server.stop()
    assert server.proc.returncode == 0, out
    assert "Traceback" not in out
    assert_all_gone(workers)


def test_sigterm_lets_requests_in_progress_finish(serve, tmp_path):
    marks, release = tmp_path / "marks", tmp_path / "release"
    marks.mkdir()
    server = serve(["--workers", "3", "--shutdown-grace", "60"])
    server.wait_ready()
    workers = workers_of(server)
    url = predict_url(server, marker=marks, release=release)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        running = [pool.submit(call, url, method="POST") for _ in range(3)]
        wait_until(lambda: len(list(marks.iterdir())) == 3, "3 running predictions")

        server.proc.send_signal(signal.SIGTERM)
        # During the grace period: not ready, new work refused with 503.
        wait_until(
            lambda: call(server.base + "/v2/health/ready")[0] == 503,
            "readiness to turn false",
        )
        assert call(server.base + "/v2/health/ready")[1] == {"ready": False}
        assert call(server.base + "/v2/models/slow/ready")[0] == 503
        assert call(server.base + "/v2/health/live")[0] == 200
        status, body, _ = call(predict_url(server), method="POST")
        assert status == 503 and "shutting down" in body["message"]
        assert server.proc.poll() is None  # still waiting for the three

        release.touch()
        answers = [f.result(timeout=DEADLINE) for f in running]
    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert len({body["predictions"]["pid"] for _, body, _ in answers}) == 3
    out = server.stop()
    assert server.proc.returncode == 0, out
    assert "SIGTERM received: shutting down" in out
    assert "Traceback" not in out
    assert_all_gone(workers)
    # Once the server is gone, connections are refused.
    with pytest.raises(urllib.error.URLError):
        call(server.base + "/v2/health/live")


def test_requests_past_the_grace_period_are_cut_off(serve, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    server = serve(["--shutdown-grace", "1"])
    server.wait_ready()
    workers = workers_of(server)
    # Never released: it would run for two minutes.
    url = predict_url(server, marker=marks, release=tmp_path / "never")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(call, url, method="POST")
        wait_until(lambda: any(marks.iterdir()), "the prediction to run")
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            running.result(timeout=DEADLINE)
    out = server.stop()
    assert server.proc.returncode == 0, out
    assert "Cutting off 1 request(s) still in progress" in out
    assert "Traceback" not in out
    assert_all_gone(workers)


def upload(url: str, content: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST ``content`` as the multipart file field ``data``."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="data"; '
            'filename="in.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(req, timeout=DEADLINE) as resp:
        return resp.status, json.load(resp), dict(resp.headers)


def test_shutdown_stops_trainings_and_removes_uploads(serve, tmp_path):
    uploads, pidfile = tmp_path / "uploads", tmp_path / "train.pid"
    uploads.mkdir()
    server = serve(
        ["--upload-dir", str(uploads), "--shutdown-grace", "1"],
        models="oldstyle,classy",
    )
    server.wait_ready()
    workers = workers_of(server)
    query = urllib.parse.urlencode({"seconds": 600, "pidfile": pidfile})
    status, job, _ = upload(f"{server.base}/v2/models/classy/train/?{query}", b"x")
    assert status == 200 and job["status"] == "running"
    wait_until(pidfile.exists, "the training to run")
    training = int(pidfile.read_text())
    url = f"{server.base}/v2/models/oldstyle/predict/?mode=sleep&text=600"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(upload, url, b"y" * 1000)
        # The training's upload and the prediction's, each in its directory.
        wait_until(lambda: len(list(uploads.iterdir())) == 2, "both uploads")
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            running.result(timeout=DEADLINE)
    out = server.stop()
    assert server.proc.returncode == 0, out
    assert "Stopping 1 training(s) of model 'classy'" in out
    assert "Traceback" not in out
    assert list(uploads.iterdir()) == []
    assert_all_gone([*workers, training])


def test_second_signal_ends_the_grace_period(serve, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    server = serve(["--shutdown-grace", "600"])
    server.wait_ready()
    workers = workers_of(server)
    url = predict_url(server, marker=marks, release=tmp_path / "never")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(call, url, method="POST")
        wait_until(lambda: any(marks.iterdir()), "the prediction to run")
        os.killpg(server.proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
        wait_until(
            lambda: call(server.base + "/v2/health/ready")[0] == 503,
            "the shutdown to begin",
        )
        os.killpg(server.proc.pid, signal.SIGINT)  # ...and again
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            running.result(timeout=DEADLINE)
    # Far sooner than the 600 s grace period: the test's timeout says so.
    out = server.finish(timeout=DEADLINE)
    assert server.proc.returncode == 0, out
    assert "SIGINT received again" in out
    assert "Traceback" not in out
    assert_all_gone(workers)


def test_json_logs_carry_request_ids(serve):
    server = serve(["--log-format", "json", "--workers", "1"], split=True)
    server.wait_ready()
    status, _, headers = call(
        predict_url(server, seconds=0),
        method="POST",
        headers={"X-Request-ID": "req-1234.abc"},
    )
    assert status == 200 and headers["X-Request-ID"] == "req-1234.abc"
    status, _, headers = call(server.base + "/v2/models/nope/ready")
    assert status == 404
    generated = headers["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    server.stop()
    assert server.proc.returncode == 0

    lines = [line for line in server.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    for record in records:
        assert {"time", "level", "logger", "message", "request_id"} <= set(record)
    access = [r for r in records if r["logger"] == "deepserve.access"]
    mine = [r for r in access if "/v2/models/slow/predict/" in r["message"]]
    assert [r["request_id"] for r in mine] == ["req-1234.abc"]
    missing = [r for r in access if "/v2/models/nope/ready" in r["message"]]
    assert [r["request_id"] for r in missing] == [generated]
    # The model's own log line, written by its worker process, is JSON too
    # and names the request the call served.
    (model_line,) = [r for r in records if r["logger"] == "fake_slow"]
    assert model_line["message"] == "sleeping 0.0 s"
    assert model_line["request_id"] == "req-1234.abc"
    assert any(r["message"] == "SIGTERM received: shutting down" for r in records)


def test_every_request_of_a_busy_turn_gets_its_own_access_line(serve):
    """Lines of the requests answered in one turn of the event loop are
    written together (access.py): none lost, none merged, each with its id,
    in the text format too."""
    server = serve(["--workers", "1", "--executor", "thread"], split=True)
    server.wait_ready()
    ids = [f"busy-{i}" for i in range(60)]

    def one(request_id: str) -> int:
        status, _, _ = call(
            predict_url(server, seconds=0),
            method="POST",
            headers={"X-Request-ID": request_id},
        )
        return status

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        assert set(pool.map(one, ids)) == {200}
    server.stop()
    assert server.proc.returncode == 0
    access = [
        line
        for line in server.stderr.splitlines()
        if " INFO deepserve.access [busy-" in line
    ]
    tagged = sorted(line.split("[", 1)[1].split("]", 1)[0] for line in access)
    assert tagged == sorted(ids)
    for line in access:
        assert line.endswith("ms") and '"POST /v2/models/slow/predict/' in line


def test_tokens_in_the_query_string_never_reach_the_log(serve, tmp_path):
    """A client that sends its token in the query string is refused (401),
    and the access log shows the request without the token."""
    token = "Tok-" + "9" * 30
    token_file = tmp_path / "token"
    token_file.write_text(token)
    server = serve(["--auth-token-file", str(token_file)], split=True)
    server.wait_live()
    for query in (f"token={token}", f"access_token={token}&x=1", f"text={token}"):
        status, body, _ = call(
            f"{server.base}/v2/models/slow/predict/?{query}", method="POST"
        )
        assert status == 401, body
    server.stop()
    assert token not in server.stderr and token not in server.output
    access = [line for line in server.stderr.splitlines() if "predict/?" in line]
    assert len(access) == 3, server.stderr
    assert all("REDACTED" in line for line in access)


# -- slow and many clients ------------------------------------------------------


@pytest.fixture
def sockets() -> Iterator[Any]:
    """Connect raw sockets to a server; all closed at the end."""
    opened: list[socket.socket] = []

    def connect(server: Server) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        opened.append(sock)
        return sock

    yield connect
    for sock in opened:
        sock.close()


def closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing within ``within`` s; None if the
    connection is still open then."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def test_slow_headers_are_cut_off_and_others_keep_being_served(serve, sockets):
    """Slowloris: headers a byte at a time, and a connection that sends
    nothing. Both are closed after --header-timeout; a normal client is
    served all along; a slow body is not a slow header."""
    server = serve(["--header-timeout", "1.5"])
    server.wait_ready()
    slow = sockets(server)
    slow.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
    silent = sockets(server)
    started = time.monotonic()
    for _ in range(4):  # 2 s of dribbling, past the timeout
        try:
            slow.sendall(b"X")
        except OSError:
            break
        status, _, _ = call(server.base + "/v2/")
        assert status == 200
        time.sleep(0.5)
    assert closed_by_server(slow, within=5) is not None
    assert closed_by_server(silent, within=5) is not None
    assert time.monotonic() - started < 10
    # Fast headers, then a body that takes longer than the header timeout.
    body = json.dumps({"seconds": 0}).encode()
    patient = sockets(server)
    patient.sendall(
        b"POST /v2/models/slow/predict/ HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    time.sleep(2.5)
    patient.sendall(body)
    answer = closed_by_server(patient, within=10)
    assert answer is not None and answer.startswith(b"HTTP/1.1 200"), answer
    server.stop()
    assert "no request headers within 1.5 s" in server.output


def test_connections_past_the_limit_get_a_503(serve, sockets):
    server = serve(["--max-connections", "3", "--header-timeout", "60"])
    server.wait_ready()
    held = [sockets(server) for _ in range(3)]
    time.sleep(0.3)
    extra = sockets(server)
    answer = closed_by_server(extra, within=5)
    assert answer is not None, "the fourth connection was kept open"
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 1" in head
    assert json.loads(body)["message"] == "Too many connections; retry later"
    for sock in held:
        sock.close()
    # Once they are gone, connections are served again.
    deadline = time.monotonic() + 10
    while True:
        try:
            status, _, _ = call(server.base + "/v2/")
        except OSError:
            status = 0
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200


def test_temporary_files_a_model_writes_per_prediction_do_not_pile_up(
    tmp_path, sockets
):
    """The DEEPaaS demo pattern: a temp file per prediction, returned;
    archives built next to a TemporaryDirectory left behind; intermediate
    files. After hundreds of predictions the temporary directory is as
    empty as it started, and every answer was whole."""
    site = write_dist(
        tmp_path / "site",
        "tempfiles",
        {"tempfiles": ("deepaas.v2.model", "fake_tempfiles")},
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**subprocess_env(site), "TMPDIR": str(temp)}
    server = Server(["--model-name", "tempfiles", "--workers", "2"], env)
    try:
        server.wait_ready()
        url = server.base + "/v2/models/tempfiles/predict/"

        def predict(kind: str) -> None:
            request = urllib.request.Request(f"{url}?kind={kind}", method="POST")
            if kind == "zip":
                request.add_header("Accept", "application/zip")
            elif kind == "json":
                request.add_header("Accept", "application/json")
            with urllib.request.urlopen(request, timeout=30) as resp:
                body = resp.read()
            if kind == "file":
                assert body == b"payload " * 1000
            elif kind == "zip":
                assert body.startswith(b"PK\x03\x04")
            else:
                assert json.loads(body)["predictions"]["temp_dir"].startswith(str(temp))

        kinds = ["file", "zip", "json"] * 100
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(predict, kinds))
        # The last answers' spaces go right after they were sent.
        wait_until(lambda: os.listdir(temp) == [], "the temporary directory to empty")
        # A client that leaves before its file is ready: nobody sends it,
        # and its space goes all the same.
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(
                urllib.request.Request(f"{url}?kind=file&seconds=1", method="POST"),
                timeout=0.3,
            )
        time.sleep(1.5)
        wait_until(lambda: os.listdir(temp) == [], "the abandoned space to go")
    finally:
        server.stop()
    assert os.listdir(temp) == []


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_what_start_up_built_is_out_of_the_collectors_way(tmp_path, executor):
    """Once ready, the server (thread: the model runs there) and each worker
    (process) freeze start-up's objects (server.settle_heap, worker.main):
    full garbage collections no longer walk them and stall calls."""
    site = write_dist(
        tmp_path / "site", "heap", {"heap": ("deepserve.v2.model", "fake_heap")}
    )
    server = Server(
        ["--model-name", "heap", "--executor", executor], subprocess_env(site)
    )
    try:
        server.wait_ready()
        status, body, _ = call(server.base + "/v2/models/heap/predict/", method="POST")
        assert status == 200
        # Everything imported and built before the first request, at least.
        assert body["predictions"]["frozen"] > 10_000
    finally:
        server.stop()


def _alive(pid: int) -> bool:
    return not gone(pid)


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
def test_what_a_stopped_training_started_stops_with_it(tmp_path, how):
    """The AI4OS demo app's training starts tensorboard: cancelling the
    training, or stopping the server while it runs, stops that too (the
    job's process leads a process group of its own)."""
    site = write_dist(
        tmp_path / "site", "spawner", {"spawner": ("deepaas.v2.model", "fake_spawner")}
    )
    pidfile = tmp_path / "helper.pid"
    server = Server(["--model-name", "spawner"], subprocess_env(site))
    helper = 0
    try:
        server.wait_ready()
        base = server.base + "/v2/models/spawner/train/"
        query = urllib.parse.urlencode({"pidfile": str(pidfile)})
        status, job, _ = call(f"{base}?{query}", method="POST")
        assert status == 200, job
        wait_until(pidfile.exists, "the helper to start")
        helper = int(pidfile.read_text())
        assert _alive(helper)
        if how == "cancel":
            status, job, _ = call(base + job["uuid"], method="DELETE")
            assert status == 200 and job["status"] == "cancelled", job
        else:
            server.stop()
            assert server.proc.returncode == 0
        wait_until(lambda: not _alive(helper), "the helper to stop")
    finally:
        server.stop()
        if helper and _alive(helper):
            os.kill(helper, signal.SIGKILL)
