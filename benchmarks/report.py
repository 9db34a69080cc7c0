"""Markdown tables of the results, and their section in RESULTS.md."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from load import LoadResult
from scenarios import MIB, Overhead, Training, Upload

OURS = "deepserve"
BASELINE = "DEEPaaS 2.6.0"
CEILING = "bare aiohttp"


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


def summarise(runs: Sequence[LoadResult]) -> Summary:
    def med(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    rps = [r.rps for r in runs]
    return Summary(
        rounds=len(runs),
        rps=statistics.median(rps),
        rps_min=min(rps),
        rps_max=max(rps),
        p50_ms=med([r.p50_ms for r in runs]),
        p99_ms=med([r.p99_ms for r in runs]),
        requests=sum(r.requests for r in runs),
        errors=sum(r.error_count for r in runs),
    )


def overhead_tables(result: Overhead, levels: Sequence[int]) -> str:
    summaries = {
        label: {c: summarise(by_level[c]) for c in levels}
        for label, by_level in result.runs.items()
    }
    rows = []
    for label, by_level in summaries.items():
        for c in levels:
            s = by_level[c]
            rows.append(
                [
                    label,
                    str(c),
                    f"{s.rps:.0f}",
                    f"{s.rps_min:.0f}-{s.rps_max:.0f}",
                    _ms(s.p50_ms),
                    _ms(s.p99_ms),
                    str(s.requests),
                    str(s.errors),
                ]
            )
    measured = table(
        [
            "server",
            "conn.",
            "req/s",
            "req/s range",
            "p50 ms",
            "p99 ms",
            "requests",
            "errors",
        ],
        rows,
    )
    ours = summaries.get(OURS, {})
    base = summaries.get(BASELINE, {})
    ceil = summaries.get(CEILING, {})
    ratio_rows = []
    for c in levels:
        o, b, k = ours.get(c), base.get(c), ceil.get(c)
        ratio_rows.append(
            [
                str(c),
                _ratio(o.rps if o else None, b.rps if b else None),
                _ratio(o.rps if o else None, k.rps if k else None),
                _ratio(o.p50_ms if o else None, b.p50_ms if b else None),
                _ratio(o.p99_ms if o else None, b.p99_ms if b else None),
            ]
        )
    ratios = table(
        [
            "conn.",
            "req/s deepserve/DEEPaaS",
            "req/s deepserve/ceiling",
            "p50 deepserve/DEEPaaS",
            "p99 deepserve/DEEPaaS",
        ],
        ratio_rows,
    )
    return (
        f"{measured}\n\nRatios of the medians (req/s: higher is better for "
        f"deepserve; latency: lower is better):\n\n{ratios}"
    )


def upload_table(results: Sequence[Upload]) -> str:
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
    measured = table(
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
    if OURS in by and BASELINE in by:
        o, b = by[OURS], by[BASELINE]
        measured += (
            f"\n\ndeepserve/DEEPaaS: wall time {_ratio(o.wall_s, b.wall_s)}, "
            f"peak RSS growth {_ratio(o.growth, b.growth)}"
        )
    return measured


def training_table(results: Sequence[Training]) -> str:
    rows = []
    for r in results:
        busy = r.busy
        if busy is None:
            verdict = f"training not started ({r.train_status})"
        elif busy.requests == 0 and r.first_answer_s is None:
            verdict = "blocked"
        else:
            verdict = f"served, p50 {_ratio(busy.p50_ms, r.idle.p50_ms)} idle"
        if busy is not None and busy.error_count:
            verdict += f"; wrk errors: {busy.errors_text()}"
        if r.first_answer_s is None:
            first = f"none in {r.probe_timeout_s:g} s" if busy else "-"
        else:
            first = f"{r.first_answer_s * 1000:.2f}"
        rows.append(
            [
                r.label,
                _ms(r.idle.p50_ms),
                f"{r.idle.rps:.0f}",
                first,
                _ms(busy.p50_ms) if busy else "-",
                f"{busy.requests} in {busy.duration_s:.0f} s" if busy else "-",
                verdict,
            ]
        )
    return table(
        [
            "server (workers=1)",
            "idle p50 ms",
            "idle req/s",
            "training: 1st answer ms",
            "training p50 ms",
            "training answers",
            "verdict",
        ],
        rows,
    )


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
