"""Real ``deepserve run`` servers in subprocesses, for end-to-end tests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

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

    Its output is read as it comes (a server whose pipe fills up would block
    on its next log line), and kept: :attr:`output` so far, all of it from
    :meth:`finish` or :meth:`stop`.

    :param split_stderr: keep stderr (the log) apart from stdout (the
        banner); :meth:`stop` then leaves the log in :attr:`stderr`.
    :param port: the port to listen on; a free one by default.
    """

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        *,
        split_stderr: bool = False,
        port: int | None = None,
    ) -> None:
        self.port = free_port() if port is None else port
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
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [_reader(self.proc.stdout, self._out)]
        if split_stderr:
            self._readers.append(_reader(self.proc.stderr, self._err))

    @property
    def output(self) -> str:
        """What the server wrote to stdout (and stderr, unless split) so far."""
        return "".join(self._out)

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
                raise AssertionError(f"server exited: {self.finish()}{self.stderr}")
            try:
                get_json(self.base + path)
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{path} never answered 200")

    def finish(self, timeout: float = 30) -> str:
        """Wait for the server to exit; return its whole output."""
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        self.stderr = "".join(self._err)
        return self.output

    def stop(self) -> str:
        """SIGTERM the server (if it still runs); return its whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish()

    def kill(self) -> None:
        """``kill -9`` the server (if it still runs) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()


def _reader(stream: Any, sink: list[str]) -> threading.Thread:
    def read() -> None:
        for line in stream:
            sink.append(line)
        stream.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread
