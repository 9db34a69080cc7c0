"""The Open Inference Protocol's operations over the served models.

Both transports call one :class:`InferenceService`: the REST endpoints and
the gRPC service differ only in how they read and write these values.
Predictions go through the same :class:`~deepserve.runtime.ServedModel` as
the DEEPaaS API's, so executors, batching, queue limits and deadlines are
shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import deepserve
from deepserve.exceptions import BadInput
from deepserve.executors import callspace
from deepserve.oip.mapping import Plan, plan_for, scratch_space
from deepserve.oip.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ServerMetadata,
    Tensor,
)
from deepserve.operations.negotiation import result_path
from deepserve.runtime import Registry, ServedModel

#: The protocol's extensions deepserve implements (REST: binary tensor data).
EXTENSIONS = ("binary_tensor_data",)


class InferenceService:
    """The protocol over one registry (see :class:`deepserve.oip.types.Inference`).

    :param upload_dir: where a request's file inputs are written (the
        server's ``upload_dir``; ``None``: the system's temporary directory).
    """

    def __init__(self, registry: Registry, *, upload_dir: str | None = None) -> None:
        self._registry = registry
        self._upload_dir = upload_dir
        self._plans: dict[int, Plan] = {
            id(served): plan_for(served.model) for served in registry.every()
        }

    def plan(self, served: ServedModel) -> Plan:
        return self._plans[id(served)]

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._registry.ready

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self._registry.version(name, version).ready

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata("deepserve", deepserve.__version__, EXTENSIONS)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        served = self._registry.version(name, version)
        plan = self.plan(served)
        return ModelMetadata(
            name=name,
            versions=tuple(self._registry.versions(name)),
            platform=plan.platform,
            inputs=plan.inputs,
            outputs=plan.outputs,
        )

    def admit(self, name: str, version: str | None = None) -> None:
        """Refuse at once an inference that :meth:`infer` would refuse
        before running: an unknown model or version, a model not ready, a
        full queue. A transport calls it before reading a request's body.

        :raises ModelNotFound, NotRunning, Overloaded: as :meth:`infer`.
        """
        self._registry.version(name, version).admit()

    async def infer(self, request: InferRequest) -> InferResponse:
        served = self._registry.version(request.model_name, request.model_version)
        served.admit()
        plan = self.plan(served)
        with scratch_space(self._upload_dir) as scratch:
            kwargs = plan.arguments(request, scratch)
            result = await served.predict(kwargs)
        try:
            # Reading a returned file and converting large arrays are not
            # for the event loop; a few values are converted in less time
            # than a thread takes to hand them back.
            if light(result):
                outputs = plan.results(result, request)
            else:
                outputs = await asyncio.to_thread(plan.results, result, request)
        finally:
            callspace.release(result)
        return InferResponse(
            model_name=request.model_name,
            model_version=served.version,
            id=request.id,
            parameters=dict(request.parameters),
            outputs=_requested(outputs, request),
        )


#: Most values a result converted on the event loop holds.
LIGHT_VALUES = 4096


def light(result: Any) -> bool:
    """Whether ``result`` is small enough to convert on the event loop: no
    file, and at most :data:`LIGHT_VALUES` values in all (counted in arrays,
    lists, mappings and text; an object of another kind counts as many)."""
    return _values(result, LIGHT_VALUES) <= LIGHT_VALUES


def _values(part: Any, budget: int, depth: int = 0) -> int:
    """About how many values ``part`` holds; over ``budget`` once it is
    known to be more."""
    if part is None or isinstance(part, bool | int | float):
        return 1
    size = getattr(part, "size", None)
    if isinstance(size, int) and hasattr(part, "dtype"):  # NumPy
        return size
    if isinstance(part, str | bytes | bytearray):
        return 1 + len(part) // 64
    if depth > 8 or result_path(part) is not None:
        return budget + 1
    if isinstance(part, Mapping):
        parts: Any = part.values()
    elif isinstance(part, list | tuple):
        if len(part) > budget:
            return len(part)
        parts = part
    else:
        return budget + 1  # a kind of its own (a tensor of some framework)
    total = 0
    for each in parts:
        total += _values(each, budget - total, depth + 1)
        if total > budget:
            break
    return total


def _requested(outputs: list[Tensor], request: InferRequest) -> list[Tensor]:
    """The outputs the request asked for, in its order; all when it did not.

    :raises BadInput: naming an output the model did not give.
    """
    if request.outputs is None:
        return outputs
    by_name = {tensor.name: tensor for tensor in outputs}
    missing = [o.name for o in request.outputs if o.name not in by_name]
    if missing:
        raise BadInput(
            f"Unknown output {missing[0]!r}; this model gave: "
            f"{', '.join(by_name) or 'no output'}",
            errors={f"outputs.{name}": ["Unknown output."] for name in missing},
        )
    # The request's output parameters (binary_data...) tell the transport
    # how to send; they are not echoed.
    return [by_name[wanted.name] for wanted in request.outputs]
