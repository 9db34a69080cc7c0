"""A real multi-node Ray cluster on loopback, for the Ray executor's tests.

:class:`RayCluster` starts a head node (no CPUs: nothing is scheduled on it
but Ray's and Serve's own actors) and worker nodes, each a ``ray start
--block`` process of its own on 127.0.0.1, with every port Ray lets us pin
taken from a block of its own (see :class:`Ports`), so that two clusters with
different base ports never collide.

Ray rewrites 127.0.0.1 to the host's address and some of its servers listen
on every interface (Serve replicas bind ``[::]:0``), so the cluster must run
where loopback is the only interface: a private network namespace. The tests
run inside one; this module only checks that (:func:`in_private_netns`).
``.ci/run`` runs them as root with::

    unshare -n sh -c 'ip link set lo up && pytest -m ray'

Each node's ``ray start --block`` is started in a session of its own, and
every process Ray starts for that node (GCS, raylet, agents, workers, Serve
replicas) stays in that session even after setting its own process group
and title, so the session id tells exactly which processes belong to which
node of which cluster, and nothing else on the machine is ever touched (not
another cluster in another namespace either: ``ray stop`` would kill every
Ray process of the machine, so it is never used).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

import deepserve
from tests.s3 import S3

#: How to run the Ray tests, as .ci/run does (as root).
NETNS_COMMAND = "unshare -n sh -c 'ip link set lo up && pytest -m ray'"
INSTALL_HINT = "pip install 'deepserve[ray]'"

#: Printed by ``ray start --block`` once its node is up.
READY_LINE = "will now block forever"
#: What ``ray start`` says when a node missed its time to register (retried).
RETRIED = "timed out during startup"
ATTEMPTS = 3
#: A process title Serve gives its replicas: ``ray::ServeReplica:APP:DEPLOYMENT``.
REPLICA_TITLE = "ray::ServeReplica:"

IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
PR_SET_PDEATHSIG = 1


def in_private_netns() -> bool:
    """True when loopback is the only network interface here, and it is up.

    Asks the kernel (``if_nameindex``, ``SIOCGIFFLAGS``): ``/sys/class/net``
    shows the namespace that mounted ``/sys``, not this process's.
    """
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
    flags: int = struct.unpack_from("16sH", ifreq)[1]
    return bool(flags & IFF_UP)


def ray_problem() -> str | None:
    """Why the Ray tests cannot run here; None when they can."""
    problems = []
    if not in_private_netns():
        problems.append(
            "not in a private network namespace with loopback only (Ray would "
            f"listen on every interface): as root, run `{NETNS_COMMAND}`"
        )
    if importlib.util.find_spec("ray") is None:
        problems.append(f"Ray is not installed: {INSTALL_HINT}")
    elif not problems:
        # Importing Ray takes seconds: only once everything else is right.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module("ray.serve")
        except ImportError as exc:
            problems.append(f"Ray Serve cannot be imported ({exc}): {INSTALL_HINT}")
    return "; ".join(problems) or None


@dataclass(frozen=True)
class Ports:
    """The ports of node ``index`` of a cluster whose ports start at ``base``.

    Node ``n`` (0 is the head) owns ``base + 100*n`` to ``base + 100*n + 99``:
    its fixed ports first, its workers' ports from offset 20 on.
    """

    base: int
    index: int

    #: Offsets of the ports every node has.
    NODE = {
        "node-manager-port": 1,
        "object-manager-port": 2,
        "dashboard-agent-listen-port": 3,
        "dashboard-agent-grpc-port": 4,
        "runtime-env-agent-port": 5,
        "metrics-export-port": 6,
    }
    #: Offsets of the head's own ports (``ray start`` options).
    HEAD = {"port": 0, "ray-client-server-port": 7, "dashboard-port": 8}
    #: Offsets of head ports that only environment variables set.
    HEAD_ENV = {"AUTOSCALER_METRIC_PORT": 9, "DASHBOARD_METRIC_PORT": 10}
    #: Reserved for the tests' Serve HTTP proxy (nothing pins it by default).
    SERVE = 11
    WORKERS = (20, 99)

    @property
    def first(self) -> int:
        return self.base + 100 * self.index

    def options(self) -> list[str]:
        """The port options of ``ray start`` for this node."""
        offsets = dict(self.NODE)
        if self.index == 0:
            offsets.update(self.HEAD)
        low, high = self.WORKERS
        return [f"--{name}={self.first + off}" for name, off in offsets.items()] + [
            f"--min-worker-port={self.first + low}",
            f"--max-worker-port={self.first + high}",
        ]

    def env(self) -> dict[str, str]:
        """Environment variables that pin the head's other ports."""
        if self.index != 0:
            return {}
        return {var: str(self.first + off) for var, off in self.HEAD_ENV.items()}

    def all(self) -> range:
        return range(self.first, self.first + 100)


