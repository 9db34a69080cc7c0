"""Servers under test: started in their own process group, always stopped.

A server runs with ``TMPDIR`` pointing to a fresh directory of its own, so
that what it leaves there (uploads never removed) can be listed afterwards.
Its process tree is found through ``/proc``, for memory sampling and so that
no worker outlives the benchmark. How long it took from its start to its
first answered prediction, and its memory once idle, are recorded.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
#: Between two probes of a starting server (the time to first prediction is
#: known to this much).
PROBE_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Request:
    """One HTTP request: what a probe, an answer check and wrk send.

    :param path: with its query string.
    :param content_type: of ``body``; None for no body.
    """

    method: str
    path: str
    body: bytes = b""
    content_type: str | None = None

    def headers(self) -> dict[str, str]:
        found = {"Content-Length": str(len(self.body))}
        if self.content_type:
            found["Content-Type"] = self.content_type
        return found


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(ppid, pgid, sid)`` of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[2]), int(fields[3])


def process_tree(root: int) -> list[int]:
    """``root``, its descendants and the rest of its process group and session.

    A server runs in a session of its own (its id is ``root``): processes that
    set a process group of their own and whose parent is gone (Ray's daemons)
    stay in it.
    """
    parents: dict[int, int] = {}
    group: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None:
            continue
        parents[int(entry.name)] = stat[0]
        if root in (stat[1], stat[2]):
            group.add(int(entry.name))
    found = {root} | group
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(pid for pid in found if pid in parents)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """CPU time (user + system) used so far by each of ``pids`` still there."""
    found: dict[int, float] = {}
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        # utime and stime are the 14th and 15th fields of the whole line.
        found[pid] = (int(fields[11]) + int(fields[12])) / _TICKS
    return found


def machine_busy_seconds() -> float:
    """CPU time all CPUs of the machine have spent busy since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal (guest time is in user).
    ticks = [int(v) for v in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS


def wait_quiet(
    max_s: float, *, threshold: float = 0.25, window_s: float = 1.0
) -> float | None:
    """Wait until the machine's CPUs are nearly idle (the servers under test
    are idle between runs), at most ``max_s`` seconds.

    :param threshold: busy CPUs over ``window_s`` below which it is quiet.
    :returns: the seconds waited, or None when it never got quiet.
    """
    start = time.monotonic()
    while True:
        before = machine_busy_seconds()
        time.sleep(window_s)
        if (machine_busy_seconds() - before) / window_s < threshold:
            return time.monotonic() - start
        if time.monotonic() - start >= max_s:
            return None


def rss_bytes(pids: Sequence[int]) -> int:
    """Sum of the resident set sizes (VmRSS) of ``pids`` that still exist."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


class RssSampler:
    """Samples a process tree's total RSS in a thread until stopped.

    :param root: the tree's root process.
    :param interval_s: time between samples.
    """

    def __init__(self, root: int, *, interval_s: float = 0.02) -> None:
        self._root = root
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0
        self.samples = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(process_tree(self._root)))
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Server:
    """A running server; use :func:`running` to start and stop one."""

    label: str
    port: int
    proc: subprocess.Popen[bytes]
    tmpdir: Path
    log: Path
    pids_seen: set[int] = field(default_factory=set)
    #: Seconds from its start to the first 200 answer to the probe.
    ready_s: float | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def request(
        self, method: str, path: str, *, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """One request without a body; ``(status, body)``."""
        return self.send(Request(method, path), timeout=timeout)

    def send(self, request: Request, *, timeout: float = 10.0) -> tuple[int, bytes]:
        """One request; ``(status, body)``."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(
                request.method,
                request.path,
                body=request.body,
                headers=request.headers(),
            )
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def tree(self) -> list[int]:
        pids = process_tree(self.proc.pid)
        self.pids_seen.update(pids)
        return pids

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _wait_ready(server: Server, probe: Request, timeout: float, started: float) -> None:
    """Probe until a 200 answer; ``started``: when the server was spawned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.label} exited with {server.proc.returncode}:\n"
                + server.log_tail()
            )
        with contextlib.suppress(OSError):
            status, _ = server.send(probe, timeout=5)
            if status == 200:
                server.ready_s = time.monotonic() - started
                server.tree()
                return
        time.sleep(PROBE_INTERVAL_S)
    raise RuntimeError(
        f"{server.label} not ready in {timeout:.0f} s:\n{server.log_tail()}"
    )


def _stop(server: Server) -> None:
    server.pids_seen.update(process_tree(server.proc.pid))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=STOP_TIMEOUT_S)
    # Whatever is left, in the group or not (a worker may have left it), dies.
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        alive = [pid for pid in server.pids_seen if _alive(pid)]
        if not alive:
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    for pid in server.pids_seen:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(timeout=STOP_TIMEOUT_S)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def running(
    label: str,
    argv: Sequence[str],
    *,
    port: int,
    scratch: Path,
    probe: str | Request,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[Server]:
    """Start ``argv`` (which must listen on ``port``), wait until ``probe``
    (a path to POST to with no body, or a request) answers 200, and stop the
    whole process tree on exit.

    :param scratch: a directory for the server's log and its ``TMPDIR``.
    :param env: more environment variables for the server.
    """
    if isinstance(probe, str):
        probe = Request("POST", probe)
    slug = label.lower().replace(" ", "-").replace("/", "-")
    tmpdir = scratch / f"{slug}-{port}-tmp"
    tmpdir.mkdir()
    log = scratch / f"{slug}-{port}.log"
    child_env = {**os.environ, **(env or {})}
    child_env["TMPDIR"] = str(tmpdir)
    child_env["PYTHONUNBUFFERED"] = "1"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=scratch,
            start_new_session=True,
        )
    server = Server(label=label, port=port, proc=proc, tmpdir=tmpdir, log=log)
    try:
        _wait_ready(server, probe, timeout, started)
        yield server
    finally:
        _stop(server)


def files_under(root: Path) -> dict[str, int]:
    """Regular files below ``root`` and their sizes, by relative path."""
    found: dict[str, int] = {}
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                found[str(path.relative_to(root))] = path.stat().st_size
    return found
