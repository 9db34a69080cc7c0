"""HTTP load from wrk (Debian's ``/usr/bin/wrk``), read back as numbers.

wrk is written in C and sustains far more requests per second than a
Python client could on the same two cores, so the servers, not the client,
are what saturates.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
MARK = "WRK_JSON "


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured.

    :param requests: responses received (any status).
    :param errors: socket errors and non-2xx/3xx responses, by kind.
    :param p50_ms: median latency of the responses received; None if none.
    :param client_cpu_s: CPU time wrk itself used (user + system).
    """

    connections: int
    duration_s: float
    requests: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: dict[str, int]
    threads: int = 1
    client_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def errors_text(self) -> str:
        bad = {k: v for k, v in self.errors.items() if v}
        return ", ".join(f"{k} {v}" for k, v in bad.items()) or "0"


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk not found: apt-get install wrk")
    return path


def wrk_version() -> str:
    out = subprocess.run(
        [wrk_binary(), "--version"], capture_output=True, text=True, check=False
    )
    return (out.stdout + out.stderr).split(" [")[0].strip()


def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    timeout_s: float = 2.0,
    threads: int | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> LoadResult:
    """POST to ``url`` (``127.0.0.1`` only) over ``connections`` for a while.

    :param timeout_s: wrk's per-request timeout; slower requests count as
        ``timeout`` errors.
    :param threads: wrk's threads; default 1 for one connection, else 2.
    :param body: of every request (UTF-8 text: it goes through the
        environment); ``content_type``: its type.
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load goes to 127.0.0.1 only, not {url}")
    if threads is None:
        threads = 1 if connections == 1 else 2
    threads = max(1, min(threads, connections))
    cmd = [
        wrk_binary(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        f"--script={SCRIPT}",
        url,
    ]
    env = {
        **os.environ,
        "WRK_BODY": body.decode(),
        "WRK_CONTENT_TYPE": content_type or "",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
        env=env,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next(
        (ln for ln in out.stdout.splitlines() if ln.startswith(MARK)),
        None,
    )
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}{out.stderr}")
    data = json.loads(line[len(MARK) :])
    got = data["requests"] > 0

    def ms(key: str) -> float | None:
        return data[key] / 1000 if got else None

    return LoadResult(
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        p50_ms=ms("p50_us"),
        p90_ms=ms("p90_us"),
        p99_ms=ms("p99_us"),
        max_ms=ms("max_us"),
        errors={k: data[k] for k in ("connect", "read", "write", "status", "timeout")},
        threads=threads,
        client_cpu_s=client_cpu,
    )
