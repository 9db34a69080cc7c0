"""deepserve's benchmarks: ``python benchmarks/run.py [--quick] [--peers] [--write]``.

Builds (or reuses) the venvs under ``benchmarks/.venvs/``, runs the
scenarios against deepserve, DEEPaaS 2.6.0 and a bare aiohttp app on
127.0.0.1 and, with ``--peers``, MLServer, BentoML and Ray Serve too (in a
private network namespace), prints Markdown tables and the targets of
issues 3 and 13 (met or not) and, with ``--write``, records them in
``benchmarks/RESULTS.md``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import envs
import machine
import report
import scenarios
from load import wrk_version

SCENARIOS = ("overhead", "cpu", "batching", "upload", "training")
STARTUP_NOTE = (
    "First prediction: from spawning the server's command to its first 200 "
    "answer to a predict, polled every 50 ms; the servers of a scenario start "
    "one after the other, each while the ones before it sit idle. Idle RSS: "
    "VmRSS summed over the server's process tree (its descendants, process "
    "group and session; a page shared by processes counts in each), a second "
    "after its first answers. For Ray Serve that is every process of the Ray head "
    "node the benchmark started for it: the launcher (the Serve driver), ray "
    "start, the GCS, the raylet, the dashboard and its agents, the runtime-env "
    "agent, and the Serve controller, HTTP proxy and replicas."
)
#: Connections of the overhead scenario.
LEVELS = (1, 16, 64)
#: Connections of the CPU-bound scenario (1 vs 2 workers).
CPU_LEVEL = 8
#: Connections of the batching scenario; the targets are read at the last.
BATCH_LEVELS = (1, 16, 64)
MAX_BATCH_SIZE = 64
MAX_LATENCY_MS = 5.0


@dataclass(frozen=True)
class Plan:
    """How long and how big each scenario is."""

    rounds: int
    duration_s: float
    warmup_s: float
    upload_mib: int
    upload_timeout_s: float
    idle_s: float
    probe_s: float
    busy_s: float
    train_s: float


FULL = Plan(
    rounds=3,
    duration_s=5,
    warmup_s=3,
    upload_mib=500,
    upload_timeout_s=300,
    idle_s=5,
    probe_s=5,
    busy_s=10,
    train_s=30,
)
QUICK = Plan(
    rounds=1,
    duration_s=3,
    warmup_s=1,
    upload_mib=100,
    upload_timeout_s=120,
    idle_s=3,
    probe_s=3,
    busy_s=5,
    train_s=30,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark deepserve against DEEPaaS 2.6.0 and a bare aiohttp app.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="One round of 3 s load runs and a 100 MiB upload, instead of three "
        "rounds of 5 s and 500 MiB.",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="Record the tables in benchmarks/RESULTS.md (a section per date, "
        "machine and mode, replaced when run again).",
    )
    parser.add_argument(
        "--only",
        choices=SCENARIOS,
        action="append",
        help="Run only this scenario (repeatable).",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="Before each measured run, wait at most this long for the machine's "
        "CPUs to be nearly idle (default 30; 0: never wait). Runs started on a "
        "busy machine are listed under 'Problems seen'.",
    )
    parser.add_argument(
        "--rebuild-venvs",
        action="store_true",
        help="Recreate benchmarks/.venvs/ from scratch.",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="Also run MLServer, BentoML and Ray Serve (issue 13) in the overhead, "
        "cpu and batching scenarios, and time every server's start. The whole "
        "benchmark then runs in a private network namespace (re-run with unshare "
        "-n: needs root).",
    )
    parser.add_argument(
        "--keep-scratch",
        action="store_true",
        help="Keep the scratch directory (server logs) instead of removing it.",
    )
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Unwinds like Ctrl-C, so every started server is stopped on the way out.
    raise KeyboardInterrupt(f"signal {signum}")


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


#: Set for the run re-run in a network namespace: the venvs were just built.
VENVS_READY = "DEEPSERVE_BENCH_VENVS_READY"
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913


def in_private_netns() -> bool:
    """True when loopback is the only network interface here, and it is up."""
    if [name for _, name in socket.if_nameindex()] != ["lo"]:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
    flags: int = struct.unpack_from("16sH", ifreq)[1]
    return bool(flags & IFF_UP)


def rerun_in_netns(argv: list[str]) -> int:
    """Run this script again in a private network namespace with loopback only.

    Ray listens on every interface, rewrites 127.0.0.1 to the host's address
    and opens ports of its own: in a namespace of its own, all of that stays
    on loopback. Every server and wrk run in it, so all are measured alike.
    """
    if os.geteuid() != 0:
        raise SystemExit(
            "--peers runs in a private network namespace: run as root, or inside "
            "one (unshare -n sh -c 'ip link set lo up && python3 benchmarks/run.py "
            "--peers ...')"
        )
    script = shlex.join([sys.executable, str(Path(__file__).resolve()), *argv])
    print("== re-running in a private network namespace (unshare -n)", flush=True)
    return subprocess.call(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {script}"],
        env={**os.environ, VENVS_READY: "1"},
    )


@dataclass(frozen=True)
class Peer:
    """A peer of issue 13: its name, label stem and venv."""

    name: str
    venv: envs.Venv
    version: str

    def label(self, what: str = "") -> str:
        return report.peer_label(self.name, self.version, what)


def peer_targets(
    peers: list[Peer],
    scratch: Path,
    *,
    model: str,
    what: str = "",
    workers: int = 1,
) -> list[scenarios.Target]:
    """One target per peer serving ``model`` with ``workers`` workers;
    ``what`` ends its label."""
    found = []
    for peer in peers:
        label = peer.label(what)
        if peer.name == "MLServer":
            found.append(
                scenarios.mlserver_target(
                    peer.venv,
                    label,
                    scratch,
                    model=model,
                    workers=workers,
                    batching=model == "vector",
                    max_batch_size=MAX_BATCH_SIZE,
                    max_wait_ms=MAX_LATENCY_MS,
                )
            )
        elif peer.name == "BentoML":
            found.append(
                scenarios.bentoml_target(
                    peer.venv, label, scratch, model=model, workers=workers
                )
            )
        else:
            found.append(
                scenarios.ray_serve_target(
                    peer.venv, label, model=model, replicas=workers
                )
            )
    return found


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.peers and not in_private_netns():
        # The namespace reaches no package index: build the venvs here first.
        print("== venvs", flush=True)
        envs.deepserve_venv(rebuild=args.rebuild_venvs)
        envs.deepaas_venv(rebuild=args.rebuild_venvs)
        for key in envs.PEER_REQUIREMENTS:
            envs.peer_venv(key, rebuild=args.rebuild_venvs)
        return rerun_in_netns([a for a in argv if a != "--rebuild-venvs"])
    signal.signal(signal.SIGTERM, _terminate)
    plan = QUICK if args.quick else FULL
    scenarios.quiet_wait_s = args.quiet_wait
    chosen = args.only or list(SCENARIOS)
    started = time.monotonic()

    print("== venvs", flush=True)
    ready = os.environ.get(VENVS_READY) == "1"
    ds_venv = envs.deepserve_venv(rebuild=args.rebuild_venvs, reinstall=not ready)
    dp_venv = envs.deepaas_venv(rebuild=args.rebuild_venvs)
    deepserve = scenarios.deepserve_target(ds_venv, label=report.DS_PROCESS)
    threaded = scenarios.deepserve_target(
        ds_venv, label=report.DS_THREAD, executor="thread"
    )
    deepaas = scenarios.deepaas_target(dp_venv, workers=1)
    ceiling = scenarios.ceiling_target(ds_venv)
    peers: list[Peer] = []
    if args.peers:
        for name, key, dist in (
            ("MLServer", "mlserver", "mlserver"),
            ("BentoML", "bentoml", "bentoml"),
            ("Ray Serve", "ray-serve", "ray"),
        ):
            venv = envs.peer_venv(key, rebuild=args.rebuild_venvs)
            peers.append(Peer(name, venv, venv.version_of(dist)))

    host = machine.describe()
    today = datetime.date.today().isoformat()
    command = "python benchmarks/run.py" + "".join(f" {shlex.quote(a)}" for a in argv)
    header = [
        f"- date: {today}",
        *(f"- {line}" for line in host.lines()),
        f"- deepserve {ds_venv.version_of('deepserve')} "
        f"(working tree at commit {machine.git_commit(envs.REPO)}, "
        f"{machine.git_dirty(envs.REPO)}), "
        f"aiohttp {ds_venv.version_of('aiohttp')}",
        f"- DEEPaaS {dp_venv.version_of('deepaas')}, "
        f"aiohttp {dp_venv.version_of('aiohttp')}, "
        f"webargs {dp_venv.version_of('webargs')}",
        *(
            f"- {peer.name} {peer.version}, in a venv of its own (benchmarks/.venvs/)"
            for peer in peers
        ),
        f"- load generator: {wrk_version()}, on the same machine"
        + (", all in a private network namespace (loopback only)" if peers else ""),
        f"- command: `{command}`",
    ]
    load_before = _load()
    if float(load_before) > 0.5:
        print(
            f"warning: load average {load_before} before the run: other work on "
            "this machine will skew the figures",
            flush=True,
        )
    sections: list[str] = []
    checks: list[report.Check] = []
    problems: list[str] = []
    startups: list[tuple[str, dict[str, scenarios.Startup]]] = []
    scratch = Path(tempfile.mkdtemp(prefix="deepserve-bench-"))
    rounds = (
        f"median of {plan.rounds} round(s) of {plan.duration_s:g} s per level"
        if plan.rounds > 1
        else f"one round of {plan.duration_s:g} s per level"
    )
    try:
        if "overhead" in chosen:
            print("== overhead: echo predict, POST ?text=hello", flush=True)
            over = scenarios.load_rounds(
                "overhead",
                [
                    deepserve,
                    threaded,
                    ceiling,
                    deepaas,
                    *peer_targets(peers, scratch, model="echo"),
                ],
                scratch,
                levels=LEVELS,
                duration_s=plan.duration_s,
                warmup_s=plan.warmup_s,
                rounds=plan.rounds,
            )
            problems += [f"overhead, {p}" for p in over.problems]
            startups.append(("overhead", over.startup))
            text, found = report.overhead_section(
                over, LEVELS, [p.label() for p in peers]
            )
            checks += found
            sections.append(
                f"### Overhead: echo predict, {rounds}, wrk with 1 thread at "
                f"1 connection, else 2\n\n{text}"
            )
        if "cpu" in chosen:
            print("== cpu: 20 ms of pure Python per predict", flush=True)
            cpu = scenarios.load_rounds(
                "cpu",
                [
                    scenarios.deepserve_target(
                        ds_venv, label=report.CPU_1, model="cpu", workers=1
                    ),
                    scenarios.deepserve_target(
                        ds_venv, label=report.CPU_2, model="cpu", workers=2
                    ),
                    *peer_targets(peers, scratch, model="cpu", what="1 worker"),
                    *peer_targets(
                        peers, scratch, model="cpu", what="2 workers", workers=2
                    ),
                ],
                scratch,
                levels=(CPU_LEVEL,),
                duration_s=plan.duration_s,
                warmup_s=plan.warmup_s,
                rounds=plan.rounds,
                threads=1,
                timeout_s=5,
            )
            problems += [f"cpu, {p}" for p in cpu.problems]
            startups.append(("cpu", cpu.startup))
            text, found = report.cpu_section(
                cpu,
                CPU_LEVEL,
                [(p.label(), p.label("1 worker"), p.label("2 workers")) for p in peers],
            )
            checks += found
            sections.append(
                "### CPU-bound: the cpu model (about 20 ms of pure Python per "
                f"predict), process executor, {rounds}, wrk -t1\n\n{text}"
            )
        if "batching" in chosen:
            print("== batching: vector model, fixed cost per call", flush=True)
            batch = scenarios.load_rounds(
                "batching",
                [
                    scenarios.deepserve_target(
                        ds_venv,
                        label=report.BATCH_OFF,
                        model="vector",
                        extra=["--nobatching"],
                    ),
                    scenarios.deepserve_target(
                        ds_venv,
                        label=report.BATCH_ON,
                        model="vector",
                        extra=[
                            "--batching",
                            "--max-batch-size",
                            str(MAX_BATCH_SIZE),
                            "--max-latency-ms",
                            f"{MAX_LATENCY_MS:g}",
                        ],
                    ),
                    *peer_targets(peers, scratch, model="vector", what="batching"),
                ],
                scratch,
                levels=BATCH_LEVELS,
                duration_s=plan.duration_s,
                warmup_s=plan.warmup_s,
                rounds=plan.rounds,
                threads=1,
                timeout_s=5,
                batch_stats=True,
            )
            problems += [f"batching, {p}" for p in batch.problems]
            startups.append(("batching", batch.startup))
            text, found = report.batching_section(
                batch,
                max(BATCH_LEVELS),
                max_batch_size=MAX_BATCH_SIZE,
                max_latency_ms=MAX_LATENCY_MS,
                peers=[p.label("batching") for p in peers],
            )
            checks += found
            sections.append(
                "### Batching: the vector model (fixed cost per call), process "
                f"executor, 1 worker, --max-batch-size {MAX_BATCH_SIZE} "
                f"--max-latency-ms {MAX_LATENCY_MS:g} vs --nobatching, {rounds}, "
                f"wrk -t1\n\n{text}"
            )
        if "upload" in chosen:
            print("== upload", flush=True)
            ups = scenarios.upload(
                [deepserve, deepaas],
                scratch,
                size_mib=plan.upload_mib,
                timeout_s=plan.upload_timeout_s,
                problems=problems,
            )
            text, found = report.upload_section(ups)
            checks += found
            sections.append(
                f"### Upload: one {plan.upload_mib} MiB multipart file\n\n{text}"
            )
        if "training" in chosen:
            print("== training", flush=True)
            trains = scenarios.training(
                [deepserve, deepaas],
                scratch,
                idle_s=plan.idle_s,
                probe_s=plan.probe_s,
                busy_s=plan.busy_s,
                train_s=plan.train_s,
                problems=problems,
            )
            text, found = report.training_section(trains)
            checks += found
            sections.append(
                f"### Training: predict at concurrency 1, idle ({plan.idle_s:g} s) "
                f"and while a {plan.train_s:g} s busy training runs (one probe "
                f"request, at most {plan.probe_s:g} s, then {plan.busy_s:g} s of "
                f"load)\n\n{text}"
            )
    finally:
        if args.keep_scratch:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    mode = "quick" if args.quick else "full"
    title = f"## {today}, {mode} run, {host.cpus} x {host.cpu_model}"
    header.append(f"- load average (1 min) before / after: {load_before} / {_load()}")
    targets = "### Targets (issues 3 and 13)\n\n" + report.targets_table(checks)
    if peers and startups:
        sections.append(
            "### Start-up and idle memory\n\n"
            + report.startup_section(startups)
            + "\n\n"
            + STARTUP_NOTE
        )
    body = "\n\n".join(["\n".join([title, "", *header]), targets, *sections])
    body += "\n\nProblems seen (wrk errors are in the tables): " + (
        "\n\n" + "\n".join(f"- {p}" for p in problems) if problems else "none."
    )
    print("\n" + body + "\n")
    print(f"(took {time.monotonic() - started:.0f} s)")
    if args.write:
        key = f"{today} {mode} {'+'.join(chosen)} {host.cpus}x {host.cpu_model}"
        report.write_section(envs.HERE / "RESULTS.md", key, body)
        print("written to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
