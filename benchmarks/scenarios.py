"""The benchmark scenarios: overhead, cpu, batching, upload and training.

Each starts its servers, measures, and stops them before returning; each
wait is bounded (wrk durations, curl's ``--max-time``, start-up timeouts).
The servers: deepserve, DEEPaaS 2.6.0, a bare aiohttp app and, with
``--peers``, MLServer, BentoML and Ray Serve (issue 13), each asked in its
own request format (:class:`Target`'s ``call`` and ``read``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from envs import HERE, Venv
from load import LoadResult, run_wrk
from servers import (
    Request,
    RssSampler,
    Server,
    cpu_seconds,
    files_under,
    free_port,
    machine_busy_seconds,
    rss_bytes,
    running,
    wait_quiet,
)

PREDICT = "/v2/models/echo/predict/"
TRAIN = "/v2/models/echo/train/"
MIB = 1 << 20
#: The vector model's answer to this text is its call and item counters.
VECTOR_STATS = "__stats__"
#: Before each measured run, wait at most this long for the machine to be
#: quiet (other work on a shared machine skews the figures); run.py sets it.
quiet_wait_s = 30.0


#: Where the peers' apps are (put on their ``PYTHONPATH``).
PEERS = HERE / "peers"
#: Seconds to let a server settle after its first answers before its idle
#: memory is read.
SETTLE_S = 1.0


def predict_path(model: str) -> str:
    return f"/v2/models/{model}/predict/"


def deepaas_call(model: str, text: str) -> Request:
    """DEEPaaS V2's predict (deepserve's too): the text as a query argument."""
    return Request("POST", predict_path(model) + f"?text={text}")


def deepaas_read(body: bytes) -> object:
    """The model's answer in a DEEPaaS V2 predict's answer."""
    return json.loads(body).get("predictions")


@dataclass(frozen=True)
class Target:
    """A server to benchmark: a label, the model it serves, how to start it.

    :param argv: the command, given the port it must listen on.
    :param call: the predict request for ``(model, text)``, in the server's
        own format; ``read``: the model's answer (``{"echo": text}``) in the
        body of the server's 200 answer.
    :param env: more environment variables for the server.
    """

    label: str
    argv: Callable[[int], list[str]]
    model: str = "echo"
    call: Callable[[str, str], Request] = deepaas_call
    read: Callable[[bytes], object] = deepaas_read
    env: Mapping[str, str] | None = None


def deepserve_target(
    venv: Venv,
    *,
    label: str = "deepserve",
    model: str = "echo",
    executor: str = "process",
    workers: int = 1,
    extra: Sequence[str] = (),
) -> Target:
    """``deepserve run`` serving one model; ``extra``: more options."""

    def argv(port: int) -> list[str]:
        return [
            str(venv.script("deepserve")),
            "run",
            "--listen-port",
            str(port),
            "--model-name",
            model,
            "--executor",
            executor,
            "--workers",
            str(workers),
            *extra,
        ]

    return Target(label, argv, model)


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
        probe=target.call(target.model, "ready"),
        env=target.env,
    )


def _check_echo(server: Server, target: Target) -> None:
    """The server answers 200 and the model's echo of the text."""
    status, body = server.send(target.call(target.model, "hello"))
    try:
        answer = target.read(body) if status == 200 else None
    except (ValueError, LookupError, TypeError):
        answer = None
    if not isinstance(answer, dict) or answer.get("echo") != "hello":
        raise RuntimeError(f"{server.label}: unexpected answer {status} {body[:200]!r}")


# -- the peers (issue 13) ------------------------------------------------------

MLSERVER_RUNTIMES = {"echo": "Echo", "cpu": "Cpu", "vector": "Vector"}


def mlserver_call(model: str, text: str) -> Request:
    """Open Inference Protocol: one ``BYTES`` input ``text`` of one item."""
    body = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]
    }
    return Request(
        "POST",
        f"/v2/models/{model}/infer",
        json.dumps(body).encode(),
        "application/json",
    )


