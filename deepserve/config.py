"""Command-line and config-file options, parsed once into settings.

The options and their names follow DEEPaaS's ``deepaas-run`` so existing
config files and scripts keep working. ``list_opts`` feeds
``oslo-config-generator`` (see ``etc/deepserve-config-generator.conf``).
"""

from __future__ import annotations

import copy
import hashlib
import os
import posixpath
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from oslo_config import cfg, types

import deepserve
from deepserve import console
from deepserve.exceptions import ConfigError
from deepserve.settings import (
    ApiSettings,
    ExecutorSettings,
    JobSettings,
    RaySettings,
    ServerSettings,
)

#: Environment variables naming the models to serve, first found wins.
MODEL_ENV = ("DEEPSERVE_V2_MODEL", "DEEPAAS_V2_MODEL")

server_opts = [
    cfg.StrOpt(
        "listen-ip",
        default="127.0.0.1",
        help="IP address the server listens on.",
    ),
    cfg.PortOpt(
        "listen-port",
        default=5000,
        help="Port the server listens on.",
    ),
    cfg.PortOpt(
        "grpc-port",
        help=(
            "Also serve the Open Inference Protocol over gRPC on this port "
            "(same address, models, tokens and limits as HTTP). Needs "
            'pip install "deepserve[grpc]". Default: off.'
        ),
    ),
    cfg.StrOpt(
        "base-path",
        default="",
        help=(
            "Path prefix of every URL, for serving behind a reverse proxy at a "
            "sub-path (for example /models). Must start with '/'."
        ),
    ),
    cfg.MultiStrOpt(
        "model-name",
        default=[],
        help=(
            "Model to serve: an entry point name in deepserve.v2.model or "
            "deepaas.v2.model, or a model store tag (name, name:latest or "
            "name:version). Repeat the option or give a comma-separated "
            "list to serve several. Default: every installed model (the "
            "bundled demo model when none is installed). The environment "
            "variables DEEPSERVE_V2_MODEL and DEEPAAS_V2_MODEL are read when "
            "neither the command line nor a config file names one."
        ),
    ),
    cfg.MultiStrOpt(
        "default-version",
        default=[],
        help=(
            "NAME:VERSION: the version of a model served in several versions "
            "(--model-name iris:v1,iris:v2) that its unversioned paths reach. "
            "Default: the newest version served. Repeat for several models."
        ),
    ),
    cfg.StrOpt(
        "model-store",
        help=(
            "Directory of the model store that model store tags are looked up "
            "in. Default: $DEEPSERVE_HOME/models, or ~/deepserve/models."
        ),
    ),
    cfg.StrOpt(
        "model-store-url",
        help=(
            "A model store in object storage (an fsspec URL: s3://bucket/path, "
            "gs://..., file://...; see deepserve models push). Stored models "
            "named on the command line are fetched from it into a node-local "
            "cache, by the server and by each Ray replica; name:latest is "
            "resolved once, by the server. Needs the [fsspec] extra and the "
            "filesystem's package (s3fs, gcsfs)."
        ),
    ),
    cfg.IntOpt(
        "client-max-size",
        default=16 * 1024 * 1024,
        min=0,
        help=(
            "Largest request body read into memory, in bytes: a JSON or "
            "url-encoded body, and the text fields of a multipart body. "
            "Larger requests get 413. 0 means no limit (DEEPaaS's default, "
            "not ours). Uploaded files are limited by upload-max-size."
        ),
    ),
    cfg.BoolOpt(
        "train-endpoint",
        default=True,
        help="Serve the training endpoints.",
    ),
    cfg.BoolOpt(
        "predict-endpoint",
        default=True,
        help="Serve the predict endpoints.",
    ),
    cfg.BoolOpt(
        "doc-endpoint",
        default=True,
        help="Serve the Swagger UI at /api.",
    ),
    cfg.BoolOpt(
        "debug-endpoint",
        default=False,
        help=(
            "Serve the server's recent log lines at /v2/debug/. Never enable "
            "it on a server others can reach."
        ),
    ),
    cfg.StrOpt(
        "upload-dir",
        help="Directory for uploaded files while requests use them; it must "
        "exist. Default: the system's temporary directory.",
    ),
    cfg.StrOpt(
        "unknown-arguments",
        default="warn",
        choices=[
            (
                "warn",
                "serve the request, as DEEPaaS does, and name them in a "
                "Deepserve-Unknown-Arguments response header and a warning "
                "in the log",
            ),
            (
                "reject",
                "answer 422 naming them and the arguments the model takes, "
                "without calling the model",
            ),
        ],
        help=(
            "What predict and train requests get when they carry arguments "
            "the model does not take (in the query string, a form, a "
            "multipart body or a JSON body), typos mostly."
        ),
    ),
    cfg.BoolOpt(
        "access-log",
        default=True,
        help="Log one line per request (logger deepserve.access).",
    ),
    cfg.StrOpt(
        "log-format",
        default="text",
        choices=[
            ("text", "one human-readable line per record"),
            (
                "json",
                "one JSON object per line: time, level, logger, message, "
                "request_id and exception",
            ),
        ],
        help="How log records are written to standard error.",
    ),
    cfg.FloatOpt(
        "shutdown-grace",
        default=30.0,
        min=0,
        help=(
            "Seconds that requests in progress get to finish after SIGTERM or "
            "SIGINT; those still running then are cut off. Meanwhile the "
            "server reports not ready and refuses new predictions and "
            "trainings with 503. A second signal ends the wait at once."
        ),
    ),
    cfg.FloatOpt(
        "header-timeout",
        default=ServerSettings.header_timeout,
        min=0.1,
        help=(
            "Seconds a client has to send a request's headers, counted from "
            "its first byte (or from connecting); past it the connection is "
            "closed. Bounds slow-header (slowloris) clients; request bodies "
            "and idle keep-alive connections have their own limits."
        ),
    ),
    cfg.IntOpt(
        "max-connections",
        default=ServerSettings.max_connections,
        min=1,
        help=(
            "Connections served at once; one more is answered 503 with "
            "Retry-After and closed. Keep it below the open-file limit."
        ),
    ),
    cfg.BoolOpt(
        "debug",
        short="d",
        default=False,
        help="Log at DEBUG level.",
    ),
]


