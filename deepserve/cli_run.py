"""``deepserve run``: the one place where a server is put together.

Config, loader, adapters, executors, runtime and API meet here and nowhere
else (the composition root); :mod:`deepserve.cli` runs it for ``deepserve
run``. The server's layers are imported once the command line is known to
be good, so ``--help`` and a mistyped option answer at once.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import deepserve
from deepserve import config, console, loader, logs
from deepserve.exceptions import ConfigError, LoaderError

if TYPE_CHECKING:
    from aiohttp import web

    from deepserve.runtime import Registry
    from deepserve.settings import ServerSettings
    from deepserve.store import Store

LOG = logging.getLogger("deepserve")

PROG = "deepserve run"

BANNER = """\
deepserve {version} is serving: {models}
{docs}
    API specification: {spec}
          V2 endpoint: {v2}
"""


def main(argv: Sequence[str]) -> int:
    """``deepserve run``: serve models until interrupted."""
    try:
        settings, debug = config.load(argv, os.environ)
    except console.UsageError as exc:
        return console.usage_error(PROG, exc)
    except ConfigError as exc:
        return _fail(str(exc))
    logs.configure(
        level=logging.DEBUG if debug else logging.INFO,
        log_format=settings.log_format,
    )
    if settings.api.debug_endpoint:
        LOG.warning(
            "The debug endpoint is ON: /v2/debug/ shows the server's log to anyone "
            "who can reach it. Turn it off once you are done debugging."
        )
    try:
        registry = build_registry(settings)
    except LoaderError as exc:
        LOG.debug("Start-up failed", exc_info=True)
        return console.error(PROG, str(exc), hint=exc.hint)
    return _serve(registry, settings)


def _serve(registry: Registry, settings: ServerSettings) -> int:
    import asyncio

    from deepserve import server
    from deepserve.api import create_app

    app = create_app(registry, settings.api)
    names = list(registry)
    try:
        listeners = _grpc(app, settings)
    except ImportError as exc:
        return console.error(
            PROG,
            f"--grpc-port needs gRPC, which is not installed ({exc})",
            hint='pip install "deepserve[grpc]"',
        )
    status = asyncio.run(
        server.serve(
            app,
            registry,
            settings,
            # Called once the socket listens: the banner tells the truth.
            announce=lambda port: print(
                _banner(settings, names, port, listeners), flush=True
            ),
            fail=_fail,
            listeners=[("the gRPC service", grpc) for grpc in listeners],
        )
    )
    # The loop and its signal handlers are gone: a late signal must not
    # interrupt the interpreter's exit with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return status


def _grpc(app: web.Application, settings: ServerSettings) -> list[Any]:
    """The gRPC service of the Open Inference Protocol, when a port is set:
    the app's own protocol service, tokens and metrics, behind another
    port.

    :raises ImportError: when the ``grpc`` extra is not installed.
    """
    if settings.grpc_port is None:
        return []
    from deepserve.api import metrics
    from deepserve.api.oip import SERVICE

    # gRPC's C core logs its own errors to stderr (a port in use: a line
    # before ours); deepserve reports what matters itself. GRPC_VERBOSITY
    # set by the user wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from deepserve.grpc.server import OPEN_METHODS, GrpcServer

    meter = app.get(metrics.METER)
    return [
        GrpcServer(
            app[SERVICE],
            host=settings.listen_ip,
            port=settings.grpc_port,
            tokens=frozenset(settings.api.auth_tokens),
            max_message_bytes=settings.api.client_max_size,
            on_request=meter.observe_rpc if meter is not None else None,
            # As over HTTP: predictions open with --noauth-predict.
            open_methods=OPEN_METHODS
            if settings.api.auth_predict
            else OPEN_METHODS | {"ModelInfer"},
        )
    ]


def build_registry(settings: ServerSettings) -> Registry:
    """Find, import and wrap the models named in ``settings``.

    :raises LoaderError: with one line naming the model, the problem and the
        models that are available.
    """
    from deepserve import adapters
    from deepserve.jobs import JobStore
    from deepserve.runtime import Registry, ServedModel
    from deepserve.store import Store

    available = loader.discover(loader.installed_entry_points())
    store = Store(settings.store_root)
    refs = loader.select(
        available, settings.model_names, store=store, remote=settings.model_store_url
    )
    if settings.model_store_url is not None:
        # Versions were fetched into the node-local cache: it is the store.
        store = Store(next((r.store for r in refs if r.store), settings.store_root))
    served = []
    for ref in refs:
        try:
            model = adapters.build(ref)
        except LoaderError as exc:
            raise LoaderError(
                f"{exc} (available models: {loader.describe(available, store)})"
            ) from exc
        executor = settings.executor_for(ref.name, ref.version)
        served.append(ServedModel.create(ref, model, executor))
    known = {ref.name for ref in refs} | {ref.tag for ref in refs}
    for name in set(settings.model_executors) - known:
        LOG.warning("Config section [model:%s] names a model that is not served", name)
    defaults = {**newest_versions(refs, store), **settings.default_versions}
    try:
        return Registry(served, jobs=JobStore(settings.jobs), defaults=defaults)
    except ValueError as exc:
        raise LoaderError(f"Cannot serve the models: {exc}") from exc


def newest_versions(refs: list[loader.ModelRef], store: Store) -> dict[str, str]:
    """Name -> its newest version, for the names served in several versions."""
    created: dict[str, list[tuple[Any, str]]] = {}
    for ref in refs:
        if ref.version is not None:
            info = store.get(ref.tag).info
            created.setdefault(ref.name, []).append((info.created, ref.version))
    return {name: max(found)[1] for name, found in created.items() if len(found) > 1}


def _banner(
    settings: ServerSettings, names: list[str], port: int, grpc: Sequence[Any] = ()
) -> str:
    host = settings.listen_ip
    if ":" in host:
        host = f"[{host}]"
    base = f"http://{host}:{port}{settings.api.base_path}"

    def url(path: str) -> str:  # in colour on a terminal
        return console.paint(base + path, "cyan")

    docs = (
        f"\n    API documentation: {url('/api')}" if settings.api.doc_endpoint else ""
    )
    for listener in grpc:
        docs += "\n         OIP over gRPC: " + console.paint(
            f"{host}:{listener.port}", "cyan"
        )
    return BANNER.format(
        version=deepserve.__version__,
        models=console.paint(", ".join(names), "bold"),
        spec=url("/swagger.json"),
        v2=url("/v2/"),
        docs=docs,
    )


def _fail(message: str) -> int:
    return console.error(PROG, message)
