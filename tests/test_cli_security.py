"""Security of a real ``deepserve run``: tokens, the debug endpoint, bad HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.servers import DEEPSERVE, Server, free_port

TOKEN = "tok-4f1c9e7a-never-logged"


@pytest.fixture
def secured(fake_site: Path, tmp_path: Path) -> Iterator[Server]:
    """A server with a token from a file, the debug endpoint, DEBUG logs."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    args = [
        "--model-name", "oldstyle",
        "--auth-token-file", str(token_file),
        "--debug-endpoint", "--debug",
    ]  # fmt: skip
    server = Server(args, subprocess_env(fake_site))
    server.wait_ready("")
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def call(
    server: Server, path: str, method: str = "GET", token: str | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(server.base + path, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_token_from_file_protects_and_is_never_logged(secured):
    predict = "/v2/models/oldstyle/predict/?text=hi"
    assert call(secured, predict, "POST")[0] == 401
    assert call(secured, predict, "POST", token=TOKEN + "x")[0] == 401
    assert call(secured, predict, "POST", token=TOKEN)[0] == 200
    assert call(secured, "/v2/models/")[0] == 200
    assert call(secured, "/v2/debug/")[0] == 401
    status, debug = call(secured, "/v2/debug/", token=TOKEN)
    assert status == 200
    assert b"/v2/models/oldstyle/predict/" in debug  # the log is there...
    assert TOKEN.encode() not in debug  # ...without the token
    out = secured.stop()
    assert "POST /v2/models/oldstyle/predict/" in out  # access log lines
    assert TOKEN not in out and TOKEN[:-1] not in out


def test_debug_endpoint_is_loudly_warned(secured):
    out = secured.stop()
    warning = [line for line in out.splitlines() if "debug endpoint is ON" in line]
    assert len(warning) == 1 and "WARNING" in warning[0]


def test_no_debug_warning_by_default(fake_site):
    server = Server(["--model-name", "minimal"], subprocess_env(fake_site))
    server.wait_ready("")
    assert call(server, "/v2/debug/")[0] == 404
    out = server.stop()
    assert "debug endpoint" not in out


def test_malformed_http_is_answered_in_json_without_traceback(fake_site):
    server = Server(["--model-name", "minimal"], subprocess_env(fake_site))
    server.wait_ready("")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400"
    assert b"application/json" in head
    assert json.loads(body)["code"] == 400
    out = server.stop()
    assert server.proc.returncode == 0
    assert "Traceback" not in out
    assert "Unreadable HTTP request" in out


def test_unreadable_token_file_is_a_one_line_error(fake_site, tmp_path):
    result = subprocess.run(
        [*DEEPSERVE, "run", "--listen-port", str(free_port()),
         "--auth-token-file", str(tmp_path / "missing")],
        env=subprocess_env(fake_site), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot read auth-token-file" in lines[0] and "missing" in lines[0]