#: Environment variable holding a bearer token (see auth-token).
AUTH_TOKEN_ENV = "DEEPSERVE_AUTH_TOKEN"

#: Authentication, CORS, limits and metrics.
security_opts = [
    cfg.IntOpt(
        "upload-max-size",
        default=1024 * 1024 * 1024,
        min=0,
        help=(
            "Largest total of the files one request uploads, in bytes. Files "
            "are streamed to disk (upload-dir), never held in memory. Larger "
            "requests get 413. 0 means no limit."
        ),
    ),
    cfg.MultiStrOpt(
        "auth-token",
        default=[],
        secret=True,
        help=(
            "Bearer token clients must send (Authorization: Bearer TOKEN) to "
            "reach protected endpoints; repeat for several. Setting any token "
            "turns authentication on. Prefer auth-token-file or the "
            f"{AUTH_TOKEN_ENV} environment variable: command lines are "
            "visible to other users of the machine."
        ),
    ),
    cfg.StrOpt(
        "auth-token-file",
        help=(
            "File holding bearer tokens, one per line (a trailing newline is "
            "ignored). Read once at start-up; added to auth-token."
        ),
    ),
    cfg.BoolOpt(
        "auth-predict",
        default=True,
        help=(
            "With authentication on, predictions need a token too. Training, "
            "debug and every other endpoint that is not public always do."
        ),
    ),
    cfg.BoolOpt(
        "metrics-endpoint",
        default=True,
        help="Serve Prometheus metrics at /metrics.",
    ),
    cfg.BoolOpt(
        "auth-metrics",
        default=True,
        help="With authentication on, /metrics needs a token too.",
    ),
    cfg.MultiStrOpt(
        "cors-origin",
        default=[],
        help=(
            "Origin (scheme://host[:port]) whose web pages may call the API "
            "from a browser; repeat or give a comma-separated list; '*' "
            "allows any. Default: none (CORS off)."
        ),
    ),
]


