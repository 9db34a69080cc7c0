import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from deepserve import config, config_help, console
from deepserve.exceptions import ConfigError
from deepserve.settings import JobSettings, ServerSettings
from tests.conftest import subprocess_env

ROOT = Path(__file__).resolve().parent.parent


def load(argv, env=None, files=None):
    settings, _debug = config.load(argv, env or {}, default_config_files=files or [])
    return settings


def test_defaults_match_deepaas():
    s = load([], {"HOME": "/home/someone"})
    # Only the job database differs: a file for the server, memory for code.
    assert dataclasses.replace(s, jobs=JobSettings()) == ServerSettings()
    assert s.jobs == JobSettings(
        database="sqlite:////home/someone/.local/share/deepserve/jobs.sqlite",
        recovery_file="/home/someone/.local/share/deepserve/jobs.sqlite.recovery.jsonl",
    )
    assert (s.listen_ip, s.listen_port) == ("127.0.0.1", 5000)
    assert s.executor.workers == 1 and s.executor.warm is True
    # Unlike DEEPaaS (no limit), bodies are limited by default.
    assert s.api.client_max_size == 16 * 1024 * 1024
    assert s.api.upload_max_size == 1024 * 1024 * 1024
    assert not s.api.auth_tokens and not s.api.cors_origins
    assert s.api.auth_predict and s.api.auth_metrics and s.api.metrics_endpoint
    assert s.api.predict_endpoint and s.api.train_endpoint and s.api.doc_endpoint
    assert not s.api.debug_endpoint


def test_command_line_options():
    s = load(
        [
            "--listen-ip", "0.0.0.0",
            "--listen-port", "8080",
            "--base-path", "/models/",
            "--workers", "3",
            "--nowarm",
            "--client-max-size", "1024",
            "--notrain-endpoint",
            "--nopredict-endpoint",
            "--nodoc-endpoint",
            "--debug-endpoint",
            "--upload-dir", "/tmp",
        ]
    )  # fmt: skip
    assert (s.listen_ip, s.listen_port) == ("0.0.0.0", 8080)
    assert s.api.base_path == "/models"
    assert s.executor.workers == 3 and not s.executor.warm
    assert s.api.client_max_size == 1024
    assert not (s.api.train_endpoint or s.api.predict_endpoint or s.api.doc_endpoint)
    assert s.api.debug_endpoint and s.api.upload_dir == "/tmp"


def test_model_names_repeated_and_comma_separated():
    s = load(["--model-name", "a,b", "--model-name", "c", "--model-name", "a"])
    assert s.model_names == ("a", "b", "c")


def test_model_name_from_env_when_not_given():
    assert load([], {"DEEPAAS_V2_MODEL": "old"}).model_names == ("old",)
    env = {"DEEPSERVE_V2_MODEL": "new,other", "DEEPAAS_V2_MODEL": "old"}
    assert load([], env).model_names == ("new", "other")
    assert load(["--model-name", "cli"], env).model_names == ("cli",)


