"""Stored models for the Open Inference Protocol tests: typed tensors in and out.

Saved to a model store by ``tests/oip/test_interop.py`` and loaded by the
server's workers, which import this module (``tests/fakes`` is on their
``PYTHONPATH``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy

#: Mixer's tensors: FP32, INT64 and BYTES inputs, one output of each.
MIXER_TENSORS = {
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "n", "datatype": "INT64", "shape": [-1]},
        {"name": "word", "datatype": "BYTES", "shape": [-1]},
    ],
    "outputs": [
        {"name": "scaled", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "total", "datatype": "INT64", "shape": [1]},
        {"name": "shout", "datatype": "BYTES", "shape": [-1]},
    ],
}

#: Stamper's tensors: rows of FP32 in, as many rows out.
STAMPER_TENSORS = {
    "inputs": [{"name": "rows", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "stamped", "datatype": "FP32", "shape": [-1, 2]}],
}


class Mixer:
    """Several named inputs of several datatypes, one output per key."""

    def predict(self, data: dict[str, Any]) -> dict[str, Any]:
        x, n, words = data["x"], data["n"], data["word"]
        return {
            "scaled": (x * n[:, None]).astype(numpy.float32),
            "total": numpy.array([n.sum()], dtype=numpy.int64),
            "shout": [f"{word.upper()}!" for word in words],
        }


class Stamper:
    """A batchable model: each row ``r`` gives ``10 * r + 1``.

    Each call sleeps a little, so that concurrent requests queue up behind
    it and are merged into the next batch.
    """

    def __init__(self, pause: float) -> None:
        self.pause = pause

    def predict(self, rows: Any) -> Any:
        time.sleep(self.pause)
        return numpy.asarray(rows, dtype=numpy.float32) * 10 + 1
