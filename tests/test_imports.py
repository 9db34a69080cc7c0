"""The one-way import rules of ARCHITECTURE.md, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deepserve"

#: Layer -> the deepserve layers it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "exceptions": set(),
    "model": set(),
    "settings": set(),
    "demo": set(),
    "__init__": set(),
    # Request-id tagging and log formats: used by workers, api and cli.
    "logs": {"settings"},
    "config": {"settings", "exceptions", "__init__"},
    # The model store, and the user-facing modules in front of it.
    "store": {"exceptions", "model", "settings", "__init__"},
    "models": {"exceptions", "model", "settings", "__init__", "store"},
    "picklable_model": {"exceptions", "model", "settings", "store", "models"},
    "sklearn": {"exceptions", "model", "settings", "store", "models"},
    "class_model": {"exceptions", "model", "settings", "store", "models"},
    "python_model": {"exceptions", "model", "settings", "store", "models"},
    "jobs": {"exceptions", "model", "settings"},
}
_BELOW = {"exceptions", "model", "settings", "logs", "store"}
ALLOWED["loader"] = _BELOW
ALLOWED["adapters"] = ALLOWED["loader"] | {"loader"}
ALLOWED["executors"] = ALLOWED["adapters"] | {"adapters"}
ALLOWED["runtime"] = ALLOWED["executors"] | {"executors", "jobs"}
ALLOWED["api"] = ALLOWED["runtime"] | {"runtime", "__init__"}
# Runs the app: listening, start-up, signals, graceful shutdown.
ALLOWED["server"] = ALLOWED["api"] | {"api"}
# deepserve call: the command line's in-process sibling of the server.
ALLOWED["shell"] = ALLOWED["api"] | {"api", "config"}
ALLOWED["cli_models"] = {"exceptions", "store", "models"}
ALLOWED["cli"] = ALLOWED["server"] | {
    "server",
    "config",
    "shell",
    "cli_models",
}
# A client talks to a server over HTTP only: none of the server's layers.
ALLOWED["client"] = {"exceptions", "__init__"}

AIOHTTP_FREE = {"exceptions", "model", "settings", "config", "loader", "adapters",
                "executors", "runtime", "store", "models", "logs", "jobs"}  # fmt: skip


def layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "deepserve":
                found.update(f"deepserve.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path: Path) -> None:
    own = layer(path)
    for name in imports(path):
        if name == "deepserve":
            target = "__init__"
        elif name.startswith("deepserve."):
            target = name.split(".")[1]
            if target not in ALLOWED:  # e.g. deepserve.__version__
                target = "__init__"
        else:
            if own in AIOHTTP_FREE:
                assert not name.startswith(("aiohttp", "webargs")), (path, name)
            continue
        assert target == own or target in ALLOWED[own], f"{own} imports {name}"


def test_importing_the_package_has_no_side_effects() -> None:
    code = (
        "import logging, sys; import deepserve.cli, deepserve.api;"
        "assert not logging.getLogger().handlers;"
        "assert 'deepserve.demo' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