#: How models run: defaults in [DEFAULT] (and on the command line), one
#: model's own values in a ``[model:NAME]`` section of a config file.
executor_opts = [
    cfg.StrOpt(
        "executor",
        default="process",
        choices=[
            ("process", "spawn-started worker processes: isolated, CUDA-safe"),
            ("thread", "a thread pool in the server: light or GIL-releasing models"),
            ("inline", "in the server's event loop: tests and trivial models"),
            ("ray", "Ray Serve replicas on a Ray cluster (see the [ray] options)"),
        ],
        help="Where model code runs. Trainings always run in a process of their own.",
    ),
    cfg.IntOpt(
        "workers",
        short="p",
        default=1,
        min=1,
        help=(
            "Workers (processes or threads) per model for predictions. On a "
            "CPU use about as many as cores; on one GPU, usually 1."
        ),
    ),
    cfg.BoolOpt(
        "warm",
        default=True,
        help="Run each model's warm() in every worker before serving.",
    ),
    cfg.FloatOpt(
        "predict-timeout",
        default=0.0,
        min=0,
        help=(
            "Seconds a prediction may take before it is answered with 504; a "
            "process worker running it is killed and replaced. 0: no limit."
        ),
    ),
    cfg.IntOpt(
        "max-queue",
        default=256,
        min=0,
        help=(
            "Predictions that may wait for a free worker; beyond that new "
            "ones are answered at once with 503 and a Retry-After header."
        ),
    ),
    cfg.BoolOpt(
        "batching",
        help=(
            "Merge concurrent predictions into calls of the model's "
            "predict_batch. Default: on for models that implement it."
        ),
    ),
    cfg.IntOpt(
        "max-batch-size",
        min=1,
        help="Largest batch. Default: the model's own setting, or 32.",
    ),
    cfg.FloatOpt(
        "max-latency-ms",
        min=0,
        help=(
            "Longest time a prediction waits for its batch to fill, in "
            "milliseconds. Default: the model's own setting, or 5."
        ),
    ),
]

#: The training-job database: ``[jobs]`` in a config file, ``--jobs-*`` on
#: the command line.
JOBS_GROUP = "jobs"
job_opts = [
    cfg.StrOpt(
        "database",
        help=(
            "Where training jobs and their output are recorded: an SQLAlchemy "
            "URL (postgresql://user@host/db for replicas sharing their jobs) "
            "or the path of an SQLite file. Default: "
            "$XDG_DATA_HOME/deepserve/jobs.sqlite, that is "
            "~/.local/share/deepserve/jobs.sqlite."
        ),
    ),
    cfg.IntOpt(
        "max-log-size",
        default=JobSettings.max_log_bytes,
        min=0,
        help=(
            "Bytes of output (stdout, stderr, log records) kept per training: "
            "past it the oldest lines are dropped. 0 keeps none."
        ),
    ),
    cfg.FloatOpt(
        "heartbeat-interval",
        default=JobSettings.heartbeat_interval,
        min=0.1,
        help="Seconds between two heartbeats of this server's running trainings.",
    ),
    cfg.FloatOpt(
        "heartbeat-timeout",
        default=JobSettings.heartbeat_timeout,
        min=0.2,
        help=(
            "Seconds without a heartbeat after which a running training of "
            "another server (or of this one before a crash) is marked "
            "interrupted. Must exceed heartbeat-interval."
        ),
    ),
    cfg.FloatOpt(
        "retention-days",
        default=JobSettings.retention_days,
        min=0,
        help="Days finished trainings are kept. 0 keeps them forever.",
    ),
    cfg.StrOpt(
        "recovery-file",
        help=(
            "Where the ends of trainings that the database could not take "
            "(locked, unreachable) before the server stopped are written; the "
            "next start records them. Default: next to an SQLite database "
            "(FILE.recovery.jsonl), else "
            "$XDG_DATA_HOME/deepserve/jobs-recovery-HASH.jsonl (HASH names "
            "the database URL)."
        ),
    ),
]

