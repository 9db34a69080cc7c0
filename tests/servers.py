"""Real ``deepserve run`` servers in subprocesses, for end-to-end tests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEEPSERVE = [sys.executable, "-m", "deepserve.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


class Server:
    """``deepserve run`` in a subprocess.

    :param split_stderr: keep stderr (the log) apart from stdout (the
        banner); :meth:`stop` then leaves the log in :attr:`stderr`.
    """

    def __init__(
        self, args: list[str], env: dict[str, str], *, split_stderr: bool = False
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.stderr = ""
        self.proc = subprocess.Popen(
            [*DEEPSERVE, "run", "--listen-port", str(self.port), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if split_stderr else subprocess.STDOUT,
            text=True,
            # Its own process group, as in a terminal: Ctrl-C reaches all.
            start_new_session=True,
        )

    def wait_ready(self, prefix: str = "", timeout: float = 60) -> None:
        """Wait until every model is warm (the readiness probe says 200)."""
        self.wait_for(prefix + "/v2/health/ready", timeout)

    def wait_live(self, prefix: str = "", timeout: float = 60) -> None:
        """Wait until the server answers (models may still be warming)."""
        self.wait_for(prefix + "/v2/health/live", timeout)

    def wait_for(self, path: str, timeout: float = 60) -> None:
        """Wait until ``GET path`` answers 200 (a 503 is an OSError too)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                get_json(self.base + path)
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{path} never answered 200")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        self.stderr = err or ""
        return out
