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
        "--[no]warm", "--client-max-size", "--[no]train-endpoint",
        "--[no]predict-endpoint", "--[no]doc-endpoint", "--[no]debug-endpoint",
        "--config-file", "--jobs-database",
    ):  # fmt: skip
        assert option in result.stdout
    assert "(default: 5000)" in result.stdout
    assert "(default: 127.0.0.1)" in result.stdout
    assert "(default: on)" in result.stdout and "(default: off)" in result.stdout
    assert result.stdout.count("(default:") >= 12
    assert "(none)" not in result.stdout  # no default is said as "(none)"


def test_help_groups_options_in_sections_and_each_boolean_once(fake_site):
    out = run(["run", "--help"], subprocess_env(fake_site)).stdout
    assert out.startswith("usage: deepserve run [OPTIONS]\n")
    titles = [line for line in out.splitlines() if line and line[0] not in " u"]
    sections = [t for t in titles if t.endswith(":")]
    assert sections == [
        "models:", "server:", "endpoints:", "workers:", "security:",
        "training jobs:", "Ray cluster (executor = ray):", "logging:", "config files and help:",
    ]  # fmt: skip
    # oslo.config's negations are folded into --[no]NAME; nothing is left
    # over for an "other options" section.
    assert "--nowarm" not in out and "--noaccess-log" not in out
    assert "other options" not in out and "shell_completion" not in out
    workers = out.split("\nworkers:\n")[1].split("\n\n")[0]
    assert "--executor {process,thread,inline,ray}" in workers
    assert "-p, --workers N" in workers
    assert "Choices: text: one human-readable line per record" in out


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (
            ["--listen-port", "notaport"],
            "argument --listen-port: invalid value 'notaport': expected a port "
            "number from 0 to 65535",
            "Try 'deepserve run --help' for help.",
        ),
        (
            ["--workers", "0"],
            "argument --workers: invalid value '0': expected an integer >= 1",
            "Try 'deepserve run --help' for help.",
        ),
        (
            ["--executor", "proces"],
            "argument --executor: invalid value 'proces': expected one of "
            "process, thread, inline, ray",
            "did you mean 'process'?",
        ),
        (
            ["--jobs-heartbeat-interval", "soon"],
            "argument --jobs-heartbeat-interval: invalid value 'soon': expected "
            "a number >= 0.1",
            "Try 'deepserve run --help' for help.",
        ),
        (
            ["--listen_port", "8000"],
            "unknown option '--listen_port'",
            "did you mean '--listen-port'?",
        ),
        (["--wrokers=2"], "unknown option '--wrokers'", "did you mean '--workers'?"),
        (
            ["--bogus"],
            "unknown option '--bogus'",
            "Try 'deepserve run --help' for help.",
        ),
        (
            ["--listen-port"],
            "argument --listen-port: expected one argument",
            "Try 'deepserve run --help' for help.",
        ),
    ],
)
def test_command_line_mistakes_are_usage_errors(fake_site, args, message, hint):
    result = run(["run", *args], subprocess_env(fake_site))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"deepserve run: error: {message}", hint]


def test_a_bad_value_in_a_config_file_names_the_file(fake_site, tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text("[DEFAULT]\nlisten_port = eighty\n")
    result = run(["run", "--config-file", str(conf)], subprocess_env(fake_site))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"deepserve run: error: [DEFAULT] listen_port in {conf}: invalid value "
        "'eighty': expected a port number from 0 to 65535"
    ]


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["runn"], "unknown command 'runn'", "did you mean 'run'?"),
        (["model", "list"], "unknown command 'model'", "did you mean 'models'?"),
        (["--verison"], "unknown option '--verison'", "did you mean '--version'?"),
        (
            ["fly"],
            "unknown command 'fly'",
            "commands: run, models, call, ray; try 'deepserve --help'",
        ),
    ],
)
def test_unknown_commands_get_suggestions(fake_site, args, message, hint):
    result = run(args, subprocess_env(fake_site))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"deepserve: error: {message}", hint]


