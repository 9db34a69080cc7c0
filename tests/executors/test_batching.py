"""Adaptive batching: the pure merge/split logic, then the batching executor
driven directly over real executors of the ``batchy`` fake model."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from deepserve import adapters, loader
from deepserve.exceptions import (
    BadModelOutput,
    DeadlineExceeded,
    ModelFailed,
    ModelHTTPError,
    WorkerDied,
)
from deepserve.executors import Executor
from deepserve.executors.batching import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LATENCY_MS,
    BatchingExecutor,
    BatchPolicy,
    Item,
    batch_request_id,
    merge,
    split,
    take,
)
from deepserve.executors.inline import InlineExecutor
from deepserve.executors.processes import ProcessExecutor
from deepserve.loader import ModelRef

#: Upper bound for anything that should happen "soon" on a loaded machine.
DEADLINE = 20.0

MakeBatcher = Callable[..., Awaitable[BatchingExecutor]]


# -- the pure part -------------------------------------------------------------


def new_item(value: int, *, arrived: float = 0.0) -> Item:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    return Item({"x": value}, future, arrived)


def values(items: list[Item] | collections.deque[Item]) -> list[int]:
    return [item.kwargs["x"] for item in items]


async def test_a_batch_request_id_names_each_request_once_in_order() -> None:
    def item(request_id: str | None) -> Item:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        return Item({}, future, 0.0, request_id)

    assert batch_request_id([item("a"), item(None), item("b"), item("a")]) == "a,b"
    assert batch_request_id([item(None), item(None)]) is None
    assert batch_request_id([]) is None


def test_policy_defaults() -> None:
    policy = BatchPolicy()

    assert policy.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert policy.max_latency == pytest.approx(DEFAULT_MAX_LATENCY_MS / 1000)


def test_policy_is_frozen() -> None:
    policy = BatchPolicy(4, 0.01)

    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_batch_size = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("size", "latency", "problem"),
    [
        (0, 0.01, "max_batch_size"),
        (-3, 0.01, "max_batch_size"),
        (4, -0.001, "max_latency"),
    ],
)
def test_policy_rejects_invalid_values(size: int, latency: float, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        BatchPolicy(size, latency)


def test_policy_accepts_the_smallest_valid_values() -> None:
    policy = BatchPolicy(1, 0.0)

    assert (policy.max_batch_size, policy.max_latency) == (1, 0.0)


async def test_take_pops_the_oldest_items_up_to_the_size() -> None:
    pending = collections.deque(new_item(x) for x in range(6))

    batch = take(pending, 4)

    assert values(batch) == [0, 1, 2, 3]
    assert values(pending) == [4, 5]
    assert values(take(pending, 4)) == [4, 5]
    assert not pending


async def test_take_from_nothing_is_an_empty_batch() -> None:
    pending: collections.deque[Item] = collections.deque()

    assert take(pending, 4) == []


async def test_take_drops_items_whose_caller_left() -> None:
    items = [new_item(x) for x in range(6)]
    items[1].future.cancel()  # the client disconnected
    items[2].future.set_result("late")  # answered elsewhere
    pending = collections.deque(items)

    batch = take(pending, 3)

    assert values(batch) == [0, 3, 4]
    # The unwanted ones are gone for good; the rest waits, in order.
    assert values(pending) == [5]
    assert all(item.wanted for item in batch)


async def test_take_empties_a_queue_of_unwanted_items() -> None:
    items = [new_item(x) for x in range(3)]
    for item in items:
        item.future.cancel()
    pending = collections.deque(items)

    # Unwanted items do not count towards the size: the search goes on.
    assert take(pending, 2) == []
    assert not pending


async def test_wanted_follows_the_callers_future() -> None:
    item = new_item(1)
    assert item.wanted
    item.future.set_result("done")
    assert not item.wanted


async def test_merge_lists_each_items_arguments_in_order() -> None:
    items = [
        Item(
            types.MappingProxyType({"x": x, "delay": 0.0}),
            asyncio.get_running_loop().create_future(),
            0.0,
        )
        for x in (3, 1, 2)
    ]

    merged = merge(items)

    assert merged == {
        "items": [
            {"x": 3, "delay": 0.0},
            {"x": 1, "delay": 0.0},
            {"x": 2, "delay": 0.0},
        ]
    }
    assert all(type(kwargs) is dict for kwargs in merged["items"])
    # Copies: the model may scribble on them without touching a request.
    merged["items"][0]["x"] = 99
    assert items[0].kwargs["x"] == 3


async def test_merge_of_nothing_is_an_empty_list() -> None:
    assert merge([]) == {"items": []}


def test_split_pairs_each_result_with_its_item() -> None:
    assert split("batchy", ["a", "b", {"c": 1}], 3) == [
        (True, "a"),
        (True, "b"),
        (True, {"c": 1}),
    ]


def test_split_accepts_a_tuple() -> None:
    assert split("batchy", ("a", "b"), 2) == [(True, "a"), (True, "b")]


def test_split_keeps_results_that_are_none_or_falsy() -> None:
    assert split("batchy", [None, 0, ""], 3) == [(True, None), (True, 0), (True, "")]


def test_split_fails_only_the_items_with_an_error() -> None:
    bad = ModelHTTPError("batchy", 400, "negative")
    worse = ModelFailed("batchy", "ValueError", "bad x -1")

    outcomes = split("batchy", ["a", bad, "c", worse], 4)

    assert outcomes == [(True, "a"), (False, bad), (True, "c"), (False, worse)]


@pytest.mark.parametrize("results", [[], ["a"], ["a", "b", "c", "d"]])
def test_split_fails_every_item_when_the_count_is_wrong(results: list[str]) -> None:
    outcomes = split("batchy", results, 3)

    assert len(outcomes) == 3
    for ok, error in outcomes:
        assert ok is False
        assert isinstance(error, BadModelOutput)
        assert error.model == "batchy"
        assert f"list of 3 results, got {len(results)} results" in str(error)


@pytest.mark.parametrize(
    ("results", "name"), [(None, "NoneType"), ({"a": 1}, "dict"), ("ab", "str")]
)
def test_split_fails_every_item_when_the_result_is_not_a_list(
    results: object, name: str
) -> None:
    outcomes = split("batchy", results, 2)

    assert len(outcomes) == 2
    for ok, error in outcomes:
        assert ok is False
        assert isinstance(error, BadModelOutput)
        assert name in str(error)
        assert "batchy" in str(error)


# -- the executor around it ------------------------------------------------------


@pytest.fixture
def batchy(fake_site: Path) -> ModelRef:
    return loader.discover(loader.installed_entry_points())["batchy"]


@pytest.fixture
async def make_batcher(batchy: ModelRef) -> AsyncIterator[MakeBatcher]:
    """Start batching executors over real executors; all closed afterwards."""
    started: list[BatchingExecutor] = []

    async def make(
        kind: str = "inline",
        policy: BatchPolicy | None = None,
        *,
        workers: int = 1,
        timeout: float | None = None,
    ) -> BatchingExecutor:
        inner: Executor
        if kind == "inline":
            inner = InlineExecutor(batchy, adapters.build(batchy))
        else:
            inner = ProcessExecutor(batchy, workers=workers)
        batcher = BatchingExecutor(
            inner, policy or BatchPolicy(4, 0.05), model="batchy", timeout=timeout
        )
        await batcher.start()
        started.append(batcher)
        return batcher

    yield make
    for batcher in started:
        await batcher.close()


def predict(
    batcher: BatchingExecutor, x: int, delay: float = 0.0, **kw: Any
) -> asyncio.Task[Any]:
    return asyncio.ensure_future(
        batcher.call("predict", {"x": x, "delay": delay}, **kw)
    )


def by_batch(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Results grouped by the batch they were in, each group by position."""
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for result in results:
        groups[result["batch"]].append(result)
    return {b: sorted(g, key=lambda r: r["position"]) for b, g in groups.items()}


