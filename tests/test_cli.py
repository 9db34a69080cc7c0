"""The ``deepserve`` command, run for real in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import GOOD_MODELS, VENV_MODELS, subprocess_env, write_dist
from tests.servers import DEEPSERVE, Server, children, free_port, get_json, gone


@pytest.fixture
def serve(fake_site: Path) -> Iterator:
    started: list[Server] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Server:
        server = Server(args, env if env is not None else subprocess_env(fake_site))
        started.append(server)
        prefix = args[args.index("--base-path") + 1] if "--base-path" in args else ""
        server.wait_ready(prefix)
        return server

    yield start
    for server in started:
        server.kill()


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEEPSERVE, *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_option_with_default(fake_site):
    result = run(["run", "--help"], subprocess_env(fake_site))
    assert result.returncode == 0
    for option in (
        "--listen-ip", "--listen-port", "--base-path", "--model-name", "--workers",
        "--warm", "--client-max-size", "--train-endpoint", "--predict-endpoint",
        "--doc-endpoint", "--debug-endpoint", "--config-file",
    ):  # fmt: skip
        assert option in result.stdout
    assert "(default: 5000)" in result.stdout
    assert "(default: 127.0.0.1)" in result.stdout
    assert result.stdout.count("(default:") >= 12


def test_top_level_usage_and_version(fake_site):
    env = subprocess_env(fake_site)
    assert run([], env).returncode == 2
    result = run(["--help"], env)
    assert result.returncode == 0 and "run" in result.stdout
    assert run(["--version"], env).stdout.startswith("deepserve ")
    unknown = run(["fly"], env)
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr


def test_missing_model_is_one_line_error(fake_site):
    result = run(["run", "--model-name", "nope"], subprocess_env(fake_site))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'nope'" in lines[0]
    names = ", ".join(sorted([*GOOD_MODELS, *VENV_MODELS]))
    assert f"available models: {names}" in lines[0]


def test_package_that_fails_to_import_stops_startup(fake_site, tmp_path):
    broken = write_dist(
        tmp_path, "broken-model", {"broken": ("deepaas.v2.model", "fake_broken")}
    )
    env = subprocess_env(fake_site, broken)
    for args in (["--model-name", "broken"], []):
        result = run(["run", "--listen-port", str(free_port()), *args], env)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "'broken'" in lines[0]
        assert "ImportError: this package needs a library" in lines[0]
        names = ", ".join(sorted([*GOOD_MODELS, "broken", *VENV_MODELS]))
        assert f"available models: {names}" in lines[0]


def test_serves_model_named_in_deepaas_env_and_stops_cleanly(serve, fake_site):
    env = subprocess_env(fake_site)
    env["DEEPAAS_V2_MODEL"] = "oldstyle"
    server = serve(["--workers", "2"], env)
    models = get_json(server.base + "/v2/models/")
    assert [m["name"] for m in models["models"]] == ["oldstyle"]  # type: ignore[index]
    req = urllib.request.Request(
        server.base + "/v2/models/oldstyle/predict/?text=hi&count=2", method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.load(resp)["predictions"]["text"] == "hihi"
    workers = children(server.proc.pid)
    assert len(workers) >= 2
    out = server.stop()
    assert server.proc.returncode == 0, out
    assert f"http://127.0.0.1:{server.port}/api" in out
    assert f"http://127.0.0.1:{server.port}/swagger.json" in out
    assert f"http://127.0.0.1:{server.port}/v2/" in out
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in workers)


def test_demo_model_when_nothing_is_installed(serve):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("DEEPSERVE_V2_MODEL", None)
    env.pop("DEEPAAS_V2_MODEL", None)
    server = serve(["--base-path", "/deep"], env)
    models = get_json(server.base + "/deep/v2/models/")
    assert [m["name"] for m in models["models"]] == ["demo"]  # type: ignore[index]
    req = urllib.request.Request(
        server.base + "/deep/v2/models/demo/predict/",
        data=b'{"text": "one two three"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        prediction = json.load(resp)["predictions"]
    assert prediction["words"] == 3 and prediction["warmed"] is True
    server.stop()


def test_ctrl_c_stops_server_and_workers_without_traceback(serve, fake_site):
    server = serve(["--model-name", "classy", "--workers", "2"])
    workers = children(server.proc.pid)  # workers and multiprocessing's tracker
    assert len(workers) >= 2
    os.killpg(server.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out = server.finish(timeout=30)
    assert server.proc.returncode == 0, out
    assert "Traceback" not in out
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in workers)


def test_model_whose_warm_fails_stops_startup_with_one_line(fake_site, tmp_path):
    (tmp_path / "fake_cold.py").write_text(
        "def warm():\n    raise RuntimeError('no weights')\n\n"
        "def predict(**kwargs):\n    return 1\n"
    )
    site = write_dist(
        tmp_path, "cold-model", {"cold": ("deepserve.v2.model", "fake_cold")}
    )
    result = run(
        ["run", "--listen-port", str(free_port()), "--model-name", "cold"],
        subprocess_env(fake_site, site),
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "deepserve: error: Model 'cold' failed to start: RuntimeError: no weights"
    ]


def test_port_in_use_is_a_one_line_error(fake_site):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            ["run", "--listen-port", str(port), "--model-name", "minimal"],
            subprocess_env(fake_site),
        )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"deepserve: error: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in line.lower()
