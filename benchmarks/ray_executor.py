"""The ``ray`` executor next to the process executor, in one run.

Starts a Ray cluster of a head and two worker nodes of one CPU on loopback
(tests/raycluster.py), then serves the benchmarks' ``echo`` model twice,
one server at a time: with the process executor (2 workers) and with the
ray executor (2 replicas of 0.5 CPU, on the two worker nodes). The same wrk
load hits each: c=1 (the per-call cost: p50), then c=8 and c=32
(throughput and p99). Ratios are ray / process, measured side by side.

Ray listens on every interface and rewrites 127.0.0.1: this runs in a
private network namespace with only loopback. As root, the script re-runs
itself inside one (``unshare -n``)::

    .venv/bin/python benchmarks/ray_executor.py [--duration 10]

Needs the ``[ray]`` extra and wrk (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from load import run_wrk, wrk_version  # noqa: E402

LEVELS = (1, 8, 32)


def inside_namespace() -> None:
    """Re-run this script in a private network namespace, unless in one."""
    from tests.raycluster import in_private_netns

    if in_private_netns():
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root (for unshare -n), or inside a private netns")
    cmd = " ".join(["ip link set lo up &&", sys.executable, *map(repr, sys.argv)])
    raise SystemExit(subprocess.call(["unshare", "-n", "sh", "-c", cmd]))


def echo_site(tmp: Path) -> Path:
    """A site where the benchmarks' echo model is installed (entry points)."""
    info = tmp / "bench_echo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bench-echo\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("[deepserve.v2.model]\necho = bench_echo\n")
    return tmp


def serve(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepserve.cli", "run", "--listen-port", str(port),
         "--noaccess-log", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v2/health/ready", timeout=5
            )
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"deepserve run {' '.join(args)} exited") from None
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server never became ready")


def measure(port: int, duration: float) -> dict[int, object]:
    url = f"http://127.0.0.1:{port}/v2/models/echo/predict/?text=x"
    run_wrk(url, connections=8, duration_s=3)  # warm
    return {c: run_wrk(url, connections=c, duration_s=duration) for c in LEVELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    opts = parser.parse_args()
    inside_namespace()
    import tempfile

    from tests.raycluster import RayCluster

    site = echo_site(Path(tempfile.mkdtemp(prefix="bench-site-")))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(site), str(ROOT / "benchmarks" / "echo_model")]
    )
    cluster = RayCluster(base_port=30000)
    cluster.start(workers=2, cpus_per_worker=1, env=env)
    results = {}
    try:
        runs = {
            "process (2 workers)": ["--workers", "2"],
            "ray (2 replicas)": [
                "--executor", "ray", "--ray-address", cluster.address,
                "--ray-replicas", "2", "--ray-num-cpus", "0.5",
            ],
        }  # fmt: skip
        for name, args in runs.items():
            server = serve(["--model-name", "echo", *args], env, 5077)
            try:
                results[name] = measure(5077, opts.duration)
            finally:
                server.terminate()
                server.wait(60)
    finally:
        cluster.stop()
    report(results, opts.duration)


def report(results: dict[str, dict[int, object]], duration: float) -> None:
    load = os.getloadavg()[0]
    print(f"- date: {time.strftime('%Y-%m-%d')}")
    print(f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}; {wrk_version()}; load (1 min) {load:.2f}")  # fmt: skip
    print(f"- command: `python benchmarks/ray_executor.py --duration {duration:g}`\n")
    print("| executor | c | req/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, by_level in results.items():
        for c, r in by_level.items():
            print(f"| {name} | {c} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "  # type: ignore[attr-defined]
                  f"| {r.error_count} |")  # type: ignore[attr-defined]  # fmt: skip
    (proc, ray) = results.values()
    print()
    for c in LEVELS:
        p, r = proc[c], ray[c]
        print(f"- c={c}: ray / process throughput {r.rps / p.rps:.2f}, "  # type: ignore[attr-defined]
              f"p50 {r.p50_ms - p.p50_ms:+.2f} ms")  # type: ignore[attr-defined]  # fmt: skip
    print(f"- c=32 / c=8 on ray: {ray[32].rps / ray[8].rps:.2f} (no collapse: >= 0.9)")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