def batch_number(batch: str) -> int:
    return int(batch.rsplit("-", 1)[1])


@pytest.mark.parametrize("kind", ["inline", "process"])
async def test_concurrent_calls_are_batched_fifo_and_answered_to_their_caller(
    make_batcher: MakeBatcher, kind: str
) -> None:
    # A size the model does not declare: the policy given is the one obeyed.
    batcher = await make_batcher(kind, BatchPolicy(7, 0.02), workers=2)
    tasks = []
    for x in range(200):
        tasks.append(predict(batcher, x))
        if x % 9 == 0:
            await asyncio.sleep(0)  # let batches form while calls arrive
    results = await asyncio.gather(*tasks)

    # Every caller gets its own answer.
    assert [r["x"] for r in results] == list(range(200))
    assert [r["double"] for r in results] == [2 * x for x in range(200)]
    groups = by_batch(results)
    for batch, members in groups.items():
        size = members[0]["size"]
        assert 1 <= size <= 7, f"batch {batch} has {size} items"
        # Every member of a batch was one of ours, each in its own place...
        assert len(members) == size
        assert [m["position"] for m in members] == list(range(size))
        # ...and batches are taken first come, first served: consecutive
        # callers, oldest first.
        xs = [m["x"] for m in members]
        assert xs == list(range(xs[0], xs[0] + size)), f"batch {batch}: {xs}"
    # Under load, batches fill up.
    assert max(m[0]["size"] for m in groups.values()) == 7
    assert len(groups) < 100
    if kind == "inline":
        # One worker: batch after batch, oldest callers first.
        ordered = sorted(groups.values(), key=lambda m: batch_number(m[0]["batch"]))
        assert [m["x"] for members in ordered for m in members] == list(range(200))


