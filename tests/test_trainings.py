"""One model's trainings over a real job store, run by plain coroutines: the
jobs package records, watches and stops trainings with no executor at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from deepserve.exceptions import JobNotFound
from deepserve.jobs import INTERRUPTED_BY_SHUTDOWN, JobStore, TrainingJob, Trainings
from deepserve.jobs.trainings import TrainingOutput
from deepserve.model import Method
from deepserve.settings import JobSettings

DEADLINE = 10.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    jobs = JobStore(JobSettings(database=f"sqlite:///{tmp_path / 'jobs.sqlite'}"))
    await jobs.open()
    try:
        yield jobs
    finally:
        await jobs.close()


async def finished(trainings: Trainings, job: TrainingJob) -> TrainingJob:
    deadline = time.monotonic() + DEADLINE
    while (job := await trainings.job(job.id)).status == "running":
        assert time.monotonic() < deadline, f"training {job.id} still running"
        await asyncio.sleep(0.02)
    return job


async def until_cleaned(cleaned: list[str]) -> None:
    while not cleaned:
        await asyncio.sleep(0.01)


async def test_a_training_runs_and_its_output_and_result_are_recorded(
    store: JobStore,
) -> None:
    calls: list[tuple[Method, dict[str, Any]]] = []

    async def run(
        method: Method, kwargs: Mapping[str, Any], *, watch: TrainingOutput
    ) -> Any:
        calls.append((method, dict(kwargs)))
        watch.started()
        watch.output("stdout", "epoch 1", None, time.time())
        watch.output("log", "loss 0.5", "INFO", time.time())
        return {"loss": 0.5}

    trainings = Trainings("m", run, store)
    cleaned: list[str] = []
    job = await trainings.start(
        {"epochs": 1}, {"epochs": 1}, lambda: cleaned.append("done")
    )
    job = await finished(trainings, job)
    await asyncio.wait_for(until_cleaned(cleaned), DEADLINE)

    assert calls == [("train", {"epochs": 1})]
    assert (job.model, job.status, job.result) == ("m", "done", {"loss": 0.5})
    assert job.started is not None and job.owner == store.owner
    logs = await trainings.logs(job.id)
    assert [(e.stream, e.text, e.level) for e in logs.entries] == [
        ("stdout", "epoch 1", None),
        ("log", "loss 0.5", "INFO"),
    ]
    assert [j.id for j in (await trainings.jobs()).jobs] == [job.id]
    with pytest.raises(JobNotFound):
        await Trainings("other", run, store).job(job.id)


async def test_interrupt_stops_the_run_and_records_it_interrupted(
    store: JobStore,
) -> None:
    began = asyncio.Event()
    stopped: list[str] = []

    async def run(
        method: Method, kwargs: Mapping[str, Any], *, watch: TrainingOutput
    ) -> Any:
        began.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append(method)
            raise

    trainings = Trainings("m", run, store)
    cleaned: list[str] = []
    job = await trainings.start({}, {}, lambda: cleaned.append("done"))
    await asyncio.wait_for(began.wait(), DEADLINE)

    await trainings.interrupt()

    assert stopped == ["train"]
    assert cleaned == ["done"]
    job = await trainings.job(job.id)
    assert (job.status, job.message) == ("interrupted", INTERRUPTED_BY_SHUTDOWN)
    assert job.finished is not None
