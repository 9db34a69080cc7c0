"""The virtual environments the benchmarks run servers in.

Each lives under ``benchmarks/.venvs/`` and is reused while what it was built
from is unchanged: a stamp file records the requirements and a digest of the
local packages' sources. deepserve itself is always reinstalled from the
working tree, so a run measures the code as it is now.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENVS = HERE / ".venvs"
ECHO_MODEL = HERE / "echo_model"
DEEPAAS_REQUIREMENT = "deepaas==2.6.0"
STAMP = "bench-stamp.txt"
#: A fresh venv and its installs take a minute or two; a broken index longer.
PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class Venv:
    """A virtual environment and the programs the benchmarks run from it."""

    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def script(self, name: str) -> Path:
        return self.path / "bin" / name

    def version_of(self, distribution: str) -> str:
        code = (
            "import importlib.metadata as m, sys; "
            f"sys.stdout.write(m.version({distribution!r}))"
        )
        out = subprocess.run(
            [str(self.python), "-c", code], capture_output=True, text=True, check=False
        )
        return out.stdout.strip() or "?"


def _digest(*roots: Path) -> str:
    """Digest of the files that make up local packages (not their build output)."""
    sha = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*")):
            parts = set(path.relative_to(root).parts)
            if not path.is_file() or parts & {"build", "__pycache__"}:
                continue
            if any(p.endswith(".egg-info") for p in parts):
                continue
            sha.update(str(path.relative_to(root)).encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def _pip(venv: Venv, *args: str) -> None:
    cmd = [str(venv.python), "-m", "pip", "install", "--quiet", *args]
    print("  $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, timeout=PIP_TIMEOUT_S)


def _prepare(name: str, stamp: str, *, rebuild: bool) -> tuple[Venv, bool]:
    """The venv ``name``; True when it is new and needs its installs."""
    venv = Venv(VENVS / name)
    stamp_file = venv.path / STAMP
    if (
        not rebuild
        and venv.python.exists()
        and stamp_file.exists()
        and stamp_file.read_text() == stamp
    ):
        return venv, False
    if venv.path.exists():
        shutil.rmtree(venv.path)
    print(f"  creating {venv.path}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv.path)], check=True)
    return venv, True


@contextlib.contextmanager
def _sources(*roots: Path) -> Iterator[list[str]]:
    """Throw-away copies of local packages, to install from.

    pip builds a local package in place, and setuptools leaves ``build/`` and
    ``*.egg-info`` in the source tree: in a copy, they litter nothing and
    stale build output is never reused.
    """
    with tempfile.TemporaryDirectory(prefix="deepserve-bench-src-") as tmp:
        copies = []
        for root in roots:
            copy = Path(tmp) / root.name
            shutil.copytree(root, copy, ignore=_NOT_SOURCE)
            copies.append(str(copy))
        yield copies


_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".venvs",
    ".tox",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "_build",
)


def deepaas_venv(*, rebuild: bool = False) -> Venv:
    """DEEPaaS 2.6.0 and the echo model."""
    stamp = f"{DEEPAAS_REQUIREMENT}\necho_model {_digest(ECHO_MODEL)}\n"
    venv, new = _prepare("deepaas-2.6.0", stamp, rebuild=rebuild)
    if new:
        with _sources(ECHO_MODEL) as (echo,):
            _pip(venv, DEEPAAS_REQUIREMENT, echo)
        (venv.path / STAMP).write_text(stamp)
    return venv


def deepserve_venv(*, rebuild: bool = False, reinstall: bool = True) -> Venv:
    """deepserve from this working tree, and the echo model.

    :param reinstall: reinstall deepserve from the working tree (False: it was
        just done, by the run that re-ran itself in a network namespace).
    """
    setup = (REPO / "setup.cfg").read_text()
    stamp = f"deepserve setup.cfg {hashlib.sha256(setup.encode()).hexdigest()}\n"
    stamp += f"echo_model {_digest(ECHO_MODEL)}\n"
    venv, new = _prepare("deepserve", stamp, rebuild=rebuild)
    with _sources(REPO, ECHO_MODEL) as (repo, echo):
        if new:
            _pip(venv, repo, echo)
            (venv.path / STAMP).write_text(stamp)
        elif reinstall:
            # Dependencies are unchanged (same setup.cfg); the code may not be.
            _pip(venv, "--no-deps", "--force-reinstall", repo)
    return venv


#: The peers: servers a user would pick instead of deepserve (issue 13). Each
#: gets a venv of its own with the benchmark models (``echo_model``), whose
#: functions the peers' apps under ``peers/`` call, so the work is the same.
PEER_REQUIREMENTS = {
    # MLServer 1.7.1's workers ask uvloop for an event loop before making one,
    # which uvloop 0.22 refuses (every worker dies at start): the older uvloop.
    "mlserver": ("mlserver>=1.7,<1.8", "uvloop<0.22"),
    "bentoml": ("bentoml>=1.4,<1.5",),
    "ray-serve": ("ray[serve]>=2.60,<3",),
}


def peer_venv(name: str, *, rebuild: bool = False) -> Venv:
    """The venv of peer ``name`` (a key of :data:`PEER_REQUIREMENTS`)."""
    requirements = PEER_REQUIREMENTS[name]
    stamp = "".join(f"{r}\n" for r in requirements)
    stamp += f"echo_model {_digest(ECHO_MODEL)}\n"
    venv, new = _prepare(name, stamp, rebuild=rebuild)
    if new:
        with _sources(ECHO_MODEL) as (echo,):
            _pip(venv, *requirements, echo)
        (venv.path / STAMP).write_text(stamp)
    return venv
