"""Build the executor a model's settings ask for."""

from __future__ import annotations

import logging
from typing import Any

from deepserve.exceptions import LoaderError
from deepserve.executors import Executor
from deepserve.executors.batching import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LATENCY_MS,
    BatchingExecutor,
    BatchPolicy,
)
from deepserve.executors.inline import InlineExecutor
from deepserve.executors.processes import ProcessExecutor
from deepserve.executors.threads import ThreadExecutor
from deepserve.loader import ModelRef
from deepserve.model import Model
from deepserve.settings import ExecutorSettings

LOG = logging.getLogger(__name__)


def create(ref: ModelRef, model: Model, settings: ExecutorSettings) -> Executor:
    """The executor for ``model``, wrapped for batching when it applies.

    :raises LoaderError: when the settings do not fit the model.
    """
    inner: Executor
    if settings.kind == "thread":
        inner = ThreadExecutor(ref, model, workers=settings.workers, warm=settings.warm)
    elif settings.kind == "inline":
        inner = InlineExecutor(ref, model, warm=settings.warm)
    elif settings.kind == "ray":
        from deepserve.executors import rayserve

        rayserve.require()
        from deepserve.executors.rayserve.executor import RayExecutor

        inner = RayExecutor(ref, settings)
    else:
        inner = ProcessExecutor(ref, workers=settings.workers, warm=settings.warm)
    policy = batch_policy(model, settings)
    if policy is None:
        return inner
    return BatchingExecutor(
        inner, policy, model=model.name, timeout=settings.predict_timeout
    )


def batch_policy(model: Model, settings: ExecutorSettings) -> BatchPolicy | None:
    """How to batch ``model``'s predictions, or ``None`` for no batching.

    The configuration wins over the model's own ``batching`` settings, which
    win over the defaults.
    """
    if settings.batching is False:
        return None
    if not model.supports("predict_batch"):
        if settings.batching:
            LOG.warning(
                "Batching is on for model '%s', but it has no predict_batch: "
                "its predictions run one by one",
                model.name,
            )
        return None
    own = model.batch_options()
    size = _pick(
        settings.max_batch_size, own.get("max_batch_size"), DEFAULT_MAX_BATCH_SIZE
    )
    latency = _pick(
        settings.max_latency_ms, own.get("max_latency_ms"), DEFAULT_MAX_LATENCY_MS
    )
    try:
        return BatchPolicy(int(size), float(latency) / 1000)
    except (TypeError, ValueError) as exc:
        raise LoaderError(
            f"Model '{model.name}': invalid batching settings: {exc}"
        ) from exc


def _pick(*values: Any) -> Any:
    return next(v for v in values if v is not None)