def test_errors_are_red_on_a_terminal_only(fake_site):
    env = subprocess_env(fake_site)
    plain = run(["runn"], env)
    assert "\033[" not in plain.stderr  # a pipe: no colour
    env["FORCE_COLOR"] = "1"
    forced = run(["runn"], env)
    assert "\033[1;31merror:\033[0m" in forced.stderr
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR")
    assert "\033[" not in run(["runn"], env).stderr


def test_top_level_usage_and_version(fake_site):
    env = subprocess_env(fake_site)
    assert run([], env).returncode == 2
    result = run(["--help"], env)
    assert result.returncode == 0 and "run" in result.stdout
    assert run(["--version"], env).stdout.startswith("deepserve ")
    for command in ("run", "models", "call"):
        result = run([command, "--version"], env)
        assert (result.returncode, result.stdout) == (0, run(["--version"], env).stdout)
    unknown = run(["fly"], env)
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
    assert "\033[" not in unknown.stderr


def test_missing_model_is_one_line_error(fake_site, tmp_path):
    env = subprocess_env(fake_site)
    env["DEEPSERVE_HOME"] = str(tmp_path)  # an empty store
    result = run(["run", "--model-name", "nope"], env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("deepserve run: error: Model 'nope' not found")
    names = ", ".join(sorted([*GOOD_MODELS, *VENV_MODELS]))
    assert lines[0].endswith(f"available models: {names}, demo (bundled)")


def test_mistyped_model_name_gets_a_suggestion_among_stored_tags(fake_site, tmp_path):
    import fake_stored

    from deepserve import picklable_model
    from deepserve.store import Store

    store = Store(tmp_path / "models")
    saved = picklable_model.save_model("iris_clf", fake_stored.Scaler(2.0), store=store)
    env = subprocess_env(fake_site)
    env["DEEPSERVE_HOME"] = str(tmp_path)
    result = run(["run", "--model-name", "iris_cfl"], env)
    assert result.returncode == 1
    message, hint = result.stderr.splitlines()
    names = ", ".join(sorted([*GOOD_MODELS, *VENV_MODELS]))
    assert message.endswith(f"available models: {names}, demo (bundled), {saved.tag}")
    assert hint == "did you mean 'iris_clf'?"
    typo = run(["run", "--model-name", "dmeo"], env)
    assert typo.stderr.splitlines()[1] == "did you mean 'demo'?"


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
        assert f"available models: {names}, demo (bundled)" in lines[0]


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
        prediction = json.load(resp)  # the demo declares its response schema
    assert prediction["words"] == 3 and prediction["warmed"] is True
    server.stop()


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """No model installed, and a home of its own: a first start."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "DEEPSERVE_V2_MODEL", "DEEPAAS_V2_MODEL"):
        env.pop(var, None)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["DEEPSERVE_HOME"] = str(tmp_path / "home")
    return env


@pytest.mark.skipif(bool(VENV_MODELS), reason="a model is installed in this venv")
def test_first_start_prints_the_banner_and_no_warnings(serve, tmp_path):
    env = _bare_env(tmp_path)
    server = serve([], env)
    out = server.stop()
    assert server.proc.returncode == 0, out
    lines = out.splitlines()
    noisy = [line for line in lines if " WARNING " in line or "igrat" in line]
    assert noisy == [], out
    assert lines[0].endswith(
        "INFO deepserve.loader: No model installed; using the bundled demo model"
    )
    assert "deepserve 0.1.0 is serving: demo" in out
    assert (tmp_path / "data" / "deepserve" / "jobs.sqlite").is_file()


@pytest.mark.skipif(bool(VENV_MODELS), reason="a model is installed in this venv")
def test_demo_notice_says_what_the_store_holds(serve, tmp_path, fake_site):
    import fake_stored

    from deepserve import picklable_model
    from deepserve.store import Store

    env = _bare_env(tmp_path)
    store = Store(tmp_path / "home" / "models")
    saved = picklable_model.save_model("scaler", fake_stored.Scaler(2.0), store=store)
    server = serve([], env)
    out = server.stop()
    assert "No model installed" not in out
    assert (
        "No model named and none installed; using the bundled demo model. The "
        f"model store holds 1 ({saved.tag}): name them with --model-name to serve "
        "them" in out
    )


def test_log_levels_and_banner_in_colour_on_a_terminal_only(serve, fake_site):
    env = subprocess_env(fake_site)
    plain = serve(["--model-name", "minimal"], env)
    out = plain.stop()
    assert "\033[" not in out and " INFO deepserve.server: Ready" in out
    env["FORCE_COLOR"] = "1"  # what a terminal gets
    coloured = serve(["--model-name", "minimal"], env)
    out = coloured.stop()
    assert " \033[32mINFO\033[0m deepserve.server: Ready" in out
    assert "is serving: \033[1mminimal\033[0m" in out
    assert f"\033[36mhttp://127.0.0.1:{coloured.port}/swagger.json\033[0m" in out


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
        "deepserve run: error: Model 'cold' failed to start: RuntimeError: no weights"
    ]


def test_ctrl_c_while_a_model_imports_is_no_traceback(fake_site, tmp_path):
    started = tmp_path / "importing"
    (tmp_path / "fake_heavy.py").write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        "time.sleep(60)  # a framework taking its time to import\n"
        "def predict(**kwargs):\n    return 1\n"
    )
    site = write_dist(
        tmp_path, "heavy-model", {"heavy": ("deepserve.v2.model", "fake_heavy")}
    )
    proc = subprocess.Popen(
        [*DEEPSERVE, "run", "--listen-port", str(free_port()), "--model-name", "heavy"],
        env=subprocess_env(fake_site, site),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "deepserve run: error: interrupted"
    assert "Traceback" not in err


def test_the_banner_names_the_port_the_system_chose(fake_site):
    server = Server(["--model-name", "minimal"], subprocess_env(fake_site), port=0)
    try:
        deadline = time.monotonic() + 60
        while "V2 endpoint:" not in server.output and time.monotonic() < deadline:
            time.sleep(0.1)
        (line,) = [x for x in server.output.splitlines() if "V2 endpoint:" in x]
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        assert port > 0
        assert get_json(f"http://127.0.0.1:{port}/v2/health/live") is not None
    finally:
        server.kill()


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
    assert line.startswith(f"deepserve run: error: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in line.lower()


def test_the_demo_training_shows_its_progress(tmp_path):
    # What a first-time user sees: the epochs as they end, on stderr; the
    # record alone on stdout.
    env = _bare_env(tmp_path)
    result = run(
        ["call", "--model-name", "demo", "train", "--epochs", "2",
         "--seconds_per_epoch", "0"],
        env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["epoch 1/2: loss 1.0", "epoch 2/2: loss 0.5"]
    assert json.loads(result.stdout)["result"]["output"]["losses"] == [1.0, 0.5]


def test_grpc_port_in_use_is_a_one_line_error(fake_site):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            ["run", "--listen-port", str(free_port()), "--grpc-port", str(port),
             "--model-name", "minimal"],
            subprocess_env(fake_site),
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("deepserve run: error: cannot start the gRPC service: ")
    assert str(port) in line


def test_grpc_port_without_the_extra_names_it(fake_site, tmp_path):
    # grpc as it is where the extra is not installed: not importable.
    blocker = tmp_path / "nogrpc" / "grpc"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named grpc')\n")
    env = subprocess_env(fake_site)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), env["PYTHONPATH"]])
    result = run(
        ["run", "--listen-port", str(free_port()), "--grpc-port", str(free_port()),
         "--model-name", "minimal"],
        env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("deepserve run: error: --grpc-port needs gRPC")
    assert lines[1:] == ['pip install "deepserve[grpc]"']


def test_the_banner_names_the_grpc_port(serve, fake_site):
    port = free_port()
    server = serve(["--model-name", "minimal", "--grpc-port", str(port)])
    assert f"OIP over gRPC: 127.0.0.1:{port}" in server.output
    import grpc  # the server answers there

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