#: Models on a Ray cluster (``executor = ray``): ``[ray]`` in a config file,
#: ``--ray-*`` on the command line.
RAY_GROUP = "ray"
_RAY = RaySettings()
ray_opts = [
    cfg.StrOpt(
        "address",
        help=(
            "Address of the Ray cluster's head (its GCS), HOST:PORT, for models "
            "run with executor = ray. Required with that executor: deepserve "
            'never starts a Ray of its own. Needs pip install "deepserve[ray]".'
        ),
    ),
    cfg.StrOpt(
        "app-name",
        default=_RAY.app_name,
        help=(
            "Prefix of the Ray Serve applications: a model's is APP-NAME.NAME "
            "(APP-NAME.NAME:VERSION for a stored version)."
        ),
    ),
    cfg.BoolOpt(
        "attach",
        default=not _RAY.own_app,
        help=(
            "Attach to Serve applications deployed beforehand (deepserve ray "
            "deploy), never redeploying or deleting them: for several servers "
            "sharing one cluster. Default: each server deploys its models' "
            "applications on start and deletes them on stop."
        ),
    ),
    cfg.FloatOpt(
        "num-cpus",
        default=_RAY.num_cpus,
        min=0,
        help="CPUs each replica reserves on the cluster (fractions allowed).",
    ),
    cfg.FloatOpt(
        "num-gpus",
        default=_RAY.num_gpus,
        min=0,
        help="GPUs each replica reserves on the cluster (fractions allowed).",
    ),
    cfg.IntOpt(
        "replicas",
        default=_RAY.replicas,
        min=1,
        help="Replicas of each model, unless autoscaling (min-replicas and max-replicas).",
    ),
    cfg.IntOpt(
        "min-replicas",
        min=1,
        help="Autoscaling: fewest replicas. Set with max-replicas to autoscale.",
    ),
    cfg.IntOpt(
        "max-replicas",
        min=1,
        help="Autoscaling: most replicas. Set with min-replicas to autoscale.",
    ),
    cfg.FloatOpt(
        "target-ongoing-requests",
        default=_RAY.target_ongoing_requests,
        min=0.1,
        help="Autoscaling: calls in hand per replica that the replica count aims at.",
    ),
    cfg.FloatOpt(
        "upscale-delay",
        default=_RAY.upscale_delay,
        min=0,
        help="Autoscaling: seconds the load stays above target before replicas are added.",
    ),
    cfg.FloatOpt(
        "downscale-delay",
        default=_RAY.downscale_delay,
        min=0,
        help="Autoscaling: seconds the load stays below target before replicas go.",
    ),
    cfg.IntOpt(
        "max-ongoing-requests",
        default=_RAY.max_ongoing_requests,
        min=1,
        help=(
            "Calls one replica holds at once (it runs them one at a time). "
            "deepserve hands the cluster at most replicas x this; the rest "
            "wait in its own queue (max-queue)."
        ),
    ),
    cfg.FloatOpt(
        "train-num-cpus",
        default=_RAY.train_num_cpus,
        min=0,
        help="CPUs a training reserves on the cluster (each runs in an actor).",
    ),
    cfg.FloatOpt(
        "train-num-gpus",
        default=_RAY.train_num_gpus,
        min=0,
        help="GPUs a training reserves on the cluster.",
    ),
    cfg.FloatOpt(
        "start-timeout",
        default=_RAY.start_timeout,
        min=1,
        help=(
            "Seconds a model's replicas get to start (placed, built, warmed) "
            "before deepserve stops with the replicas' own error."
        ),
    ),
]

