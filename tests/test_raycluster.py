"""The Ray test cluster harness (tests/raycluster.py) itself.

The tests marked ``ray`` run a real cluster and need a private network
namespace (see tests/raycluster.py); the others check the harness's pure
parts, and its namespace checks in namespaces of their own when root.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.raycluster import (
    INSTALL_HINT,
    NETNS_COMMAND,
    Ports,
    RayCluster,
    listening,
    parse_proc_net_address,
    parse_replica_title,
)

CHECKOUT = Path(__file__).parents[1]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


# -- without Ray -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0100007F:4E20", ("127.0.0.1", 20000)),
        ("00000000:0050", ("0.0.0.0", 80)),
        ("0000000000000000FFFF00000100007F:4E20", ("::ffff:127.0.0.1", 20000)),
        ("00000000000000000000000001000000:0016", ("::1", 22)),
        ("00000000000000000000000000000000:1F90", ("::", 8080)),
    ],
)
def test_proc_net_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_proc_net_address(text) == expected


def test_proc_net_address_of_a_wrong_length() -> None:
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        parse_proc_net_address("0100:0050")


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("ray::ServeReplica:app:Model", ("app", "Model")),
        ("ray::ServeReplica:app:Model.handle_request", ("app", "Model")),
        ("ray::ServeReplica:deepserve.x:model.reconfigure", ("deepserve.x", "model")),
        ("ray::ServeReplica:a:b" + " " * 40, ("a", "b")),
        ("ray::ServeController", None),
        ("/usr/bin/python3 -m ServeReplica:a:b", None),
    ],
)
def test_replica_titles(title: str, expected: tuple[str, str] | None) -> None:
    assert parse_replica_title(title) == expected


def test_listening_finds_a_socket_and_its_owner() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        found = [x for x in listening() if x.port == port]
    assert [(x.host, x.pid) for x in found] == [("127.0.0.1", os.getpid())]
    assert "python" in found[0].process or "pytest" in found[0].process
    assert not [x for x in listening() if x.port == port]


def test_node_port_blocks_are_disjoint_and_complete() -> None:
    head, worker = Ports(30000, 0), Ports(30000, 1)
    assert "--port=30000" in head.options()
    assert not [o for o in worker.options() if o.startswith(("--port=", "--ray-"))]
    assert head.env() == {
        "AUTOSCALER_METRIC_PORT": "30009",
        "DASHBOARD_METRIC_PORT": "30010",
    }
    assert worker.env() == {}
    for ports in (head, worker):
        values = [int(o.split("=")[1]) for o in ports.options()]
        values += [int(v) for v in ports.env().values()]
        assert len(set(values)) == len(values)
        assert all(v in ports.all() for v in values)
    assert not set(head.all()) & set(worker.all())


def test_a_port_in_use_stops_start_before_any_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        base = sock.getsockname()[1]
        cluster = RayCluster(base_port=base)
        with pytest.raises(RuntimeError, match=rf"ports \[{base}\b.*in use"):
            cluster.start(workers=0)
    assert cluster.nodes == {}
    assert cluster.temp_dir is not None and not cluster.temp_dir.exists()


def in_new_netns(script: str, code: str) -> str:
    """What ``code`` prints in a new network namespace set up by ``script``."""
    if os.getuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to make a network namespace")
    python = f"{sys.executable} -c {_quote(code)}"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"{script}\n{python}"],
        env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "unshare failed" in done.stderr:
        pytest.skip(f"no network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _quote(code: str) -> str:
    return "'" + code.replace("'", "'\\''") + "'"


CHECK_NETNS = "from tests.raycluster import in_private_netns as f; print(f())"


def test_a_new_namespace_is_private_once_loopback_is_up() -> None:
    assert in_new_netns("true", CHECK_NETNS) == "False"
    assert in_new_netns("ip link set lo up", CHECK_NETNS) == "True"


def test_a_namespace_with_another_interface_is_not_private() -> None:
    script = (
        "ip link set lo up && ip link add ds0 type veth peer name ds1 "
        "|| { echo no veth; exit; }"
    )
    out = in_new_netns(script, CHECK_NETNS)
    if out == "no veth":
        pytest.skip("veth interfaces cannot be made here")
    assert out == "False"


PROBLEM = "from tests.raycluster import ray_problem as f; print(f())"


def test_ray_problem_says_how_to_run_in_a_namespace() -> None:
    assert NETNS_COMMAND in in_new_netns("true", PROBLEM)


def test_ray_problem_says_how_to_install_ray() -> None:
    code = f"import sys; sys.modules['ray'] = None; {PROBLEM}"
    out = in_new_netns("ip link set lo up", code)
    assert INSTALL_HINT in out
    assert NETNS_COMMAND not in out


def test_ray_problem_is_none_in_a_namespace_with_ray() -> None:
    pytest.importorskip("ray.serve")
    assert in_new_netns("ip link set lo up", PROBLEM) == "None"


# -- on a real cluster -------------------------------------------------------

NODES = """
import json, ray
ray.init()
print(json.dumps([
    [n["Alive"], n["NodeManagerPort"], n["Resources"].get("CPU", 0)]
    for n in ray.nodes()
]))
"""


@pytest.mark.ray
def test_a_head_and_two_workers_with_a_cpu_each(ray_cluster: RayCluster) -> None:
    out = ray_cluster.run_driver(NODES).stdout.splitlines()[-1]
    # A node whose start was tried again may be listed dead.
    alive = sorted((n[1:] for n in json.loads(out) if n[0]), key=lambda n: n[0])
    base = ray_cluster.base_port
    assert alive == [[base + 1, 0], [base + 101, 1], [base + 201, 1]]


@pytest.mark.ray
def test_the_cluster_listens_on_loopback_in_its_ports(ray_cluster: RayCluster) -> None:
    everything = listening()
    assert [str(x) for x in everything if x.host not in LOOPBACK] == []
    mine = ray_cluster.pids()
    ours = [x for x in everything if x.pid in mine]
    ports = range(ray_cluster.base_port, ray_cluster.base_port + 300)
    assert [str(x) for x in ours if x.port not in ports] == []
    assert {ray_cluster.base_port, ray_cluster.base_port + 101} <= {
        x.port for x in ours
    }


SERVE = """
import json, os, ray
from ray import serve

