"""Served models, their training jobs and the registry, without HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from deepserve.exceptions import JobNotFound, ModelNotFound
from deepserve.jobs import INTERRUPTED_BY_SHUTDOWN, JobStore
from deepserve.runtime import Registry, ServedModel, TrainingJob
from deepserve.settings import JobSettings
from tests.conftest import GOOD_MODELS

DEADLINE = 30.0


def classy_train_args(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "seconds": 0.0,
        "fail": False,
        "pidfile": None,
        "data": None,
    }
    kwargs.update(overrides)
    return kwargs


async def wait_finished(
    served: ServedModel, job: TrainingJob, timeout: float = DEADLINE
) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while (job := await served.job(job.id)).status == "running":
        assert time.monotonic() < deadline, f"training {job.id} still running"
        await asyncio.sleep(0.05)
    return job


def test_registry_lookup_of_unknown_model_raises(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match="'nosuchmodel'") as excinfo:
        registry["nosuchmodel"]
    assert excinfo.value.model == "nosuchmodel"


def test_registry_membership_and_iteration(registry: Registry) -> None:
    assert "classy" in registry
    assert "nosuchmodel" not in registry
    assert 42 not in registry
    assert sorted(registry) == sorted(GOOD_MODELS)
    assert len(registry) == len(GOOD_MODELS)
    assert registry["classy"].name == "classy"


def test_registry_get_behaves_like_a_mapping(registry: Registry) -> None:
    """``Registry`` is a ``Mapping``: its inherited ``get`` must work too."""
    assert registry.get("classy") is registry["classy"]
    assert registry.get("nosuchmodel") is None


async def test_job_of_unknown_id_raises(registry: Registry) -> None:
    served = registry["classy"]

    with pytest.raises(JobNotFound) as excinfo:
        await served.job("not-a-job")

    assert excinfo.value.model == "classy"
    assert excinfo.value.job_id == "not-a-job"


async def test_training_goes_from_running_to_done(registry: Registry) -> None:
    served: ServedModel = registry["classy"]
    cleaned: list[str] = []

    job = await served.start_training(
        classy_train_args(seconds=0.3),
        {"seconds": 0.3},
        cleanup=lambda: cleaned.append("done"),
    )

    assert job.status == "running"
    assert job.model == "classy"
    assert job.args == {"seconds": 0.3}
    assert job.finished is None and job.duration is None
    assert await served.job(job.id) == job
    assert job.id in [j.id for j in (await served.jobs()).jobs]
    assert cleaned == []

    job = await wait_finished(served, job)

    assert job.status == "done"
    assert job.message is None
    assert job.result == {"seconds": 0.3, "upload_size": None, "warm_count": 1}
    assert job.started is not None and job.started >= job.created
    assert job.finished is not None and job.finished >= job.started
    assert job.duration is not None and job.duration.total_seconds() >= 0.3
    assert cleaned == ["done"]


async def test_failed_training_records_the_error(registry: Registry) -> None:
    served = registry["classy"]
    cleaned: list[str] = []

    job = await served.start_training(
        classy_train_args(fail=True), {}, cleanup=lambda: cleaned.append("done")
    )
    job = await wait_finished(served, job)

    assert job.status == "error"
    assert job.result is None
    assert job.message == "RuntimeError: the loss diverged"
    assert cleaned == ["done"]


async def test_cancelled_training_is_cancelled(registry: Registry) -> None:
    served = registry["classy"]
    cleaned: list[str] = []
    job = await served.start_training(
        classy_train_args(seconds=60.0), {}, cleanup=lambda: cleaned.append("done")
    )
    await asyncio.sleep(0.2)

    began = time.monotonic()
    cancelled = await served.cancel(job.id)

    assert time.monotonic() - began < 15
    assert cancelled.id == job.id
    assert cancelled.status == "cancelled"
    assert cancelled.message == "Cancelled by a client"
    assert cancelled.finished is not None
    assert cleaned == ["done"]


async def test_closing_the_registry_interrupts_running_trainings(fake_site, tmp_path):
    from tests.conftest import start_registry

    store = JobStore(JobSettings(database=f"sqlite:///{tmp_path / 'jobs.sqlite'}"))
    await store.open()
    try:
        reg = await start_registry(["classy"], jobs=store)
        served = reg["classy"]
        job = await served.start_training(classy_train_args(seconds=60.0), {})
        await asyncio.sleep(0.2)

        began = time.monotonic()
        await reg.close()

        assert time.monotonic() - began < 15
        assert store.opened  # the caller's store: the caller closes it
        stopped = await store.get("classy", job.id)
        assert stopped.status == "interrupted"
        assert stopped.message == INTERRUPTED_BY_SHUTDOWN
        assert stopped.finished is not None
    finally:
        await store.close()


async def test_cancel_of_unknown_job_raises(registry: Registry) -> None:
    with pytest.raises(JobNotFound):
        await registry["classy"].cancel("not-a-job")


async def test_max_queue_zero_admits_while_a_worker_is_free(fake_site):
    """max_queue counts waiting predictions only: 0 means none may wait."""
    from deepserve.exceptions import Overloaded
    from deepserve.settings import ExecutorSettings
    from tests.conftest import start_registry

    reg = await start_registry(["oldstyle"], ExecutorSettings(workers=1, max_queue=0))
    try:
        served = reg["oldstyle"]
        args = {"data": None, "text": "0.5", "count": 1, "mode": "sleep",
                "tags": [], "accept": "application/json"}  # fmt: skip
        busy = asyncio.create_task(served.predict(args))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            served.admit()
        await busy
        served.admit()  # free again
        assert (await served.predict({**args, "mode": "echo"}))["text"] == "0.5"
    finally:
        await reg.close()


async def test_readiness_follows_start_and_drain(fake_site):
    from deepserve.exceptions import NotRunning
    from deepserve.settings import ExecutorSettings
    from tests.conftest import start_registry

    reg = await start_registry(["classy"], ExecutorSettings(kind="inline"))
    served = reg["classy"]
    try:
        assert reg.ready and served.ready and not reg.draining
        reg.drain()
        assert reg.draining and not reg.ready and not served.ready
        with pytest.raises(NotRunning, match="shutting down"):
            served.admit()
        with pytest.raises(NotRunning, match="shutting down"):
            await served.start_training(classy_train_args(), {})
    finally:
        await reg.close()


async def test_close_stops_trainings_before_workers(fake_site, tmp_path):
    """Closing ends running trainings for real: process gone, uploads removed."""
    from deepserve.settings import ExecutorSettings
    from tests.checks import wait_for_pidfile
    from tests.conftest import start_registry
    from tests.servers import gone

    reg = await start_registry(["classy"], ExecutorSettings(kind="inline"))
    served = reg["classy"]
    pidfile = tmp_path / "train.pid"
    cleaned: list[str] = []
    await served.start_training(
        classy_train_args(seconds=60.0, pidfile=str(pidfile)),
        {},
        cleanup=lambda: cleaned.append("done"),
    )
    pid = await wait_for_pidfile(pidfile)

    await reg.close()

    # (Its record says interrupted: see the test just above.)
    assert cleaned == ["done"]
    deadline = time.monotonic() + DEADLINE
    while not gone(pid):
        assert time.monotonic() < deadline, "the training's process survived"
        await asyncio.sleep(0.05)


def unstarted(names: list[str], jobs: JobStore) -> Registry:
    from deepserve import adapters, loader
    from deepserve.settings import ExecutorSettings

    available = loader.discover(loader.installed_entry_points())
    settings = ExecutorSettings(kind="inline")
    served = [
        ServedModel.create(ref, adapters.build(ref), settings)
        for ref in loader.select(available, names)
    ]
    return Registry(served, jobs=jobs)


async def test_running_opens_the_store_first_and_closes_it_last(fake_site, tmp_path):
    """The store is there before the models start and until the trainings
    the shutdown stops are recorded; the executors close before it."""
    settings = JobSettings(database=f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    store = JobStore(settings)
    reg = unstarted(["classy"], store)
    served = reg["classy"]

    async with reg.running():
        assert store.opened and not served.ready
        await reg.start()
        job = await served.start_training(classy_train_args(seconds=60.0), {})
        await asyncio.sleep(0.2)

    assert not store.opened and reg.draining
    again = JobStore(settings)
    await again.open()
    try:
        stopped = await again.get("classy", job.id)
    finally:
        await again.close()
    assert (stopped.status, stopped.message) == (
        "interrupted",
        INTERRUPTED_BY_SHUTDOWN,
    )


async def test_running_over_a_store_it_cannot_open_starts_nothing(fake_site):
    from deepserve.exceptions import JobStoreError

    reg = unstarted(["classy"], JobStore(JobSettings(database="nosuchdialect://x")))

    with pytest.raises(JobStoreError, match="nosuchdialect"):
        async with reg.running():
            pytest.fail("the body ran without a job store")

    assert not reg["classy"].ready


async def test_running_leaves_a_store_the_caller_opened_open(fake_site, tmp_path):
    store = JobStore(JobSettings(database=f"sqlite:///{tmp_path / 'jobs.sqlite'}"))
    await store.open()
    try:
        reg = unstarted(["classy"], store)
        async with reg.running():
            await reg.start()
        assert store.opened and reg.draining
    finally:
        await store.close()
