"""Frozen settings, parsed once by :mod:`deepserve.config` and passed down."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

#: ``warn``: arguments a model does not take are ignored, and named in the
#: response and the log; ``reject``: such requests are answered 422.
UnknownArguments = Literal["warn", "reject"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """What the HTTP layer needs to know."""

    #: Path prefix when served behind a reverse proxy ("" or "/something").
    base_path: str = ""
    #: Largest request body read into memory (JSON, url-encoded and
    #: multipart text fields), in bytes; 0 means no limit.
    client_max_size: int = 16 * 1024 * 1024
    predict_endpoint: bool = True
    train_endpoint: bool = True
    doc_endpoint: bool = True
    debug_endpoint: bool = False
    #: Directory for uploaded files; ``None`` uses the system's temp dir.
    upload_dir: str | None = None
    #: Largest total of the files one request uploads (streamed to disk),
    #: in bytes; 0 means no limit.
    upload_max_size: int = 1024 * 1024 * 1024
    #: Bearer tokens accepted; empty: no authentication. Never shown in a repr.
    auth_tokens: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    #: With tokens set: whether predictions need one too.
    auth_predict: bool = True
    #: Serve Prometheus metrics at ``/metrics``.
    metrics_endpoint: bool = True
    #: With tokens set: whether ``/metrics`` needs one too.
    auth_metrics: bool = True
    #: Origins whose browser pages may call the API (``*``: any); empty: CORS off.
    cors_origins: tuple[str, ...] = ()
    #: What predict and train do with arguments the model does not take:
    #: ``warn`` serves the request and names them in a response header and
    #: the log; ``reject`` answers 422 naming them.
    unknown_arguments: UnknownArguments = "warn"


#: ``process``: spawn-started worker processes (isolated, CUDA-safe);
#: ``thread``: a thread pool in the server process (light or GIL-releasing
#: models); ``inline``: in the event loop itself (tests, trivial models);
#: ``ray``: Ray Serve replicas on a Ray cluster (the ``[ray]`` extra).
ExecutorKind = Literal["process", "thread", "inline", "ray"]
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("process", "thread", "inline", "ray")

#: ``text``: one human-readable line per record; ``json``: one JSON object
#: per line, for log collectors.
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RaySettings:
    """How models with ``executor = ray`` run on a Ray cluster (``[ray]``)."""

    #: The cluster's GCS address, ``HOST:PORT``; ``None``: not set (a model
    #: on Ray then fails to start: deepserve never starts a local Ray).
    address: str | None = None
    #: Ray Serve application of a model: ``APP_NAME.NAME`` (``.NAME:VERSION``
    #: for a stored version).
    app_name: str = "deepserve"
    #: Deploy the applications on start and delete them on stop; ``False``:
    #: attach to applications deployed beforehand (``deepserve ray deploy``)
    #: and never change them.
    own_app: bool = True
    #: CPUs and GPUs each replica reserves (fractions allowed).
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    #: Replicas per model, when not autoscaling.
    replicas: int = 1
    #: Autoscaling bounds; both set: autoscaling on, ``replicas`` ignored.
    min_replicas: int | None = None
    max_replicas: int | None = None
    #: Calls in hand per replica that autoscaling aims at.
    target_ongoing_requests: float = 2.0
    #: Autoscaling: seconds the load must stay above (below) target before
    #: replicas are added (removed).
    upscale_delay: float = 30.0
    downscale_delay: float = 600.0
    #: Calls one replica holds at once (it runs them one by one); deepserve
    #: never hands Ray more than replicas x this, the rest wait in its queue.
    max_ongoing_requests: int = 4
    #: CPUs and GPUs a training's actor reserves.
    train_num_cpus: float = 1.0
    train_num_gpus: float = 0.0
    #: Seconds a model's replicas get to build and warm before start-up fails.
    start_timeout: float = 60.0
    #: Where replicas fetch stored models from (an fsspec URL); ``None``:
    #: the model store's directory, which every node must then see.
    model_store_url: str | None = None

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None and self.max_replicas is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutorSettings:
    """How one model's code is run."""

    kind: ExecutorKind = "process"
    #: Workers (processes or threads) for predictions.
    workers: int = 1
    #: Run the model's ``warm()`` in every worker before serving.
    warm: bool = True
    #: Seconds a prediction may take; ``None``: no limit.
    predict_timeout: float | None = None
    #: Predictions that may wait for a worker before new ones get 503.
    max_queue: int = 256
    #: Merge concurrent predictions into ``predict_batch`` calls; ``None``:
    #: whenever the model implements ``predict_batch``.
    batching: bool | None = None
    #: Largest batch; ``None``: the model's own setting, or 32.
    max_batch_size: int | None = None
    #: Longest wait for a batch to fill; ``None``: the model's, or 5 ms.
    max_latency_ms: float | None = None
    #: With ``kind`` ``ray``: the cluster and the replicas.
    ray: RaySettings = dataclasses.field(default_factory=RaySettings)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSettings:
    """Where training jobs are recorded (see :mod:`deepserve.jobs`)."""

    #: SQLAlchemy URL of the job database. The CLI's default is an SQLite
    #: file; this default, an in-memory database, suits tests and embedding.
    database: str = "sqlite://"
    #: Bytes of output kept per job: the newest; older entries are dropped.
    max_log_bytes: int = 1024 * 1024
    #: Seconds between two refreshes of this server's jobs' heartbeat.
    heartbeat_interval: float = 5.0
    #: Seconds without a heartbeat after which another server's running
    #: job is marked ``interrupted``.
    heartbeat_timeout: float = 30.0
    #: Days a finished job is kept; 0 keeps jobs forever.
    retention_days: float = 0.0
    #: Where the ends of trainings that the database could not take before
    #: the server stopped are written, to be recorded at the next start;
    #: ``None``: nowhere (they are logged).
    recovery_file: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything ``deepserve run`` needs."""

    listen_ip: str = "127.0.0.1"
    listen_port: int = 5000
    #: Port of the Open Inference Protocol's gRPC service; ``None``: off.
    grpc_port: int | None = None
    #: Log one line per request (logger ``deepserve.access``).
    access_log: bool = True
    #: How log records are written to stderr.
    log_format: LogFormat = "text"
    #: Seconds requests in progress get to finish once a shutdown begins.
    shutdown_grace: float = 30.0
    #: Seconds a client has to send a request's headers, from its first
    #: byte (or from connecting); past it the connection is closed.
    header_timeout: float = 20.0
    #: Connections served at once; more are answered 503 and closed.
    max_connections: int = 1000
    #: Models to serve; empty means every model found.
    model_names: tuple[str, ...] = ()
    #: Name -> the version its unversioned paths reach, for a model served
    #: in several versions; unset names: the newest version served.
    default_versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Root directory of the model store that store tags are looked up in.
    store_root: str = "~/deepserve/models"
    #: A model store in object storage (an fsspec URL) that stored models are
    #: fetched from into a node-local cache; ``None``: only ``store_root``.
    model_store_url: str | None = None
    api: ApiSettings = dataclasses.field(default_factory=ApiSettings)
    #: How models run, unless ``model_executors`` says otherwise.
    executor: ExecutorSettings = dataclasses.field(default_factory=ExecutorSettings)
    #: Model name -> its own settings (``[model:NAME]`` config sections).
    model_executors: Mapping[str, ExecutorSettings] = dataclasses.field(
        default_factory=dict
    )
    #: The training-job database.
    jobs: JobSettings = dataclasses.field(default_factory=JobSettings)

    def executor_for(self, model: str, version: str | None = None) -> ExecutorSettings:
        """A model's settings: its version's own section
        (``[model:NAME:VERSION]``), else its name's, else the defaults."""
        if version is not None and f"{model}:{version}" in self.model_executors:
            return self.model_executors[f"{model}:{version}"]
        return self.model_executors.get(model, self.executor)