async def test_batches_never_exceed_the_size_under_a_burst(
    make_batcher: MakeBatcher,
) -> None:
    batcher = await make_batcher("process", BatchPolicy(4, 0.05), workers=2)

    results = await asyncio.gather(*(predict(batcher, x) for x in range(200)))

    assert [r["x"] for r in results] == list(range(200))
    sizes = collections.Counter(r["batch"] for r in results)
    assert max(sizes.values()) <= 4
    assert all(r["size"] == sizes[r["batch"]] for r in results)
    assert len(sizes) >= 50


async def test_a_full_batch_goes_without_waiting(make_batcher: MakeBatcher) -> None:
    batcher = await make_batcher("inline", BatchPolicy(4, 30.0))

    began = time.monotonic()
    results = await asyncio.gather(*(predict(batcher, x) for x in range(4)))

    assert time.monotonic() - began < 5
    assert len({r["batch"] for r in results}) == 1
    assert [r["size"] for r in results] == [4, 4, 4, 4]


async def test_a_lone_call_waits_at_most_max_latency(
    make_batcher: MakeBatcher,
) -> None:
    batcher = await make_batcher("inline", BatchPolicy(4, 0.2))

    began = time.monotonic()
    result = await predict(batcher, 5, delay=0.1)
    elapsed = time.monotonic() - began

    assert result["x"] == 5
    assert result["size"] == 1
    # max_latency plus one model call, plus slack for a loaded machine.
    assert elapsed < 0.2 + 0.1 + 0.4


async def test_a_call_arriving_within_max_latency_joins_the_batch(
    make_batcher: MakeBatcher,
) -> None:
    batcher = await make_batcher("inline", BatchPolicy(4, 1.0))

    first = predict(batcher, 1)
    await asyncio.sleep(0.05)
    second = predict(batcher, 2)
    results = await asyncio.gather(first, second)

    assert results[0]["batch"] == results[1]["batch"]
    assert [(r["x"], r["position"], r["size"]) for r in results] == [
        (1, 0, 2),
        (2, 1, 2),
    ]


async def test_an_item_error_fails_only_its_caller(make_batcher: MakeBatcher) -> None:
    batcher = await make_batcher("inline", BatchPolicy(4, 5.0))

    results: tuple[Any, ...] = await asyncio.gather(
        predict(batcher, 1),
        predict(batcher, -1),
        predict(batcher, -400),
        predict(batcher, 2),
        return_exceptions=True,
    )

    good_first, failed, refused, good_last = results
    assert good_first["x"] == 1 and good_last["x"] == 2
    # The good ones shared the batch with the failing ones.
    assert good_first["batch"] == good_last["batch"]
    assert good_first["size"] == 4
    assert isinstance(failed, ModelFailed)
    assert failed.model == "batchy"
    assert failed.error_type == "ValueError"
    assert "bad x -1" in failed.detail
    assert isinstance(refused, ModelHTTPError)
    assert refused.status == 400
    assert "negative" in str(refused)


async def test_a_raising_batch_fails_every_caller_of_that_batch_only(
    make_batcher: MakeBatcher,
) -> None:
    batcher = await make_batcher("inline", BatchPolicy(4, 5.0))

    doomed = [predict(batcher, x) for x in (1, 999, 2, 3)]
    spared = [predict(batcher, x) for x in (4, 5, 6, 7)]
    results: list[Any] = await asyncio.gather(*doomed, *spared, return_exceptions=True)

    for error in results[:4]:
        assert isinstance(error, ModelFailed), error
        assert error.model == "batchy"
        assert error.error_type == "RuntimeError"
        assert "the whole batch failed" in error.detail
    assert [r["x"] for r in results[4:]] == [4, 5, 6, 7]


