"""Shared fixtures: fake model packages installed for real, and started models.

The fake packages in ``tests/fakes`` are made discoverable the way pip would
make them: a ``.dist-info`` directory with an ``entry_points.txt`` on
``sys.path`` (and on ``PYTHONPATH`` for the server subprocesses).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from deepserve import adapters, loader
from deepserve.api import create_app
from deepserve.jobs import JobStore
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ApiSettings, ExecutorSettings
from tests.postgres import postgres  # noqa: F401  (a fixture, for every test)
from tests.raycluster import ray_cluster  # noqa: F401  (a fixture)
from tests.s3 import s3  # noqa: F401  (a fixture, for every test)
from tests.servers import Server

FAKES = Path(__file__).parent / "fakes"

#: The fake models: name -> (entry point group, target).
GOOD_MODELS = {
    "oldstyle": ("deepaas.v2.model", "fake_oldstyle"),
    "classy": ("deepserve.v2.model", "fake_classy:ClassModel"),
    "minimal": ("deepserve.v2.model", "fake_minimal"),
    "files": ("deepserve.v2.model", "fake_files"),
    "batchy": ("deepserve.v2.model", "fake_batchy"),
    "chatty": ("deepserve.v2.model", "fake_chatty"),
    "wildcard": ("deepaas.v2.model", "fake_wildcard:QueryModel"),
    "headeraccept": ("deepaas.v2.model", "fake_wildcard:HeaderModel"),
}


#: Models installed in the venv itself, not by the tests: none in the main
#: venv; the AI4OS-like package in .ci/run's DEEPaaS venv.
VENV_MODELS = sorted({ep.name for ep in loader.installed_entry_points()})

#: The DEEPaaS compatibility part of the suite: what a DEEPaaS user touches
#: (HTTP API, uploads, accept, trainings, OpenAPI, Swagger UI, ``deepserve
#: call``). ``.ci/run`` runs it (``-m compat``) a second time in a venv where
#: deepaas 2.x and its pins (webargs 5.5, apispec 3.3, oslo.config 8.8) are
#: installed.
COMPAT = {
    "tests/api/test_predict.py",
    "tests/api/test_uploads.py",
    "tests/api/test_negotiation.py",
    "tests/api/test_file_results.py",
    "tests/api/test_training.py",
    "tests/api/test_openapi.py",
    "tests/test_swagger_ui.py",
    "tests/test_shell.py",
    "tests/test_config.py",
    "tests/test_adapter_files.py",
    "tests/test_adapter_quiet.py",
    "tests/test_deepaas_compat.py",
}


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        if Path(item.path).relative_to(root).as_posix() in COMPAT:
            item.add_marker(pytest.mark.compat)


def write_dist(site: Path, dist: str, models: dict[str, tuple[str, str]]) -> Path:
    """Install entry points for ``models`` as distribution ``dist`` in ``site``."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n"
    )
    groups: dict[str, list[str]] = {}
    for name, (group, target) in models.items():
        groups.setdefault(group, []).append(f"{name} = {target}")
    (info / "entry_points.txt").write_text(
        "".join(f"[{g}]\n" + "\n".join(lines) + "\n\n" for g, lines in groups.items())
    )
    return site


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the tests' servers keep their default job database and model
    store: temporary directories, never the user's own. A token the
    developer exported is hidden too: tests that want auth set their own."""
    path = tmp_path_factory.mktemp("xdg-data")
    home = tmp_path_factory.mktemp("deepserve-home")
    values = {"XDG_DATA_HOME": str(path), "DEEPSERVE_HOME": str(home)}
    before = {var: os.environ.get(var) for var in [*values, "DEEPSERVE_AUTH_TOKEN"]}
    os.environ.update(values)
    os.environ.pop("DEEPSERVE_AUTH_TOKEN", None)
    yield path
    for var, value in before.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


@pytest.fixture(scope="session")
def fake_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A site directory where the good fake models are installed."""
    site = write_dist(tmp_path_factory.mktemp("site"), "fake-models", GOOD_MODELS)
    added = [str(site), str(FAKES)]
    sys.path[:0] = added
    yield site
    for entry in added:
        sys.path.remove(entry)


@pytest.fixture(scope="session")
def slow_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site where ``slow`` (tests/fakes/fake_slow.py) is installed; kept
    apart from the good models so that it is served only when asked for."""
    return write_dist(
        tmp_path_factory.mktemp("slow-site"),
        "slow-model",
        {"slow": ("deepserve.v2.model", "fake_slow")},
    )


def subprocess_env(*sites: Path) -> dict[str, str]:
    """Environment for a ``deepserve`` subprocess that sees ``sites``."""
    env = dict(os.environ)
    parts = [str(s) for s in sites] + [str(FAKES)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    for var in ("DEEPSERVE_V2_MODEL", "DEEPAAS_V2_MODEL"):
        env.pop(var, None)
    return env


async def start_registry(
    names: list[str],
    settings: ExecutorSettings | None = None,
    *,
    jobs: JobStore | None = None,
) -> Registry:
    """Start the named installed models, each in real workers; trainings
    go to ``jobs`` (opened by the caller) or to an in-memory store."""
    available = loader.discover(loader.installed_entry_points())
    settings = settings or ExecutorSettings()
    served = []
    for ref in loader.select(available, names):
        served.append(ServedModel.create(ref, adapters.build(ref), settings))
    registry = Registry(served, jobs=jobs)
    await registry.start()
    return registry


@pytest_asyncio.fixture(scope="session")
async def registry(fake_site: Path) -> AsyncIterator[Registry]:
    """The good fake models, one worker each, shared by the whole session."""
    reg = await start_registry(list(GOOD_MODELS))
    yield reg
    await reg.close()


@pytest.fixture
async def client(aiohttp_client, registry):  # type: ignore[no-untyped-def]
    """A test client of a fresh app over the shared registry."""
    return await aiohttp_client(create_app(registry, ApiSettings()))


@pytest.fixture
def demo_server() -> Iterator[Server]:
    """``deepserve run`` as a newcomer starts it: no model installed (the
    fake site left out), so the bundled demo model is served. In a venv
    with a model of its own (.ci/run's DEEPaaS venv), the demo by name."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "DEEPSERVE_V2_MODEL", "DEEPAAS_V2_MODEL"):
        env.pop(var, None)
    server = Server(["--model-name", "demo"] if VENV_MODELS else [], env)
    try:
        server.wait_ready("")
        yield server
    finally:
        server.stop()


def oldstyle_args(**overrides: Any) -> dict[str, Any]:
    """Every argument of ``fake_oldstyle.predict``, as the API passes them."""
    kwargs: dict[str, Any] = {
        "data": None,
        "text": "hello",
        "count": 1,
        "mode": "echo",
        "tags": [],
        "accept": "application/json",
    }
    kwargs.update(overrides)
    return kwargs
