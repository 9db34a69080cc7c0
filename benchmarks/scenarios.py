"""The three benchmark scenarios: overhead, upload and training.

Each starts its servers, measures, and stops them before returning; each
wait is bounded (wrk durations, curl's ``--max-time``, start-up timeouts).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from envs import HERE, Venv
from load import LoadResult, run_wrk
from servers import RssSampler, Server, files_under, free_port, rss_bytes, running

PREDICT = "/v2/models/echo/predict/"
TRAIN = "/v2/models/echo/train/"
MIB = 1 << 20


@dataclass(frozen=True)
class Target:
    """A server to benchmark: a label and how to start it on a port."""

    label: str
    argv: Callable[[int], list[str]]


def deepserve_target(venv: Venv, *, workers: int = 1) -> Target:
    def argv(port: int) -> list[str]:
        return [
            str(venv.script("deepserve")),
            "run",
            "--listen-port",
            str(port),
            "--model-name",
            "echo",
            "--workers",
            str(workers),
        ]

    return Target("deepserve", argv)


def deepaas_target(venv: Venv, *, workers: int = 1) -> Target:
    def argv(port: int) -> list[str]:
        return [
            str(venv.script("deepaas-run")),
            "--listen-port",
            str(port),
            "--model-name",
            "echo",
            "--workers",
            str(workers),
        ]

    return Target("DEEPaaS 2.6.0", argv)


def ceiling_target(venv: Venv) -> Target:
    def argv(port: int) -> list[str]:
        return [str(venv.python), str(HERE / "ceiling_app.py"), str(port)]

    return Target("bare aiohttp", argv)


def _serve(target: Target, scratch: Path) -> AbstractContextManager[Server]:
    port = free_port()
    return running(
        target.label,
        target.argv(port),
        port=port,
        scratch=scratch,
        probe=PREDICT + "?text=ready",
    )


def _check_echo(server: Server) -> None:
    status, body = server.request("POST", PREDICT + "?text=hello")
    answer = json.loads(body) if status == 200 else None
    if not isinstance(answer, dict) or answer.get("predictions") != {"echo": "hello"}:
        raise RuntimeError(f"{server.label}: unexpected answer {status} {body[:200]!r}")


def _problems(server: Server) -> list[str]:
    """Signs of trouble in a server's log and state, one line each."""
    found: list[str] = []
    if server.proc.poll() is not None:
        found.append(f"{server.label}: exited with {server.proc.returncode}")
    try:
        text = server.log.read_text(errors="replace")
    except OSError:
        return found
    tracebacks = text.count("Traceback (most recent call last)")
    if tracebacks:
        found.append(f"{server.label}: {tracebacks} traceback(s) in its log")
    return found


