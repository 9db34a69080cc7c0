"""Which executor a model's settings give it."""

from __future__ import annotations

import pytest

from deepserve import adapters, loader
from deepserve.exceptions import LoaderError
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


def test_batching_follows_the_model_and_the_config(build):
    model, executor = build("batchy")
    assert isinstance(executor, BatchingExecutor)
    # The model declares max_batch_size 4 and max_latency_ms 50.
    assert executor.policy == BatchPolicy(4, 0.05)
    assert factory.batch_policy(
        model, ExecutorSettings(max_batch_size=2, max_latency_ms=0)
    ) == BatchPolicy(2, 0.0)
    _model, plain = build("batchy", batching=False)
    assert isinstance(plain, ProcessExecutor)
    _model, plain = build("classy")
    assert isinstance(plain, ProcessExecutor)


def test_batching_asked_of_a_model_without_predict_batch(build):
    with pytest.raises(LoaderError, match=r"'classy'.*no predict_batch"):
        build("classy", batching=True)


def test_invalid_batch_settings(build):
    with pytest.raises(LoaderError, match="invalid batching settings"):
        build("batchy", max_batch_size=0)
