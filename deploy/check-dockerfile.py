#!/usr/bin/env python3
"""Run deploy/Dockerfile's steps without Docker, so that a broken one fails CI.

usage: python deploy/check-dockerfile.py [--dockerfile PATH] [--context DIR]
           [--build-arg NAME=VALUE]... [--python PATH] [--keep DIR]

Each stage of the Dockerfile gets a directory standing for its file system,
and a fresh venv of this machine's Python of the image's version standing
for the ``python:X.Y*`` image it starts from (``python`` and ``pip`` on the
steps' PATH are that venv's; ``--python`` names another interpreter). Then
every instruction is carried out in order: ARG and ENV set the variables
the steps see, WORKDIR and COPY fill the stage's directory (COPY from the
build context honours .dockerignore), and each RUN runs in ``/bin/sh -c``
with the container's own directories (:data:`MAPPED`) moved into the
stage's directory, HOME at the stage's /root, TMPDIR at its /tmp, and pip's
cache in the check's directory (a pip cache mount's part). A step, ENV or
build argument naming a place outside those directories is refused (see
:func:`escapes`). A ``--mount=type=bind`` of another stage is that stage's
directory. A RUN step that cannot run here (system packages, users) is
skipped only when a ``# check-dockerfile: skip: REASON`` comment stands
right above it.

Then the image is started as ``docker run`` would: ENTRYPOINT and CMD (less
an init such as tini, whose installation was skipped) with the image's ENV
alone, on a free port (``--listen-port`` added at the end). Its HEALTHCHECK
must fail before the server listens and pass once it is ready; the server
must stop with status 0 on SIGTERM.

Exit status: 0 when every step and the run passed; 1 when one failed (the
message names the Dockerfile's line); 2 for a wrong command line.

Only the standard library: CI runs this with any Python 3.11 or newer.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROG = "check-dockerfile"
REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "deploy" / "Dockerfile"

#: The comment that lets the check skip the RUN step right below it.
SKIP = "check-dockerfile: skip:"

#: The container directories each stage gets a copy of. Every other absolute
#: path is this machine's own: a step that names one fails the check (but
#: :data:`HOST_PATHS`), and so does a step naming ``~``, ``$HOME`` or a
#: ``..`` path component, so that no step's text points outside the check's
#: directories, even when CI runs as root.
MAPPED = ("/src", "/wheels", "/opt", "/home", "/root", "/tmp")

#: This machine's paths a checked step may name.
HOST_PATHS = ("/dev/null",)

#: Programs that change the machine itself: a step running one must be
#: marked skipped, or the check would run it on this machine.
SYSTEM = re.compile(
    r"(?<![\w./-])(apt-get|apt|aptitude|dpkg|apk|yum|dnf|microdnf|zypper|"
    r"useradd|userdel|usermod|adduser|groupadd|addgroup|chown|chmod|setcap|"
    r"update-alternatives|ldconfig|sudo|su)(?![\w.-])"
)

#: What the ``python:*`` images set, and where their Python is.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_PYTHON_BIN = "/usr/local/bin"
IMAGE_CMD = ["python3"]

#: Inits an image may run as process 1 in front of its program: the check
#: runs the program directly (the init's package is a skipped system step).
INITS = {"tini": ["--"], "dumb-init": ["--"]}

#: This machine's variables the build steps see: proxies, certificates,
#: nothing of the developer's Python or pip (see :data:`PIP_SOURCES`).
PASSED = re.compile(r"^((?i:https?_proxy|no_proxy)|SSL_CERT_\w+|LANG)$")

#: The settings of this machine's pip (its configuration files and PIP_*
#: variables) that the steps' pip gets, as PIP_* variables: where packages
#: come from, nothing else. Every other pip setting is dropped
#: (``PIP_CONFIG_FILE=/dev/null``): none may send a step's files elsewhere.
PIP_SOURCES = (
    "index-url",
    "extra-index-url",
    "find-links",
    "no-index",
    "constraint",
    "cert",
    "client-cert",
    "trusted-host",
    "proxy",
    "timeout",
    "default-timeout",
    "retries",
)

#: What a step's text may not name: the home directory (this machine's,
#: whatever HOME says) and a parent directory.
_TILDE = re.compile(r"(?:^|(?<=[\s=:\"'(]))~")
_HOME_VAR = re.compile(r"\$\{?HOME\b")
_PARENT = re.compile(r"(?:^|(?<=[\s=:/\"'(]))\.\.(?=$|[/\s\"';&|)])")

_PATH_CHAR = r"[^\s\"';:&|<>()`,\]]"
#: An absolute path in a step's text: not inside a URL, a variable or a word.
_ABSOLUTE = re.compile(rf"(?<![\w.:/$}}~-])/{_PATH_CHAR}*")
_MAPPED_RE = re.compile(
    r"(?<![\w.:/$}~-])(" + "|".join(re.escape(p) for p in MAPPED) + r")(?![\w.-])"
)
_VARIABLE = re.compile(r"\\\$|\$\{(\w+)(?::([-+])([^}]*))?\}|\$(\w+)")


class CheckError(Exception):
    """A step or the run failed; the message names the Dockerfile's line."""


