"""The ray executor's own queue, without a cluster: Ray's handle is the
boundary, replaced here by one whose calls the test answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deepserve.exceptions import (
    BadModelOutput,
    DeadlineExceeded,
    NotRunning,
    WorkerDied,
)
from deepserve.executors.messages import Answer, Expired, Failure
from deepserve.executors.rayserve.executor import RayExecutor
from deepserve.loader import ModelRef
from deepserve.settings import ExecutorSettings, RaySettings


class Response:
    """A Serve response the test resolves."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args = args
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.cancelled = False

    def __await__(self) -> Any:
        return self.future.__await__()

    def cancel(self) -> None:
        self.cancelled = True


class Method:
    def __init__(self) -> None:
        self.sent: list[Response] = []

    def remote(self, *args: Any) -> Response:
        response = Response(args)
        self.sent.append(response)
        return response


class Handle:
    def __init__(self) -> None:
        self.call = Method()


class ActorDied(Exception):
    def __init__(self, actor_id: str) -> None:
        super().__init__("The actor died unexpectedly before finishing this task.")
        self.actor_id = actor_id


def started(replicas: int = 1, per_replica: int = 2) -> tuple[RayExecutor, Handle]:
    settings = ExecutorSettings(
        kind="ray", ray=RaySettings(address="x:1", max_ongoing_requests=per_replica)
    )
    executor = RayExecutor(ModelRef("m", "m", "builtin"), settings)
    handle = Handle()
    # What start() leaves behind, without a cluster.
    executor._handle = handle
    executor._replicas = replicas
    executor._started = True
    return executor, handle


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_never_more_calls_in_ray_than_replicas_times_max_ongoing():
    executor, handle = started(replicas=2, per_replica=2)
    assert executor.capacity == 4
    calls = [
        asyncio.ensure_future(executor.call("predict", {"i": i})) for i in range(7)
    ]
    await settle()
    assert [r.args[1]["i"] for r in handle.call.sent] == [0, 1, 2, 3]
    assert executor.depth == 3
    handle.call.sent[1].future.set_result(Answer("one"))
    await settle()
    # FIFO: the next in line goes, one for one.
    assert [r.args[1]["i"] for r in handle.call.sent] == [0, 1, 2, 3, 4]
    assert executor.depth == 2
    assert await calls[1] == "one"
    for response in handle.call.sent:
        if not response.future.done():
            response.future.set_result(Answer(response.args[1]["i"]))
    await settle()
    for response in handle.call.sent[5:]:
        if not response.future.done():
            response.future.set_result(Answer(response.args[1]["i"]))
    assert [await c for c in calls] == [0, "one", 2, 3, 4, 5, 6]
    assert executor.depth == 0 and executor._in_ray == 0


async def test_more_replicas_let_more_calls_in():
    executor, handle = started(replicas=1, per_replica=1)
    calls = [asyncio.ensure_future(executor.call("predict", {})) for _ in range(3)]
    await settle()
    assert len(handle.call.sent) == 1
    executor._replicas = 3  # what the watcher does when Serve scales up
    executor._admit()
    await settle()
    assert len(handle.call.sent) == 3
    for response in handle.call.sent:
        response.future.set_result(Answer(None))
    await asyncio.gather(*calls)


async def test_a_caller_that_leaves_the_queue_gives_its_turn_up():
    executor, handle = started(replicas=1, per_replica=1)
    first = asyncio.ensure_future(executor.call("predict", {"i": 0}))
    second = asyncio.ensure_future(executor.call("predict", {"i": 1}))
    third = asyncio.ensure_future(executor.call("predict", {"i": 2}))
    await settle()
    second.cancel()
    await settle()
    assert executor.depth == 1
    handle.call.sent[0].future.set_result(Answer(0))
    await settle()
    # The one that left never reached Ray.
    assert [r.args[1]["i"] for r in handle.call.sent] == [0, 2]
    handle.call.sent[1].future.set_result(Answer(2))
    assert (await first, await third) == (0, 2)


async def test_a_running_call_whose_caller_left_runs_to_its_end():
    executor, handle = started(replicas=1, per_replica=1)
    call = asyncio.ensure_future(executor.call("predict", {}))
    await settle()
    call.cancel()
    next_one = asyncio.ensure_future(executor.call("predict", {}))
    await settle()
    response = handle.call.sent[0]
    assert not response.cancelled  # a client leaving never kills a replica
    # Its place in Ray stays taken until it ends: Serve never queues.
    assert len(handle.call.sent) == 1 and executor.depth == 1
    response.future.set_result(Answer(1))
    await settle()
    assert len(handle.call.sent) == 2
    handle.call.sent[1].future.set_result(Answer(2))
    assert await next_one == 2
    assert executor._in_ray == 0


async def test_an_answer_that_cannot_come_back_is_the_model_s_fault():
    class RayTaskError(Exception):
        pass

    executor, handle = started(replicas=1, per_replica=1)
    call = asyncio.ensure_future(executor.call("predict", {}))
    await settle()
    handle.call.sent[0].future.set_exception(RayTaskError("cannot pickle 'generator'"))
    with pytest.raises(BadModelOutput, match="cannot be sent"):
        await call
    assert executor.restarts == 0


async def test_failures_and_deaths():
    executor, handle = started(replicas=1, per_replica=3)
    failing = asyncio.ensure_future(executor.call("predict", {}))
    dying = [asyncio.ensure_future(executor.call("predict", {})) for _ in range(2)]
    expired = asyncio.ensure_future(executor.call("predict", {}, timeout=5))
    await settle()
    handle.call.sent[0].future.set_result(Failure(NotRunning("m", "model said no")))
    with pytest.raises(NotRunning):
        await failing
    for response in handle.call.sent[1:3]:
        response.future.set_exception(ActorDied("aa"))
    for call in dying:
        with pytest.raises(WorkerDied, match="its Ray replica died"):
            await call
    assert executor.restarts == 1  # one replica, counted once
    await settle()
    handle.call.sent[3].future.set_result(
        Expired(DeadlineExceeded("m", 5), replica="bb")
    )
    with pytest.raises(DeadlineExceeded):
        await expired
    assert executor.restarts == 2
    # The replica enforces the deadline: the call carried what was left of it.
    assert 4 < handle.call.sent[3].args[3] <= 5


async def test_a_deadline_spent_waiting_in_the_queue():
    executor, handle = started(replicas=1, per_replica=1)
    first = asyncio.ensure_future(executor.call("predict", {}))
    await settle()
    with pytest.raises(DeadlineExceeded):
        await executor.call("predict", {}, timeout=0.05)
    assert len(handle.call.sent) == 1 and executor.depth == 0
    handle.call.sent[0].future.set_result(Answer(1))
    assert await first == 1


async def test_unavailable_and_closed():
    executor, handle = started(replicas=1, per_replica=1)
    running = asyncio.ensure_future(executor.call("predict", {}))
    waiting = asyncio.ensure_future(executor.call("predict", {}))
    await settle()
    executor._set_problem("its Ray Serve application is gone")
    assert executor.unavailable == "its Ray Serve application is gone"
    with pytest.raises(NotRunning, match="application is gone"):
        await executor.call("predict", {})
    executor._closed = True
    executor._jobs = _NoJobs()  # type: ignore[assignment]
    await executor.close()
    with pytest.raises(NotRunning, match="stopping"):
        await waiting
    handle.call.sent[0].future.set_result(Answer(1))
    assert await running == 1


class _NoJobs:
    async def close(self) -> None:
        pass
