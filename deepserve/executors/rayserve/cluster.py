"""The server's side of a Ray cluster: connect, deploy, look, delete.

Every function here blocks (Ray's client calls do): the executor calls them
in a thread. The server connects as a Ray *driver* to a cluster that runs
already (``[ray] address``) and never starts one of its own. Ray Serve is
started without its HTTP proxies: requests reach the replicas through the
server, its API, auth and queue, never through Serve's own ports.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from deepserve.exceptions import LoaderError
from deepserve.executors.rayserve import THROUGHPUT
from deepserve.loader import ModelRef
from deepserve.settings import ExecutorSettings, RaySettings

LOG = logging.getLogger(__name__)

#: The name of each model's deployment inside its application.
DEPLOYMENT = "model"

#: Seconds a replica gets to answer Serve's health check.
HEALTH_CHECK_TIMEOUT = 10.0

_lock = threading.Lock()
_users = 0
_address: str | None = None


def app_name(settings: RaySettings, ref: ModelRef) -> str:
    """The Serve application of a model: ``APP_NAME.TAG``."""
    return f"{settings.app_name}.{ref.tag}"


def connect(settings: RaySettings) -> None:
    """Join the cluster at ``settings.address`` as a driver (once per
    process; each caller :func:`disconnect` s once).

    :raises LoaderError: without an address, or when the cluster cannot be
        reached.
    """
    global _users, _address
    if not settings.address:
        raise LoaderError(
            "executor = ray needs the Ray cluster's address: --ray-address "
            "HOST:PORT ([ray] address); deepserve never starts a Ray of its own"
        )
    import ray
    from ray import serve

    with _lock:
        if _users and _address != settings.address:
            raise LoaderError(
                f"One server joins one Ray cluster: {_address} already, "
                f"not also {settings.address}"
            )
        if not ray.is_initialized():
            # Ray's own chatter (connecting, a thread without signal
            # handlers) is not for the server's log unless debugging.
            if not LOG.isEnabledFor(logging.DEBUG):
                logging.getLogger("ray").setLevel(logging.ERROR)
            try:
                ray.init(
                    address=settings.address,
                    namespace="deepserve",
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
            except Exception as exc:  # ConnectionError, RuntimeError...
                raise LoaderError(
                    f"Cannot join the Ray cluster at {settings.address}: "
                    f"{first_line(exc)}"
                ) from exc
            serve.start(proxy_location="Disabled")
        _users += 1
        _address = settings.address


def disconnect() -> None:
    """Leave the cluster once the last user is done (nothing of it stops)."""
    global _users, _address
    import ray

    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and ray.is_initialized():
            _address = None
            ray.shutdown()


def application(ref: ModelRef, settings: ExecutorSettings) -> Any:
    """The Serve application of one model, ready for ``serve.run``."""
    from ray import serve

    from deepserve.executors.rayserve.replica import Replica

    ray_settings = settings.ray
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": {
            "num_cpus": ray_settings.num_cpus,
            "num_gpus": ray_settings.num_gpus,
            # As the server (see rayserve.require): replicas run the user
            # code on their own loop (ours hands the model to a thread).
            "runtime_env": {"env_vars": {THROUGHPUT: os.environ.get(THROUGHPUT, "1")}},
        },
        "max_ongoing_requests": ray_settings.max_ongoing_requests,
        "health_check_period_s": 2.0,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT,
        # Deleting an application waits for this: a server's stop must not
        # (it drains its own calls first).
        "graceful_shutdown_timeout_s": 5.0,
    }
    if ray_settings.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": ray_settings.min_replicas,
            "initial_replicas": ray_settings.min_replicas,
            "max_replicas": ray_settings.max_replicas,
            "target_ongoing_requests": ray_settings.target_ongoing_requests,
            "upscale_delay_s": ray_settings.upscale_delay,
            "downscale_delay_s": ray_settings.downscale_delay,
        }
    else:
        options["num_replicas"] = ray_settings.replicas
    deployment: Any = serve.deployment(Replica)
    deployment = deployment.options(**options)
    return deployment.bind(ref, settings.warm, ray_settings.model_store_url)


class AppState(NamedTuple):
    """What the cluster says of one application."""

    #: ``RUNNING``, ``DEPLOYING``, ``DEPLOY_FAILED``, ``UNHEALTHY``,
    #: ``DELETING``...; ``MISSING`` when there is no such application.
    status: str
    #: Replicas serving (``RUNNING``).
    running: int
    #: Serve's own words on the application and its deployment.
    message: str

    @property
    def problem(self) -> str | None:
        """Why the application cannot take calls; ``None`` when it can."""
        if self.status == "MISSING":
            return "its Ray Serve application is gone"
        if self.status in ("DEPLOY_FAILED", "DELETING"):
            return (
                f"its Ray Serve application is {self.status.lower().replace('_', ' ')}"
            )
        return None


def state(name: str) -> AppState:
    """The application's state, from Serve's controller."""
    from ray import serve

    apps = serve.status().applications
    app = apps.get(name)
    if app is None:
        return AppState("MISSING", 0, "")
    running = 0
    messages = [app.message] if app.message else []
    for deployment in app.deployments.values():
        running += int(_counts(deployment.replica_states).get("RUNNING", 0))
        if deployment.message:
            messages.append(deployment.message)
    return AppState(str(app.status.value), running, "\n".join(messages))


def deploy(name: str, app: Any) -> None:
    """Deploy ``app`` as application ``name`` without waiting for it."""
    from ray.serve import RunTarget, run_many

    run_many(
        [RunTarget(target=app, name=name, route_prefix=None)],
        wait_for_applications_running=False,
    )


def delete(name: str) -> None:
    """Delete application ``name`` (and its replicas); no error if gone."""
    from ray import serve

    serve.delete(name)


def handle(name: str) -> Any:
    """A handle on the application's deployment."""
    from ray import serve

    return serve.get_app_handle(name)


def start_error(state: AppState) -> str | None:
    """The replicas' own error, found in Serve's messages, if any."""
    found = re.findall(r"ReplicaStartError: (.+)", state.message)
    if found:
        return str(found[-1]).strip()
    return None


def put_file(path: str) -> Any:
    """A large upload into Ray's object store, read from disk once (the
    file is mapped, not copied into this process's memory first)."""
    import numpy as np
    import ray

    return ray.put(np.memmap(path, dtype=np.uint8, mode="r"))


def get(ref: Any) -> Any:
    """What :func:`put_file` stored (a read-only buffer)."""
    import ray

    return ray.get(ref)


def _counts(states: Mapping[Any, Any] | None) -> dict[str, int]:
    return {str(getattr(k, "value", k)): int(v) for k, v in (states or {}).items()}


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an error's text (Ray's run long)."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(exc).__name__ if isinstance(exc, BaseException) else ""


async def resolve(ref: Any) -> Any:
    """Await a Ray object reference or Serve response (as a coroutine)."""
    return await ref
