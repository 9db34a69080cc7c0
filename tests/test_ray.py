"""The ``ray`` executor on a real multi-node Ray cluster (tests/raycluster.py):
a head and two worker nodes of one CPU on loopback, in a private network
namespace. Real ``deepserve run`` servers talk to it; their answers are
compared with the process executor's.

Run by .ci/run as ``unshare -n sh -c 'ip link set lo up && pytest -m ray'``;
skipped, saying why, elsewhere.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import write_dist
from tests.raycluster import RayCluster, listening
from tests.servers import DEEPSERVE, Server, children, gone

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

MODELS = "files,batchy,chatty"


def ray_args(cluster: RayCluster, *more: str) -> list[str]:
    """Small CPU shares: the module's servers (some live through all of it)
    fit on the cluster's two CPUs together."""
    return [
        "--executor",
        "ray",
        "--ray-address",
        cluster.address,
        "--ray-num-cpus",
        "0.1",
        "--ray-train-num-cpus",
        "0.1",
        *more,
    ]


def env_for(cluster: RayCluster, *extra_sites: Path) -> dict[str, str]:
    """A front's environment: the cluster's (so the same models and S3
    credentials), plus sites only the front has."""
    env = cluster.env
    if extra_sites:
        env["PYTHONPATH"] = os.pathsep.join(
            [*map(str, extra_sites), env.get("PYTHONPATH", "")]
        )
    return env


def metric(server: Server, name: str, model: str) -> float:
    text = requests.get(server.base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}"') or line.startswith(
            f'{name}{{model="{model}",'
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {model} not in /metrics")


def predict(server: Server, model: str, **kwargs: Any) -> requests.Response:
    return requests.post(
        f"{server.base}/v2/models/{model}/predict/", timeout=120, **kwargs
    )


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:g} s: {what}")


@pytest.fixture(scope="module")
def fronts(ray_cluster: RayCluster):
    """The same models on the process executor and on Ray (2 replicas each)."""
    env = env_for(ray_cluster)
    local = Server(["--model-name", MODELS], env)
    on_ray = Server(
        [
            "--model-name",
            MODELS,
            *ray_args(ray_cluster, "--ray-replicas", "2", "--ray-app-name", "api"),
        ],
        env,
    )
    try:
        local.wait_ready(timeout=120)
        on_ray.wait_ready(timeout=180)
        yield local, on_ray
    finally:
        on_ray.stop()
        local.stop()


# -- the same API -------------------------------------------------------------


def test_the_openapi_document_is_the_process_executors(fronts):
    local, on_ray = fronts
    got = [requests.get(s.base + "/swagger.json", timeout=30).json() for s in fronts]
    assert got[0] == got[1]
    swagger = [requests.get(s.base + "/api", timeout=30) for s in (local, on_ray)]
    assert swagger[0].status_code == swagger[1].status_code == 200


@pytest.mark.parametrize(
    "accept", ["application/x-echo", "text/csv", "application/octet-stream"]
)
def test_uploads_and_returned_files_are_the_process_executors(fronts, accept):
    upload = os.urandom(3000) + b"end"
    got = []
    for server in fronts:
        resp = predict(
            server,
            "files",
            params={"accept": accept},
            files={"data": ("input.bin", upload, "application/octet-stream")},
            headers={"Accept": accept},
        )
        assert resp.status_code == 200, resp.text
        got.append((resp.headers["Content-Type"], resp.content))
    assert got[0] == got[1]
    if accept == "application/x-echo":
        assert got[1][1] == upload  # the upload reached the replica and came back


def test_a_large_upload_goes_through_the_object_store(fronts):
    _, on_ray = fronts
    upload = os.urandom(3 * 1024 * 1024)
    resp = predict(
        on_ray,
        "files",
        params={"accept": "application/x-echo"},
        files={"data": ("big.bin", upload, "application/octet-stream")},
        headers={"Accept": "application/x-echo"},
    )
    assert resp.status_code == 200 and resp.content == upload


def test_replicas_run_on_two_nodes(fronts, ray_cluster):
    replicas = ray_cluster.replicas("api.files")
    assert len(replicas) == 2
    assert len({r.node for r in replicas}) == 2 and 0 not in {r.node for r in replicas}


