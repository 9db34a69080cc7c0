"""Prometheus metrics at ``GET /metrics``.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (never
the process-wide one), so every app, and every test, counts from zero.

Requests are counted by route template (``/v2/models/{name}/predict``),
never by the raw path, and by a model name only when it is one we serve:
clients cannot create new label values. What the models' executors already
count (queue depth, worker restarts, batch sizes) and the training jobs are
read at scrape time, so the hot path pays only for the request metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from deepserve.api.endpoints import endpoint_of
from deepserve.api.errors import Handler
from deepserve.exceptions import JobStoreError
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings

LOG = logging.getLogger(__name__)

PREFIX = "deepserve"
#: The label of requests that matched no route (404, 405).
UNMATCHED = "unmatched"
#: The status of requests whose client went away before the answer
#: (nginx's convention).
CLIENT_CLOSED = "499"
#: The gRPC service whose calls are counted beside the HTTP requests.
GRPC_SERVICE = "inference.GRPCInferenceService"
#: Methods counted by name; any other is counted as ``OTHER``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Request latency buckets, seconds: from a trivial prediction to a long one.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
)  # fmt: skip
#: Batch size buckets (powers of two).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Meter:
    """The metrics of one app.

    :param registry: the served models, read at scrape time.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.collectors = CollectorRegistry(auto_describe=False)
        labels = ("model", "endpoint", "method", "status")
        self.requests = Counter(
            "requests",
            "Requests answered (HTTP, and gRPC calls), by model, endpoint and status.",
            labels,
            namespace=PREFIX,
            registry=self.collectors,
        )
        self.latency = Histogram(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, in seconds.",
            labels,
            namespace=PREFIX,
            buckets=LATENCY_BUCKETS,
            registry=self.collectors,
        )
        #: Label values -> (counter, histogram) children.
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self.models = ModelCollector(registry)
        self.collectors.register(self.models)

    def observe(self, request: web.Request, status: str, seconds: float) -> None:
        endpoint = endpoint_of(request)
        name = request.match_info.get("name", "")
        labels = (
            name if name in self.registry else "",
            UNMATCHED if endpoint is None else endpoint.path,
            request.method if request.method in METHODS else "OTHER",
            status,
        )
        self._count(labels, seconds)

    def observe_rpc(self, rpc: str, code: str, seconds: float) -> None:
        """Count one gRPC call: its endpoint is the service's method
        (``/inference.GRPCInferenceService/ModelInfer``), its method
        ``GRPC``, its status the code's name (``OK``, ``NOT_FOUND``...)."""
        self._count(("", f"/{GRPC_SERVICE}/{rpc}", "GRPC", code), seconds)

    def _count(self, labels: tuple[str, str, str, str], seconds: float) -> None:
        children = self._children.get(labels)
        if children is None:  # labels() locks and hashes: once per label set
            children = self._children[labels] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
            )
        children[0].inc()
        children[1].observe(seconds)

    async def text(self) -> bytes:
        """The metrics in Prometheus's text format."""
        # Collectors are synchronous; the job counts come from the job
        # database, so they are read first.
        self.models.job_counts = await job_counts(self.registry)
        return generate_latest(self.collectors)


#: The app's meter, when the metrics endpoint is on (the gRPC service
#: counts its calls there too).
METER = web.AppKey("meter", Meter)


class ModelCollector(Collector):
    """What the models' runtime knows, read when Prometheus scrapes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        #: ``{(model, status): jobs}``, read before each scrape.
        self.job_counts: Mapping[tuple[str, str], int] = {}

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Predictions waiting for a worker.",
            labels=["model"],
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_worker_restarts",
            "Workers replaced after dying or overrunning a deadline.",
            labels=["model"],
        )
        batches = HistogramMetricFamily(
            f"{PREFIX}_batch_size",
            "Predictions merged into each predict_batch call.",
            labels=["model"],
        )
        for served in self.registry.every():
            name = self.registry.label(served)
            depth.add_metric([name], served.queue_depth)
            restarts.add_metric([name], served.worker_restarts)
            sizes = served.batch_sizes
            if sizes is not None:
                buckets, total = histogram(sizes, BATCH_BUCKETS)
                batches.add_metric([name], buckets, total)
        yield depth
        yield restarts
        yield batches
        yield jobs_metric(self.registry, self.job_counts)


def histogram(
    counts: Mapping[int, int], bounds: tuple[int, ...]
) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets and the sum, from how often each value occurred."""
    buckets = []
    for bound in bounds:
        buckets.append(
            (str(bound), float(sum(n for v, n in counts.items() if v <= bound)))
        )
    buckets.append(("+Inf", float(sum(counts.values()))))
    return buckets, float(sum(v * n for v, n in counts.items()))


def jobs_metric(
    models: Container[str], counts: Mapping[tuple[str, str], int]
) -> Metric:
    """Training jobs by model and status, as the job database counts them
    (those of every server sharing it)."""
    family = GaugeMetricFamily(
        f"{PREFIX}_training_jobs",
        "Training jobs in the job database, by model and status.",
        labels=["model", "status"],
    )
    for (model, status), count in sorted(counts.items()):
        if model in models:
            family.add_metric([model, status], count)
    return family


async def job_counts(registry: Registry) -> Mapping[tuple[str, str], int]:
    """The job counts, or none when the job database cannot say."""
    try:
        return await registry.jobs.count_by_status()
    except JobStoreError as exc:
        LOG.warning("Metrics: cannot count training jobs: %s", exc)
        return {}


def middlewares(meter: Meter | None) -> list[Any]:
    """The middleware counting requests, when metrics are on. Put it first,
    so that it sees the answer every other middleware settled on."""
    if meter is None:
        return []

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = "500"
        try:
            response = await handler(request)
            status = str(response.status)
            return response
        except web.HTTPException as error:  # redirects pass through as raised
            status = str(error.status)
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            meter.observe(request, status, time.perf_counter() - start)

    return [measure]


def create(registry: Registry, settings: ApiSettings) -> Meter | None:
    """The app's meter, or ``None`` when the endpoint is off."""
    if not settings.metrics_endpoint:
        return None
    return Meter(registry)


def handler(meter: Meter) -> Handler:
    """The handler of ``GET /metrics``, answering ``meter``'s metrics."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=await meter.text(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return metrics