class Listener(NamedTuple):
    """A listening TCP socket of this network namespace."""

    host: str
    port: int
    pid: int | None
    process: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port} ({self.process or '?'}, pid {self.pid})"


class Replica(NamedTuple):
    """A Serve replica's process and the node it runs on."""

    pid: int
    app: str
    deployment: str
    node: int | None


@dataclass
class _Node:
    index: int
    launcher: subprocess.Popen[bytes]
    log: Path


def parse_proc_net_address(text: str) -> tuple[str, int]:
    """``(host, port)`` of an address as ``/proc/net/tcp{,6}`` writes it:
    hex, the address in 32-bit words of host (little-endian) byte order."""
    addr, _, port = text.partition(":")
    raw = bytes.fromhex(addr)
    if len(raw) not in (4, 16):
        raise ValueError(f"not an IPv4 or IPv6 address: {text!r}")
    ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    host = ipaddress.ip_address(ordered)
    mapped = getattr(host, "ipv4_mapped", None)
    return (f"::ffff:{mapped}" if mapped else str(host)), int(port, 16)


def parse_replica_title(title: str) -> tuple[str, str] | None:
    """``(app, deployment)`` of a Serve replica's process title, None when
    not a replica's: ``ray::ServeReplica:APP:DEPLOYMENT``, with ``.METHOD``
    added while a call runs; so an app's name is read up to its first ``:``
    (it may hold dots) and a deployment's up to its first ``.``."""
    if not title.startswith(REPLICA_TITLE):
        return None
    app, _, rest = title[len(REPLICA_TITLE) :].split(" ", 1)[0].partition(":")
    return app, rest.partition(".")[0]


def listening() -> list[Listener]:
    """Every listening TCP socket of this network namespace, with its owner
    where ``/proc`` says (the sockets of a namespace are all there is to
    check: nothing outside it can reach into it)."""
    found: list[tuple[str, int, str]] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                host, port = parse_proc_net_address(fields[1])
                found.append((host, port, fields[9]))
    owners = _socket_owners({inode for _, _, inode in found})
    return sorted(
        (Listener(h, p, *owners.get(i, (None, ""))) for h, p, i in found),
        key=lambda x: (x.port, x.host),
    )


def _socket_owners(inodes: set[str]) -> dict[str, tuple[int, str]]:
    owners: dict[str, tuple[int, str]] = {}
    for pid in _all_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                owners[target[8:-1]] = (pid, _name(pid))
    return owners


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, parent pid, session id)`` of a process; None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


def _name(pid: int) -> str:
    """A short name of a process: its Ray title, program or Python script."""
    words = _title(pid).split()
    if not words or words[0].startswith("ray::"):
        return words[0] if words else ""
    for word in words[1:] if "python" in Path(words[0]).name else []:
        if not word.startswith("-"):
            return Path(word).name
    return Path(words[0]).name