def test_batching_merges_in_the_front(fronts):
    _, on_ray = fronts
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(
                lambda i: predict(on_ray, "batchy", params={"x": i, "delay": 0.05}),
                range(32),
            )
        )
    assert [a.status_code for a in answers] == [200] * 32, answers[0].text
    bodies = [a.json() for a in answers]
    bodies = [b.get("predictions", b) if isinstance(b, dict) else b for b in bodies]
    assert [b["x"] for b in bodies] == list(range(32)), bodies[0]
    assert max(b["size"] for b in bodies) > 1
    text = requests.get(on_ray.base + "/metrics", timeout=10).text
    sizes = [
        line
        for line in text.splitlines()
        if line.startswith("deepserve_batch_size_count") and 'model="batchy"' in line
    ]
    batches = float(sizes[0].rsplit(" ", 1)[1])
    assert 0 < batches < 32  # merged: fewer Ray calls than predictions


def test_a_training_runs_in_an_actor_and_its_output_is_recorded(fronts):
    _, on_ray = fronts
    started = requests.post(
        on_ray.base + "/v2/models/chatty/train/", params={"lines": 3}, timeout=30
    )
    assert started.status_code == 200, started.text
    job = started.json()["uuid"]
    url = f"{on_ray.base}/v2/models/chatty/train/{job}"
    done = wait_until(
        lambda: (
            (j := requests.get(url, timeout=10).json())["status"] != "running" and j
        ),
        120,
        "the training ends",
    )
    assert done["status"] == "done", done
    logs = requests.get(url + "/logs", timeout=10).text
    for line in (
        "epoch 1: printed to stdout",
        "epoch 1: printed to stderr",
        "written to fd 1 directly",
        "a log record at WARNING",
        "line 000002",
    ):
        assert line in logs


def test_nothing_listens_outside_loopback(fronts):
    # Every port deepserve and the pinned Ray nodes open is on loopback. Ray
    # Serve replicas bind their gRPC server to every interface (hard-coded
    # in Ray): in this namespace that is loopback alone, and in production
    # the reason Ray nodes belong on a private network (doc/scaling-out.rst).
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    outside = [
        str(sock)
        for sock in listening()
        if sock.host not in loopback
        and not (sock.host in ("0.0.0.0", "::") and "ServeReplica" in sock.process)
    ]
    assert not outside


# -- deadlines, crashes, load ---------------------------------------------------


@pytest.fixture(scope="module")
def slow_front(ray_cluster: RayCluster, slow_site: Path):
    env = env_for(ray_cluster)
    server = Server(
        [
            "--model-name",
            "slow",
            "--predict-timeout",
            "2",
            *ray_args(
                ray_cluster,
                "--ray-replicas",
                "2",
                "--ray-num-cpus",
                "0.25",
                "--ray-app-name",
                "robust",
            ),
        ],
        env,
    )
    try:
        server.wait_ready(timeout=180)
        yield server
    finally:
        server.stop()


def test_a_call_past_its_deadline_is_504_and_its_replica_replaced(
    slow_front, ray_cluster
):
    before = {r.pid for r in ray_cluster.replicas("robust.slow")}
    resp = predict(slow_front, "slow", params={"seconds": 30})
    assert resp.status_code == 504, resp.text
    assert resp.json()["code"] == 504 if "code" in resp.json() else True
    # The replica exited (the work stopped) and was counted.
    wait_until(
        lambda: metric(slow_front, "deepserve_worker_restarts_total", "slow") >= 1,
        30,
        "the restart is counted",
    )
    wait_until(
        lambda: (
            len(ray_cluster.replicas("robust.slow")) == 2
            and {r.pid for r in ray_cluster.replicas("robust.slow")} != before
        ),
        60,
        "Serve replaces the replica",
    )
    assert predict(slow_front, "slow", params={"seconds": 0}).status_code == 200


def test_kill_9_of_a_replica_fails_only_its_calls(slow_front, ray_cluster):
    wait_until(lambda: len(ray_cluster.replicas("robust.slow")) == 2, 60, "2 replicas")
    statuses: Counter[int] = Counter()
    bodies: list[Any] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            resp = predict(slow_front, "slow", params={"seconds": 0.2})
            statuses[resp.status_code] += 1
            if resp.status_code != 200:
                bodies.append(
                    (resp.status_code, resp.headers.get("Content-Type"), resp.text)
                )

    restarts = metric(slow_front, "deepserve_worker_restarts_total", "slow")
    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        victim = ray_cluster.replicas("robust.slow")[0]
        killed = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        back = wait_until(
            lambda: (
                len(
                    [
                        r
                        for r in ray_cluster.replicas("robust.slow")
                        if r.pid != victim.pid
                    ]
                )
                == 2
            ),
            60,
            "a replacement replica",
        )
        assert back
        served_before = statuses[200]
        wait_until(lambda: statuses[200] > served_before + 10, 30, "serving again")
        replaced_in = time.monotonic() - killed
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert set(statuses) <= {200, 503}, bodies
    # Only the calls the dead replica held failed (max_ongoing_requests of 4).
    assert statuses[503] <= 4, bodies
    for _status, ctype, text in bodies:
        assert ctype.startswith("application/json")
        assert "died" in json.loads(text)["message"]
    assert metric(slow_front, "deepserve_worker_restarts_total", "slow") > restarts
    assert replaced_in < 15 + 5  # a replacement within 15 s (+ polling)