def mlserver_read(body: bytes) -> object:
    """The first item of the ``prediction`` output (the model's JSON)."""
    outputs = json.loads(body)["outputs"]
    found = next(o for o in outputs if o["name"] == "prediction")
    return json.loads(found["data"][0])


def mlserver_target(
    venv: Venv,
    label: str,
    scratch: Path,
    *,
    model: str = "echo",
    workers: int = 1,
    batching: bool = False,
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
) -> Target:
    """``mlserver start`` of a model repository made under ``scratch``.

    :param workers: MLServer's ``parallel_workers`` (inference processes).
    :param batching: MLServer's adaptive batching: ``max_batch_size`` and
        ``max_batch_time`` (``max_wait_ms``).
    """

    def argv(port: int) -> list[str]:
        repo = scratch / f"mlserver-{port}"
        (repo / model).mkdir(parents=True)
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": workers,
        }
        model_settings: dict[str, object] = {
            "name": model,
            "implementation": f"mlserver_models.{MLSERVER_RUNTIMES[model]}",
        }
        if batching:
            model_settings["max_batch_size"] = max_batch_size
            model_settings["max_batch_time"] = max_wait_ms / 1000
        (repo / "settings.json").write_text(json.dumps(settings))
        (repo / model / "model-settings.json").write_text(json.dumps(model_settings))
        return [str(venv.script("mlserver")), "start", str(repo)]

    return Target(
        label,
        argv,
        model,
        call=mlserver_call,
        read=mlserver_read,
        env={"PYTHONPATH": str(PEERS)},
    )


BENTOML_SERVICES = {"echo": "Echo", "cpu": "Cpu", "vector": "Vector"}


def bentoml_call(model: str, text: str) -> Request:
    """BentoML's JSON: the API's arguments by name (a list for the batchable
    ``vector``); the service serves one model at ``/predict``."""
    body = {"texts": [text]} if model == "vector" else {"text": text}
    return Request("POST", "/predict", json.dumps(body).encode(), "application/json")


def bentoml_read(body: bytes) -> object:
    answer = json.loads(body)
    return answer[0] if isinstance(answer, list) else answer


