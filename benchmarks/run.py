"""deepserve's benchmarks: ``python benchmarks/run.py [--quick] [--write]``.

Builds (or reuses) the venvs under ``benchmarks/.venvs/``, runs the
scenarios against deepserve, DEEPaaS 2.6.0 and a bare aiohttp app on
127.0.0.1, prints Markdown tables and, with ``--write``, records them in
``benchmarks/RESULTS.md``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import signal
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

SCENARIOS = ("overhead", "upload", "training")
LEVELS = (1, 16, 64)


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
        "--rebuild-venvs",
        action="store_true",
        help="Recreate benchmarks/.venvs/ from scratch.",
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


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    plan = QUICK if args.quick else FULL
    chosen = args.only or list(SCENARIOS)
    started = time.monotonic()

    print("== venvs", flush=True)
    ds_venv = envs.deepserve_venv(rebuild=args.rebuild_venvs)
    dp_venv = envs.deepaas_venv(rebuild=args.rebuild_venvs)
    deepserve = scenarios.deepserve_target(ds_venv, workers=1)
    deepaas = scenarios.deepaas_target(dp_venv, workers=1)
    ceiling = scenarios.ceiling_target(ds_venv)

    host = machine.describe()
    today = datetime.date.today().isoformat()
    command = "python benchmarks/run.py" + "".join(f" {shlex.quote(a)}" for a in argv)
    header = [
        f"- date: {today}",
        *(f"- {line}" for line in host.lines()),
        f"- deepserve {ds_venv.version_of('deepserve')} "
        f"(working tree at commit {machine.git_commit(envs.REPO)}), "
        f"aiohttp {ds_venv.version_of('aiohttp')}",
        f"- DEEPaaS {dp_venv.version_of('deepaas')}, "
        f"aiohttp {dp_venv.version_of('aiohttp')}, "
        f"webargs {dp_venv.version_of('webargs')}",
        f"- load generator: {wrk_version()}, on the same machine",
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
    problems: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="deepserve-bench-"))
    try:
        if "overhead" in chosen:
            print("== overhead: echo predict, POST ?text=hello", flush=True)
            over = scenarios.overhead(
                [deepserve, ceiling, deepaas],
                scratch,
                levels=LEVELS,
                duration_s=plan.duration_s,
                warmup_s=plan.warmup_s,
                rounds=plan.rounds,
            )
            problems += over.problems
            sections.append(
                f"### Overhead: echo predict, median of {plan.rounds} round(s) of "
                f"{plan.duration_s:g} s per level\n\n"
                + report.overhead_tables(over, LEVELS)
            )
        if "upload" in chosen:
            print("== upload", flush=True)
            ups = scenarios.upload(
                [deepserve, deepaas],
                scratch,
                size_mib=plan.upload_mib,
                timeout_s=plan.upload_timeout_s,
            )
            sections.append(
                f"### Upload: one {plan.upload_mib} MiB multipart file\n\n"
                + report.upload_table(ups)
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
            )
            sections.append(
                f"### Training: predict at concurrency 1, idle ({plan.idle_s:g} s) "
                f"and while a {plan.train_s:g} s busy training runs (one probe "
                f"request, at most {plan.probe_s:g} s, then {plan.busy_s:g} s of "
                f"load)\n\n" + report.training_table(trains)
            )
    finally:
        if args.keep_scratch:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    mode = "quick" if args.quick else "full"
    title = f"## {today}, {mode} run, {host.cpus} x {host.cpu_model}"
    header.append(f"- load average (1 min) before / after: {load_before} / {_load()}")
    body = "\n".join([title, "", *header]) + "\n\n" + "\n\n".join(sections)
    if problems:
        body += "\n\nProblems seen:\n\n" + "\n".join(f"- {p}" for p in problems)
    print("\n" + body + "\n")
    print(f"(took {time.monotonic() - started:.0f} s)")
    if args.write:
        key = f"{today} {mode} {'+'.join(chosen)} {host.cpus}x {host.cpu_model}"
        report.write_section(envs.HERE / "RESULTS.md", key, body)
        print("written to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
