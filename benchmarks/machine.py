"""What the benchmarks ran on, read from /proc and the interpreter."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float
    os_name: str
    kernel: str
    python: str

    def lines(self) -> list[str]:
        return [
            f"CPU: {self.cpus} x {self.cpu_model}",
            f"memory: {self.memory_gib:.1f} GiB",
            f"OS: {self.os_name}, Linux {self.kernel}",
            f"Python: {self.python}",
        ]


def _field(path: str, name: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError:
        return "?"
    for line in text.splitlines():
        key, _, value = line.partition(":" if ":" in line else "=")
        if key.strip() == name:
            return value.strip().strip('"')
    return "?"


def describe() -> Machine:
    mem_kib = _field("/proc/meminfo", "MemTotal").split()[0]
    return Machine(
        cpus=os.cpu_count() or 0,
        cpu_model=_field("/proc/cpuinfo", "model name"),
        memory_gib=int(mem_kib) / (1 << 20) if mem_kib.isdigit() else 0.0,
        os_name=_field("/etc/os-release", "PRETTY_NAME"),
        kernel=platform.release(),
        python=platform.python_version(),
    )


def git_commit(repo: Path) -> str:
    """The checked-out commit (read only: no index refresh, no lock)."""
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def git_dirty(repo: Path) -> str:
    """``clean``, or which files differ from the commit or are new (read only)."""
    out = subprocess.run(
        [
            "git",
            "--no-optional-locks",
            "-C",
            str(repo),
            "status",
            "--porcelain",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return "state unknown"
    paths = [line[3:] for line in out.stdout.splitlines() if line.strip()]
    if not paths:
        return "clean"
    ours = [p for p in paths if p.startswith("benchmarks/")]
    rest = [p for p in paths if not p.startswith("benchmarks/")]
    parts = []
    if rest:
        shown = ", ".join(rest[:10]) + (
            f" and {len(rest) - 10} more" if len(rest) > 10 else ""
        )
        parts.append(f"{len(rest)} file(s) outside benchmarks/ ({shown})")
    if ours:
        parts.append(f"{len(ours)} in benchmarks/")
    return "dirty: " + ", ".join(parts) + " changed or new"