#: Prefix of the config file sections holding one model's executor options.
MODEL_SECTION = "model:"


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Options for ``oslo-config-generator``."""
    return [
        ("DEFAULT", [*server_opts, *executor_opts, *security_opts]),
        (JOBS_GROUP, job_opts),
        (RAY_GROUP, ray_opts),
        # A template: one such section per model, named after it.
        (f"{MODEL_SECTION}name", _model_opts()),
    ]


def _model_opts() -> list[cfg.Opt]:
    """The executor options of one model: unset ones follow [DEFAULT]."""
    opts = []
    for opt in executor_opts:
        own = copy.copy(opt)
        own.default = None
        own.help = f"{opt.help} Unset: the [DEFAULT] value."
        opts.append(own)
    return opts


class _Options(cfg.ConfigOpts):
    """oslo.config's option registry, reporting the command line's mistakes
    as :class:`~deepserve.console.UsageError` instead of printing them and
    exiting, and ``--help`` as :mod:`deepserve.config_help` writes it.

    oslo.config has no hooks for either: this overrides two of its private
    methods, present from 8.8 (DEEPaaS 2.x's pin) to the newest release and
    exercised by the tests in both.
    """

    def _parse_cli_opts(self, args: Sequence[str]) -> Any:
        parser: Any = self._oparser
        parser.error = self._argparse_error
        parser.print_help = self._print_help
        return super()._parse_cli_opts(args)

    def _argparse_error(self, message: str) -> NoReturn:
        parser: Any = self._oparser
        known = [
            option for action in parser._actions for option in action.option_strings
        ]
        unknown = message.partition("unrecognized arguments: ")[2].split()
        if unknown:
            word = unknown[0].partition("=")[0]
            raise console.UsageError(
                f"unknown option '{word}'"
                if word.startswith("-")
                else f"unexpected argument '{word}'",
                hint=console.did_you_mean(word, known),
            )
        raise console.UsageError(message)

    def _print_help(self, file: Any = None) -> None:
        from deepserve import config_help

        parser: Any = self._oparser
        text = config_help.render(self, parser.prog)
        print(text, end="", file=file or sys.stdout)

    def _validate_cli_options(self, namespace: Any) -> None:
        # oslo.config's own version writes to stderr and exits (with status
        # 0 on 8.8); same checks, reported as errors that name the option.
        for opt, group in self._all_cli_opts():
            group_name = group.name if group else None
            try:
                value, loc = opt._get_from_namespace(namespace, group_name)
            except KeyError:
                continue
            value = self._substitute(value, group=group, namespace=namespace)
            try:
                self._convert_value(value, opt)
                _refuse_empty(opt, value)
            except ValueError:
                cli_name = opt.name if group is None else f"{group.name}-{opt.name}"
                problem = _invalid_value(opt, value)
                location = getattr(loc, "location", None)
                if location == cfg.Locations.command_line:
                    raise console.UsageError(
                        f"argument --{cli_name}: {problem}",
                        hint=_value_hint(opt, value),
                    ) from None
                where = getattr(loc, "detail", None) or "a config file"
                raise ConfigError(
                    f"[{group_name or 'DEFAULT'}] {opt.dest} in {where}: {problem}"
                ) from None


def _invalid_value(opt: cfg.Opt, value: Any) -> str:
    """``invalid value 'x': expected ...`` for ``opt``'s type."""
    shown = value if not isinstance(value, list) else ",".join(map(str, value))
    if isinstance(shown, str) and not shown.strip():
        return "empty value: give one, or leave the option out"
    kind = opt.type
    choices = getattr(kind, "choices", None)
    low, high = getattr(kind, "min", None), getattr(kind, "max", None)
    if choices:
        expected = "one of " + ", ".join(str(c) for c in choices)
    elif isinstance(kind, types.Port):
        expected = f"a port number from {low} to {high}"
    elif isinstance(kind, types.Boolean):
        expected = "true or false"
    elif isinstance(kind, types.Integer | types.Float):
        expected = "an integer" if isinstance(kind, types.Integer) else "a number"
        if low is not None and high is not None:
            expected += f" from {low:g} to {high:g}"
        elif low is not None:
            expected += f" >= {low:g}"
        elif high is not None:
            expected += f" <= {high:g}"
    else:
        expected = f"a {type(kind).__name__.lower()}"
    return f"invalid value '{shown}': expected {expected}"


def _refuse_empty(opt: cfg.Opt, value: Any) -> None:
    """oslo.config takes ``--workers=`` as "unset" (the default) and
    ``--listen-port=`` as ``None``: an empty value is almost always a shell
    variable that was not set, so it is refused, except where an empty text
    means something (``--base-path=`` is the root)."""
    values = value if isinstance(value, list) else [value]
    meaningful = isinstance(opt.type, types.String) and not opt.multi
    if not meaningful and any(isinstance(v, str) and not v.strip() for v in values):
        raise ValueError("empty value")


def _value_hint(opt: cfg.Opt, value: Any) -> str:
    choices = getattr(opt.type, "choices", None)
    if choices and isinstance(value, str):
        return console.did_you_mean(value, [str(c) for c in choices])
    return ""


def new_conf() -> cfg.ConfigOpts:
    """A fresh option registry (``--help``: :mod:`deepserve.config_help`)."""
    conf = _Options()
    conf.register_cli_opts([*server_opts, *executor_opts, *security_opts])
    conf.register_cli_opts(job_opts, group=JOBS_GROUP)
    conf.register_cli_opts(ray_opts, group=RAY_GROUP)
    return conf


def load(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    prog: str = "deepserve run",
    default_config_files: list[str] | None = None,
) -> tuple[ServerSettings, bool]:
    """Parse ``argv`` and config files into settings.

    :returns: the settings, and whether debug logging was asked for.
    :raises UsageError: when the command line is wrong (an unknown option,
        an invalid value).
    :raises ConfigError: when a config file is wrong.
    :raises SystemExit: after ``--help`` and ``--version`` (status 0).
    """
    conf = new_conf()
    try:
        conf(
            list(argv),
            project="deepserve",
            prog=prog,
            version=f"deepserve {deepserve.__version__}",
            default_config_files=default_config_files,
            # Only the variables documented here are read, through environ.
            use_env=False,
        )
    except cfg.Error as exc:
        raise ConfigError(str(exc)) from exc
    names = _model_names(conf.model_name)
    if not names:
        for var in MODEL_ENV:
            names = _model_names([environ.get(var, "")])
            if names:
                break
    api = ApiSettings(
        base_path=normalise_base_path(conf.base_path),
        client_max_size=conf.client_max_size,
        predict_endpoint=conf.predict_endpoint,
        train_endpoint=conf.train_endpoint,
        doc_endpoint=conf.doc_endpoint,
        debug_endpoint=conf.debug_endpoint,
        upload_dir=_upload_dir(conf.upload_dir),
        unknown_arguments=conf.unknown_arguments,
        **_security(conf, environ),
    )
    executor = _executor_settings(
        conf, ExecutorSettings(ray=_ray_settings(conf[RAY_GROUP], conf.model_store_url))
    )
    settings = ServerSettings(
        listen_ip=conf.listen_ip,
        listen_port=conf.listen_port,
        grpc_port=conf.grpc_port,
        access_log=conf.access_log,
        log_format=conf.log_format,
        shutdown_grace=conf.shutdown_grace,
        header_timeout=conf.header_timeout,
        max_connections=conf.max_connections,
        model_names=names,
        default_versions=_default_versions(conf.default_version),
        store_root=store_root(conf.model_store, environ),
        api=api,
        model_store_url=conf.model_store_url or None,
        executor=executor,
        model_executors=_model_sections(conf, executor),
        jobs=_job_settings(conf[JOBS_GROUP], environ),
    )
    return settings, bool(conf.debug)


def _default_versions(values: Sequence[str]) -> dict[str, str]:
    """``NAME:VERSION`` values as name -> version.

    :raises ConfigError: for a value that is not ``NAME:VERSION``, or two
        versions for one name.
    """
    found: dict[str, str] = {}
    for value in _model_names(values):
        name, _, version = value.partition(":")
        if not name or not version or ":" in version or version == "latest":
            raise ConfigError(
                f"default-version: expected NAME:VERSION (an exact version), "
                f"got '{value}'"
            )
        if found.get(name, version) != version:
            raise ConfigError(
                f"default-version: two versions for '{name}': "
                f"{found[name]} and {version}"
            )
        found[name] = version
    return found


def _upload_dir(path: str | None) -> str | None:
    """The upload directory, checked now: otherwise every upload would
    fail, each with a 500.

    :raises ConfigError: when it is not a directory this process can write.
    """
    if not path:
        return None
    if not os.path.isdir(path):
        raise ConfigError(f"upload-dir {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"upload-dir {path} is not writable by this user")
    return path


def _job_settings(values: Any, environ: Mapping[str, str]) -> JobSettings:
    if values.heartbeat_timeout <= values.heartbeat_interval:
        raise ConfigError(
            f"[{JOBS_GROUP}] heartbeat-timeout ({values.heartbeat_timeout:g}) must "
            f"exceed heartbeat-interval ({values.heartbeat_interval:g})"
        )
    database = job_database_url(values.database, environ)
    return JobSettings(
        database=database,
        max_log_bytes=values.max_log_size,
        heartbeat_interval=values.heartbeat_interval,
        heartbeat_timeout=values.heartbeat_timeout,
        retention_days=values.retention_days,
        recovery_file=str(Path(values.recovery_file).expanduser().absolute())
        if values.recovery_file
        else recovery_file_for(database, environ),
    )


def recovery_file_for(database: str, environ: Mapping[str, str]) -> str | None:
    """The default recovery file: beside an SQLite file; in the data
    directory, named after the database, for others; none for a database
    in memory."""
    scheme, sep, rest = database.partition(":///")
    if scheme.split("+")[0] == "sqlite":
        if not sep or not rest or rest == ":memory:":
            return None
        return rest + ".recovery.jsonl"
    digest = hashlib.sha256(database.encode()).hexdigest()[:12]
    return str(_data_home(environ) / "deepserve" / f"jobs-recovery-{digest}.jsonl")


def job_database_url(value: str | None, environ: Mapping[str, str]) -> str:
    """An SQLAlchemy URL for the ``database`` option: URLs as they are, a
    path as an SQLite file, nothing as the default file under
    ``$XDG_DATA_HOME`` (or ``~/.local/share``)."""
    if value and "://" in value:
        return value
    if value:
        path = Path(value).expanduser()
    else:
        path = _data_home(environ) / "deepserve" / "jobs.sqlite"
    return f"sqlite:///{path.absolute()}"


def _data_home(environ: Mapping[str, str]) -> Path:
    return Path(
        environ.get("XDG_DATA_HOME")
        or Path(environ.get("HOME") or Path.home()) / ".local" / "share"
    )


def _security(conf: cfg.ConfigOpts, environ: Mapping[str, str]) -> dict[str, Any]:
    """The :class:`ApiSettings` fields of ``security_opts``."""
    return {
        "upload_max_size": conf.upload_max_size,
        "auth_tokens": auth_tokens(conf.auth_token, conf.auth_token_file, environ),
        "auth_predict": conf.auth_predict,
        "metrics_endpoint": conf.metrics_endpoint,
        "auth_metrics": conf.auth_metrics,
        "cors_origins": _model_names(conf.cors_origin),
    }


def auth_tokens(
    given: Sequence[str], path: str | None, environ: Mapping[str, str]
) -> tuple[str, ...]:
    """Every accepted token: options, the token file, the environment.

    :raises ConfigError: when the file cannot be read or holds no token
        (never quoting a token).
    """
    tokens = [t.strip() for t in given if t.strip()]
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.strip() for line in f.read().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"cannot read auth-token-file {path}: {reason}") from None
        found = [line for line in lines if line]
        if not found:
            raise ConfigError(f"auth-token-file {path} holds no token")
        tokens.extend(found)
    if environ.get(AUTH_TOKEN_ENV, "").strip():
        tokens.append(environ[AUTH_TOKEN_ENV].strip())
    return tuple(dict.fromkeys(tokens))


def _executor_settings(
    values: Any, inherited: ExecutorSettings | None = None
) -> ExecutorSettings:
    """Settings from an option group; unset values come from ``inherited``."""
    base = inherited or ExecutorSettings()

    def pick(name: str) -> Any:
        value = getattr(values, name)
        return getattr(base, name) if value is None else value

    timeout = pick("predict_timeout")
    return ExecutorSettings(
        kind=values.executor or base.kind,
        workers=pick("workers"),
        warm=pick("warm"),
        predict_timeout=timeout or None,
        max_queue=pick("max_queue"),
        batching=pick("batching"),
        max_batch_size=pick("max_batch_size"),
        max_latency_ms=pick("max_latency_ms"),
        ray=base.ray,
    )


def _ray_settings(values: Any, model_store_url: str | None) -> RaySettings:
    """The ``[ray]`` group as settings.

    :raises ConfigError: when the autoscaling bounds do not fit together.
    """
    low, high = values.min_replicas, values.max_replicas
    if (low is None) != (high is None):
        raise ConfigError(
            f"[{RAY_GROUP}] min-replicas and max-replicas go together: set both "
            "to autoscale, or neither"
        )
    if low is not None and high is not None and low > high:
        raise ConfigError(
            f"[{RAY_GROUP}] min-replicas ({low}) must not exceed max-replicas ({high})"
        )
    if (
        low is not None
        and values.target_ongoing_requests >= values.max_ongoing_requests
    ):
        raise ConfigError(
            f"[{RAY_GROUP}] target-ongoing-requests "
            f"({values.target_ongoing_requests:g}) must be below "
            f"max-ongoing-requests ({values.max_ongoing_requests}): a replica "
            "never holds more than that, so autoscaling would never add one"
        )
    return RaySettings(
        address=values.address or None,
        app_name=values.app_name,
        own_app=not values.attach,
        num_cpus=values.num_cpus,
        num_gpus=values.num_gpus,
        replicas=values.replicas,
        min_replicas=low,
        max_replicas=high,
        target_ongoing_requests=values.target_ongoing_requests,
        upscale_delay=values.upscale_delay,
        downscale_delay=values.downscale_delay,
        max_ongoing_requests=values.max_ongoing_requests,
        train_num_cpus=values.train_num_cpus,
        train_num_gpus=values.train_num_gpus,
        start_timeout=values.start_timeout,
        model_store_url=model_store_url or None,
    )


def _model_sections(
    conf: cfg.ConfigOpts, default: ExecutorSettings
) -> dict[str, ExecutorSettings]:
    """``[model:NAME]`` sections of the config files, over the defaults."""
    found: dict[str, ExecutorSettings] = {}
    for section in conf.list_all_sections():
        if not section.startswith(MODEL_SECTION):
            continue
        name = section[len(MODEL_SECTION) :].strip()
        if not name:
            raise ConfigError(f"Config section [{section}] names no model")
        conf.register_opts(_model_opts(), group=section)
        values = conf[section]
        for opt in _model_opts():
            try:
                getattr(values, opt.dest)
            except (ValueError, cfg.Error) as exc:
                raise ConfigError(_section_problem(conf, section, opt, exc)) from exc
        found[name] = _executor_settings(values, default)
    return found


def _section_problem(
    conf: cfg.ConfigOpts, section: str, opt: cfg.Opt, exc: Exception
) -> str:
    """``[model:NAME] key in FILE: invalid value ...``, as for [DEFAULT]."""
    try:
        namespace: Any = conf._namespace
        raw, loc = opt._get_from_namespace(namespace, section)
    except (KeyError, AttributeError):  # not where oslo.config keeps it
        return f"[{section}] {opt.dest}: {exc}"
    where = getattr(loc, "detail", None) or "a config file"
    return f"[{section}] {opt.dest} in {where}: {_invalid_value(opt, raw)}"


def _model_names(values: Sequence[str]) -> tuple[str, ...]:
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
    return tuple(names)


def store_root(configured: str | None, environ: Mapping[str, str]) -> str:
    """The model store's directory: the option, else ``$DEEPSERVE_HOME/models``,
    else ``~/deepserve/models`` (the store expands ``~``), as
    :func:`deepserve.models.default_store` finds it."""
    if configured:
        return configured
    return posixpath.join(environ.get("DEEPSERVE_HOME") or "~/deepserve", "models")


def normalise_base_path(path: str) -> str:
    """``""`` or ``/a/b`` (no trailing slash).

    :raises ConfigError: when the path does not start with ``/``.
    """
    path = path.strip()
    if not path or path == "/":
        return ""
    if not path.startswith("/"):
        raise ConfigError(f"base-path must start with '/', got '{path}'")
    return posixpath.normpath(path).rstrip("/")
