"""``deepserve run --help``: the server's options, grouped by what they set.

oslo.config's own help is one alphabetical list of about sixty lines with
every boolean option twice (``--warm`` and ``--nowarm``). This writes the
same options in sections, a boolean once as ``--[no]warm``, each with its
help and default wrapped to the terminal's width.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Iterable
from typing import Any

from oslo_config import cfg, types

USAGE = "usage: {prog} [OPTIONS]"

DESCRIPTION = (
    "Start the HTTP server. Every option can also be set in a config file "
    "(--config-file), in [DEFAULT] by its name without the leading dashes "
    "(listen_port = 8080), the jobs options in [jobs] and the Ray options in [ray]."
)

#: Sections of the help and the options in them, in order. An option that
#: is in none is listed under "other options" (a test keeps that empty).
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("models", ("model-name", "default-version", "model-store", "model-store-url")),
    (
        "server",
        (
            "listen-ip",
            "listen-port",
            "grpc-port",
            "base-path",
            "shutdown-grace",
            "header-timeout",
            "max-connections",
            "client-max-size",
            "upload-max-size",
            "upload-dir",
        ),
    ),
    (
        "endpoints",
        (
            "predict-endpoint",
            "train-endpoint",
            "doc-endpoint",
            "metrics-endpoint",
            "debug-endpoint",
            "unknown-arguments",
        ),
    ),
    (
        "workers",
        (
            "executor",
            "workers",
            "warm",
            "predict-timeout",
            "max-queue",
            "batching",
            "max-batch-size",
            "max-latency-ms",
        ),
    ),
    (
        "security",
        (
            "auth-token",
            "auth-token-file",
            "auth-predict",
            "auth-metrics",
            "cors-origin",
        ),
    ),
    (
        "training jobs",
        (
            "jobs-database",
            "jobs-max-log-size",
            "jobs-heartbeat-interval",
            "jobs-heartbeat-timeout",
            "jobs-retention-days",
            "jobs-recovery-file",
        ),
    ),
    (
        "Ray cluster (executor = ray)",
        (
            "ray-address",
            "ray-attach",
            "ray-app-name",
            "ray-replicas",
            "ray-min-replicas",
            "ray-max-replicas",
            "ray-target-ongoing-requests",
            "ray-upscale-delay",
            "ray-downscale-delay",
            "ray-max-ongoing-requests",
            "ray-num-cpus",
            "ray-num-gpus",
            "ray-train-num-cpus",
            "ray-train-num-gpus",
            "ray-start-timeout",
        ),
    ),
    ("logging", ("access-log", "log-format", "debug")),
)

#: Options oslo.config adds itself, with the help we give them.
BUILTINS = (
    (
        "--config-file PATH",
        "A config file to read (repeat for several; later ones win). Default: "
        "deepserve.conf in ~/.deepserve/, ~/, /etc/deepserve/ or /etc/ if found.",
    ),
    (
        "--config-dir DIR",
        "A directory whose *.conf files are read after the config files, in "
        "name order.",
    ),
    ("--version", "Print deepserve's version and exit."),
    ("-h, --help", "Print this help and exit."),
)

_INDENT = 2
_COLUMN = 30
#: Joins words that must stay on one line, such as "(default: 5000)".
_KEEP = "\u00a0"


def render(conf: Any, prog: str) -> str:
    """The help text for the options registered in ``conf``."""
    width = max(20, min(100, shutil.get_terminal_size((80, 24)).columns))
    opts = {cli_name(opt, group): opt for opt, group in conf._all_cli_opts()}
    lines = [USAGE.format(prog=prog), ""]
    lines += textwrap.wrap(DESCRIPTION, width, break_on_hyphens=False)
    placed: set[str] = set()
    for title, names in SECTIONS:
        present = [n for n in names if n in opts]
        if not present:
            continue
        placed.update(present)
        lines += ["", f"{title}:"]
        lines += _entries(
            ((_label(n, opts[n]), _help(opts[n])) for n in present), width
        )
    rest = sorted(set(opts) - placed - HIDDEN)
    if rest:
        lines += ["", "other options:"]
        lines += _entries(((_label(n, opts[n]), _help(opts[n])) for n in rest), width)
    lines += ["", "config files and help:"]
    lines += _entries(BUILTINS, width)
    return "\n".join(lines) + "\n"


#: Registered options left out of the sections: oslo.config's own shell
#: completion generator (it completes oslo's option names, not ours), and
#: the config file options, shown with :data:`BUILTINS`.
HIDDEN = frozenset({"shell_completion", "config-file", "config-dir"})


def cli_name(opt: cfg.Opt, group: Any) -> str:
    """The option's name on the command line, without dashes."""
    return opt.name if group is None else f"{group.name}-{opt.name}"


def _help(opt: cfg.Opt) -> str:
    """The option's help, what each choice means, and its default."""
    text = opt.help or ""
    choices = getattr(opt.type, "choices", None) or {}
    described = [f"{c}: {d}" for c, d in dict(choices).items() if d]
    if described:
        text += " Choices: " + "; ".join(described) + "."
    default = opt.default
    if isinstance(opt, cfg.BoolOpt) and default is not None:
        shown = "on" if default else "off"
    elif isinstance(default, list):
        shown = ",".join(map(str, default))
    elif isinstance(default, float):
        shown = f"{default:g}"  # 30, 0.5: as one would type them
    else:
        shown = "" if default is None else str(default)
    if shown:
        text += f" (default:{_KEEP}{shown})"
    return text


def _label(name: str, opt: cfg.Opt) -> str:
    shorts = f"-{opt.short}, " if opt.short else ""
    if isinstance(opt, cfg.BoolOpt):
        return f"{shorts}--[no]{name}"
    return f"{shorts}--{name} {metavar(name, opt)}"


def metavar(name: str, opt: cfg.Opt) -> str:
    """A placeholder for the option's value that says what it is."""
    kind = opt.type
    choices = getattr(kind, "choices", None)
    if choices:
        return "{" + ",".join(str(c) for c in choices) + "}"
    if isinstance(kind, types.Port):
        return "PORT"
    if isinstance(kind, types.Integer | types.Float):
        return "SECONDS" if _seconds(opt.help or "") else "N"
    return name.rsplit("-", 1)[-1].upper()


def _seconds(help_text: str) -> bool:
    return help_text.startswith("Seconds") or "in seconds" in help_text


def _entries(items: Iterable[tuple[str, str | None]], width: int) -> list[str]:
    lines: list[str] = []
    # Help beside the labels needs room; on a narrow terminal it goes on the
    # lines below each label, indented a little.
    indent = " " * (_COLUMN if width >= _COLUMN + 40 else _INDENT + 4)
    for label, text in items:
        head = " " * _INDENT + label
        body = re.sub(r"[ \t\r\n]+", " ", text or "").strip()
        wrapped = [
            line.replace(_KEEP, " ")
            for line in textwrap.wrap(
                body,
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
        ]
        if len(head) + 2 <= len(indent):
            first = wrapped[0][len(head) :] if wrapped else ""
            lines.append(head + first)
            lines += wrapped[1:]
        else:
            lines.append(head)
            lines += wrapped
    return lines
