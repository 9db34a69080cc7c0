"""The process executor, driven directly: real spawn-started workers."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deepserve import loader
from deepserve.exceptions import DeadlineExceeded, LoaderError, WorkerDied
from deepserve.executors.processes import (
    DEEP_PIPELINE,
    FAST_CALL,
    PIPELINE,
    ProcessExecutor,
    pipeline_depth,
)
from deepserve.loader import ModelRef
from tests.checks import wait_for_pidfile
from tests.conftest import oldstyle_args, subprocess_env

#: Upper bound for anything that should happen "soon" (a worker to go, a
#: replacement to come up), generous for a loaded CI machine.
DEADLINE = 20.0

MakeExecutor = Callable[..., Awaitable[ProcessExecutor]]


def classy_args(x: float = 1.0) -> dict[str, Any]:
    return {"x": x, "label": "pos", "bad_output": False, "token": "t", "weights": []}


def is_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (not even as a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_gone(pid: int, timeout: float = DEADLINE) -> None:
    # Asynchronous: the executor reaps its workers on this event loop.
    deadline = time.monotonic() + timeout
    while not is_gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still exists"
        await asyncio.sleep(0.05)


def worker_children(name: str) -> list[multiprocessing.Process]:
    return [
        p
        for p in multiprocessing.active_children()
        if p.name == f"deepserve-worker[{name}]"
    ]


@pytest.fixture
def refs(fake_site: Path) -> dict[str, ModelRef]:
    return loader.discover(loader.installed_entry_points())


@pytest.fixture
async def make_executor(refs: dict[str, ModelRef]) -> AsyncIterator[MakeExecutor]:
    """Start executors of installed fake models; all are closed afterwards."""
    started: list[ProcessExecutor] = []

    async def make(name: str, **settings: Any) -> ProcessExecutor:
        executor = ProcessExecutor(refs[name], **settings)
        await executor.start()
        started.append(executor)
        return executor

    yield make
    for executor in started:
        await executor.close()


async def test_calls_spread_over_the_workers(make_executor: MakeExecutor) -> None:
    executor = await make_executor("oldstyle", workers=2)
    began = time.monotonic()
    results = await asyncio.gather(
        *(
            executor.call("predict", oldstyle_args(mode="sleep", text="0.5"))
            for _ in range(4)
        )
    )
    elapsed = time.monotonic() - began

    pids = {r["pid"] for r in results}
    assert len(pids) == 2
    assert os.getpid() not in pids
    # Four half-second calls on two workers: two rounds, not four.
    assert elapsed < 1.8
    assert [r["warm_calls"] for r in results] == [1, 1, 1, 1]


def test_fast_calls_get_a_deeper_pipeline() -> None:
    assert pipeline_depth(None) == PIPELINE  # nothing known yet
    assert pipeline_depth(0.0005) == DEEP_PIPELINE
    assert pipeline_depth(FAST_CALL) == PIPELINE
    assert pipeline_depth(0.5) == PIPELINE


async def test_a_worker_holds_more_fast_calls_than_slow_ones(
    make_executor: MakeExecutor,
) -> None:
    """Fast calls fill a worker's pipe deeper (it never idles waiting for a
    busy event loop); slow ones keep two, so that no call waits behind
    several slow ones while another worker may free up."""
    executor = await make_executor("oldstyle", workers=1)
    (worker,) = executor._workers
    held: list[int] = []

    async def burst(n: int, **args: Any) -> None:
        calls = [
            asyncio.ensure_future(executor.call("predict", oldstyle_args(**args)))
            for _ in range(n)
        ]
        await asyncio.sleep(0)
        while not all(c.done() for c in calls):
            held.append(len(worker.pending))
            await asyncio.sleep(0.001)
        await asyncio.gather(*calls)

    await burst(4, mode="sleep", text="0.05")
    assert worker.service is not None and worker.service >= 0.05
    assert max(held) == PIPELINE
    held.clear()
    for _ in range(5):  # the running average comes down
        await burst(20)
    assert worker.service is not None and worker.service < FAST_CALL
    held.clear()
    await burst(40)
    assert max(held) > PIPELINE
    assert max(held) <= DEEP_PIPELINE


async def test_warm_runs_once_per_worker_and_persists(
    make_executor: MakeExecutor,
) -> None:
    executor = await make_executor("oldstyle", workers=2)
    first = await asyncio.gather(
        *(
            executor.call("predict", oldstyle_args(mode="sleep", text="0.3"))
            for _ in range(2)
        )
    )
    pids = {r["pid"] for r in first}
    later = [await executor.call("predict", oldstyle_args()) for _ in range(5)]

    assert {r["pid"] for r in later} <= pids
    assert all(r["warm_calls"] == 1 for r in [*first, *later])


async def test_class_model_is_built_once_per_worker(
    make_executor: MakeExecutor,
) -> None:
    executor = await make_executor("classy", workers=1)
    results = [await executor.call("predict", classy_args(x)) for x in range(5)]

    assert [r["score"] for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert {r["warm_count"] for r in results} == {1}
    assert len({r["instance"] for r in results}) == 1


async def test_warm_can_be_switched_off(make_executor: MakeExecutor) -> None:
    oldstyle = await make_executor("oldstyle", workers=1, warm=False)
    classy = await make_executor("classy", workers=1, warm=False)

    assert (await oldstyle.call("predict", oldstyle_args()))["warm_calls"] == 0
    assert (await classy.call("predict", classy_args()))["warm_count"] == 0


async def test_worker_killed_from_outside_is_replaced(
    make_executor: MakeExecutor,
) -> None:
    executor = await make_executor("oldstyle", workers=1)
    old_pid = (await executor.call("predict", oldstyle_args()))["pid"]

    os.kill(old_pid, signal.SIGKILL)
    await wait_gone(old_pid)

    # The replacement comes up in the background; a call may meet the dead
    # worker first, but the pool must recover on its own.
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            result = await executor.call("predict", oldstyle_args())
            break
        except WorkerDied:
            assert time.monotonic() < deadline, "the dead worker was never replaced"
            await asyncio.sleep(0.1)
    assert result["pid"] != old_pid
    assert result["warm_calls"] == 1
    again = await executor.call("predict", oldstyle_args())
    assert again["pid"] == result["pid"]


async def test_call_after_an_idle_worker_died_does_not_fail(
    make_executor: MakeExecutor,
) -> None:
    """A worker that dies between calls costs no client request an error."""
    executor = await make_executor("oldstyle", workers=1)
    old_pid = (await executor.call("predict", oldstyle_args()))["pid"]

    os.kill(old_pid, signal.SIGKILL)
    await wait_gone(old_pid)

    result = await executor.call("predict", oldstyle_args())
    assert result["pid"] != old_pid


async def test_call_in_flight_when_the_worker_dies_raises_worker_died(
    make_executor: MakeExecutor,
) -> None:
    executor = await make_executor("oldstyle", workers=1)
    old_pid = (await executor.call("predict", oldstyle_args()))["pid"]

    with pytest.raises(WorkerDied, match="exited with code 3"):
        await executor.call("predict", oldstyle_args(mode="exit"))

    await wait_gone(old_pid)
    result = await executor.call("predict", oldstyle_args())
    assert result["pid"] != old_pid
    assert result["warm_calls"] == 1


async def test_call_past_its_deadline_kills_its_worker(
    make_executor: MakeExecutor,
) -> None:
    executor = await make_executor("oldstyle", workers=1)
    old_pid = (await executor.call("predict", oldstyle_args()))["pid"]

    began = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"within 0\.5 s"):
        await executor.call(
            "predict", oldstyle_args(mode="sleep", text="30"), timeout=0.5
        )
    assert time.monotonic() - began < 5

    await wait_gone(old_pid, timeout=10)
    result = await executor.call("predict", oldstyle_args())
    assert result["pid"] != old_pid
    assert time.monotonic() - began < 15  # not stuck behind the 30 s sleep


async def test_cancelled_call_lets_its_worker_finish(
    make_executor: MakeExecutor,
) -> None:
    """A caller that leaves (a client disconnecting) cannot kill workers."""
    executor = await make_executor("oldstyle", workers=1)
    old_pid = (await executor.call("predict", oldstyle_args()))["pid"]

    task = asyncio.create_task(
        executor.call("predict", oldstyle_args(mode="sleep", text="0.5"))
    )
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    result = await executor.call("predict", oldstyle_args())
    assert result["pid"] == old_pid


async def test_cancelled_queued_call_never_runs(make_executor: MakeExecutor) -> None:
    executor = await make_executor("oldstyle", workers=1)
    busy = asyncio.create_task(
        executor.call("predict", oldstyle_args(mode="sleep", text="0.5"))
    )
    await asyncio.sleep(0.1)
    queued = asyncio.create_task(executor.call("predict", oldstyle_args(mode="exit")))
    await asyncio.sleep(0.1)
    assert executor.depth == 1
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert executor.depth == 0
    first = await busy
    # Had the cancelled call run, it would have killed this worker.
    assert (await executor.call("predict", oldstyle_args()))["pid"] == first["pid"]


async def test_run_job_runs_in_its_own_process(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    executor = await make_executor("oldstyle", workers=1)
    pool_pid = (await executor.call("predict", oldstyle_args()))["pid"]
    pidfile = tmp_path / "job.pid"

    result = await executor.run_job(
        "train", {"epochs": 2, "pidfile": str(pidfile), "seconds": 0.0}
    )

    assert result == {"epochs": 2, "warm_calls": 1}
    job_pid = int(pidfile.read_text())
    assert job_pid not in (pool_pid, os.getpid())
    await wait_gone(job_pid, timeout=10)
    # The pool worker is untouched by the job.
    assert not is_gone(pool_pid)
    assert (await executor.call("predict", oldstyle_args()))["pid"] == pool_pid


async def test_cancelled_job_stops_its_process(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    executor = await make_executor("oldstyle", workers=1)
    pidfile = tmp_path / "job.pid"
    task = asyncio.create_task(
        executor.run_job(
            "train", {"epochs": 1, "pidfile": str(pidfile), "seconds": 60.0}
        )
    )
    job_pid = await wait_for_pidfile(pidfile)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_gone(job_pid, timeout=10)


async def test_close_leaves_no_child_processes(
    refs: dict[str, ModelRef], tmp_path: Path
) -> None:
    executor = ProcessExecutor(refs["oldstyle"], workers=2)
    await executor.start()
    try:
        results = await asyncio.gather(
            *(
                executor.call("predict", oldstyle_args(mode="sleep", text="0.3"))
                for _ in range(2)
            )
        )
        pids = {r["pid"] for r in results}
        assert len(pids) == 2
        pidfile = tmp_path / "job.pid"
        job = asyncio.create_task(
            executor.run_job(
                "train", {"epochs": 1, "pidfile": str(pidfile), "seconds": 60.0}
            )
        )
        pids.add(await wait_for_pidfile(pidfile))
    finally:
        await executor.close()

    assert [pid for pid in pids if not is_gone(pid)] == []
    assert not pids & {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(WorkerDied):
        await job
    with pytest.raises(WorkerDied):
        await executor.call("predict", oldstyle_args())


@pytest.fixture
def cold_model(tmp_path: Path) -> Iterator[ModelRef]:
    """A model whose ``warm()`` fails, importable from ``tmp_path``."""
    (tmp_path / "fake_coldwarm.py").write_text(
        "def warm():\n"
        "    raise RuntimeError('no weights')\n"
        "\n"
        "def predict(**kwargs):\n"
        "    return 1\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield ModelRef("coldwarm", "fake_coldwarm", "test")
    finally:
        sys.path.remove(str(tmp_path))


async def test_start_raises_loader_error_when_warm_fails(cold_model: ModelRef) -> None:
    executor = ProcessExecutor(cold_model, workers=2)
    try:
        with pytest.raises(LoaderError, match="'coldwarm' failed to start"):
            await executor.start()
        deadline = time.monotonic() + DEADLINE
        while worker_children("coldwarm"):
            assert time.monotonic() < deadline, "failed workers left running"
            await asyncio.sleep(0.05)
    finally:
        await executor.close()


async def test_start_failure_says_why(cold_model: ModelRef) -> None:
    """The operator learns what went wrong, not only that something did."""
    executor = ProcessExecutor(cold_model, workers=1)
    try:
        with pytest.raises(LoaderError) as excinfo:
            await executor.start()
    finally:
        await executor.close()
    assert "RuntimeError" in str(excinfo.value)
    assert "no weights" in str(excinfo.value)


def test_exit_without_close_leaves_no_worker_behind(fake_site: Path) -> None:
    """An orderly shutdown cut short (a second Ctrl-C during cleanup) must
    not hang the server at exit, nor leave its workers running."""
    script = (
        "import asyncio\n"
        "from deepserve import loader\n"
        "from deepserve.executors.processes import ProcessExecutor\n"
        "async def main():\n"
        "    ref = loader.discover(loader.installed_entry_points())['classy']\n"
        "    executor = ProcessExecutor(ref, workers=2)\n"
        "    await executor.start()\n"
        "    print(' '.join(str(p) for p in executor.pids()), flush=True)\n"
        "asyncio.run(main())\n"  # no close(): the interpreter just exits
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(fake_site),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2
    assert all(is_gone(pid) for pid in pids)
