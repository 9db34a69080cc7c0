"""Which executor a model's settings give it."""

from __future__ import annotations

import sys

import pytest

from deepserve import adapters, loader
from deepserve.exceptions import LoaderError, ModelFailed
from deepserve.executors import factory
from deepserve.executors.batching import BatchingExecutor, BatchPolicy
from deepserve.executors.inline import InlineExecutor
from deepserve.executors.processes import ProcessExecutor
from deepserve.executors.threads import ThreadExecutor
from deepserve.settings import ExecutorSettings


@pytest.fixture
def build(fake_site):
    refs = loader.discover(loader.installed_entry_points())

    def make(name: str, **settings):
        model = adapters.build(refs[name])
        return model, factory.create(refs[name], model, ExecutorSettings(**settings))

    return make


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("process", ProcessExecutor),
        ("thread", ThreadExecutor),
        ("inline", InlineExecutor),
    ],
)
def test_kinds(build, kind, cls):
    _model, executor = build("classy", kind=kind, workers=3)
    assert isinstance(executor, cls)
    assert executor.workers == (1 if kind == "inline" else 3)
    # Nothing is batched: the runtime reports no batch sizes.
    assert executor.batch_sizes is None


def test_batching_follows_the_model_and_the_config(build):
    model, executor = build("batchy")
    assert isinstance(executor, BatchingExecutor)
    # The model declares max_batch_size 4 and max_latency_ms 50.
    assert executor.policy == BatchPolicy(4, 0.05)
    assert executor.batch_sizes == {}
    assert factory.batch_policy(
        model, ExecutorSettings(max_batch_size=2, max_latency_ms=0)
    ) == BatchPolicy(2, 0.0)
    _model, plain = build("batchy", batching=False)
    assert isinstance(plain, ProcessExecutor)
    _model, plain = build("classy")
    assert isinstance(plain, ProcessExecutor)


def test_batching_asked_of_a_model_without_predict_batch(build, caplog):
    _model, executor = build("classy", batching=True)
    assert isinstance(executor, ProcessExecutor)
    assert "'classy', but it has no predict_batch" in caplog.text


def test_invalid_batch_settings(build):
    with pytest.raises(LoaderError, match="invalid batching settings"):
        build("batchy", max_batch_size=0)


@pytest.mark.parametrize("kind", ["process", "thread", "inline"])
async def test_warm_failure_is_a_one_line_loader_error(tmp_path, kind):
    (tmp_path / "fake_cold_warm.py").write_text(
        "def warm():\n    raise RuntimeError('no weights')\n\n"
        "def predict(**kwargs):\n    return 1\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        ref = loader.ModelRef("cold", "fake_cold_warm", "test")
        executor = factory.create(ref, adapters.build(ref), ExecutorSettings(kind=kind))
        with pytest.raises(
            LoaderError,
            match=r"^Model 'cold' failed to start: RuntimeError: no weights$",
        ):
            await executor.start()
        await executor.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fake_cold_warm", None)


async def test_a_model_with_only_predict_batch_predicts(tmp_path):
    (tmp_path / "fake_only_batch.py").write_text(
        "def predict_batch(items):\n"
        "    return [i['x'] * 10 if i['x'] >= 0 else ValueError('neg') for i in items]\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        ref = loader.ModelRef("onlybatch", "fake_only_batch", "test")
        model = adapters.build(ref)
        assert model.supports("predict")
        assert model.call("predict", {"x": 2}) == 20
        with pytest.raises(ModelFailed, match="ValueError"):
            model.call("predict", {"x": -1})
        # Unbatched by configuration, it still answers.
        plain = factory.create(
            ref, model, ExecutorSettings(kind="inline", batching=False)
        )
        await plain.start()
        assert await plain.call("predict", {"x": 3}) == 30
        await plain.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fake_only_batch", None)
