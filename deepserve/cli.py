"""The ``deepserve`` command; the one place where everything is put together."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web

import deepserve
from deepserve import adapters, cli_models, config, loader, logs, server
from deepserve.api import create_app
from deepserve.exceptions import ConfigError, LoaderError
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ServerSettings
from deepserve.shell import main as call
from deepserve.store import Store

LOG = logging.getLogger("deepserve")

USAGE = """\
usage: deepserve [--version] [--help] COMMAND [ARGS]

Serve machine-learning models behind a documented HTTP API.

commands:
  run      start the HTTP server (deepserve run --help lists its options)
  models   manage the model store: list, get, delete, export, import
  call     run a model's get_metadata, warm, predict or train without a server
"""

BANNER = """\
deepserve {version} is serving: {models}
{docs}
    API specification: {base}/swagger.json
          V2 endpoint: {base}/v2/
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] == "--version":
        print(f"deepserve {deepserve.__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"deepserve: error: unknown command '{args[0]}'\n", file=sys.stderr)
        print(USAGE, end="", file=sys.stderr)
        return 2
    return command(args[1:])


def run(argv: Sequence[str]) -> int:
    """``deepserve run``: serve models until interrupted."""
    try:
        settings, debug = config.load(argv, os.environ)
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
        return _fail(str(exc))
    app = create_app(registry, settings.api)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        # server.serve starts the registry once the socket listens (probes
        # answer while models warm); it stops here, after the requests in
        # progress ended, and before the contexts appended earlier close:
        # trainings first (running jobs recorded as interrupted), then
        # the workers.
        try:
            yield
        finally:
            LOG.debug("Stopping the trainings and the models' workers")
            await registry.close()

    app.cleanup_ctx.append(lifecycle)
    banner = _banner(settings, list(registry))
    status = asyncio.run(
        server.serve(
            app,
            registry,
            settings,
            # Called once the socket listens: the banner tells the truth.
            announce=lambda: print(banner, flush=True),
            fail=_fail,
        )
    )
    # The loop and its signal handlers are gone: a late signal must not
    # interrupt the interpreter's exit with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return status


def build_registry(settings: ServerSettings) -> Registry:
    """Find, import and wrap the models named in ``settings``.

    :raises LoaderError: with one line naming the model, the problem and the
        models that are available.
    """
    available = loader.discover(loader.installed_entry_points())
    refs = loader.select(
        available, settings.model_names, store=Store(settings.store_root)
    )
    served = []
    for ref in refs:
        try:
            model = adapters.build(ref)
        except LoaderError as exc:
            raise LoaderError(
                f"{exc} (available models: {loader.describe(available)})"
            ) from exc
        served.append(ServedModel.create(ref, model, settings.executor_for(ref.name)))
    for name in set(settings.model_executors) - {ref.name for ref in refs}:
        LOG.warning("Config section [model:%s] names a model that is not served", name)
    return Registry(served)


def _banner(settings: ServerSettings, names: list[str]) -> str:
    host = settings.listen_ip
    if ":" in host:
        host = f"[{host}]"
    base = f"http://{host}:{settings.listen_port}{settings.api.base_path}"
    docs = f"\n    API documentation: {base}/api" if settings.api.doc_endpoint else ""
    return BANNER.format(
        version=deepserve.__version__, models=", ".join(names), base=base, docs=docs
    )


def _fail(message: str) -> int:
    one_line = " ".join(message.split())
    print(f"deepserve: error: {one_line}", file=sys.stderr)
    return 1


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "run": run,
    "call": call,
    "models": cli_models.main,
}

if __name__ == "__main__":
    sys.exit(main())
