"""How long the ``deepserve`` commands take to answer, as a user waits for them.

Whole-process wall time of each command (interpreter start, imports, work,
exit), median and slowest of ``--runs`` runs after one warm-up, against a
bare ``python -c pass`` measured in the same run as the baseline. Targets
(issue 12, on the 2-core development machine): ``--version`` under 0.3 s,
``models list`` under 0.6 s.

Run it with the Python of a venv where deepserve is installed::

    .venv/bin/python benchmarks/startup.py [--runs 15] [--compare-with DIR]

``--compare-with DIR`` also times the deepserve source tree in ``DIR`` (a
worktree of an older commit: ``git worktree add /tmp/old REV``) with the
same venv, the commands run as ``python -c "from deepserve.cli import
main..."`` with ``PYTHONPATH=DIR``, in the same run: before and after, side
by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"deepserve --version": 0.3, "deepserve models list": 0.6}


def measure(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall times of ``runs`` runs, in an empty directory (``python -c``
    puts the working directory first on ``sys.path``: no source tree there
    may shadow the one measured)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, cwd=env["DEEPSERVE_HOME"]
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        if i:  # the first run warms the file cache
            times.append(elapsed)
    return times


class _Scale:
    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, x: float) -> float:
        return x * self.factor


def fill_store(home: Path) -> int:
    """Three stored models, so that ``models list`` has entries to read."""
    from deepserve import picklable_model
    from deepserve.store import Store

    store = Store(home / "models")
    for name in ("iris", "scaler", "scaler"):
        picklable_model.save_model(name, _Scale(2.0), store=store)
    return len(store.list())


#: The ``deepserve`` command, for a source tree put first on PYTHONPATH.
RUN_TREE = "import sys; from deepserve.cli import main; sys.exit(main())"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--compare-with", metavar="DIR", type=Path)
    args = parser.parse_args()
    exe = Path(sys.executable).parent / "deepserve"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: run with the Python of deepserve's venv")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        stored = fill_store(home)
        env = dict(os.environ, DEEPSERVE_HOME=str(home), NO_COLOR="1")
        env.pop("PYTHONPATH", None)
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "deepserve --version": [str(exe), "--version"],
            "deepserve models list": [str(exe), "models", "list"],
            "deepserve call predict --help": [
                *[str(exe), "call", "--model-name", "demo", "predict", "--help"]
            ],
            "deepserve run --help": [str(exe), "run", "--help"],
        }
        print(
            f"Start-up, {args.runs} runs each after one warm-up; "
            f"models list reads a store of {stored} models; Python "
            f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
        )
        print()
        other = {}
        if args.compare_with:
            other = {**env, "PYTHONPATH": str(args.compare_with.resolve())}
        head = "| command | median s | slowest s | x baseline | target |"
        rule = "|---|---:|---:|---:|---|"
        if other:
            head += f" {args.compare_with} median s | before / now |"
            rule += "---:|---:|"
        print(head)
        print(rule)
        baseline = None
        for label, argv in commands.items():
            times = measure(argv, env, args.runs)
            median = statistics.median(times)
            baseline = baseline or median
            target = TARGETS.get(label)
            verdict = ""
            if target is not None:
                met = "met" if median < target else "NOT met"
                verdict = f"< {target} s: {met}"
            row = (
                f"| `{label}` | {median:.3f} | {max(times):.3f} | "
                f"{median / baseline:.1f} | {verdict} |"
            )
            if other:
                if argv[0] == str(exe):
                    then = [sys.executable, "-c", RUN_TREE, *argv[1:]]
                    before = statistics.median(measure(then, other, args.runs))
                    row += f" {before:.3f} | {before / median:.2f} |"
                else:
                    row += " | |"
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
