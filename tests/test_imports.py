"""The one-way import rules of doc/architecture.rst, checked on the source,
and the commands' promise to import only what they use."""

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
    # What the commands write for people: errors, suggestions, colour.
    "console": set(),
    # Request-id tagging and log formats: used by workers, api and cli.
    "logs": {"settings", "console"},
    "config": {"settings", "exceptions", "__init__", "console", "config_help"},
    "config_help": set(),
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
ALLOWED["loader"] = _BELOW | {"console"}
ALLOWED["adapters"] = ALLOWED["loader"] | {"loader"}
ALLOWED["executors"] = ALLOWED["adapters"] | {"adapters"}
ALLOWED["runtime"] = ALLOWED["executors"] | {"executors", "jobs"}
# What every protocol does alike with a model's operations: no protocol.
# (executors: its call spaces, as the API uses them.)
_NEUTRAL = {"exceptions", "model", "settings", "console", "jobs", "runtime"}
ALLOWED["operations"] = _NEUTRAL | {"executors"}
# The Open Inference Protocol, protocol-neutral: its values and encodings,
# and its operations over the served models.
ALLOWED["oip"] = ALLOWED["runtime"] | {"runtime", "operations", "__init__"}
ALLOWED["api"] = ALLOWED["runtime"] | {"runtime", "operations", "oip", "__init__"}
# The protocol over gRPC: a transport beside the HTTP API, sharing its service.
ALLOWED["grpc"] = {"exceptions", "model", "settings", "oip"}
# Runs the app: listening, start-up, signals, graceful shutdown.
ALLOWED["server"] = ALLOWED["api"] | {"api"}
# deepserve call: the command line's in-process sibling of the server, a
# protocol of its own beside the HTTP API (not over it).
ALLOWED["shell"] = ALLOWED["runtime"] | {"runtime", "operations", "config", "console"}
ALLOWED["cli_models"] = {"exceptions", "store", "models", "console"}
# deepserve run: the composition root.
ALLOWED["cli_run"] = ALLOWED["server"] | {"server", "grpc", "config", "console"}
# deepserve ray deploy|delete: the Ray executor's applications, composed
# from the same settings as deepserve run's.
ALLOWED["cli_ray"] = ALLOWED["executors"] | {"executors", "config", "console"}
# The dispatcher imports its commands by name, when one runs.
ALLOWED["cli"] = {"__init__", "console"}
# A client talks to a server over HTTP only: none of the server's layers.
ALLOWED["client"] = {"exceptions", "__init__"}

AIOHTTP_FREE = {"exceptions", "model", "settings", "config", "loader", "adapters",
                "executors", "runtime", "store", "models", "logs", "jobs",
                "console", "config_help", "cli", "cli_models", "operations",
                "shell", "oip", "grpc", "cli_ray"}  # fmt: skip


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


#: What the layers above the executors may use of them: the protocol and
#: its helpers (the package), the factory that picks the concrete kind, and
#: the call spaces whose files the API releases once sent.
EXECUTORS_SEEN_FROM_ABOVE = {
    "deepserve.executors",
    "deepserve.executors.factory",
    "deepserve.executors.callspace",
}


def deepserve_modules(path: Path) -> set[str]:
    """Every deepserve module ``path`` imports, submodules named in a
    ``from package import module`` included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("deepserve"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if not node.module.startswith("deepserve"):
                continue
            found.add(node.module)
            package = PACKAGE.parent.joinpath(*node.module.split("."))
            for alias in node.names:
                child = package / alias.name
                if child.is_dir() or child.with_suffix(".py").is_file():
                    found.add(f"{node.module}.{alias.name}")
    return found


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if layer(p) not in {"executors", "cli_run", "cli_ray"}],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_layer_above_knows_the_concrete_executors(path: Path) -> None:
    # Only the composition root (cli_run, through the factory) picks an
    # executor; the runtime and the API see the Executor protocol alone.
    seen = {m for m in deepserve_modules(path) if m.startswith("deepserve.executors")}
    assert seen <= EXECUTORS_SEEN_FROM_ABOVE, f"{path.name} imports {seen}"


def test_importing_the_package_has_no_side_effects() -> None:
    code = (
        "import logging, sys; import deepserve.cli_run, deepserve.api;"
        "assert not logging.getLogger().handlers;"
        "assert 'deepserve.demo' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_deepserve_call_loads_no_http_layer() -> None:
    # deepserve call shares the protocol-neutral operations with the API,
    # not the API itself: neither it nor aiohttp is imported.
    code = (
        "import sys; import deepserve.shell.runner;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp'}),"
        " sorted(m for m in sys.modules if m.startswith('deepserve.api')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] []", out.stdout


#: Modules a command that does not serve must not import: each costs
#: tenths of a second at start-up on a small machine.
HEAVY = ("aiohttp", "sqlalchemy", "marshmallow", "apispec", "oslo_config", "numpy")


@pytest.mark.parametrize(
    ("module", "needs"),
    [
        ("deepserve.cli", []),
        ("deepserve.cli_models", []),
        ("deepserve.console", []),
        # deepserve run reads its options before it builds the server.
        ("deepserve.cli_run", ["oslo_config"]),
    ],
)
def test_commands_import_nothing_heavy_up_front(module: str, needs: list[str]) -> None:
    code = (
        f"import sys, {module};"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(needs), f"{module} imports {out.stdout.strip()}"


def test_version_and_models_list_run_without_heavy_imports(tmp_path: Path) -> None:
    # The real commands, with the import system watching: nothing heavy
    # is imported on the way to their output.
    code = (
        "import sys, runpy;"
        "from deepserve import cli;"
        "status = cli.main(sys.argv[1:]);"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}));"
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(status)"
    )
    for argv in (["--version"], ["models", "--store", str(tmp_path), "list"]):
        out = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert "HEAVY []" in out.stderr, (argv, out.stderr)