ray.init()
serve.start(http_options={{"host": "127.0.0.1", "port": {port}}})

@serve.deployment(num_replicas=2, ray_actor_options={{"num_cpus": 1}})
class Where:
    def __call__(self):
        import deepserve, fake_minimal
        return os.getpid(), deepserve.__file__, fake_minimal.__file__

handle = serve.run(Where.bind(), name="ds.harness", route_prefix=None)
seen = {{}}
for _ in range(200):
    pid, *files = handle.remote().result()
    seen[pid] = files
    if len(seen) == 2:
        break
print(json.dumps(seen))
"""


@pytest.fixture
def serve_app(ray_cluster: RayCluster) -> Iterator[dict[str, list[str]]]:
    """Two replicas of a deployment that says where it runs and from where
    it imports deepserve and the fake models; Serve shut down after."""
    code = SERVE.format(port=ray_cluster.serve_port)
    try:
        out = ray_cluster.run_driver(code).stdout.splitlines()[-1]
        yield json.loads(out)
    finally:
        ray_cluster.run_driver("import ray; from ray import serve; serve.shutdown()")


@pytest.mark.ray
def test_replicas_run_one_per_worker_and_import_the_checkout(
    ray_cluster: RayCluster, serve_app: dict[str, list[str]]
) -> None:
    replicas = ray_cluster.replicas("ds.harness")
    assert sorted(str(r.pid) for r in replicas) == sorted(serve_app)
    assert sorted((r.app, r.deployment, r.node) for r in replicas) == [
        ("ds.harness", "Where", 1),
        ("ds.harness", "Where", 2),
    ]
    assert ray_cluster.replicas("another") == []
    for deepserve_file, fake_file in serve_app.values():
        assert Path(deepserve_file).is_relative_to(CHECKOUT)
        assert Path(fake_file).parent == CHECKOUT / "tests" / "fakes"


@pytest.mark.ray
def test_workers_come_and_go_and_stop_leaves_nothing(ray_cluster: RayCluster) -> None:
    cluster = RayCluster(base_port=ray_cluster.base_port + 1000)
    try:
        cluster.start(workers=1)
        assert cluster.add_worker() == 2
        by_node = cluster.pids()
        assert set(by_node.values()) == {0, 1, 2}
        assert not set(by_node) & set(ray_cluster.pids())
        assert os.getpid() not in by_node
        killed = [p for p, node in by_node.items() if node == 2]
        cluster.kill_worker(2)
        assert not [p for p in killed if _alive(p)]
        assert set(cluster.pids().values()) == {0, 1}
    finally:
        everything = set(cluster.pids())
        cluster.stop()
    assert everything
    assert not [p for p in everything if _alive(p)]
    assert cluster.pids() == {}
    assert cluster.temp_dir is not None and not cluster.temp_dir.exists()
    block = range(cluster.base_port, cluster.base_port + 300)
    assert [str(x) for x in listening() if x.port in block] == []
    assert ray_cluster.pids(), "the other cluster lives on"


ORPHAN = """
import json, sys, time
from tests.raycluster import RayCluster
cluster = RayCluster(base_port=int(sys.argv[1])).start(workers=0)
print(json.dumps([str(cluster.temp_dir), sorted(cluster.pids())]), flush=True)
time.sleep(600)
"""


@pytest.mark.ray
def test_a_killed_owner_takes_its_cluster_along(ray_cluster: RayCluster) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(ray_cluster.base_port + 2000)],
        env={**ray_cluster.env, "PYTHONPATH": str(CHECKOUT)},
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        try:
            assert owner.stdout is not None
            temp_dir, pids = json.loads(owner.stdout.readline())
        finally:
            owner.kill()
    try:
        assert pids
        deadline = time.monotonic() + 30
        while [p for p in pids if _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p for p in pids if _alive(p)] == []
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
