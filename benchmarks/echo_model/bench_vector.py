"""The ``vector`` model of deepserve's benchmarks: a fixed cost per call.

Like a model that runs a whole batch in one vectorised step (a GPU kernel,
a NumPy call), each call of :func:`predict_batch` costs :data:`CALL_S`
whatever its size, plus a small :data:`ITEM_S` per item; both are sleeps,
so the cost is the same however busy the CPUs are. :func:`predict` is a
batch of one, so without batching every prediction pays the full call.

The module attribute :data:`batching` is deepserve's per-model default
(the command line or a ``[model:vector]`` section may override it).

An item whose ``text`` is :data:`STATS` gets, instead of its echo, how many
calls and items this worker process has run so far (and the two costs): the
benchmark reads it before and after a load run to work out the mean batch
size.
"""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

#: Fixed cost of one call, seconds.
CALL_S = 0.010
#: Added cost per item of a call, seconds.
ITEM_S = 0.000_05
#: Batching defaults for deepserve.
batching = {"max_batch_size": 64, "max_latency_ms": 5}
#: The ``text`` that asks for the counters.
STATS = "__stats__"

_calls = 0
_items = 0


def call_seconds(size: int) -> float:
    """What a call with ``size`` items costs."""
    return CALL_S + ITEM_S * size


def get_metadata() -> dict[str, Any]:
    return {
        "name": "vector",
        "description": (
            f"{CALL_S * 1000:g} ms per call plus {ITEM_S * 1000:g} ms per item."
        ),
        "author": "deepserve benchmarks",
        "license": "Apache-2.0",
        "version": "1.0",
    }


def get_predict_args() -> dict[str, fields.Field]:
    return {
        "text": fields.Str(
            load_default="x", metadata={"description": "Text to echo back."}
        ),
    }


def predict_batch(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    global _calls, _items
    time.sleep(call_seconds(len(items)))
    _calls += 1
    _items += len(items)
    return [
        {"calls": _calls, "items": _items, "call_s": CALL_S, "item_s": ITEM_S}
        if item.get("text") == STATS
        else {"echo": item.get("text", "x")}
        for item in items
    ]


def predict(**kwargs: Any) -> dict[str, Any]:
    return predict_batch([kwargs])[0]