@pytest.mark.parametrize("kind", ["inline", "process"])
async def test_a_wrong_result_count_fails_the_batch_with_bad_model_output(
    make_batcher: MakeBatcher, kind: str
) -> None:
    batcher = await make_batcher(kind, BatchPolicy(4, 5.0))

    doomed = [predict(batcher, x) for x in (1, 998, 2, 3)]
    spared = [predict(batcher, x) for x in (4, 5, 6, 7)]
    results: list[Any] = await asyncio.gather(*doomed, *spared, return_exceptions=True)

    for error in results[:4]:
        assert isinstance(error, BadModelOutput), error
        assert error.model == "batchy"
        assert "list of 4 results, got 0 results" in str(error)
    assert [r["x"] for r in results[4:]] == [4, 5, 6, 7]


async def test_a_caller_gone_before_its_batch_forms_is_not_sent(
    make_batcher: MakeBatcher,
) -> None:
    batcher = await make_batcher("inline", BatchPolicy(4, 0.5))

    tasks = [predict(batcher, x) for x in (1, 2, 3)]
    await asyncio.sleep(0)  # each task's first step queues its call
    tasks[1].cancel()
    first, third = await asyncio.gather(tasks[0], tasks[2])

    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert first["batch"] == third["batch"]
    assert [(r["x"], r["position"], r["size"]) for r in (first, third)] == [
        (1, 0, 2),
        (3, 1, 2),
    ]


async def test_a_caller_past_its_deadline_is_not_sent(
    make_batcher: MakeBatcher,
) -> None:
    batcher = await make_batcher("inline", BatchPolicy(4, 1.0))

    began = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="batchy"):
        await predict(batcher, 1, timeout=0.05)
    assert time.monotonic() - began < 0.9
    result = await predict(batcher, 2)

    assert (result["x"], result["size"]) == (2, 1)
    assert batcher.depth == 0


async def test_a_batch_past_the_deadline_fails_and_the_worker_recovers(
    make_batcher: MakeBatcher,
) -> None:
    batcher = await make_batcher("process", BatchPolicy(4, 0.01), timeout=0.5)

    began = time.monotonic()
    results = await asyncio.gather(
        predict(batcher, 1, delay=30.0), predict(batcher, 2), return_exceptions=True
    )

    assert time.monotonic() - began < 10  # not stuck behind the 30 s sleep
    assert all(isinstance(r, DeadlineExceeded) for r in results), results
    # The deadline counts the time a call waits for the replacement worker
    # to spawn, so calls may time out until it is up (slow on a busy machine).
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            again = await predict(batcher, 3)
        except DeadlineExceeded:
            assert time.monotonic() < deadline, "no worker ever answered again"
        else:
            break
    assert again["x"] == 3


async def test_depth_counts_the_calls_no_worker_can_take_yet(
    make_batcher: MakeBatcher,
) -> None:
    """What one round of batches takes is not queued; the rest is."""
    batcher = await make_batcher("process", BatchPolicy(2, 0.01))
    assert (await predict(batcher, 0))["x"] == 0  # the worker is up
    running = [predict(batcher, x, delay=1.0) for x in (1, 2)]
    waiting = [predict(batcher, x) for x in (3, 4, 5)]
    await asyncio.sleep(0)

    assert batcher.depth == 3
    waiting[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    assert batcher.depth == 2

    results = await asyncio.gather(*running, *waiting[1:])
    assert [r["x"] for r in results] == [1, 2, 4, 5]
    assert results[0]["batch"] == results[1]["batch"]
    assert results[2]["batch"] == results[3]["batch"]
    assert batcher.depth == 0


async def test_close_fails_waiting_calls_with_worker_died(
    make_batcher: MakeBatcher,
) -> None:
    batcher = await make_batcher("inline", BatchPolicy(4, 30.0))
    tasks = [predict(batcher, x) for x in (1, 2)]
    await asyncio.sleep(0)  # each task's first step queues its call

    await batcher.close()

    for task in tasks:
        with pytest.raises(WorkerDied, match="batchy"):
            await asyncio.wait_for(task, DEADLINE)
    with pytest.raises(WorkerDied):
        await predict(batcher, 3)


async def test_close_fails_the_calls_of_a_running_batch(
    make_batcher: MakeBatcher,
) -> None:
    """A batch in a worker when the server stops answers too; it never hangs."""
    batcher = await make_batcher("process", BatchPolicy(4, 0.01))
    assert (await predict(batcher, 0))["x"] == 0  # the worker is up
    task = predict(batcher, 1, delay=30.0)
    # The batch leaves after max_latency (10 ms); nothing shows that it has
    # reached the worker, so give it ample time to.
    await asyncio.sleep(0.5)
    assert not task.done()

    began = time.monotonic()
    await batcher.close()

    with pytest.raises(WorkerDied, match="batchy"):
        await asyncio.wait_for(task, 5)
    assert time.monotonic() - began < 10
