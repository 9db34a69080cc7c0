"""``deepserve ray``: deploy or delete the models' Ray Serve applications.

For several servers sharing one cluster: deploy each model's application
once (``deepserve ray deploy``, with the options ``deepserve run`` takes),
then run the servers with ``--ray-attach``; they use the applications and
never redeploy or delete them. ``deepserve ray delete`` removes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from deepserve import config, console, loader, logs
from deepserve.exceptions import ConfigError, LoaderError

if TYPE_CHECKING:
    from deepserve.settings import ServerSettings

LOG = logging.getLogger(__name__)

USAGE = """\
usage: deepserve ray {deploy,delete} [OPTIONS]

Deploy or delete the Ray Serve applications of the models that
'deepserve run --executor ray' would serve with the same OPTIONS (the
options of 'deepserve run': --model-name, --ray-address, --ray-replicas...;
see 'deepserve run --help'). Servers then attach to them with --ray-attach.

actions:
  deploy   deploy each model's application and wait until its replicas run
  delete   delete each model's application (and its replicas)
"""

ACTIONS = ("deploy", "delete")


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else console.USAGE
    action, rest = args[0], args[1:]
    prog = f"deepserve ray {action}"
    if action not in ACTIONS:
        return console.error(
            "deepserve ray",
            f"unknown action '{action}'",
            hint=console.did_you_mean(action, ACTIONS)
            or f"actions: {', '.join(ACTIONS)}",
            status=console.USAGE,
        )
    try:
        settings, debug = config.load(rest, os.environ, prog=prog)
    except console.UsageError as exc:
        return console.usage_error(prog, exc)
    except ConfigError as exc:
        return console.error(prog, str(exc))
    logs.configure(level=logging.DEBUG if debug else logging.WARNING, log_format="text")
    try:
        from deepserve.executors import rayserve
        from deepserve.store import Store

        rayserve.require()
        available = loader.discover(loader.installed_entry_points())
        store = Store(settings.store_root)
        refs = loader.select(
            available,
            settings.model_names,
            store=store,
            remote=settings.model_store_url,
        )
        done = asyncio.run(_run(action, refs, settings))
    except LoaderError as exc:
        return console.error(prog, str(exc), hint=exc.hint)
    except Exception as exc:  # Ray's own (the controller unreachable, say)
        LOG.debug("%s failed", prog, exc_info=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return console.error(prog, f"{type(exc).__name__}: {first}")
    for line in done:
        print(line)
    return 0


async def _run(
    action: str, refs: list[loader.ModelRef], settings: ServerSettings
) -> list[str]:
    from deepserve.executors.rayserve import cluster
    from deepserve.executors.rayserve.executor import RayExecutor

    done = []
    for ref in refs:
        own = settings.executor_for(ref.name, ref.version)
        # Whatever --executor says: this command is about Ray.
        own = dataclasses.replace(
            own, kind="ray", ray=dataclasses.replace(own.ray, own_app=True)
        )
        if action == "deploy":
            executor = RayExecutor(ref, own)
            await executor.start()
            replicas = executor.running
            executor.keep_app()
            await executor.close()
            done.append(f"deployed {executor.app_name}: {replicas} replica(s) running")
        else:
            name = cluster.app_name(own.ray, ref)
            await asyncio.to_thread(cluster.connect, own.ray)
            try:
                found = await asyncio.to_thread(cluster.state, name)
                if found.status == "MISSING":
                    done.append(f"{name}: no such application")
                    continue
                await asyncio.to_thread(cluster.delete, name)
                done.append(f"deleted {name}")
            finally:
                await asyncio.to_thread(cluster.disconnect)
    return done
