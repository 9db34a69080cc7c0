"""doc/cli.rst shows the commands' help as the commands print it.

A block after a ``.. help-output: COMMAND`` comment must be COMMAND's output
at 80 columns. deepserve's own help texts (``deepserve --help``, ``deepserve
run --help``) must match exactly; argparse's layout changes between Python
versions, so for argparse's the options listed must match.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import subprocess_env

DOC = Path(__file__).resolve().parent.parent / "doc" / "cli.rst"
MARK = re.compile(
    r"^\.\. help-output: (?P<command>.+)\n\n\.\. code-block:: text\n\n"
    r"(?P<block>(?:(?:   .*)?\n)+)",
    re.M,
)
#: Written by deepserve itself: the same on every Python.
OWN = {"deepserve --help", "deepserve run --help"}
OPTION = re.compile(r"(?<![\w-])(--?[a-z][\w-]*)")


def documented() -> list[tuple[str, str]]:
    found = []
    for match in MARK.finditer(DOC.read_text()):
        block = textwrap.dedent(match.group("block")).strip("\n") + "\n"
        found.append((match.group("command"), block))
    return found


def test_the_help_blocks_are_found():
    commands = {c for c, _ in documented()}
    assert commands >= OWN
    assert {"deepserve models --help", "deepserve call --help"} <= commands


@pytest.mark.parametrize(("command", "block"), documented(), ids=lambda v: v[:40])
def test_documented_help_is_the_real_help(fake_site, command, block):
    argv = shlex.split(command)
    env = {**subprocess_env(fake_site), "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("FORCE_COLOR", None)
    out = subprocess.run(
        [sys.executable, "-m", "deepserve.cli", *argv[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.getcwd(),
    )
    assert out.returncode == 0, out.stderr
    real = out.stdout.replace("python -m deepserve.cli", "deepserve")
    if command in OWN:
        assert block == real, f"doc/cli.rst's copy of '{command}' is out of date"
    else:
        assert set(OPTION.findall(block)) == set(OPTION.findall(real)), command