def bentoml_target(
    venv: Venv, label: str, scratch: Path, *, model: str = "echo", workers: int = 1
) -> Target:
    """``bentoml serve`` of one service of ``peers/bentoml_service.py``.

    :param workers: the service's ``workers`` (processes).
    """

    def argv(port: int) -> list[str]:
        return [
            str(venv.script("bentoml")),
            "serve",
            f"bentoml_service:{BENTOML_SERVICES[model]}",
            "--working-dir",
            str(PEERS),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]

    return Target(
        label,
        argv,
        model,
        call=bentoml_call,
        read=bentoml_read,
        env={
            "BENCH_WORKERS": str(workers),
            "BENTOML_HOME": str(scratch / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "True",
        },
    )


def ray_serve_call(model: str, text: str) -> Request:
    """The application's route, the text as a query argument."""
    return Request("POST", f"/{model}?text={text}")


def ray_serve_read(body: bytes) -> object:
    return json.loads(body)


#: First port of each Ray cluster's range (100 ports each; the benchmark runs
#: in a network namespace of its own, so these are free).
_ray_ports = itertools.count(21000, 1000)


def ray_serve_target(
    venv: Venv, label: str, *, model: str = "echo", replicas: int = 1
) -> Target:
    """``peers/ray_serve_app.py``: a Ray head node of its own (2 CPUs) and the
    model's Serve application, with ``replicas`` replicas."""
    base = next(_ray_ports)

    def argv(port: int) -> list[str]:
        return [
            str(venv.python),
            str(PEERS / "ray_serve_app.py"),
            model,
            "--http-port",
            str(port),
            "--ports-from",
            str(base),
            "--replicas",
            str(replicas),
        ]

    return Target(
        label,
        argv,
        model,
        call=ray_serve_call,
        read=ray_serve_read,
        env={
            "PYTHONPATH": str(PEERS),
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray Serve's documented settings for throughput (deepserve's ray
            # executor sets them too).
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        },
    )


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


@dataclass(frozen=True)
class Run:
    """One wrk run and the CPU the server used meanwhile.

    :param main_cpu: the server's main process, in CPUs (1.0: one CPU busy).
    :param other_cpu: the rest of its process tree (workers), in CPUs.
    :param foreign_cpu: the rest of the machine (neither the server nor wrk:
        other processes, the kernel), in CPUs.
    :param batch: ``(calls, items)`` the vector model ran meanwhile, if read.
    :param quiet: False when the machine was still busy with other work
        after waiting ``quiet_wait_s`` before the run.
    """

    load: LoadResult
    main_cpu: float
    other_cpu: float
    foreign_cpu: float = 0.0
    batch: tuple[int, int] | None = None
    quiet: bool = True

    @property
    def client_cpu(self) -> float:
        """wrk's CPU use, in CPUs."""
        d = self.load.duration_s
        return self.load.client_cpu_s / d if d else 0.0


def measure(
    server: Server,
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int | None = None,
    timeout_s: float = 2.0,
    wait: bool = True,
    request: Request | None = None,
) -> Run:
    """wrk against ``url``, with the server's CPU use over the same time.

    :param wait: first wait (at most ``quiet_wait_s``) for a quiet machine.
    :param request: its body and content type go with every request.
    """
    quiet = not wait or _wait_quiet()
    pids = server.tree()
    before = cpu_seconds(pids)
    busy_before = machine_busy_seconds()
    start = time.perf_counter()
    result = run_wrk(
        url,
        connections=connections,
        duration_s=duration_s,
        threads=threads,
        timeout_s=timeout_s,
        body=request.body if request else b"",
        content_type=request.content_type if request else None,
    )
    wall = time.perf_counter() - start
    busy = machine_busy_seconds() - busy_before
    after = cpu_seconds(server.tree())
    used = {pid: t - before.get(pid, 0.0) for pid, t in after.items()}
    main = used.pop(server.proc.pid, 0.0)
    others = sum(used.values())
    foreign = max(0.0, busy - main - others - result.client_cpu_s)
    return Run(result, main / wall, others / wall, foreign / wall, quiet=quiet)


_was_quiet = [True]


def _wait_quiet() -> bool:
    """Wait for a quiet machine: ``quiet_wait_s`` at most, or 5 s when it was
    still busy last time (no use waiting long for work that goes on)."""
    if quiet_wait_s <= 0:
        return True
    limit = quiet_wait_s if _was_quiet[0] else min(5.0, quiet_wait_s)
    _was_quiet[0] = wait_quiet(limit) is not None
    return _was_quiet[0]


@dataclass(frozen=True)
class Startup:
    """How a server started, and its memory once idle.

    :param ready_s: from spawning its command to the first 200 answer to a
        predict (polled every 50 ms).
    :param idle_rss: VmRSS summed over its process tree (its descendants, its
        process group and session), after its first answers and a second of
        rest.
    :param processes: how many processes that tree had.
    """

    model: str
    ready_s: float | None
    idle_rss: int
    processes: int


@dataclass
class Rounds:
    """Load runs: every round's result, by server and connections."""

    runs: dict[str, dict[int, list[Run]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: The vector model's ``(call_s, item_s)``, when its counters were read.
    vector_costs: tuple[float, float] | None = None
    #: How each server started, by label.
    startup: dict[str, Startup] = field(default_factory=dict)


def load_rounds(
    tag: str,
    targets: Sequence[Target],
    scratch: Path,
    *,
    levels: Sequence[int],
    duration_s: float,
    warmup_s: float,
    rounds: int,
    threads: int | None = None,
    timeout_s: float = 2.0,
    batch_stats: bool = False,
) -> Rounds:
    """Measure ``targets`` at each of ``levels`` connections, in rounds.

    All servers run at once (idle ones cost nothing) and take turns, each
    round in a rotated order, so that a slow spell of the machine does not
    fall on one server only.

    :param threads: wrk's threads (default: 1 for one connection, else 2).
    :param batch_stats: read the vector model's counters around each run.
    """
    out = Rounds()
    with contextlib.ExitStack() as stack:
        # One after the other: each starts while the ones before sit idle.
        servers = []
        for target in targets:
            server = stack.enter_context(_serve(target, scratch))
            servers.append(server)
            _check_echo(server, target)
            time.sleep(SETTLE_S)
            tree = server.tree()
            out.startup[server.label] = Startup(
                target.model, server.ready_s, rss_bytes(tree), len(tree)
            )
        by_label = {s.label: t for s, t in zip(servers, targets, strict=True)}
        for server in servers:
            target = by_label[server.label]
            out.runs[server.label] = {c: [] for c in levels}
            if batch_stats:
                out.vector_costs = vector_costs(server, target)
            hello = target.call(target.model, "hello")
            run_wrk(
                server.base + hello.path,
                connections=max(levels),
                duration_s=warmup_s,
                threads=threads,
                timeout_s=timeout_s,
                body=hello.body,
                content_type=hello.content_type,
            )
        for round_ in range(rounds):
            turn = round_ % len(servers)
            for server in servers[turn:] + servers[:turn]:
                print(f"[{tag}] round {round_ + 1}/{rounds}: {server.label}")
                target = by_label[server.label]
                hello = target.call(target.model, "hello")
                for connections in levels:
                    before = _vector_stats(server, target) if batch_stats else None
                    run = measure(
                        server,
                        server.base + hello.path,
                        connections=connections,
                        duration_s=duration_s,
                        threads=threads,
                        timeout_s=timeout_s,
                        request=hello,
                    )
                    if before is not None:
                        after = _vector_stats(server, target)
                        # The second stats request is a call of its own.
                        run = dataclasses.replace(
                            run,
                            batch=(after[0] - before[0] - 1, after[1] - before[1] - 1),
                        )
                    out.runs[server.label][connections].append(run)
                    r = run.load
                    batch = ""
                    if run.batch and run.batch[0] > 0:
                        batch = f"  mean batch {run.batch[1] / run.batch[0]:.1f}"
                    print(
                        f"  c={connections:<3} {r.rps:9.0f} req/s  "
                        f"p50 {_ms(r.p50_ms)}  p99 {_ms(r.p99_ms)}  "
                        f"errors {r.errors_text()}  CPU server "
                        f"{run.main_cpu:.2f}+{run.other_cpu:.2f} wrk "
                        f"{run.client_cpu:.2f} rest {run.foreign_cpu:.2f}{batch}"
                        + ("" if run.quiet else "  (machine busy before)"),
                        flush=True,
                    )
        for server in servers:
            out.problems.extend(_problems(server))
            busy = sum(
                not run.quiet
                for runs in out.runs[server.label].values()
                for run in runs
            )
            if busy:
                out.problems.append(
                    f"{server.label}: {busy} run(s) started while other work "
                    "kept the machine busy"
                )
    return out


def vector_costs(server: Server, target: Target) -> tuple[float, float]:
    """The vector model's cost per call and per item, in seconds."""
    stats = _vector_answer(server, target)
    return float(stats["call_s"]), float(stats["item_s"])


def _vector_stats(server: Server, target: Target) -> tuple[int, int]:
    """The vector model's ``(calls, items)`` so far (one worker process)."""
    stats = _vector_answer(server, target)
    return int(stats["calls"]), int(stats["items"])


def _vector_answer(server: Server, target: Target) -> dict[str, float]:
    status, body = server.send(target.call("vector", VECTOR_STATS), timeout=30)
    if status != 200:
        raise RuntimeError(f"{server.label}: stats answered {status} {body[:200]!r}")
    stats = target.read(body)
    if not isinstance(stats, dict):
        raise RuntimeError(f"{server.label}: stats answered {body[:200]!r}")
    return stats


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
    problems: list[str] | None = None,
) -> list[Upload]:
    """:param problems: gets the signs of trouble seen in the servers."""
    payload = make_file(scratch / "upload.bin", size_mib)
    results: list[Upload] = []
    try:
        for target in targets:
            print(f"[upload] {target.label}: {size_mib} MiB", flush=True)
            with _serve(target, scratch) as server:
                if not _wait_quiet():
                    print("  (machine busy before the upload)", flush=True)
                results.append(_upload_once(server, payload, timeout_s))
                r = results[-1]
                print(
                    f"  HTTP {r.status} in {r.wall_s:.2f} s, peak RSS growth "
                    f"{r.growth / MIB:.0f} MiB, {len(r.leftovers)} file(s) left",
                    flush=True,
                )
                if problems is not None:
                    problems.extend(f"upload, {p}" for p in _problems(server))
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
    :param hog_cpu: CPU use of the busiest process of the server's tree
        while the training ran (probe and load), in CPUs.
    :param hog_where: ``main`` when that process is the server's own, else
        ``child``.
    """

    label: str
    idle: Run
    train_status: str
    probe_timeout_s: float
    first_answer_s: float | None = None
    busy: Run | None = None
    hog_cpu: float | None = None
    hog_where: str = ""


def training(
    targets: Sequence[Target],
    scratch: Path,
    *,
    idle_s: float,
    probe_s: float,
    busy_s: float,
    train_s: float,
    problems: list[str] | None = None,
) -> list[Training]:
    """:param problems: gets the signs of trouble seen in the servers."""
    results: list[Training] = []
    for target in targets:
        print(f"[training] {target.label}", flush=True)
        with _serve(target, scratch) as server:
            results.append(_train_once(server, idle_s, probe_s, busy_s, train_s))
            r = results[-1]
            first = (
                "timed out" if r.first_answer_s is None else f"{r.first_answer_s:.3f} s"
            )
            busy = r.busy.load if r.busy else None
            print(
                f"  idle p50 {_ms(r.idle.load.p50_ms)}; training ({r.train_status}): "
                f"first answer {first}, "
                f"p50 {_ms(busy.p50_ms if busy else None)}, "
                f"{busy.requests if busy else 0} answers; busiest process "
                f"({r.hog_where}) {r.hog_cpu or 0:.2f} CPU",
                flush=True,
            )
            if problems is not None:
                problems.extend(f"training, {p}" for p in _problems(server))
                if not r.idle.quiet:
                    problems.append(
                        f"training, {server.label}: the idle run started while "
                        "other work kept the machine busy"
                    )
    return results


def _train_once(
    server: Server, idle_s: float, probe_s: float, busy_s: float, train_s: float
) -> Training:
    url = server.base + PREDICT + "?text=hello"
    run_wrk(url, connections=1, duration_s=1)
    idle = measure(server, url, connections=1, duration_s=idle_s)
    status, body = server.request("POST", f"{TRAIN}?seconds={train_s:g}")
    if status != 200:
        return Training(server.label, idle, f"HTTP {status}", probe_s)
    train_status = str(json.loads(body).get("status", "?"))
    # Let the training's worker start and take its CPU.
    time.sleep(1.0)
    before = cpu_seconds(server.tree())
    start = time.perf_counter()
    first: float | None = None
    try:
        server.request("POST", PREDICT + "?text=probe", timeout=probe_s)
        first = time.perf_counter() - start
    except TimeoutError:
        pass
    # The training keeps a CPU busy: no waiting for a quiet machine here.
    busy = measure(
        server, url, connections=1, duration_s=busy_s, timeout_s=2, wait=False
    )
    wall = time.perf_counter() - start
    used = {
        pid: t - before.get(pid, 0.0) for pid, t in cpu_seconds(server.tree()).items()
    }
    hog = max(used, key=lambda pid: used[pid])
    return Training(
        server.label,
        idle,
        train_status,
        probe_s,
        first,
        busy,
        hog_cpu=used[hog] / wall,
        hog_where="main" if hog == server.proc.pid else "child",
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"
