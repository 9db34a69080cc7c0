"""Frozen settings, parsed once by :mod:`deepserve.config` and passed down."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """What the HTTP layer needs to know."""

    #: Path prefix when served behind a reverse proxy ("" or "/something").
    base_path: str = ""
    #: Largest accepted request body in bytes; 0 means no limit.
    client_max_size: int = 0
    predict_endpoint: bool = True
    train_endpoint: bool = True
    doc_endpoint: bool = True
    debug_endpoint: bool = False
    #: Directory for uploaded files; ``None`` uses the system's temp dir.
    upload_dir: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutorSettings:
    """How model code is run."""

    #: Worker processes per model for predictions.
    workers: int = 1
    #: Run each model's ``warm()`` in every worker before serving.
    warm: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything ``deepserve run`` needs."""

    listen_ip: str = "127.0.0.1"
    listen_port: int = 5000
    #: Models to serve; empty means every model found.
    model_names: tuple[str, ...] = ()
    api: ApiSettings = dataclasses.field(default_factory=ApiSettings)
    executor: ExecutorSettings = dataclasses.field(default_factory=ExecutorSettings)