def mapped(path: str) -> bool:
    """Whether a container path is in one of the :data:`MAPPED` directories."""
    return any(path == m or path.startswith(m + "/") for m in MAPPED)


def escapes(text: str) -> str | None:
    """What in ``text`` (a step, a build argument's value) names a place
    outside the stage's directories, or None."""
    if _TILDE.search(text):
        return "~ (a home directory)"
    home = _HOME_VAR.search(text)
    if home:
        return f"{home.group(0)} (the home directory)"
    if _PARENT.search(text):
        return ".. (a parent directory)"
    for path in _ABSOLUTE.findall(text):
        if not mapped(path) and path not in HOST_PATHS:
            return str(path)
    return None


def pip_sources(python: str = sys.executable) -> dict[str, str]:
    """This machine's :data:`PIP_SOURCES` settings as PIP_* variables, from
    ``pip config list`` (files, then variables) or, without pip, PIP_*."""
    found: dict[str, str] = {}
    try:
        done = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            # Its files only (PIP_LOG and the like would act on this run).
            env={
                **{
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith("PIP_") or k == "PIP_CONFIG_FILE"
                },
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            },
        )
        lines = done.stdout.splitlines() if done.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    for line in lines:
        name, sep, value = line.partition("=")
        key = name.rsplit(".", 1)[-1]
        if sep and key in PIP_SOURCES:
            try:
                found[key] = str(ast.literal_eval(value))
            except (ValueError, SyntaxError):
                found[key] = value
    for key in PIP_SOURCES:
        var = "PIP_" + key.upper().replace("-", "_")
        if var in os.environ:
            found[key] = os.environ[var]
    return {"PIP_" + k.upper().replace("-", "_"): v for k, v in found.items()}


# --- parsing ------------------------------------------------------------------


@dataclass
class Instruction:
    line: int
    keyword: str
    text: str
    #: The reason of a ``check-dockerfile: skip:`` comment right above.
    skip: str | None = None


def parse(text: str, name: str = "Dockerfile") -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined and
    comments dropped.

    :raises CheckError: for a skip comment above anything but RUN.
    """
    found: list[Instruction] = []
    pending: str | None = None
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not parts:
            if not stripped:
                continue
            if stripped.startswith("#"):
                comment = stripped[1:].strip()
                if comment.startswith(SKIP):
                    pending = comment[len(SKIP) :].strip() or "(no reason given)"
                continue
            start = number
        elif stripped.startswith("#") or not stripped:
            continue  # comments and blank lines inside a continued line
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined = " ".join(p for p in parts if p)
        parts = []
        keyword, _, rest = joined.partition(" ")
        keyword = keyword.upper()
        if pending is not None and keyword != "RUN":
            raise CheckError(
                f"{name}:{start}: a '{SKIP}' comment must stand above a RUN, "
                f"not {keyword}"
            )
        found.append(Instruction(start, keyword, rest.strip(), pending))
        pending = None
    if parts:
        raise CheckError(f"{name}:{start}: the last instruction ends with '\\'")
    return found


def expand(text: str, values: dict[str, str]) -> str:
    """``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alt}`` as the
    Dockerfile frontend substitutes them (``\\$`` stays a dollar)."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "\\$":
            return "$"
        name = match.group(1) or match.group(4)
        value = values.get(name, "")
        if match.group(2) == "-":
            return value or match.group(3) or ""
        if match.group(2) == "+":
            return (match.group(3) or "") if value else ""
        return value

    return _VARIABLE.sub(sub, text)


def json_or_shell(text: str) -> list[str]:
    """An exec-form (JSON array) or shell-form command, as argv."""
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", text]


def flags(text: str) -> tuple[dict[str, list[str]], str]:
    """Leading ``--name=value`` flags of an instruction, and the rest."""
    found: dict[str, list[str]] = {}
    rest = text
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        found.setdefault(name, []).append(value)
        rest = rest.lstrip()
    return found, rest


def words(text: str) -> list[str]:
    """COPY and friends: a JSON array, or words split as a shell would."""
    if text.startswith("["):
        form = json_or_shell(text)
        if form[:2] != ["/bin/sh", "-c"]:
            return form
    return shlex.split(text)


