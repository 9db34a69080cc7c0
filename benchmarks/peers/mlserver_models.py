"""The benchmark models as MLServer custom runtimes (issue 13's peers).

Each runtime calls the functions of the ``echo_model`` package that deepserve
serves (``bench_echo``, ``bench_cpu``, ``bench_vector``), so the work per
prediction is the same. Requests and answers use the Open Inference Protocol
(V2) that MLServer speaks: one ``BYTES`` input ``text`` of shape ``[n]``, one
``BYTES`` output ``prediction`` of shape ``[n, 1]`` holding each item's
answer as JSON (``{"echo": "hello"}``), so the benchmark reads every model's
answer the same way.

run.py writes the model settings (``model-settings.json``, with
``max_batch_size`` and ``max_batch_time`` for ``vector``: MLServer's adaptive
batching) and points ``implementation`` to the classes below, with this
directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import bench_cpu
import bench_echo
import bench_vector
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

INPUT = "text"
OUTPUT = "prediction"


def texts(payload: InferenceRequest) -> list[str]:
    """The ``text`` input of a request (a batch of them, when batched)."""
    for request_input in payload.inputs:
        if request_input.name == INPUT:
            return [str(t) for t in StringCodec.decode_input(request_input)]
    raise ValueError(f"no input named {INPUT!r}")


def response(name: str, answers: Sequence[dict[str, Any]]) -> InferenceResponse:
    """Each answer as one JSON string of the ``prediction`` output."""
    encoded = [json.dumps(a) for a in answers]
    return InferenceResponse(
        model_name=name, outputs=[StringCodec.encode_output(OUTPUT, encoded)]
    )


class _PerItem(MLModel):
    """A model called once per item (no batching): ``predict(text=...)``."""

    model_predict: Callable[..., dict[str, Any]]

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return response(
            self.name, [type(self).model_predict(text=t) for t in texts(payload)]
        )


class Echo(_PerItem):
    """``bench_echo.predict``: returns ``{"echo": text}``."""

    model_predict = staticmethod(bench_echo.predict)


class Cpu(_PerItem):
    """``bench_cpu.predict``: 200,000 steps of pure Python per call."""

    model_predict = staticmethod(bench_cpu.predict)


class Vector(MLModel):
    """``bench_vector.predict_batch``: one call per batch that MLServer's
    adaptive batching made (10 ms + 0.05 ms per item)."""

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        items = [{"text": t} for t in texts(payload)]
        return response(self.name, bench_vector.predict_batch(items))
