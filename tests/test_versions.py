"""Versions of one stored model served side by side: the loader, the
registry, the configuration and the composition root (HTTP and the Open
Inference Protocol are covered with the endpoints)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from deepserve import adapters, cli_run, config, loader, picklable_model
from deepserve.exceptions import ConfigError, LoaderError, ModelNotFound
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ExecutorSettings, ServerSettings
from deepserve.store import Store

INLINE = ExecutorSettings(kind="inline")


def save_versions(root: Path, *factors: float) -> list[str]:
    """Save ``twin`` once per factor, oldest first; return the tags."""
    import fake_stored  # on sys.path through the fake_site fixture

    store = Store(root)
    tags = []
    for k in factors:
        saved = picklable_model.save_model("twin", fake_stored.Scaler(k), store=store)
        tags.append(str(saved.tag))
        time.sleep(0.01)  # distinct creation times
    return tags


def served(root: Path, tags: list[str]) -> list[ServedModel]:
    refs = loader.select({}, tags, store=Store(root))
    return [ServedModel.create(r, adapters.build(r), INLINE) for r in refs]


def version_of(tag: str) -> str:
    return tag.partition(":")[2]


async def test_each_version_is_served_and_the_default_is_the_last(fake_site, tmp_path):
    tags = save_versions(tmp_path, 1.0, 2.0)
    registry = Registry(served(tmp_path, tags))
    await registry.start()
    try:
        v1, v2 = (version_of(t) for t in tags)
        assert list(registry) == ["twin"] and len(registry.every()) == 2
        assert registry["twin"].version == v2
        assert registry.versions("twin") == [v2, v1]
        one = await registry.version("twin", v1).predict({"data": [[1.0]]})
        two = await registry.version("twin", v2).predict({"data": [[1.0]]})
        assert (one, two) == ([[1.0]], [[2.0]])
        assert registry.version("twin", None) is registry["twin"]
        assert {registry.label(s) for s in registry.every()} == set(tags)
        with pytest.raises(ModelNotFound, match="twin:nope"):
            registry.version("twin", "nope")
        with pytest.raises(ModelNotFound, match="other"):
            registry.version("other", v1)
        # each version has its own readiness
        registry.version("twin", v1).drain()
        assert registry["twin"].ready and not registry.ready
    finally:
        await registry.close()


def test_a_default_version_is_chosen_or_refused(fake_site, tmp_path):
    tags = save_versions(tmp_path, 1.0, 2.0)
    v1 = version_of(tags[0])
    registry = Registry(served(tmp_path, tags), defaults={"twin": v1})
    assert registry["twin"].version == v1
    assert registry.versions("twin")[0] == v1
    with pytest.raises(ValueError, match="twin:zzz is not served"):
        Registry(served(tmp_path, tags), defaults={"twin": "zzz"})


def test_an_unversioned_model_lists_no_version(fake_site):
    refs = loader.select(loader.discover(loader.installed_entry_points()), ["classy"])
    registry = Registry([ServedModel.create(refs[0], adapters.build(refs[0]), INLINE)])
    assert registry.versions("classy") == []
    assert registry.label(registry["classy"]) == "classy"
    with pytest.raises(ModelNotFound):
        registry.version("classy", "1")


def test_the_cli_serves_the_newest_version_by_default(fake_site, tmp_path):
    # the newest by creation time, whatever order the command line names them
    old, new = save_versions(tmp_path, 1.0, 2.0)
    settings = ServerSettings(
        model_names=(new, old), store_root=str(tmp_path), executor=INLINE
    )
    registry = cli_run.build_registry(settings)
    assert registry["twin"].version == version_of(new)
    assert [s.tag for s in registry.every()] == [new, old]

    chosen = ServerSettings(
        model_names=(new, old),
        store_root=str(tmp_path),
        executor=INLINE,
        default_versions={"twin": version_of(old)},
    )
    assert cli_run.build_registry(chosen)["twin"].version == version_of(old)

    wrong = ServerSettings(
        model_names=(new,), store_root=str(tmp_path), default_versions={"twin": "x"}
    )
    with pytest.raises(LoaderError, match="default version twin:x is not served"):
        cli_run.build_registry(wrong)


def test_a_version_may_have_its_own_config_section(fake_site, tmp_path):
    old, new = save_versions(tmp_path, 1.0, 2.0)
    conf = tmp_path / "deepserve.conf"
    conf.write_text(
        f"[model:twin]\nworkers = 2\n[model:{old}]\nworkers = 3\nexecutor = thread\n"
    )
    argv = ["--config-file", str(conf), "--default-version", old]
    settings, _ = config.load(argv, {}, default_config_files=[])
    assert settings.default_versions == {"twin": version_of(old)}
    assert settings.executor_for("twin", version_of(old)).workers == 3
    assert settings.executor_for("twin", version_of(new)).workers == 2
    assert settings.executor_for("twin").workers == 2


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (["twin"], "expected NAME:VERSION"),
        (["twin:latest"], "an exact version"),
        (["twin:a:b"], "expected NAME:VERSION"),
        (["twin:a", "twin:b"], "two versions for 'twin': a and b"),
    ],
)
def test_bad_default_versions_are_refused(values, problem):
    argv = [arg for value in values for arg in ("--default-version", value)]
    with pytest.raises(ConfigError, match=problem):
        config.load(argv, {}, default_config_files=[])