def test_no_collapse_at_concurrency_32(slow_front):
    def rate(concurrency: int) -> float:
        def one(_: int) -> int:
            return predict(slow_front, "slow", params={"seconds": 0.02}).status_code

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            codes = list(pool.map(one, range(160)))
        assert set(codes) == {200}
        return 160 / (time.monotonic() - start)

    rate(8)  # warm
    at8, at32 = rate(8), rate(32)
    assert at32 >= 0.9 * at8, (at8, at32)


# -- start-up and shutdown --------------------------------------------------------


def test_a_model_the_replicas_cannot_import_stops_the_server_within_60s(
    ray_cluster, tmp_path
):
    # The model's package is on the front's machine only, as when a node
    # lacks it: the front imports it, the replicas cannot.
    site = tmp_path / "front-only"
    site.mkdir()
    (site / "front_only_model.py").write_text(
        "def get_metadata():\n    return {'name': 'frontonly'}\n"
        "def predict(**kwargs):\n    return {}\n"
    )
    write_dist(
        site, "front-only", {"frontonly": ("deepserve.v2.model", "front_only_model")}
    )
    env = env_for(ray_cluster, site)
    started = time.monotonic()
    server = Server(["--model-name", "frontonly", *ray_args(ray_cluster)], env)
    out = server.finish(timeout=90)
    assert time.monotonic() - started < 60 + 15
    assert server.proc.returncode == 1
    error = [line for line in out.splitlines() if "error:" in line]
    assert (
        error
        and "front_only_model" in error[-1]
        and "failed to start on Ray" in error[-1]
    ), out


def test_sigterm_exits_0_deletes_the_app_and_leaves_no_process(ray_cluster):
    env = env_for(ray_cluster)
    server = Server(["--model-name", "minimal", *ray_args(ray_cluster)], env)
    server.wait_ready(timeout=180)
    assert len(ray_cluster.replicas("deepserve.minimal")) == 1
    assert predict(server, "minimal").status_code in (200, 422)
    spawned = children(server.proc.pid)
    out = server.stop()
    assert server.proc.returncode == 0, out
    assert all(gone(pid) for pid in spawned)
    wait_until(
        lambda: not ray_cluster.replicas("deepserve.minimal"), 30, "replicas gone"
    )


def test_executor_ray_never_starts_a_local_ray(ray_cluster, tmp_path):
    env = env_for(ray_cluster)
    env.pop("RAY_ADDRESS", None)
    server = Server(["--model-name", "minimal", "--executor", "ray"], env)
    out = server.finish(timeout=60)
    assert server.proc.returncode == 1
    assert "needs the Ray cluster's address" in out
    assert not children(server.proc.pid)


def test_a_lost_app_makes_the_model_unavailable(ray_cluster):
    env = env_for(ray_cluster)
    server = Server(["--model-name", "minimal", *ray_args(ray_cluster)], env)
    try:
        server.wait_ready(timeout=180)
        deleted = ray_cluster.run_driver(
            "import ray; from ray import serve; ray.init(namespace='deepserve');"
            "serve.delete('deepserve.minimal')"
        )
        assert deleted.returncode == 0
        wait_until(
            lambda: (
                requests.get(server.base + "/v2/health/ready", timeout=10).status_code
                == 503
            ),
            30,
            "not ready",
        )
        resp = predict(server, "minimal")
        assert resp.status_code == 503
        assert "application" in resp.json()["message"]
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out


# -- several fronts ---------------------------------------------------------------


