"""The benchmark models as BentoML 1.4 services (issue 13's peers).

Each service calls the functions of the ``echo_model`` package that deepserve
serves, so the work per prediction is the same. Served with ``bentoml serve
bentoml_service:NAME``, with this directory as the working directory;
``BENCH_WORKERS`` (environment) sets the service's ``workers`` (processes).

Requests are BentoML's JSON: ``POST /predict`` with ``{"text": "hello"}``
(``Echo``, ``Cpu``) or ``{"texts": ["hello"]}`` (``Vector``, a batchable API:
BentoML's adaptive batching joins the lists of concurrent requests, up to
``max_batch_size`` 64). BentoML has no fixed batch wait: its dispatcher
learns how long to wait from the model's measured cost, and
``max_latency_ms`` is a deadline past which requests are refused (503), left
at BentoML's default here.
"""

from __future__ import annotations

import os
from typing import Any

import bench_cpu
import bench_echo
import bench_vector
import bentoml

WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
MAX_BATCH_SIZE = 64


@bentoml.service(workers=WORKERS)
class Echo:
    """``bench_echo.predict``: returns ``{"echo": text}``."""

    @bentoml.api
    def predict(self, text: str = "x") -> dict[str, Any]:
        return bench_echo.predict(text=text)


@bentoml.service(workers=WORKERS)
class Cpu:
    """``bench_cpu.predict``: 200,000 steps of pure Python per call."""

    @bentoml.api
    def predict(self, text: str = "x") -> dict[str, Any]:
        return bench_cpu.predict(text=text)


@bentoml.service(workers=WORKERS)
class Vector:
    """``bench_vector.predict_batch``, one call per batch BentoML made."""

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE)
    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return bench_vector.predict_batch([{"text": t} for t in texts])
