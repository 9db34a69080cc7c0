#!/usr/bin/env python3
"""Endurance: many predictions to a model that writes temporary files.

Serves tests/fakes/fake_tempfiles.py (a temporary file per prediction,
returned; an archive next to a TemporaryDirectory left behind; an
intermediate file, as DEEPaaS demo modules do) with ``deepserve run`` and
2 workers, sends it N predictions from 8 keep-alive clients, and prints the
server's whole process tree's RSS and open files, and the entries in its
temporary directory, at the start, every 10,000 requests and at the end:

    $ .venv/bin/python benchmarks/endurance.py              # 50,000 requests
    $ .venv/bin/python benchmarks/endurance.py --requests 5000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.client
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "fakes"
KINDS = [("file", "*/*"), ("zip", "application/zip"), ("json", "application/json")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [pid], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def measure(pid: int, temp: Path) -> tuple[float, int, int]:
    """RSS in MiB and open files of the process tree; entries in temp."""
    rss, fds = 0, 0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            rss += int(
                next(
                    line for line in status.splitlines() if line.startswith("VmRSS")
                ).split()[1]
            )
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (OSError, StopIteration):
            continue
    return rss / 1024, fds, len(os.listdir(temp))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    ns = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="deepserve-endurance-"))
    site = scratch / "site" / "tempfiles-1.0.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tempfiles\nVersion: 1.0\n"
    )
    (site / "entry_points.txt").write_text(
        "[deepaas.v2.model]\ntempfiles = fake_tempfiles\n"
    )
    temp = scratch / "tmp"
    temp.mkdir()
    port = free_port()
    env = dict(
        os.environ, TMPDIR=str(temp), PYTHONPATH=f"{site.parent}{os.pathsep}{FAKES}"
    )
    env["XDG_DATA_HOME"] = str(scratch / "data")
    server = subprocess.Popen(
        [sys.executable, "-m", "deepserve.cli", "run", "--model-name", "tempfiles",
         "--workers", "2", "--listen-port", str(port), "--noaccess-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print(
                    "the server did not start:",
                    server.stderr.read() if server.stderr else "",
                )
                return 1
            time.sleep(0.2)
        print(f"# Endurance, {datetime.date.today()}, {platform.node()}: "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}")  # fmt: skip
        print(
            f"{'requests':>9} {'RSS MiB':>8} {'open files':>10} {'temp entries':>12} {'req/s':>7}"
        )
        done = 0
        started = time.monotonic()

        def row() -> None:
            rss, fds, entries = measure(server.pid, temp)
            rate = done / max(time.monotonic() - started, 1e-9)
            print(
                f"{done:>9} {rss:>8.1f} {fds:>10} {entries:>12} {rate:>7.0f}",
                flush=True,
            )

        row()

        def client(index: int, n: int) -> int:
            """``n`` predictions on one keep-alive connection; the non-200s."""
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            bad = 0
            for i in range(n):
                kind, accept = KINDS[(index + i) % len(KINDS)]
                conn.request(
                    "POST",
                    f"/v2/models/tempfiles/predict/?kind={kind}",
                    headers={"Accept": accept},
                )
                resp = conn.getresponse()
                resp.read()
                bad += resp.status != 200
            conn.close()
            return bad

        errors = 0
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            while done < ns.requests:
                n = min(10_000, ns.requests - done) // 8 or 1
                errors += sum(pool.map(client, range(8), [n] * 8))
                done += n * 8
                row()
        time.sleep(1)
        row()
        print(f"non-200 answers: {errors}")
    finally:
        server.terminate()
        server.wait(60)
    left = len(os.listdir(temp))
    print(
        f"temp entries after the server stopped: {left}; server exit status {server.returncode}"
    )
    return 0 if errors == 0 and left == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