@dataclass
class Overhead:
    """Echo predict under load: every round's result, by server and connections."""

    runs: dict[str, dict[int, list[LoadResult]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def overhead(
    targets: Sequence[Target],
    scratch: Path,
    *,
    levels: Sequence[int],
    duration_s: float,
    warmup_s: float,
    rounds: int,
) -> Overhead:
    """All servers run at once (idle ones cost nothing) and are measured in
    rounds, each in a rotated order, so that a slow spell of the machine
    does not fall on one server only.
    """
    out = Overhead()
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(_serve(t, scratch)) for t in targets]
        for server in servers:
            _check_echo(server)
            out.runs[server.label] = {c: [] for c in levels}
            run_wrk(_echo_url(server), connections=max(levels), duration_s=warmup_s)
        for round_ in range(rounds):
            turn = round_ % len(servers)
            for server in servers[turn:] + servers[:turn]:
                print(f"[overhead] round {round_ + 1}/{rounds}: {server.label}")
                for connections in levels:
                    result = run_wrk(
                        _echo_url(server),
                        connections=connections,
                        duration_s=duration_s,
                    )
                    out.runs[server.label][connections].append(result)
                    print(
                        f"  c={connections:<3} {result.rps:9.0f} req/s  "
                        f"p50 {_ms(result.p50_ms)}  p99 {_ms(result.p99_ms)}  "
                        f"errors {result.errors_text()}",
                        flush=True,
                    )
        for server in servers:
            out.problems.extend(_problems(server))
    return out


def _echo_url(server: Server) -> str:
    return server.base + PREDICT + "?text=hello"


@dataclass(frozen=True)
class Upload:
    """One large upload to one server.

    :param leftovers: files left in the server's ``TMPDIR`` after the answer.
    """

    label: str
    size: int
    status: int
    answered_size: int | None
    wall_s: float
    rss_before: int
    rss_peak: int
    samples: int
    leftovers: dict[str, int]

    @property
    def growth(self) -> int:
        return max(0, self.rss_peak - self.rss_before)


def make_file(path: Path, size_mib: int) -> Path:
    """A file of random-looking bytes (one random MiB, repeated)."""
    block = os.urandom(MIB)
    with path.open("wb") as f:
        for _ in range(size_mib):
            f.write(block)
    return path


def upload(
    targets: Sequence[Target],
    scratch: Path,
    *,
    size_mib: int,
    timeout_s: float,
) -> list[Upload]:
    payload = make_file(scratch / "upload.bin", size_mib)
    results: list[Upload] = []
    try:
        for target in targets:
            print(f"[upload] {target.label}: {size_mib} MiB", flush=True)
            with _serve(target, scratch) as server:
                results.append(_upload_once(server, payload, timeout_s))
                r = results[-1]
                print(
                    f"  HTTP {r.status} in {r.wall_s:.2f} s, peak RSS growth "
                    f"{r.growth / MIB:.0f} MiB, {len(r.leftovers)} file(s) left",
                    flush=True,
                )
    finally:
        payload.unlink()
    return results


def _upload_once(server: Server, payload: Path, timeout_s: float) -> Upload:
    before_files = files_under(server.tmpdir)
    time.sleep(0.5)
    rss_before = rss_bytes(server.tree())
    answer = server.log.with_suffix(".answer")
    cmd = [
        "curl",
        "--silent",
        "--show-error",
        "--output",
        str(answer),
        "--write-out",
        "%{http_code}",
        "--max-time",
        str(int(timeout_s)),
        # No "Expect: 100-continue" round trip: time the upload itself.
        "--header",
        "Expect:",
        "--form",
        f"data=@{payload};type=application/octet-stream",
        server.base + PREDICT + "?text=upload",
    ]
    with RssSampler(server.proc.pid) as sampler:
        start = time.perf_counter()
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s + 30, check=False
        )
        wall = time.perf_counter() - start
    status = int(done.stdout.strip() or 0)
    answered: int | None = None
    if status == 200:
        predictions = json.loads(answer.read_bytes()).get("predictions", {})
        answered = predictions.get("size")
    # Give a server that cleans up after answering a moment to do so.
    time.sleep(1.0)
    after = files_under(server.tmpdir)
    leftovers = {k: v for k, v in after.items() if before_files.get(k) != v}
    for path in server.tmpdir.iterdir():
        # Reclaim the disk now; the listing above is what counts.
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return Upload(
        label=server.label,
        size=payload.stat().st_size,
        status=status,
        answered_size=answered,
        wall_s=wall,
        rss_before=rss_before,
        rss_peak=sampler.peak,
        samples=sampler.samples,
        leftovers=leftovers,
    )


@dataclass(frozen=True)
class Training:
    """Predict latency at concurrency 1, idle and while a training runs.

    :param first_answer_s: how long the first predict after the training
        started took; None when it timed out (after ``probe_timeout_s``).
    """

    label: str
    idle: LoadResult
    train_status: str
    probe_timeout_s: float
    first_answer_s: float | None = None
    busy: LoadResult | None = None


def training(
    targets: Sequence[Target],
    scratch: Path,
    *,
    idle_s: float,
    probe_s: float,
    busy_s: float,
    train_s: float,
) -> list[Training]:
    results: list[Training] = []
    for target in targets:
        print(f"[training] {target.label}", flush=True)
        with _serve(target, scratch) as server:
            results.append(_train_once(server, idle_s, probe_s, busy_s, train_s))
            r = results[-1]
            first = (
                "timed out" if r.first_answer_s is None else f"{r.first_answer_s:.3f} s"
            )
            print(
                f"  idle p50 {_ms(r.idle.p50_ms)}; training ({r.train_status}): "
                f"first answer {first}, "
                f"p50 {_ms(r.busy.p50_ms if r.busy else None)}, "
                f"{r.busy.requests if r.busy else 0} answers",
                flush=True,
            )
    return results


def _train_once(
    server: Server, idle_s: float, probe_s: float, busy_s: float, train_s: float
) -> Training:
    url = server.base + PREDICT + "?text=hello"
    run_wrk(url, connections=1, duration_s=1)
    idle = run_wrk(url, connections=1, duration_s=idle_s)
    status, body = server.request("POST", f"{TRAIN}?seconds={train_s:g}")
    if status != 200:
        return Training(server.label, idle, f"HTTP {status}", probe_s)
    train_status = str(json.loads(body).get("status", "?"))
    # Let the training's worker start and take its CPU.
    time.sleep(1.0)
    start = time.perf_counter()
    first: float | None = None
    try:
        server.request("POST", PREDICT + "?text=probe", timeout=probe_s)
        first = time.perf_counter() - start
    except TimeoutError:
        pass
    busy = run_wrk(url, connections=1, duration_s=busy_s, timeout_s=2)
    return Training(server.label, idle, train_status, probe_s, first, busy)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"