# --- .dockerignore --------------------------------------------------------------


@dataclass
class Pattern:
    regex: re.Pattern[str]
    exception: bool


def ignore_patterns(text: str) -> list[Pattern]:
    """A .dockerignore's patterns (Go's filepath.Match, ``**`` for any
    number of directories, ``!`` for exceptions)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
        line = os.path.normpath(line.lstrip("/")).replace(os.sep, "/")
        if line.startswith("./"):
            line = line[2:]
        patterns.append(Pattern(re.compile(_glob_regex(line)), exception))
    return patterns


def _glob_regex(pattern: str) -> str:
    parts = pattern.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:.*/)?")
            continue
        out.append(_segment_regex(part) + ("" if last else "/"))
    return "".join(out) + r"\Z"


def _segment_regex(segment: str) -> str:
    out = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = segment[i + 1 : end]
                if body.startswith("^"):
                    body = "!" + body[1:]
                body = body.replace("\\", "\\\\")
                out.append(
                    "[^" + body[1:] + "]" if body.startswith("!") else f"[{body}]"
                )
                i = end
        elif c == "\\" and i + 1 < len(segment):
            i += 1
            out.append(re.escape(segment[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def ignored(path: str, patterns: list[Pattern]) -> bool:
    """Whether ``path`` (relative, ``/``-separated) is left out: the last
    pattern matching it or one of its parent directories decides."""
    prefixes = []
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefixes.append("/".join(parts[:i]))
    result = False
    for pattern in patterns:
        if any(pattern.regex.match(p) for p in prefixes):
            result = not pattern.exception
    return result


def copy_context(context: Path, patterns: list[Pattern], dest: Path) -> int:
    """Copy what the build context sends: all but the ignored files. The
    number of files copied."""
    count = 0
    exceptions = any(p.exception for p in patterns)
    for top, dirs, files in os.walk(context):
        rel_top = Path(top).relative_to(context).as_posix()
        rel_top = "" if rel_top == "." else rel_top + "/"
        if not exceptions:  # an ignored directory cannot hold an exception
            dirs[:] = [d for d in dirs if not ignored(rel_top + d, patterns)]
        for name in files:
            rel = rel_top + name
            if ignored(rel, patterns):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(top) / name, target, follow_symlinks=False)
            count += 1
        for name in dirs:
            full = Path(top) / name
            if full.is_symlink():
                rel = rel_top + name
                if not ignored(rel, patterns):
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    (dest / rel).symlink_to(os.readlink(full))
                    count += 1
    return count


def dockerignore_for(dockerfile: Path, context: Path) -> Path | None:
    """BuildKit's choice: ``<Dockerfile>.dockerignore`` next to the
    Dockerfile, else the context's ``.dockerignore``."""
    for candidate in (
        dockerfile.with_name(dockerfile.name + ".dockerignore"),
        context / ".dockerignore",
    ):
        if candidate.is_file():
            return candidate
    return None


# --- stages -------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    number: int
    root: Path
    #: A fresh venv standing for the ``python:*`` image's interpreter.
    python: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    cmd_inherited: bool = True
    healthcheck: list[str] | None = None
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    expose: list[str] = field(default_factory=list)

    def host(self, text: str) -> str:
        """``text`` with the container's own directories moved into the
        stage's directory."""
        return _MAPPED_RE.sub(lambda m: str(self.root) + m.group(1), text)

    def host_workdir(self) -> Path:
        if not mapped(self.workdir) and self.workdir != "/":
            raise CheckError(f"WORKDIR {self.workdir} is outside {', '.join(MAPPED)}")
        return self.root if self.workdir == "/" else Path(self.host(self.workdir))

    def host_env(self, passed: dict[str, str] | None = None) -> dict[str, str]:
        """The variables a step (or the image) sees here: the ARGs, then
        the ENVs over them, paths moved into the stage's directory, and
        the image's Python in front of this machine's system programs."""
        env = dict(passed or {})
        for source in (self.args, self.env):
            for name, value in source.items():
                env[name] = self.host(value)
        entries = []
        for entry in self.env.get("PATH", IMAGE_PATH).split(":"):
            if entry == IMAGE_PYTHON_BIN and self.python is not None:
                entries.append(str(self.python / "bin"))
            elif mapped(entry):
                entries.append(self.host(entry))
            elif entry in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
                entries.append(entry)
        env["PATH"] = ":".join(entries)
        return env

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": str(self.root),
            "python": None if self.python is None else str(self.python),
            "env": dict(self.env),
            "host_env": self.host_env({"LANG": "C.UTF-8"}),
            "workdir": self.workdir,
            "user": self.user,
            "entrypoint": self.entrypoint,
            "cmd": self.cmd,
            "healthcheck": self.healthcheck,
            "healthcheck_options": self.healthcheck_options,
            "expose": self.expose,
        }


