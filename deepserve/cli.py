"""The ``deepserve`` command: finds the subcommand and hands it the rest.

Each subcommand's module is imported only when that command runs, so
``deepserve --version`` and ``deepserve models list`` do not pay for the
server's imports (aiohttp, SQLAlchemy, oslo.config).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import deepserve
from deepserve import console

USAGE = """\
usage: deepserve [--version] [--help] COMMAND [ARGS]

Serve machine-learning models behind a documented HTTP API.

commands:
  run      start the HTTP server (deepserve run --help lists its options)
  models   manage the model store: list, get, delete, export, import, push, pull
  call     run a model's get_metadata, warm, predict or train without a server
  ray      deploy or delete the models' Ray Serve applications (executor = ray)
"""

#: Each command and the ``module:function`` that runs it with the rest of
#: the command line, returning the exit status.
COMMANDS = {
    "run": "deepserve.cli_run:main",
    "models": "deepserve.cli_models:main",
    "call": "deepserve.shell:main",
    "ray": "deepserve.cli_ray:main",
}

_OPTIONS = ("--version", "--help", "-h")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(USAGE, end="", file=sys.stderr)
        return console.USAGE
    first = args[0]
    if first in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if first == "--version":
        print(f"deepserve {deepserve.__version__}")
        return 0
    target = COMMANDS.get(first)
    if target is None:
        kind, choices = (
            ("option", _OPTIONS) if first.startswith("-") else ("command", COMMANDS)
        )
        hint = console.did_you_mean(first, choices) or (
            f"commands: {', '.join(COMMANDS)}; try 'deepserve --help'"
        )
        return console.error(
            "deepserve", f"unknown {kind} '{first}'", hint=hint, status=console.USAGE
        )
    if args[1:2] == ["--version"]:  # deepserve models --version, and so on
        print(f"deepserve {deepserve.__version__}")
        return 0
    module, _, function = target.partition(":")
    try:
        command = getattr(importlib.import_module(module), function)
        status: int = command(args[1:])
    except KeyboardInterrupt:
        # Ctrl-C before a command set up its own handling (a server still
        # importing its models, say): no traceback.
        return console.error(
            f"deepserve {first}", "interrupted", status=console.INTERRUPTED
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
