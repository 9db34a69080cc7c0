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
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ApiSettings, ExecutorSettings

FAKES = Path(__file__).parent / "fakes"

#: The fake models: name -> (entry point group, target).
GOOD_MODELS = {
    "oldstyle": ("deepaas.v2.model", "fake_oldstyle"),
    "classy": ("deepserve.v2.model", "fake_classy:ClassModel"),
    "minimal": ("deepserve.v2.model", "fake_minimal"),
    "files": ("deepserve.v2.model", "fake_files"),
    "batchy": ("deepserve.v2.model", "fake_batchy"),
}


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
    names: list[str], settings: ExecutorSettings | None = None
) -> Registry:
    """Start the named installed models, each in real workers."""
    available = loader.discover(loader.installed_entry_points())
    settings = settings or ExecutorSettings()
    served = []
    for ref in loader.select(available, names):
        served.append(ServedModel.create(ref, adapters.build(ref), settings))
    registry = Registry(served)
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
