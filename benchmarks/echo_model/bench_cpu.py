"""The ``cpu`` model of deepserve's benchmarks: CPU-bound pure Python.

Every ``predict`` does the same fixed amount of pure-Python work (a loop of
:data:`LOOPS` integer steps, about 20 ms on the 2-vCPU machine of
RESULTS.md) and holds the GIL all along, so only more worker processes, not
threads, can serve more of them at once. The work is a count of steps, not
a time: a call that gets less CPU takes longer instead of doing less.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields

#: Steps of one prediction: about 20 ms of CPython 3.11 on a 2-vCPU Xeon VM.
LOOPS = 200_000


def get_metadata() -> dict[str, Any]:
    return {
        "name": "cpu",
        "description": f"{LOOPS} steps of pure-Python work per prediction.",
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


def work(loops: int = LOOPS) -> int:
    """The CPU-bound part: ``loops`` steps of integer arithmetic."""
    acc = 0
    for i in range(loops):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


def predict(**kwargs: Any) -> dict[str, Any]:
    return {"echo": kwargs["text"], "work": work()}
