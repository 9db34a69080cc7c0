#!/usr/bin/env python3
"""A long schemathesis run against real servers, recorded in RESULTS.md.

The suite's fuzz test (tests/test_fuzz.py) generates 25 requests per
operation of the OpenAPI document, valid and invalid, with and without
bearer-token authentication, and checks every answer against the
document (never a 5xx; status, content type, headers and body as
documented). This runs the same test with many more examples per
operation and prints what it found:

    $ python3 benchmarks/fuzz.py                 # 500 examples per operation
    $ python3 benchmarks/fuzz.py --examples 2000

Run it from the repository root with the test venv's Python
(``.venv/bin/python benchmarks/fuzz.py``): it needs the ``test`` extra.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="per operation")
    ns = parser.parse_args()
    env = dict(os.environ, DEEPSERVE_FUZZ_EXAMPLES=str(ns.examples))
    command = [
        sys.executable, "-m", "pytest", "tests/test_fuzz.py",
        "-q", "-p", "no:cacheprovider", "--timeout", "0", "-rA",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print(
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"examples per operation: {ns.examples}")
    print(f"wall time: {seconds:.0f} s")
    print(f"pytest: {summary}")
    for line in done.stdout.splitlines():
        if re.match(r"^(PASSED|FAILED|ERROR) ", line):
            print("  " + line)
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
