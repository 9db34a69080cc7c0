"""The ``ray`` executor: models on Ray Serve replicas across a cluster.

:mod:`.executor` is the server's side (queue, deploy or attach, watch),
:mod:`.replica` what each replica runs, :mod:`.trainings` trainings as Ray
actors, :mod:`.shipping` files across the cluster, :mod:`.cluster` the calls
into Ray itself. Ray is an optional extra: nothing here imports it until a
model asks for this executor (:func:`require`).
"""

from __future__ import annotations

import os

from deepserve.exceptions import LoaderError

#: Ray Serve's switch to its throughput-optimized settings.
THROUGHPUT = "RAY_SERVE_THROUGHPUT_OPTIMIZED"

#: What a user installs for this executor.
EXTRA = 'pip install "deepserve[ray]"'


def require() -> None:
    """:raises LoaderError: naming the extra, when Ray Serve is missing."""
    # Before Ray loads: its C++ core would take SIGTERM over (printing a
    # stack and aborting); the server's own handler drains and exits 0.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    # Ray Serve's throughput settings: the handle's router in the server's
    # own event loop, gRPC to the replicas. Measured here: a call's cost
    # from +12-18 ms to +6 ms over the process executor's, and 2.2x the
    # throughput at 8 concurrent calls (benchmarks/RESULTS.md). Replicas get
    # the same through their runtime environment (cluster.application).
    os.environ.setdefault(THROUGHPUT, "1")
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as exc:
        raise LoaderError(
            f"executor = ray needs Ray Serve, which is not installed ({exc})",
            hint=EXTRA,
        ) from exc