def deepserve_ray(action: str, env: dict[str, str], *args: str) -> str:
    import subprocess

    done = subprocess.run(
        [*DEEPSERVE, "ray", action, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_two_fronts_attach_to_one_app_and_share_trainings(ray_cluster, postgres):
    env = env_for(ray_cluster)
    database = postgres.new_database()
    common = [
        "--model-name",
        "chatty,minimal",
        *ray_args(ray_cluster, "--ray-replicas", "2"),
    ]
    out = deepserve_ray("deploy", env, *common)
    assert "deployed deepserve.minimal: 2 replica(s) running" in out
    replicas = ray_cluster.replicas("deepserve.minimal")
    attached = [*common, "--ray-attach", "--jobs-database", database]
    one, two = Server(attached, env), Server(attached, env)
    owner = None
    try:
        one.wait_ready(timeout=120)
        two.wait_ready(timeout=120)
        # A front that would own the app refuses: it would restart the others'.
        owner = Server(["--model-name", "minimal", *ray_args(ray_cluster)], env)
        refused = owner.finish(timeout=120)
        assert owner.proc.returncode == 1 and "exists already" in refused

        # A training started on one front is cancelled from the other.
        pidfile = f"/tmp/deepserve-ray-train-{os.getpid()}"
        job = requests.post(
            one.base + "/v2/models/chatty/train/",
            params={"seconds": 120, "pidfile": pidfile},
            timeout=30,
        ).json()["uuid"]
        wait_until(lambda: os.path.exists(pidfile), 120, "the training runs")
        pid = int(Path(pidfile).read_text())
        cancelled = requests.delete(
            f"{two.base}/v2/models/chatty/train/{job}", timeout=30
        )
        assert cancelled.status_code == 200, cancelled.text
        wait_until(
            lambda: (
                requests.get(
                    f"{one.base}/v2/models/chatty/train/{job}", timeout=10
                ).json()["status"]
                in ("cancelled", "canceled")
            ),
            60,
            "cancelled",
        )
        wait_until(lambda: gone(pid), 30, "the training's process stops")

        # Stopping one front leaves the other serving, on the same replicas.
        one.stop()
        assert one.proc.returncode == 0
        for _ in range(10):
            assert predict(two, "minimal").status_code in (200, 422)
        assert ray_cluster.replicas("deepserve.minimal") == replicas
    finally:
        for server in (one, two):
            server.stop()
        deepserve_ray("delete", env, *common)
    wait_until(lambda: not ray_cluster.replicas("deepserve.minimal"), 60, "deleted")


# -- autoscaling and stored models ------------------------------------------------


def test_autoscaling_from_1_to_3_and_back(ray_cluster, slow_site):
    env = env_for(ray_cluster)
    server = Server(
        [
            "--model-name",
            "slow",
            *ray_args(
                ray_cluster,
                "--ray-app-name",
                "scaling",
                "--ray-min-replicas",
                "1",
                "--ray-max-replicas",
                "3",
                "--ray-target-ongoing-requests",
                "1",
                "--ray-max-ongoing-requests",
                "2",
                "--ray-upscale-delay",
                "1",
                "--ray-downscale-delay",
                "3",
            ),
        ],
        env,
    )
    stop = threading.Event()
    try:
        server.wait_ready(timeout=180)
        assert len(ray_cluster.replicas("scaling.slow")) == 1

        def load() -> None:
            while not stop.is_set():
                predict(server, "slow", params={"seconds": 0.3})

        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        started = time.monotonic()
        wait_until(
            lambda: len(ray_cluster.replicas("scaling.slow")) == 3, 90, "3 replicas"
        )
        up = time.monotonic() - started
        stop.set()
        for t in threads:
            t.join(60)
        started = time.monotonic()
        wait_until(
            lambda: len(ray_cluster.replicas("scaling.slow")) == 1, 120, "back to 1"
        )
        down = time.monotonic() - started
        print(f"autoscaling: 1 -> 3 in {up:.1f} s, 3 -> 1 in {down:.1f} s")
    finally:
        stop.set()
        server.stop()


def test_a_stored_model_comes_from_object_storage(ray_cluster, s3, tmp_path):
    bucket = s3.new_bucket()
    url = f"s3://{bucket}/store"
    env = {**env_for(ray_cluster), **s3.env()}
    store = tmp_path / "store"
    code = (
        "import fake_stored; from deepserve import picklable_model\n"
        "from deepserve.store import Store\n"
        "picklable_model.save_model('scaler', fake_stored.Scaler(2.0), "
        f"store=Store({str(store)!r}))\n"
    )
    import subprocess

    saved = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr
    pushed = subprocess.run(
        [*DEEPSERVE, "models", "push", "scaler:latest", url, "--store", str(store)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    server = Server(
        ["--model-name", "scaler", "--model-store-url", url, *ray_args(ray_cluster)],
        env,
    )
    try:
        server.wait_ready(timeout=180)
        resp = requests.post(
            server.base + "/v2/models/scaler/predict/",
            json={"data": [[1, 2], [3]]},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == [[2.0, 4.0], [6.0]]
    finally:
        server.stop()
