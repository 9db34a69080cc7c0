"""The benchmark models as Ray Serve applications (issue 13's peers), and the
command that serves one of them on a Ray cluster of its own::

    python ray_serve_app.py MODEL --http-port PORT --ports-from BASE [--replicas N]

It starts a Ray head node (``ray start --head --block``: GCS, raylet,
dashboard and their agents) with 2 CPUs, ports pinned from ``BASE`` on and a
temporary directory of its own, connects to it, starts Serve's HTTP proxy on
127.0.0.1:PORT and runs the application: ``POST /MODEL?text=hello``, the
answer being the model's JSON (``{"echo": "hello"}``). On SIGTERM it deletes
the application, shuts Serve down and stops the node. Ray listens on every
interface and opens ports of its own: run it in a private network namespace
with only loopback (run.py does, with ``--peers``).

Each deployment calls the functions of the ``echo_model`` package that
deepserve serves, so the work per prediction is the same; ``vector`` uses
``@serve.batch`` (``max_batch_size`` 64, ``batch_wait_timeout_s`` 5 ms) and
runs each batch in a thread, so that the replica keeps taking requests
meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bench_cpu
import bench_echo
import bench_vector
from ray import serve
from starlette.requests import Request

MAX_BATCH_SIZE = 64
BATCH_WAIT_S = 0.005
#: Printed by ``ray start --block`` once its node is up.
READY_LINE = "will now block forever"
START_TIMEOUT_S = 90.0
#: Offsets from ``--ports-from`` of the node's ports (``ray start`` options).
PORTS = {
    "port": 0,
    "node-manager-port": 1,
    "object-manager-port": 2,
    "dashboard-agent-listen-port": 3,
    "dashboard-agent-grpc-port": 4,
    "runtime-env-agent-port": 5,
    "metrics-export-port": 6,
    "ray-client-server-port": 7,
    "dashboard-port": 8,
}
#: Offsets of the ports only environment variables set.
ENV_PORTS = {"AUTOSCALER_METRIC_PORT": 9, "DASHBOARD_METRIC_PORT": 10}
#: The workers' ports: offsets 20 to 99.
WORKER_PORTS = (20, 99)


def _text(request: Request) -> str:
    return str(request.query_params.get("text", "x"))


@serve.deployment(max_ongoing_requests=64)
class Echo:
    """``bench_echo.predict``: returns ``{"echo": text}``. ``max_ongoing_requests``
    64: with Serve's default (5), 64 clients make the proxy queue and retry,
    and the replica serves a few dozen requests a second."""

    async def __call__(self, request: Request) -> dict[str, Any]:
        return bench_echo.predict(text=_text(request))


@serve.deployment
class Cpu:
    """``bench_cpu.predict``: 200,000 steps of pure Python per call (a plain
    method: Serve runs it in a thread of the replica)."""

    def __call__(self, request: Request) -> dict[str, Any]:
        return bench_cpu.predict(text=_text(request))


@serve.deployment(max_ongoing_requests=2 * MAX_BATCH_SIZE)
class Vector:
    """``bench_vector.predict_batch``, one call per batch ``@serve.batch`` made.

    ``max_ongoing_requests`` is two batches, so that a full batch can gather
    while another runs (Serve's default, 5, would cap every batch at 5).
    """

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def run(self, texts: list[str]) -> list[dict[str, Any]]:
        items = [{"text": t} for t in texts]
        return await asyncio.to_thread(bench_vector.predict_batch, items)

    async def __call__(self, request: Request) -> dict[str, Any]:
        answer: dict[str, Any] = await self.run(_text(request))
        return answer


DEPLOYMENTS = {"echo": Echo, "cpu": Cpu, "vector": Vector}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(DEPLOYMENTS))
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--ports-from", type=int, required=True, metavar="BASE")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-cpus", type=int, default=2)
    return parser.parse_args(argv)


def start_head(base: int, num_cpus: int, temp_dir: Path) -> subprocess.Popen[str]:
    """``ray start --head --block``, once its node is up; its output is copied
    to ours."""
    ray = Path(sys.executable).with_name("ray")
    low, high = WORKER_PORTS
    cmd = [
        str(ray),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
        *(f"--{name}={base + offset}" for name, offset in PORTS.items()),
        f"--min-worker-port={base + low}",
        f"--max-worker-port={base + high}",
    ]
    env = {**os.environ, **{k: str(base + v) for k, v in ENV_PORTS.items()}}
    head = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert head.stdout is not None
    ready = threading.Event()

    def copy() -> None:
        assert head.stdout is not None
        for line in head.stdout:
            sys.stdout.write(line)
            if READY_LINE in line:
                ready.set()

    threading.Thread(target=copy, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready.wait(0.1):
        if head.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"ray start failed ({head.poll()})")
    return head


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    # Until Serve runs, SIGTERM kills (the benchmark then kills the session).
    # Unix socket paths must stay short: not under the benchmark's TMPDIR.
    temp_dir = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
    head = start_head(args.ports_from, args.num_cpus, temp_dir)
    try:
        import ray

        ray.init(address=f"127.0.0.1:{args.ports_from}", logging_level="WARNING")
        serve.start(http_options={"host": "127.0.0.1", "port": args.http_port})
        app = DEPLOYMENTS[args.model].options(num_replicas=args.replicas).bind()
        serve.run(app, name=args.model, route_prefix=f"/{args.model}")
        print(f"serving {args.model} on 127.0.0.1:{args.http_port}", flush=True)
        # After ray.init, which installs a SIGTERM handler of its own.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
        serve.shutdown()
        ray.shutdown()
    finally:
        head.terminate()
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