class Build:
    """Carries out a Dockerfile's instructions; with ``execute`` off, only
    reads them (what :func:`describe` needs: ENV, USER, ENTRYPOINT...)."""

    def __init__(
        self,
        dockerfile: Path,
        context: Path,
        work: Path,
        build_args: dict[str, str],
        *,
        execute: bool = True,
        out: Any = sys.stdout,
        python: str | None = None,
    ) -> None:
        self.dockerfile = dockerfile
        self.name = _shown(dockerfile)
        self.context = context
        self.work = work
        self.build_args = build_args
        self.used_args: set[str] = set()
        self.execute = execute
        self.out = out
        self.stages: list[Stage] = []
        self.global_args: dict[str, str] = {}
        self._context_copy: Path | None = None
        self._pip_sources: dict[str, str] | None = None
        #: ``--python``: the interpreter standing in for every python:* image.
        self.python = python

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def run(self) -> Stage:
        instructions = parse(self.dockerfile.read_text(encoding="utf-8"), self.name)
        # Steps per stage, for "[builder 2/5]".
        counts: list[int] = []
        for ins in instructions:
            if ins.keyword == "FROM":
                counts.append(0)
            elif counts:
                counts[-1] += 1
        step = 0
        for ins in instructions:
            if ins.keyword == "FROM":
                step = 0
            where = ""
            if ins.keyword != "FROM" and self.stages:
                step += 1
                total = counts[len(self.stages) - 1]
                where = f"[{self.stages[-1].name} {step}/{total}]"
            try:
                self._one(ins, where)
            except CheckError as exc:
                if str(exc).startswith(self.name + ":"):
                    raise
                raise CheckError(f"{self.name}:{ins.line}: {exc}") from None
        if not self.stages:
            raise CheckError(f"{self.name}: no FROM instruction")
        for name in sorted(set(self.build_args) - self.used_args):
            self.say(f"warning: build arg {name} is not used by any ARG")
        return self.stages[-1]

    # Instructions, by keyword.

    def _one(self, ins: Instruction, where: str) -> None:
        keyword = ins.keyword
        if keyword == "ARG":
            self._arg(ins.text)
            return
        if keyword == "FROM":
            self._from(ins)
            return
        if not self.stages:
            raise CheckError(f"{keyword} before the first FROM")
        stage = self.stages[-1]
        handler = getattr(self, f"_{keyword.lower()}", None)
        if handler is None or keyword in ("ARG", "FROM"):
            raise CheckError(f"the check does not know {keyword}")
        handler(stage, ins, where)

    def _values(self) -> dict[str, str]:
        if not self.stages:
            return dict(self.global_args)
        stage = self.stages[-1]
        return {**stage.args, **stage.env}

    def _arg(self, text: str) -> None:
        for word in shlex.split(text):
            name, has_default, default = word.partition("=")
            if has_default:
                default = expand(default, self._values())
            if not self.stages:
                value = self.build_args.get(name, default if has_default else "")
                self.global_args[name] = value
            else:
                inherited = self.global_args.get(name, "")
                value = self.build_args.get(name, default if has_default else inherited)
                self.stages[-1].args[name] = value
            if name in self.build_args:
                self.used_args.add(name)
                outside = escapes(self.build_args[name])
                if outside is not None:
                    raise CheckError(
                        f"build arg {name} names {outside}, outside the build's "
                        f"directories ({', '.join(MAPPED)}): put what it names "
                        "in the build context and give its path relative to "
                        "the WORKDIR (./models/my-model)"
                    )

    def _from(self, ins: Instruction) -> None:
        _options, rest = flags(ins.text)
        parts = expand(rest, self.global_args).split()
        if len(parts) == 3 and parts[1].lower() == "as":
            image, name = parts[0], parts[2]
        elif len(parts) == 1:
            image, name = parts[0], str(len(self.stages))
        else:
            raise CheckError(f"cannot read FROM {ins.text}")
        if not image.split("/")[-1].startswith("python:"):
            raise CheckError(
                f"the check stands in for python:* images only, not {image}"
            )
        number = len(self.stages) + 1
        stage = Stage(name, number, self.work / f"stage-{number}-{name}")
        stage.env = {"PATH": IMAGE_PATH, "LANG": "C.UTF-8"}
        stage.cmd = list(IMAGE_CMD)
        self.stages.append(stage)
        self.say(f"== FROM {image} AS {name}")
        if self.execute:
            python = self._interpreter(image)
            stage.root.mkdir(parents=True)
            stage.python = self.work / f"stage-{number}-{name}-python"
            subprocess.run(
                [python, "-m", "venv", str(stage.python)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            version = subprocess.run(
                [python, "-c", "import platform; print(platform.python_version())"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            self.say(
                f"   {image} stands in as a fresh venv of this machine's Python "
                f"{version} ({python})"
            )

    def _interpreter(self, image: str) -> str:
        """This machine's Python for a ``python:X.Y...`` image: ``--python``
        if given, else this Python when it is X.Y, else ``pythonX.Y`` on
        PATH.

        :raises CheckError: when none is X.Y.
        """
        if self.python is not None:
            return self.python
        tag = image.split("/")[-1].partition(":")[2]
        wanted = re.match(r"(\d+)\.(\d+)", tag)
        if wanted is None:
            raise CheckError(
                f"FROM {image}: the tag names no Python version (X.Y); give "
                "--python PATH for the Python to stand in"
            )
        version = f"{wanted.group(1)}.{wanted.group(2)}"
        if version == "{}.{}".format(*sys.version_info[:2]):
            return sys.executable
        found = shutil.which(f"python{version}")
        if found is None:
            here = "{}.{}".format(*sys.version_info[:2])
            raise CheckError(
                f"FROM {image} wants Python {version}: this is {here}, and no "
                f"python{version} is on PATH; give --build-arg "
                f"PYTHON_VERSION={here}, or --python PATH"
            )
        return found

    def _env(self, stage: Stage, ins: Instruction, where: str) -> None:
        text = ins.text
        pairs: list[tuple[str, str]] = []
        first = shlex.split(text)
        if first and "=" not in first[0]:  # legacy ENV NAME value
            name, _, value = text.partition(" ")
            pairs.append((name, value.strip()))
        else:
            values = self._values()
            for word in shlex.split(text, posix=True):
                name, _, value = word.partition("=")
                pairs.append((name, expand(value, values)))
        for name, value in pairs:
            outside = None if name == "PATH" else escapes(value)
            if outside is not None:
                raise CheckError(
                    f"ENV {name} names {outside}, which the check does not give "
                    f"the stage a copy of (only {', '.join(MAPPED)})"
                )
            stage.env[name] = value

    def _workdir(self, stage: Stage, ins: Instruction, where: str) -> None:
        path = expand(ins.text, self._values())
        stage.workdir = os.path.normpath(os.path.join(stage.workdir, path))
        host = stage.host_workdir()
        if self.execute:
            host.mkdir(parents=True, exist_ok=True)

    def _user(self, stage: Stage, ins: Instruction, where: str) -> None:
        stage.user = expand(ins.text, self._values())

    def _expose(self, stage: Stage, ins: Instruction, where: str) -> None:
        stage.expose.extend(expand(ins.text, self._values()).split())

    def _label(self, stage: Stage, ins: Instruction, where: str) -> None:
        pass

    def _stopsignal(self, stage: Stage, ins: Instruction, where: str) -> None:
        pass

    def _entrypoint(self, stage: Stage, ins: Instruction, where: str) -> None:
        stage.entrypoint = json_or_shell(ins.text)
        if stage.cmd_inherited:  # the base image's CMD no longer applies
            stage.cmd = []

    def _cmd(self, stage: Stage, ins: Instruction, where: str) -> None:
        stage.cmd = json_or_shell(ins.text)
        stage.cmd_inherited = False

    def _healthcheck(self, stage: Stage, ins: Instruction, where: str) -> None:
        options, rest = flags(ins.text)
        kind, _, command = rest.partition(" ")
        if kind.upper() == "NONE":
            stage.healthcheck = None
            return
        if kind.upper() != "CMD":
            raise CheckError("HEALTHCHECK needs CMD or NONE")
        stage.healthcheck = json_or_shell(command.strip())
        stage.healthcheck_options = {k: v[-1] for k, v in options.items()}

    def _copy(self, stage: Stage, ins: Instruction, where: str) -> None:
        options, rest = flags(ins.text)
        unknown = set(options) - {"from", "chown", "chmod", "link"}
        if unknown:
            raise CheckError(f"COPY --{sorted(unknown)[0]} is not known to the check")
        paths = [expand(w, self._values()) for w in words(rest)]
        if len(paths) < 2:
            raise CheckError("COPY needs a source and a destination")
        *sources, dest = paths
        self.say(f"== {where} COPY {rest}")
        if not self.execute:
            return
        origin = options.get("from", [None])[-1]
        base = self._stage_root(origin) if origin else self._context()
        dest_path = dest if dest.startswith("/") else os.path.join(stage.workdir, dest)
        if not mapped(os.path.normpath(dest_path)):
            raise CheckError(f"COPY to {dest_path}, outside {', '.join(MAPPED)}")
        target = Path(stage.host(os.path.normpath(dest_path)))
        as_dir = dest.endswith("/") or len(sources) > 1 or target.is_dir()
        for source in sources:
            found = (
                sorted(base.glob(source.lstrip("/")))
                if source not in (".", "/")
                else [base]
            )
            if not found:
                raise CheckError(
                    f"COPY: {source} is not in the {'stage ' + origin if origin else 'build context'}"
                )
            for path in found:
                if path.is_dir():
                    shutil.copytree(path, target, symlinks=True, dirs_exist_ok=True)
                elif as_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)

    def _run(self, stage: Stage, ins: Instruction, where: str) -> None:
        options, command = flags(ins.text)
        shown = command if len(command) < 100 else command[:97] + "..."
        if ins.skip is not None:
            self.say(f"-- {where} skipped ({self.name}:{ins.line}): {ins.skip}")
            return
        self.say(f"== {where} RUN {shown}")
        if command.startswith("<<"):
            raise CheckError("heredocs are not known to the check")
        argv = json_or_shell(command)
        # The shell the shell form runs is the check's; what it runs is the
        # step's.
        text = " ".join(argv[2:] if argv[:2] == ["/bin/sh", "-c"] else argv)
        system = SYSTEM.search(text)
        if system:
            raise CheckError(
                f"RUN runs {system.group(1)}, which would change this machine: "
                f"mark the step '# {SKIP} REASON'"
            )
        outside = escapes(text)
        if outside is not None:
            raise CheckError(
                f"RUN names {outside}, which the check does not give the stage a "
                f"copy of (only {', '.join(MAPPED)}, and {', '.join(HOST_PATHS)}): "
                f"keep the step to those, or mark it '# {SKIP} REASON'"
            )
        argv = [stage.host(a) for a in argv]
        if not self.execute:
            return
        with self._mounts(stage, options):
            passed = {k: v for k, v in os.environ.items() if PASSED.match(k)}
            passed.setdefault("LANG", "C.UTF-8")
            if self._pip_sources is None:
                self._pip_sources = pip_sources()
            passed.update(self._pip_sources)
            # The image's root user's home and /tmp, in the stage; pip's
            # cache (a cache mount's usual target) is the check's own.
            passed["HOME"] = str(stage.root / "root")
            passed["TMPDIR"] = str(stage.root / "tmp")
            passed["PIP_CONFIG_FILE"] = "/dev/null"
            passed["PIP_CACHE_DIR"] = str(self.work / "cache" / "pip")
            for name in ("HOME", "TMPDIR", "PIP_CACHE_DIR"):
                Path(passed[name]).mkdir(parents=True, exist_ok=True)
            cwd = stage.host_workdir()
            cwd.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(argv, cwd=cwd, env=stage.host_env(passed))
        if done.returncode != 0:
            raise CheckError(f"RUN exited with status {done.returncode}: {shown}")

    # Helpers.

    def _context(self) -> Path:
        """The build context as the builder receives it."""
        if self._context_copy is None:
            dest = self.work / "context"
            ignore_file = dockerignore_for(self.dockerfile, self.context)
            patterns = (
                ignore_patterns(ignore_file.read_text(encoding="utf-8"))
                if ignore_file
                else []
            )
            count = copy_context(self.context, patterns, dest)
            via = f", less what {_shown(ignore_file)} leaves out" if ignore_file else ""
            self.say(
                f"   build context: {count} files from {_shown(self.context)}{via}"
            )
            self._context_copy = dest
        return self._context_copy

    def _stage_root(self, name: str) -> Path:
        for stage in self.stages[:-1]:
            if stage.name == name or str(stage.number - 1) == name:
                return stage.root
        raise CheckError(f"no earlier stage named {name}")

    def _mounts_of(self, options: dict[str, list[str]]) -> Iterator[dict[str, str]]:
        for spec in options.get("mount", []):
            values: dict[str, str] = {}
            for item in spec.split(","):
                key, _, value = item.partition("=")
                values[key] = value or "true"
            yield values

    def _mounts(self, stage: Stage, options: dict[str, list[str]]) -> Any:
        build = self
        unknown = set(options) - {"mount", "network", "security"}
        if unknown:
            raise CheckError(f"RUN --{sorted(unknown)[0]} is not known to the check")

        class Mounts:
            def __enter__(self) -> None:
                self.made: list[Path] = []
                for m in build._mounts_of(options):
                    kind = m.get("type", "bind")
                    target = (
                        m.get("target") or m.get("dst") or m.get("destination") or ""
                    )
                    if kind == "cache":
                        continue  # this machine's own cache plays its part
                    if kind not in ("bind", "tmpfs"):
                        raise CheckError(
                            f"RUN --mount=type={kind} is not known to the check"
                        )
                    if not mapped(os.path.normpath(target or "/")):
                        raise CheckError(
                            f"a mount at {target}, outside {', '.join(MAPPED)}"
                        )
                    host = Path(stage.host(target))
                    if host.exists() or host.is_symlink():
                        raise CheckError(
                            f"a mount at {target}, which the stage already has"
                        )
                    host.parent.mkdir(parents=True, exist_ok=True)
                    if kind == "tmpfs":
                        host.mkdir()
                    else:
                        origin = m.get("from")
                        base = build._stage_root(origin) if origin else build._context()
                        source = (m.get("source") or m.get("src") or "/").lstrip("/")
                        found = base / source
                        if not found.exists():
                            where = f"stage {origin}" if origin else "build context"
                            raise CheckError(
                                f"a mount of {source or '/'}, not in the {where}"
                            )
                        host.symlink_to(found, target_is_directory=found.is_dir())
                    self.made.append(host)

            def __exit__(self, *exc: object) -> None:
                for host in reversed(self.made):
                    if host.is_symlink():
                        host.unlink()
                    else:
                        shutil.rmtree(host, ignore_errors=True)

        return Mounts()


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def describe(dockerfile: Path = DOCKERFILE) -> dict[str, Any]:
    """What the Dockerfile's last stage sets (ENV, USER, ENTRYPOINT, CMD,
    HEALTHCHECK, EXPOSE), read without building anything."""
    with tempfile.TemporaryDirectory() as work:
        build = Build(
            dockerfile, dockerfile.parent, Path(work), {}, execute=False, out=_Null()
        )
        return build.run().describe()


class _Null:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


# --- running the image --------------------------------------------------------


def program(entrypoint: list[str], cmd: list[str]) -> list[str]:
    """What the image runs, less an init in front of it."""
    argv = [*entrypoint, *cmd]
    if argv and Path(argv[0]).name in INITS:
        separators = INITS[Path(argv[0]).name]
        argv = argv[1:]
        while argv and argv[0] in separators:
            argv = argv[1:]
    return argv


def option(argv: list[str], name: str) -> str | None:
    """The last value of ``--name`` in ``argv`` (``--name=V`` or ``--name V``)."""
    value = None
    for i, word in enumerate(argv):
        if word.startswith(f"--{name}="):
            value = word.split("=", 1)[1]
        elif word == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_ids(user: str) -> tuple[int, int] | None:
    """The numeric ``uid:gid`` of a USER (gid: the uid's when not given),
    or None for a name."""
    name, _, group = user.partition(":")
    if not name.isdigit() or (group and not group.isdigit()):
        return None
    return int(name), int(group or name)


def as_image_user(
    stage: Stage, env: dict[str, str], say: Any
) -> Callable[[], None] | None:
    """When the check runs as root, what makes the image's program run as
    the image's USER instead, as ``docker run`` would: its home and /tmp
    stand-ins (``env``'s HOME, and TMPDIR, set here) become that user's, the
    rest of the stage stays root's, not writable.

    :raises CheckError: for a USER by name, which this machine may not have.
    """
    tmp = stage.root / "tmp"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    ids = image_ids(stage.user)
    if ids is None:
        raise CheckError(
            f"USER {stage.user}: the check runs the image's program as a "
            "numeric uid:gid only"
        )
    uid, gid = ids
    if uid == 0:
        return None

    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    # The check's own directory, which the user must cross.
    os.chmod(stage.root.parent, 0o755)
    python = stage.python / "bin" / "python" if stage.python else Path(sys.executable)
    try:
        runs = (
            subprocess.run(
                [str(python), "-c", ""], capture_output=True, preexec_fn=drop, cwd="/"
            ).returncode
            == 0
        )
    except OSError:  # not even started: a closed directory on the way
        runs = False
    if not runs:
        say(
            f"warning: the image's program runs as root, not as uid {uid}: "
            f"uid {uid} cannot run this machine's Python "
            f"({os.path.realpath(python)}; a directory on the way is closed "
            "to others); --python names one it can run"
        )
        return None
    home = Path(env.setdefault("HOME", str(stage.root / "root")))
    home.mkdir(parents=True, exist_ok=True)
    for directory in (home, tmp):
        os.chown(directory, uid, gid)
        os.chmod(directory, 0o700)
    say(
        f"   as uid {uid}, gid {gid} (the image's USER; this check runs as "
        "root): only the home and /tmp stand-ins are writable"
    )
    return drop


def run_image(stage: Stage, say: Any, logfile: Path) -> None:
    """Start the image's program, check its HEALTHCHECK and its shutdown."""
    argv = program(stage.entrypoint, stage.cmd)
    if not argv:
        raise CheckError("the image has neither ENTRYPOINT nor CMD")
    if stage.healthcheck is None:
        raise CheckError("the image has no HEALTHCHECK")
    image_port = option(argv, "listen-port") or "5000"
    port = free_port()
    health = [a.replace(f":{image_port}/", f":{port}/") for a in stage.healthcheck]
    if health == stage.healthcheck:
        raise CheckError(
            f"the HEALTHCHECK does not ask port {image_port}, where the entry point listens"
        )
    argv = [*argv, f"--listen-port={port}"]
    env = stage.host_env({"LANG": "C.UTF-8"})
    cwd = stage.host_workdir()
    preexec = as_image_user(stage, env, say)

    def healthy() -> bool:
        done = subprocess.run(
            health,
            env=env,
            cwd=cwd,
            capture_output=True,
            timeout=30,
            preexec_fn=preexec,
        )
        return done.returncode == 0

    say(f"== run: {shlex.join(argv)}")
    if healthy():
        raise CheckError("the HEALTHCHECK passes while nothing listens")
    say("   HEALTHCHECK fails before the server listens: right")
    with logfile.open("w") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
    try:
        deadline = time.monotonic() + 180
        while not healthy():
            if proc.poll() is not None:
                hint = (
                    ""
                    if preexec is None
                    else f" (as USER {stage.user}: every directory on the "
                    "way to the build and to its Python must be open to others; "
                    "--python names a Python outside a closed home)"
                )
                raise CheckError(
                    f"the image's program exited with status {proc.returncode}"
                    f"{hint}:\n" + logfile.read_text(errors="replace")
                )
            if time.monotonic() > deadline:
                raise CheckError("the HEALTHCHECK never passed in 180 s")
            time.sleep(0.5)
        say("   HEALTHCHECK passes once the server is ready")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v2/models/", timeout=10
        ) as r:
            models = json.load(r).get("models", [])
        names = ", ".join(sorted(str(m.get("id") or m.get("name")) for m in models))
        say(f"   serving: {names}")
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise CheckError("the server did not stop within 60 s of SIGTERM") from None
        if status != 0:
            raise CheckError(
                f"the server stopped with status {status} on SIGTERM:\n"
                + logfile.read_text(errors="replace")
            )
        say("   SIGTERM: stopped with status 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- command line --------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a Dockerfile's steps without Docker, then its image's program.",
    )
    parser.add_argument("--dockerfile", type=Path, default=DOCKERFILE)
    parser.add_argument(
        "--context",
        type=Path,
        default=REPO,
        help="the build context (default: the checkout)",
    )
    parser.add_argument(
        "--build-arg", action="append", default=[], metavar="NAME=VALUE"
    )
    parser.add_argument(
        "--python",
        metavar="PATH",
        help="the Python standing in for the python:* images (default: "
        "pythonX.Y on PATH for python:X.Y, this Python if it is X.Y)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="build in DIR (new or empty) and keep it, with image.json describing the image",
    )
    options = parser.parse_args(argv)
    build_args = {}
    for item in options.build_arg:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--build-arg wants NAME=VALUE, got '{item}'")
        build_args[name] = value
    if not options.dockerfile.is_file():
        parser.error(f"no Dockerfile at {options.dockerfile}")
    if (
        options.keep is not None
        and options.keep.exists()
        and any(options.keep.iterdir())
    ):
        parser.error(f"--keep {options.keep}: the directory is not empty")
    work = (
        options.keep.resolve()
        if options.keep
        else Path(tempfile.mkdtemp(prefix="check-dockerfile-"))
    )
    work.mkdir(parents=True, exist_ok=True)
    try:
        build = Build(
            options.dockerfile.resolve(),
            options.context.resolve(),
            work,
            build_args,
            python=options.python,
        )
        stage = build.run()
        run_image(stage, build.say, work / "server.log")
        if options.keep:
            (work / "image.json").write_text(json.dumps(stage.describe(), indent=2))
    except CheckError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if options.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"{PROG}: ok: every step of {_shown(options.dockerfile)} ran, and its image served"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