def test_config_file(tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text(
        "[DEFAULT]\nlisten_port = 6000\nmodel_name = x\nmodel_name = y\n"
        "workers = 2\ndebug_endpoint = true\n"
    )
    s = load(["--config-file", str(conf)], {"DEEPSERVE_V2_MODEL": "env"})
    assert s.listen_port == 6000
    assert s.model_names == ("x", "y")
    assert s.executor.workers == 2 and s.api.debug_endpoint
    # The command line wins over the file.
    s = load(["--config-file", str(conf), "--listen-port", "7000"])
    assert s.listen_port == 7000


@pytest.mark.parametrize(
    ("bad", "message", "hint"),
    [
        (
            ["--workers", "0"],
            "argument --workers: invalid value '0': expected an integer >= 1",
            "",
        ),
        (
            ["--listen-port", "70000"],
            "argument --listen-port: invalid value '70000': expected a port "
            "number from 0 to 65535",
            "",
        ),
        (
            ["--log-format", "jsno"],
            "argument --log-format: invalid value 'jsno': expected one of text, json",
            "did you mean 'json'?",
        ),
        (
            ["--jobs-retention-days=-1"],
            "argument --jobs-retention-days: invalid value '-1': expected a "
            "number >= 0",
            "",
        ),
        (
            ["--max-qeue", "3"],
            "unknown option '--max-qeue'",
            "did you mean '--max-queue'?",
        ),
        (["extra"], "unexpected argument 'extra'", ""),
        # An unset shell variable ($PORT) is not the default.
        (
            ["--listen-port="],
            "argument --listen-port: empty value: give one, or leave the option out",
            "",
        ),
        (
            ["--workers", ""],
            "argument --workers: empty value: give one, or leave the option out",
            "",
        ),
        (
            ["--model-name="],
            "argument --model-name: empty value: give one, or leave the option out",
            "",
        ),
    ],
)
def test_command_line_mistakes_raise_usage_errors(bad, message, hint, capsys):
    # On oslo.config 8.8 (DEEPaaS's pin) as on the newest: nothing printed,
    # no SystemExit, one error naming the option.
    with pytest.raises(console.UsageError) as exc:
        load(bad)
    assert (exc.value.message, exc.value.hint) == (message, hint)
    assert capsys.readouterr() == ("", "")


def test_help_is_written_in_sections(capsys):
    with pytest.raises(SystemExit) as exc:
        load(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: deepserve run [OPTIONS]")
    assert "\nworkers:\n" in out and "  --[no]warm " in out
    assert "--nowarm" not in out and "other options" not in out
    # Every option of the sections is registered: none is listed that the
    # command line would refuse.
    conf = config.new_conf()
    conf([], project="deepserve", use_env=False, default_config_files=[])
    registered = {
        config_help.cli_name(opt, group) for opt, group in conf._all_cli_opts()
    }
    listed = {name for _, names in config_help.SECTIONS for name in names}
    assert listed <= registered
    assert registered - listed == set(config_help.HIDDEN) & registered


def test_base_path_must_be_absolute():
    with pytest.raises(ConfigError, match="must start with '/'"):
        load(["--base-path", "models"])
    assert load(["--base-path", "/"]).api.base_path == ""
    assert load(["--base-path", "/a//b/"]).api.base_path == "/a/b"


def test_sample_config_is_current(tmp_path):
    """etc/deepserve.conf.sample is what oslo-config-generator makes now."""
    out = tmp_path / "sample.conf"
    subprocess.run(
        [
            sys.executable, "-m", "oslo_config.generator",
            "--config-file", str(ROOT / "etc" / "deepserve-config-generator.conf"),
            "--output-file", str(out),
        ],
        check=True,
        cwd=ROOT,
    )  # fmt: skip
    current = (ROOT / "etc" / "deepserve.conf.sample").read_text()
    assert out.read_text() == current, (
        "etc/deepserve.conf.sample is stale: run "
        "oslo-config-generator --config-file etc/deepserve-config-generator.conf"
    )


def test_sample_config_lists_every_option():
    sample = (ROOT / "etc" / "deepserve.conf.sample").read_text()
    for opt in [*config.server_opts, *config.executor_opts, *config.job_opts]:
        assert f"#{opt.dest} =" in sample
    assert "[model:name]" in sample
    assert "[jobs]" in sample


def test_only_documented_environment_variables_are_read(monkeypatch):
    # oslo.config would read OS_DEFAULT__WORKERS; deepserve reads only the
    # variables it documents, and only through the mapping it is given.
    monkeypatch.setenv("OS_DEFAULT__WORKERS", "4")
    assert load([]).executor.workers == 1


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.conf"):
        load(["--config-file", str(tmp_path / "missing.conf")])


def test_executor_defaults_and_command_line():
    s = load([])
    assert s.executor.kind == "process"
    assert s.executor.predict_timeout is None and s.executor.max_queue == 256
    assert s.executor.batching is None
    assert s.access_log is True
    s = load(
        [
            "--executor", "thread",
            "--predict-timeout", "2.5",
            "--max-queue", "10",
            "--nobatching",
            "--max-batch-size", "8",
            "--max-latency-ms", "1.5",
            "--noaccess-log",
        ]
    )  # fmt: skip
    e = s.executor
    assert (e.kind, e.predict_timeout, e.max_queue) == ("thread", 2.5, 10)
    assert (e.batching, e.max_batch_size, e.max_latency_ms) == (False, 8, 1.5)
    assert s.access_log is False
    assert load(["--predict-timeout", "0"]).executor.predict_timeout is None


def test_unknown_executor_is_refused():
    with pytest.raises(console.UsageError, match="expected one of process, thread"):
        load(["--executor", "gpu"])


def test_model_sections_override_the_defaults(tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text(
        "[DEFAULT]\nworkers = 2\npredict_timeout = 10\n"
        "[model:Fast]\nexecutor = thread\nworkers = 4\n"
        "[model:batchy]\nmax_batch_size = 16\nmax_latency_ms = 2\nbatching = true\n"
    )
    s = load(["--config-file", str(conf)])
    assert set(s.model_executors) == {"Fast", "batchy"}
    fast = s.executor_for("Fast")
    assert (fast.kind, fast.workers, fast.predict_timeout) == ("thread", 4, 10.0)
    batchy = s.executor_for("batchy")
    assert (batchy.kind, batchy.workers) == ("process", 2)
    assert (batchy.batching, batchy.max_batch_size, batchy.max_latency_ms) == (
        True,
        16,
        2.0,
    )
    assert s.executor_for("other") == s.executor


def test_invalid_model_section_is_a_config_error(tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text("[model:x]\nworkers = many\n")
    with pytest.raises(ConfigError, match=r"\[model:x\]"):
        load(["--config-file", str(conf)])


def test_auth_tokens_from_options_file_and_environment(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("from-file-1\n\nfrom-file-2\n")
    s = load(
        ["--auth-token", "from-cli", "--auth-token-file", str(token_file)],
        env={"DEEPSERVE_AUTH_TOKEN": "from-env\n"},
    )
    assert s.api.auth_tokens == ("from-cli", "from-file-1", "from-file-2", "from-env")
    single = tmp_path / "single"
    single.write_text("only-one\n")
    assert load(["--auth-token-file", str(single)]).api.auth_tokens == ("only-one",)
    assert load([], env={"DEEPSERVE_AUTH_TOKEN": "e"}).api.auth_tokens == ("e",)


def test_auth_token_file_problems_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read auth-token-file .*nope"):
        load(["--auth-token-file", str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match=r"cannot read auth-token-file"):
        load(["--auth-token-file", str(tmp_path)])  # a directory
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"holds no token"):
        load(["--auth-token-file", str(empty)])


def test_security_options_from_a_config_file(tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text(
        "[DEFAULT]\n"
        "auth_token = one\n"
        "auth_predict = false\n"
        "auth_metrics = false\n"
        "metrics_endpoint = false\n"
        "cors_origin = https://a.example, https://b.example\n"
        "client_max_size = 1000\n"
        "upload_max_size = 0\n"
    )
    api = load([], files=[str(conf)]).api
    assert api.auth_tokens == ("one",)
    assert not (api.auth_predict or api.auth_metrics or api.metrics_endpoint)
    assert api.cors_origins == ("https://a.example", "https://b.example")
    assert (api.client_max_size, api.upload_max_size) == (1000, 0)


def test_model_store_from_option_then_env_then_home():
    assert load([]).store_root == "~/deepserve/models"
    home = {"DEEPSERVE_HOME": "/srv/store"}
    assert load([], home).store_root == "/srv/store/models"
    given = load(["--model-store", "/data/models"], {"DEEPSERVE_HOME": "/srv/store"})
    assert given.store_root == "/data/models"


def test_job_database_follows_xdg_data_home():
    s = load([], {"XDG_DATA_HOME": "/data", "HOME": "/home/someone"})
    assert s.jobs.database == "sqlite:////data/deepserve/jobs.sqlite"


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("/var/lib/deepserve/jobs.db", "sqlite:////var/lib/deepserve/jobs.db"),
        ("postgresql://deepserve@db/jobs", "postgresql://deepserve@db/jobs"),
        ("sqlite:///relative.db", "sqlite:///relative.db"),
    ],
)
def test_job_database_option_takes_a_path_or_a_url(value, url):
    assert load(["--jobs-database", value]).jobs.database == url


def test_jobs_section_of_a_config_file(tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text(
        "[jobs]\n"
        f"database = {tmp_path / 'jobs.sqlite'}\n"
        "max_log_size = 4096\n"
        "heartbeat_interval = 1\n"
        "heartbeat_timeout = 3.5\n"
        "retention_days = 30\n"
        f"recovery_file = {tmp_path / 'ends.jsonl'}\n"
    )
    s = load(["--config-file", str(conf)])
    assert s.jobs == JobSettings(
        database=f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        max_log_bytes=4096,
        heartbeat_interval=1.0,
        heartbeat_timeout=3.5,
        retention_days=30.0,
        recovery_file=str(tmp_path / "ends.jsonl"),
    )


def test_heartbeat_timeout_must_exceed_the_interval():
    with pytest.raises(ConfigError, match="heartbeat-timeout"):
        load(["--jobs-heartbeat-interval", "10", "--jobs-heartbeat-timeout", "5"])


def test_job_options_in_help():
    result = subprocess.run(
        [sys.executable, "-m", "deepserve.cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for option in ("--jobs-database", "--jobs-max-log-size", "--jobs-retention-days"):
        assert option in result.stdout
    assert "(default: 1048576)" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--jobs-database", "/srv/jobs.db"], "/srv/jobs.db.recovery.jsonl"),
        (
            # Named after the database: two deployments never share one.
            ["--jobs-database", "postgresql://u@h/db"],
            "/data/deepserve/jobs-recovery-"
            + hashlib.sha256(b"postgresql://u@h/db").hexdigest()[:12]
            + ".jsonl",
        ),
        (["--jobs-database", "sqlite:///:memory:"], None),
        (
            ["--jobs-database", "sqlite+pysqlite:////srv/j.db"],
            "/srv/j.db.recovery.jsonl",
        ),
        (
            [
                "--jobs-database",
                "postgresql://u@h/db",
                "--jobs-recovery-file",
                "/r.jsonl",
            ],
            "/r.jsonl",
        ),
    ],
)
def test_the_recovery_file(args, expected):
    s = load(args, {"HOME": "/home/someone", "XDG_DATA_HOME": "/data"})
    assert s.jobs.recovery_file == expected


def test_connection_limits():
    s = load(["--header-timeout", "2.5", "--max-connections", "8"])
    assert (s.header_timeout, s.max_connections) == (2.5, 8)
    assert (load([]).header_timeout, load([]).max_connections) == (20.0, 1000)
    with pytest.raises(console.UsageError, match="--max-connections: invalid value"):
        load(["--max-connections", "0"])


def test_an_empty_base_path_is_the_root():
    assert load(["--base-path="]).api.base_path == ""


def test_a_bad_value_in_a_model_section_reads_like_one_in_default(tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text("[model:demo]\nexecutor = proces\n")
    with pytest.raises(ConfigError) as exc:
        load(["--config-file", str(conf)])
    assert str(exc.value) == (
        f"[model:demo] executor in {conf}: invalid value 'proces': expected one "
        "of process, thread, inline, ray"
    )


def test_help_fits_a_narrow_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    with pytest.raises(SystemExit):
        load(["--help"])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 50
    assert "  --listen-port PORT\n      Port the server listens on." in out
    # Defaults as one types them: 30, not 30.0.
    assert "(default: 30)" in out and "(default: 30.0)" not in out


def test_the_upload_dir_must_be_a_writable_directory(tmp_path):
    assert load(["--upload-dir", str(tmp_path)]).api.upload_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="is not a directory"):
        load(["--upload-dir", str(tmp_path / "missing")])
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        load(["--upload-dir", str(tmp_path / "file")])


def test_a_dollar_in_a_config_file_value_is_written_twice(tmp_path):
    """oslo.config reads ``$name`` in a value as another option (on 8.8, as
    DEEPaaS pins it, and on the newest): a database password's ``$`` is
    written ``$$`` in jobs.conf (doc/deploying.rst)."""
    url = "postgresql+psycopg://deepserve:pa$word$@postgres:5432/deepserve"
    jobs_conf = tmp_path / "jobs.conf"
    jobs_conf.write_text("[jobs]\ndatabase = " + url.replace("$", "$$") + "\n")
    assert load(["--config-file", str(jobs_conf)]).jobs.database == url
    # Written once, it is refused, not read as another password.
    jobs_conf.write_text("[jobs]\ndatabase = " + url + "\n")
    with pytest.raises(ConfigError, match="no such option word"):
        load(["--config-file", str(jobs_conf)])


# -- [ray] -------------------------------------------------------------------


def test_ray_options_from_the_command_line_and_a_config_file(tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text(
        "[DEFAULT]\nexecutor = ray\nmodel_store_url = s3://models/store\n"
        "[ray]\naddress = head:6379\nnum_gpus = 0.5\nattach = true\n"
        "[model:big]\nexecutor = process\n"
    )
    settings = load(
        ["--ray-replicas", "3", "--ray-max-ongoing-requests", "8"], files=[conf]
    )
    ray = settings.executor.ray
    assert settings.executor.kind == "ray"
    assert (ray.address, ray.replicas, ray.max_ongoing_requests) == ("head:6379", 3, 8)
    assert (ray.num_gpus, ray.own_app, ray.autoscaling) == (0.5, False, False)
    assert ray.model_store_url == settings.model_store_url == "s3://models/store"
    # A model section keeps the cluster's settings, and may run elsewhere.
    big = settings.executor_for("big")
    assert big.kind == "process" and big.ray == ray


def test_ray_autoscaling_bounds_go_together():
    ray = load(["--ray-min-replicas", "1", "--ray-max-replicas", "3"]).executor.ray
    assert ray.autoscaling and (ray.min_replicas, ray.max_replicas) == (1, 3)
    with pytest.raises(ConfigError, match="go together"):
        load(["--ray-min-replicas", "1"])
    with pytest.raises(ConfigError, match=r"min-replicas \(4\) must not exceed"):
        load(["--ray-min-replicas", "4", "--ray-max-replicas", "3"])
    # A replica never holds more than max-ongoing-requests: a target at or
    # above it would never add one.
    with pytest.raises(ConfigError, match="must be below max-ongoing-requests"):
        load(
            [
                *("--ray-min-replicas", "1", "--ray-max-replicas", "3"),
                *("--ray-max-ongoing-requests", "2"),
                *("--ray-target-ongoing-requests", "2"),
            ]
        )


def test_without_the_ray_extra_executor_ray_names_it(tmp_path, fake_site):
    # A 'ray' that cannot be imported, as where the extra is not installed.
    blocker = tmp_path / "blocker" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = subprocess_env(fake_site)
    env["PYTHONPATH"] = f"{blocker.parent}:{env['PYTHONPATH']}"
    for args in (
        ["run", "--model-name", "minimal", "--executor", "ray", "--ray-address", "h:1"],
        ["ray", "deploy", "--model-name", "minimal", "--ray-address", "h:1"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "deepserve.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert "needs Ray Serve, which is not installed" in result.stderr
        assert 'pip install "deepserve[ray]"' in result.stderr
