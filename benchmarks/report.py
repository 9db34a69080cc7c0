"""Markdown tables of the results, the targets, and RESULTS.md's sections."""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scenarios import MIB, Rounds, Run, Startup, Training, Upload

#: Server labels: what run.py starts, what the ratios and targets compare.
DS_PROCESS = "deepserve (process)"
DS_THREAD = "deepserve (thread)"
BASELINE = "DEEPaaS 2.6.0"
CEILING = "bare aiohttp"
CPU_1 = "deepserve, 1 worker"
CPU_2 = "deepserve, 2 workers"
BATCH_OFF = "deepserve, batching off"
BATCH_ON = "deepserve, batching on"
#: The peers of issue 13 (run.py adds each one's version to its label).
PEER_NAMES = ("MLServer", "BentoML", "Ray Serve")


def peer_label(name: str, version: str, what: str = "") -> str:
    """A peer's label: ``MLServer 1.7.1``, ``MLServer 1.7.1, 2 workers``."""
    return f"{name} {version}" + (f", {what}" if what else "")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; numbers right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            + " |"
        )

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(num: float | None, den: float | None) -> str:
    if not num or not den:
        return "-"
    return f"{num / den:.2f}x"


def _div(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def _rps(s: Summary | None) -> float | None:
    return s.rps if s else None


def _p50(s: Summary | None) -> float | None:
    return s.p50_ms if s else None


def _p99(s: Summary | None) -> float | None:
    return s.p99_ms if s else None


@dataclass(frozen=True)
class Check:
    """One target of an issue and what this run measured for it.

    :param met: None when it could not be measured in this run.
    :param issue: the issue(s) that set it.
    """

    scenario: str
    target: str
    measured: str
    met: bool | None
    issue: str = "3"


def targets_table(checks: Sequence[Check]) -> str:
    rows = [
        [
            c.issue,
            c.scenario,
            c.target,
            c.measured,
            "-" if c.met is None else ("met" if c.met else "**not met**"),
        ]
        for c in checks
    ]
    return table(["issue", "scenario", "target", "measured", "verdict"], rows)


@dataclass(frozen=True)
class Summary:
    """The median of several rounds of one load level, and their spread."""

    rounds: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int
    main_cpu: float
    other_cpu: float
    client_cpu: float
    foreign_cpu: float
    batch: float | None

    def cpu_text(self) -> str:
        return f"{self.main_cpu:.2f} + {self.other_cpu:.2f}"


def summarise(runs: Sequence[Run]) -> Summary:
    def med(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    rps = [r.load.rps for r in runs]
    calls = sum(r.batch[0] for r in runs if r.batch)
    items = sum(r.batch[1] for r in runs if r.batch)
    return Summary(
        rounds=len(runs),
        rps=statistics.median(rps),
        rps_min=min(rps),
        rps_max=max(rps),
        p50_ms=med([r.load.p50_ms for r in runs]),
        p99_ms=med([r.load.p99_ms for r in runs]),
        requests=sum(r.load.requests for r in runs),
        errors=sum(r.load.error_count for r in runs),
        main_cpu=statistics.median(r.main_cpu for r in runs),
        other_cpu=statistics.median(r.other_cpu for r in runs),
        client_cpu=statistics.median(r.client_cpu for r in runs),
        foreign_cpu=statistics.median(r.foreign_cpu for r in runs),
        batch=items / calls if calls > 0 else None,
    )


def _summaries(rounds: Rounds) -> dict[str, dict[int, Summary]]:
    return {
        label: {c: summarise(runs) for c, runs in by_level.items() if runs}
        for label, by_level in rounds.runs.items()
    }


def load_table(rounds: Rounds, *, batch: bool = False) -> str:
    """Every server at every level: medians over the rounds."""
    rows = []
    for label, by_level in _summaries(rounds).items():
        for c, s in by_level.items():
            row = [
                label,
                str(c),
                f"{s.rps:.0f}",
                f"{s.rps_min:.0f}-{s.rps_max:.0f}",
                _ms(s.p50_ms),
                _ms(s.p99_ms),
                str(s.requests),
                str(s.errors),
                s.cpu_text(),
                f"{s.client_cpu:.2f}",
                f"{s.foreign_cpu:.2f}",
            ]
            if batch:
                row.append("-" if s.batch is None else f"{s.batch:.1f}")
            rows.append(row)
    header = [
        "server",
        "conn.",
        "req/s",
        "req/s range",
        "p50 ms",
        "p99 ms",
        "requests",
        "errors",
        "server CPU main + workers",
        "wrk CPU",
        "rest CPU",
    ]
    if batch:
        header.append("mean batch")
    return table(header, rows)


CPU_NOTE = (
    "CPU columns, in CPUs (1.00: one CPU busy for the whole run), medians over "
    "the rounds: the server's main process + the rest of its process tree "
    "(workers); wrk; the rest of the machine (other processes and the kernel: "
    "on a shared machine, other people's work)."
)


def _errors_note(*summaries: Summary | None) -> str:
    errors = sum(s.errors for s in summaries if s is not None)
    return f"; {errors} wrk error(s)" if errors else ""


def _best_peer(
    by: dict[str, dict[int, Summary]], peers: Sequence[str], level: int
) -> tuple[str, Summary] | None:
    """The peer with the most req/s at ``level`` connections."""
    found = [(p, by[p][level]) for p in peers if level in by.get(p, {})]
    return max(found, key=lambda f: f[1].rps) if found else None


def overhead_section(
    rounds: Rounds, levels: Sequence[int], peers: Sequence[str] = ()
) -> tuple[str, list[Check]]:
    """:param peers: the labels of the peers (issue 13) among the servers."""
    by = _summaries(rounds)
    proc, thread = by.get(DS_PROCESS, {}), by.get(DS_THREAD, {})
    base, ceil = by.get(BASELINE, {}), by.get(CEILING, {})
    ratio_rows = []
    for c in levels:
        p, t, b, k = proc.get(c), thread.get(c), base.get(c), ceil.get(c)
        ratio_rows.append(
            [
                str(c),
                _ratio(_rps(p), _rps(b)),
                _ratio(_rps(t), _rps(b)),
                _ratio(_rps(p), _rps(k)),
                _ratio(_rps(t), _rps(k)),
                _ratio(_p50(p), _p50(b)),
                _ratio(_p50(t), _p50(b)),
                _ratio(_p99(p), _p99(b)),
            ]
        )
    ratios = table(
        [
            "conn.",
            "req/s process/DEEPaaS",
            "req/s thread/DEEPaaS",
            "req/s process/ceiling",
            "req/s thread/ceiling",
            "p50 process/DEEPaaS",
            "p50 thread/DEEPaaS",
            "p99 process/DEEPaaS",
        ],
        ratio_rows,
    )
    text = (
        f"{load_table(rounds)}\n\n{CPU_NOTE}\n\n"
        "Ratios of the medians (req/s: higher is better for deepserve; "
        f"latency: lower is better):\n\n{ratios}"
    )
    top, low = max(levels), min(levels)
    p, b, t, k = proc.get(top), base.get(top), thread.get(top), ceil.get(top)
    value = _div(_rps(p), _rps(b))
    checks = [
        Check(
            "overhead",
            f"echo req/s at c={top}, deepserve process executor >= 5x DEEPaaS 2.6.0",
            _measured_ratio(value, _rps(p), _rps(b), "req/s") + _errors_note(p, b),
            None if value is None else value >= 5,
        )
    ]
    value = _div(_rps(t), _rps(k))
    measured = "-"
    if value is not None and t is not None and k is not None:
        measured = f"{value:.0%} ({t.rps:.0f} vs {k.rps:.0f} req/s)"
    checks.append(
        Check(
            "overhead",
            f"echo req/s at c={top}, deepserve thread executor >= 60% of the bare "
            "aiohttp ceiling",
            measured + _errors_note(t, k),
            None if value is None else value >= 0.6,
        )
    )
    p, b = proc.get(low), base.get(low)
    value = _div(_p50(p), _p50(b))
    measured = "-"
    if value is not None and p is not None and b is not None:
        measured = f"{value:.2f}x ({p.p50_ms:.2f} vs {b.p50_ms:.2f} ms)"
    checks.append(
        Check(
            "overhead",
            f"echo p50 at c={low}, deepserve process executor <= 1/3 of DEEPaaS 2.6.0",
            measured,
            None if value is None else value <= 1 / 3,
        )
    )
    checks[1] = dataclasses.replace(checks[1], issue="3, 13")
    if not peers:
        return text, checks
    peer_text, peer_checks = _overhead_peers(by, levels, peers)
    return f"{text}\n\n{peer_text}", checks + peer_checks


def _overhead_peers(
    by: dict[str, dict[int, Summary]], levels: Sequence[int], peers: Sequence[str]
) -> tuple[str, list[Check]]:
    """Ratios against the best peer and the ceiling, and issue 13's targets."""
    proc, thread, ceil = (
        by.get(DS_PROCESS, {}),
        by.get(DS_THREAD, {}),
        by.get(CEILING, {}),
    )
    rows = []
    for c in levels:
        best = _best_peer(by, peers, c)
        bp = best[1] if best else None
        p, t, k = proc.get(c), thread.get(c), ceil.get(c)
        rows.append(
            [
                str(c),
                f"{best[0]} ({bp.rps:.0f})" if best and bp else "-",
                _ratio(_rps(p), _rps(bp)),
                _ratio(_rps(t), _rps(bp)),
                _ratio(_rps(bp), _rps(k)),
                _ratio(_p50(p), _p50(bp)),
                _ratio(_p50(t), _p50(bp)),
                _ratio(_p99(p), _p99(bp)),
                _ratio(_p50(p), _p50(k)),
            ]
        )
    text = "Against the best peer (the most req/s at that level) and the ceiling:\n\n"
    text += table(
        [
            "conn.",
            "best peer (req/s)",
            "req/s process/best peer",
            "req/s thread/best peer",
            "req/s best peer/ceiling",
            "p50 process/best peer",
            "p50 thread/best peer",
            "p99 process/best peer",
            "p50 process/ceiling",
        ],
        rows,
    )
    top, low = max(levels), min(levels)
    checks = []
    p, t, k = proc.get(top), thread.get(top), ceil.get(top)
    value = _div(_rps(p), _rps(k))
    checks.append(
        Check(
            "overhead",
            f"echo req/s at c={top}, deepserve process executor >= 40% of the bare "
            "aiohttp ceiling",
            "-"
            if value is None or p is None or k is None
            else f"{value:.0%} ({p.rps:.0f} vs {k.rps:.0f} req/s)" + _errors_note(p, k),
            None if value is None else value >= 0.4,
            issue="13",
        )
    )
    best = _best_peer(by, peers, top)
    for name, ours in (("process", p), ("thread", t)):
        bp = best[1] if best else None
        value = _div(_rps(ours), _rps(bp))
        checks.append(
            Check(
                "overhead",
                f"echo req/s at c={top}, deepserve {name} executor >= 3x the best peer",
                _measured_ratio(value, _rps(ours), _rps(bp), "req/s")
                + (f", {best[0]}" if best and value is not None else "")
                + _errors_note(ours, bp),
                None if value is None else value >= 3,
                issue="13",
            )
        )
    p, k = proc.get(low), ceil.get(low)
    value = _div(_p50(p), _p50(k))
    checks.append(
        Check(
            "overhead",
            f"echo p50 at c={low}, deepserve process executor <= 2x the bare aiohttp "
            "ceiling's",
            "-"
            if value is None or p is None or k is None
            else f"{value:.2f}x ({p.p50_ms:.2f} vs {k.p50_ms:.2f} ms)",
            None if value is None else value <= 2,
            issue="13",
        )
    )
    return text, checks


def _measured_ratio(
    value: float | None, num: float | None, den: float | None, unit: str
) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x ({num:.0f} vs {den:.0f} {unit})"


def cpu_section(
    rounds: Rounds,
    level: int,
    peers: Sequence[tuple[str, str, str]] = (),
) -> tuple[str, list[Check]]:
    """:param peers: ``(peer, its 1-worker label, its 2-worker label)``."""
    by = _summaries(rounds)
    one, two = by.get(CPU_1, {}).get(level), by.get(CPU_2, {}).get(level)
    value = _div(_rps(two), _rps(one))
    text = (
        f"{load_table(rounds)}\n\n{CPU_NOTE}\n\n2 workers / 1 worker: req/s "
        f"{_ratio(_rps(two), _rps(one))}, p50 "
        f"{_ratio(_p50(two), _p50(one))}"
    )
    check = Check(
        "cpu",
        f"CPU-bound model at c={level}: 2 workers >= 1.8x the req/s of 1 worker",
        _measured_ratio(value, _rps(two), _rps(one), "req/s") + _errors_note(one, two),
        None if value is None else value >= 1.8,
    )
    checks = [dataclasses.replace(check, issue="3, 13")]
    if not peers:
        return text, checks
    rows = []
    for name, one_label, two_label in peers:
        p1, p2 = by.get(one_label, {}).get(level), by.get(two_label, {}).get(level)
        rows.append(
            [
                name,
                "-" if p1 is None else f"{p1.rps:.0f}",
                "-" if p2 is None else f"{p2.rps:.0f}",
                _ratio(_rps(p2), _rps(p1)),
                _ratio(_rps(two), _rps(p2)),
            ]
        )
    text += "\n\nEach peer, 1 worker against 2 (MLServer parallel_workers, BentoML "
    text += "workers, Ray Serve num_replicas):\n\n" + table(
        [
            "peer",
            "req/s, 1 worker",
            "req/s, 2 workers",
            "2 / 1",
            "deepserve 2 workers / peer's 2",
        ],
        rows,
    )
    twos = [
        (name, by[two_label][level])
        for name, _, two_label in peers
        if level in by.get(two_label, {})
    ]
    best = max(twos, key=lambda f: f[1].rps) if twos else None
    value = _div(_rps(two), _rps(best[1] if best else None))
    checks.append(
        Check(
            "cpu",
            f"CPU-bound model at c={level}, 2 workers: deepserve's req/s >= every "
            "peer's with 2 workers",
            _measured_ratio(value, _rps(two), _rps(best[1] if best else None), "req/s")
            + (f" against the best, {best[0]}" if best and value is not None else ""),
            None if value is None else value >= 1,
            issue="13",
        )
    )
    return text, checks


def batching_section(
    rounds: Rounds,
    level: int,
    *,
    max_batch_size: int,
    max_latency_ms: float,
    peers: Sequence[str] = (),
) -> tuple[str, list[Check]]:
    """:param peers: the labels of the peers (batching on) among the servers."""
    by = _summaries(rounds)
    off, on = by.get(BATCH_OFF, {}).get(level), by.get(BATCH_ON, {}).get(level)
    value = _div(_rps(on), _rps(off))
    text = f"{load_table(rounds, batch=True)}\n\n{CPU_NOTE}"
    checks = [
        Check(
            "batching",
            f"vector model at c={level}: batching on >= 8x the req/s of batching off",
            _measured_ratio(value, _rps(on), _rps(off), "req/s")
            + _errors_note(on, off),
            None if value is None else value >= 8,
        )
    ]
    if rounds.vector_costs is not None:
        call_s, item_s = rounds.vector_costs
        call_ms = (call_s + item_s * max_batch_size) * 1000
        bound = max_latency_ms + call_ms
        text += (
            f"\n\nThe vector model costs {call_s * 1000:g} ms per call plus "
            f"{item_s * 1000:g} ms per item, so a full batch of {max_batch_size} "
            f"takes {call_ms:.2f} ms; with max_latency_ms {max_latency_ms:g} the "
            f"latency bound is {bound:.2f} ms. Mean batch: items / calls of "
            "predict_batch during the runs (read from the model)."
        )
        if on and off:
            text += (
                f"\n\nBatching on / off at c={level}: req/s "
                f"{_ratio(on.rps, off.rps)}, p50 {_ratio(on.p50_ms, off.p50_ms)}, "
                f"p99 {_ratio(on.p99_ms, off.p99_ms)}"
            )
        checks.append(
            Check(
                "batching",
                f"batching on at c={level}: p99 <= max_latency_ms + one model call "
                f"({max_latency_ms:g} + {call_ms:.2f} = {bound:.2f} ms)",
                "-" if on is None or on.p99_ms is None else f"{on.p99_ms:.2f} ms",
                None if on is None or on.p99_ms is None else on.p99_ms <= bound,
                issue="3, 13",
            )
        )
    if not peers:
        return text, checks
    rows = []
    for peer in peers:
        ps = by.get(peer, {}).get(level)
        rows.append(
            [
                peer,
                "-" if ps is None else f"{ps.rps:.0f}",
                _ms(_p50(ps)),
                _ms(_p99(ps)),
                "-" if ps is None or ps.batch is None else f"{ps.batch:.1f}",
                _ratio(_rps(on), _rps(ps)),
                _ratio(_p99(on), _p99(ps)),
            ]
        )
    text += f"\n\nThe peers' own batching at c={level} against deepserve's:\n\n"
    text += table(
        [
            "peer",
            "req/s",
            "p50 ms",
            "p99 ms",
            "mean batch",
            "req/s deepserve/peer",
            "p99 deepserve/peer",
        ],
        rows,
    )
    best = _best_peer(by, peers, level)
    value = _div(_rps(on), _rps(best[1] if best else None))
    checks.append(
        Check(
            "batching",
            f"vector model at c={level}, batching on: deepserve's req/s >= every "
            "peer's with its own batching",
            _measured_ratio(value, _rps(on), _rps(best[1] if best else None), "req/s")
            + (f" against the best, {best[0]}" if best and value is not None else "")
            + _errors_note(on, best[1] if best else None),
            None if value is None else value >= 1,
            issue="13",
        )
    )
    return text, checks


def startup_section(found: Sequence[tuple[str, dict[str, Startup]]]) -> str:
    """Time to first prediction and idle memory, by scenario and server."""
    rows = [
        [
            label,
            scenario,
            s.model,
            "-" if s.ready_s is None else f"{s.ready_s:.2f}",
            f"{s.idle_rss / MIB:.0f}",
            str(s.processes),
        ]
        for scenario, startups in found
        for label, s in startups.items()
    ]
    return table(
        [
            "server",
            "scenario",
            "model",
            "first prediction s",
            "idle RSS MiB",
            "processes",
        ],
        rows,
    )


def upload_section(results: Sequence[Upload]) -> tuple[str, list[Check]]:
    rows = []
    for r in results:
        left = sum(r.leftovers.values())
        rows.append(
            [
                r.label,
                f"{r.size / MIB:.0f}",
                str(r.status),
                "yes" if r.answered_size == r.size else f"no ({r.answered_size})",
                f"{r.wall_s:.2f}",
                f"{r.size / MIB / r.wall_s:.0f}" if r.wall_s else "-",
                f"{r.growth / MIB:.0f}",
                f"{len(r.leftovers)} ({left / MIB:.0f} MiB)",
            ]
        )
    text = table(
        [
            "server",
            "MiB",
            "HTTP",
            "size ok",
            "wall s",
            "MiB/s",
            "peak RSS growth MiB",
            "temp files left",
        ],
        rows,
    )
    by = {r.label: r for r in results}
    ours = by.get(DS_PROCESS)
    if ours is not None and BASELINE in by:
        b = by[BASELINE]
        text += (
            f"\n\ndeepserve/DEEPaaS: wall time {_ratio(ours.wall_s, b.wall_s)}, "
            f"peak RSS growth {_ratio(ours.growth, b.growth)}"
        )
    if ours is None:
        return text, []
    ok = ours.status == 200 and ours.answered_size == ours.size
    size = ours.size / MIB
    measured = f"{ours.growth / MIB:.0f} MiB for {size:.0f} MiB"
    if not ok:
        measured += f" (HTTP {ours.status}, size {ours.answered_size})"
    if round(size) != 500:
        measured += " (not the target's 500 MiB: quick run)"
    check = Check(
        "upload",
        "deepserve's peak RSS growth <= 64 MiB for a 500 MiB upload",
        measured,
        ok and ours.growth <= 64 * MIB,
    )
    return text, [check]


def training_section(results: Sequence[Training]) -> tuple[str, list[Check]]:
    rows = []
    for r in results:
        busy = r.busy.load if r.busy else None
        idle = r.idle.load
        if busy is None:
            verdict = f"training not started ({r.train_status})"
        elif busy.requests == 0 and r.first_answer_s is None:
            verdict = "blocked"
        else:
            verdict = f"served, p50 {_ratio(busy.p50_ms, idle.p50_ms)} idle"
        if busy is not None and busy.error_count:
            verdict += f"; wrk errors: {busy.errors_text()}"
        if r.first_answer_s is None:
            first = f"none in {r.probe_timeout_s:g} s" if busy else "-"
        else:
            first = f"{r.first_answer_s * 1000:.2f}"
        rows.append(
            [
                r.label,
                _ms(idle.p50_ms),
                f"{idle.rps:.0f}",
                first,
                _ms(busy.p50_ms) if busy else "-",
                f"{busy.requests} in {busy.duration_s:.0f} s" if busy else "-",
                "-" if r.hog_cpu is None else f"{r.hog_cpu:.2f} ({r.hog_where})",
                f"{r.idle.foreign_cpu:.2f} / "
                + (f"{r.busy.foreign_cpu:.2f}" if r.busy else "-"),
                verdict,
            ]
        )
    text = table(
        [
            "server (workers=1)",
            "idle p50 ms",
            "idle req/s",
            "training: 1st answer ms",
            "training p50 ms",
            "training answers",
            "busiest process CPU",
            "rest CPU idle / training",
            "verdict",
        ],
        rows,
    )
    text += (
        "\n\nBusiest process CPU: the CPU use (1.00: one CPU) of the busiest "
        "process of the server's tree while the training ran (probe and load), "
        "and whether it is the server's main process or a child. Rest CPU: the "
        "rest of the machine (neither the server nor wrk) during the idle and the "
        "training load runs."
    )
    ours = next((r for r in results if r.label == DS_PROCESS), None)
    if ours is None:
        return text, []
    busy = ours.busy.load if ours.busy else None
    value = _div(busy.p50_ms if busy else None, ours.idle.load.p50_ms)
    check = Check(
        "training",
        "deepserve's predict p50 while a training runs <= 1.5x idle",
        "-"
        if value is None or busy is None
        else f"{value:.2f}x ({busy.p50_ms:.2f} vs {ours.idle.load.p50_ms:.2f} ms)"
        + (f"; {busy.error_count} wrk error(s)" if busy.error_count else ""),
        None if value is None else value <= 1.5,
    )
    return text, [check]


def write_section(path: Path, key: str, body: str) -> None:
    """Put ``body`` in RESULTS.md under ``key``: replaced if there, else appended."""
    begin = f"<!-- run.py results: {key} -->"
    end = f"<!-- end of run.py results: {key} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