def _title(pid: int) -> str:
    """The command line of a process; what Ray's workers set as their title."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


class RayCluster:
    """A Ray cluster of local nodes, each its own ``ray start --block``.

    Nodes are numbered from 0, the head. ``base_port`` is where the
    cluster's ports start (see :class:`Ports`); two clusters need bases at
    least ``100 * nodes`` apart.
    """

    def __init__(
        self, base_port: int = 20000, object_store_memory: int = 100_000_000
    ) -> None:
        self.base_port = base_port
        self.object_store_memory = object_store_memory
        self.nodes: dict[int, _Node] = {}
        self.temp_dir: Path | None = None
        self._env: dict[str, str] = {}
        self._next = 0
        self._started = False

    @property
    def address(self) -> str:
        """The GCS address drivers connect to."""
        return f"127.0.0.1:{Ports(self.base_port, 0).first + Ports.HEAD['port']}"

    @property
    def serve_port(self) -> int:
        """A port of the cluster's block that nothing uses, for Serve's HTTP
        proxy (``serve.start(http_options={"port": ...})``)."""
        return Ports(self.base_port, 0).first + Ports.SERVE

    @property
    def env(self) -> dict[str, str]:
        """The environment the nodes (hence every Ray worker) run with."""
        return dict(self._env)

    def start(
        self,
        workers: int = 2,
        cpus_per_worker: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> RayCluster:
        """Start the head and ``workers`` worker nodes; return when all are up.

        ``env`` (default: this process's) is what the nodes run with, so what
        Ray's workers import from (``PYTHONPATH``); worker niceness 0, no
        usage stats and no draining on shutdown are added.

        Call it (and :meth:`add_worker`) from a thread that lives as long as
        the cluster, such as the main thread: a node gets SIGTERM when the
        thread that started it ends, so that a killed test run leaves no
        cluster behind (``PR_SET_PDEATHSIG``).
        """
        if self._started:
            raise RuntimeError("this RayCluster was already started")
        self._started = True
        self.temp_dir = Path(tempfile.mkdtemp(prefix="dsray-"))
        self._env = dict(os.environ if env is None else env)
        self._env.pop("RAY_ADDRESS", None)
        self._env.update(
            RAY_worker_niceness="0",
            RAY_USAGE_STATS_ENABLED="0",
            # SIGTERM stops a node at once, instead of draining it for 30 s.
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
            **Ports(self.base_port, 0).env(),
        )
        try:
            self._start_node(0, head=True)
            for _ in range(workers):
                self._start_node(cpus_per_worker)
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self, cpus: int = 1) -> int:
        """Start one more worker node; its index."""
        return self._start_node(cpus)

    def kill_worker(self, index: int) -> None:
        """SIGKILL every process of worker node ``index``, as if its machine
        died; return once they are gone. The GCS notices on its own, after
        its health checks fail."""
        if index == 0:
            raise ValueError("node 0 is the head: stop() the cluster instead")
        if index not in self.nodes:
            raise ValueError(f"no running worker node {index}: {sorted(self.nodes)}")
        self._kill_node(index)

    def stop(self, grace: float = 20.0) -> None:
        """Stop every node and remove the temporary directory; raise if a
        process of the cluster is still there afterwards.

        Each node's ``ray start`` gets SIGTERM (it stops its node's processes,
        gracefully first); whatever is left after ``grace`` seconds gets
        SIGKILL.
        """
        sessions = {n.launcher.pid for n in self.nodes.values()}
        for node in self.nodes.values():
            with contextlib.suppress(ProcessLookupError):
                node.launcher.send_signal(signal.SIGTERM)
        left = self._wait_gone(sessions, grace)
        if left:
            self._kill(left)
            left = self._wait_gone(sessions, 10.0)
        for node in self.nodes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.launcher.wait(timeout=5)
        self.nodes.clear()
        if left:
            raise RuntimeError(f"Ray processes outlived SIGKILL: {self._show(left)}")
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def pids(self) -> dict[int, int]:
        """Every live process of the cluster: pid -> its node's index."""
        return self._members({n.launcher.pid: i for i, n in self.nodes.items()})

    def replicas(self, app: str | None = None) -> list[Replica]:
        """The Serve replicas running on the cluster (of ``app`` if given),
        found by their process titles (:func:`parse_replica_title`)."""
        found = []
        for pid, node in self.pids().items():
            names = parse_replica_title(_title(pid))
            if names and app in (None, names[0]):
                found.append(Replica(pid, *names, node))
        return sorted(found)

    def run_driver(
        self, code: str, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``code`` in a Python subprocess with the nodes' environment and
        ``RAY_ADDRESS`` set (``ray.init()`` connects to this cluster), so
        that this process never becomes a Ray driver; raise with its output
        when it fails."""
        env = {**self._env, "RAY_ADDRESS": self.address}
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"driver failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done

    # -- internals ---------------------------------------------------------

    def _start_node(self, cpus: int, head: bool = False) -> int:
        """Start a node and wait until it is up; its index.

        One node at a time, and tried again (:data:`ATTEMPTS` in all, each
        failed try's log kept as ``nodeN.log.TRY``) when Ray gave up on it:
        ``ray start`` gives a raylet 30 s to register with the GCS, which a
        loaded machine misses now and then.
        """
        index = self._next
        self._next += 1
        for attempt in range(1, ATTEMPTS + 1):
            began = time.monotonic()
            node = self._launch(index, cpus, head)
            try:
                self._wait_ready(node)
            except BaseException as exc:
                self._kill_node(index)
                if attempt == ATTEMPTS or RETRIED not in str(exc):
                    raise
                node.log.rename(f"{node.log}.{attempt}")
                print(
                    f"Ray node {index} missed its start, trying again", file=sys.stderr
                )
                continue
            took = time.monotonic() - began
            print(f"Ray node {index} up in {took:.1f} s", file=sys.stderr)
            return index
        raise AssertionError("not reached")

    def _launch(self, index: int, cpus: int, head: bool) -> _Node:
        assert self.temp_dir is not None
        ports = Ports(self.base_port, index)
        if ports.first + 99 > 65535:
            raise ValueError(f"node {index} would need ports above 65535")
        busy = sorted({x.port for x in listening()} & set(ports.all()))
        if busy:
            raise RuntimeError(
                f"ports {busy} of node {index} (base port {self.base_port}) "
                "are in use: another cluster? Pick another base_port."
            )
        ray = Path(sys.executable).parent / "ray"
        argv = [str(ray), "start", "--block", "--node-ip-address=127.0.0.1"]
        argv += [f"--num-cpus={cpus}", *ports.options(), "--disable-usage-stats"]
        argv.append(f"--object-store-memory={self.object_store_memory}")
        if head:
            argv += [
                "--head",
                "--include-dashboard=false",
                f"--temp-dir={self.temp_dir}",
            ]
        else:
            argv.append(f"--address={self.address}")
        log = self.temp_dir / f"node{index}.log"
        with log.open("wb") as out:
            launcher = subprocess.Popen(
                argv,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        node = _Node(index, launcher, log)
        self.nodes[index] = node
        return node

    def _wait_ready(self, node: _Node, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while READY_LINE not in (text := node.log.read_text(errors="replace")):
            if node.launcher.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with {node.launcher.returncode}"
                    if node.launcher.returncode is not None
                    else f"not up after {timeout:.0f} s"
                )
                raise RuntimeError(f"Ray node {node.index} {why}:\n{text[-4000:]}")
            time.sleep(0.2)

    def _kill_node(self, index: int) -> None:
        node = self.nodes.pop(index)
        session = {node.launcher.pid: index}
        deadline = time.monotonic() + 10
        while (left := self._members(session)) and time.monotonic() < deadline:
            self._kill(left)
            time.sleep(0.1)
        node.launcher.wait(timeout=5)
        if left:
            raise RuntimeError(f"Ray processes outlived SIGKILL: {self._show(left)}")

    def _members(self, sessions: Mapping[int, int]) -> dict[int, int]:
        """Live processes of these sessions (session id -> node), and their
        descendants (should one ever start a session of its own)."""
        stats = {pid: s for pid in _all_pids() if (s := _stat(pid)) is not None}
        found = {p: sessions[s[2]] for p, s in stats.items() if s[2] in sessions}
        grew = True
        while grew:
            grew = False
            for pid, (_, ppid, _) in stats.items():
                if pid not in found and ppid in found:
                    found[pid] = found[ppid]
                    grew = True
        return {p: node for p, node in found.items() if stats[p][0] not in ("Z", "X")}

    def _wait_gone(self, sessions: set[int], timeout: float) -> dict[int, int]:
        """Wait until no process of ``sessions`` is alive; those left."""
        by_session = dict.fromkeys(sessions, 0)
        deadline = time.monotonic() + timeout
        while (left := self._members(by_session)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left

    @staticmethod
    def _kill(pids: Mapping[int, int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _show(pids: Mapping[int, int]) -> str:
        return ", ".join(f"{p} {_title(p)[:80]!r}" for p in pids)


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that has the child get SIGTERM when the calling
    thread ends, hence when this process dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # died before prctl
            os._exit(1)

    return preexec


@pytest.fixture(scope="session")
def ray_cluster(fake_site: Path, slow_site: Path, s3: S3) -> Iterator[RayCluster]:
    """A head (no CPUs) and 2 worker nodes (1 CPU each) whose workers import
    the deepserve the tests import, and the fake models, and hold the S3
    test server's dummy credentials; skipped, saying why, where
    :func:`ray_problem` says Ray tests cannot run."""
    problem = ray_problem()
    if problem:
        pytest.skip(problem)
    from tests.conftest import subprocess_env

    env = {**subprocess_env(fake_site, slow_site), **s3.env()}
    checkout = str(Path(deepserve.__file__ or "").parents[1])
    env["PYTHONPATH"] = os.pathsep.join([checkout, env["PYTHONPATH"]])
    cluster = RayCluster()
    cluster.start(workers=2, cpus_per_worker=1, env=env)
    try:
        yield cluster
    finally:
        cluster.stop()
