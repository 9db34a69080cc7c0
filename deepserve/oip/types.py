"""The values of the Open Inference Protocol, as both transports see them.

The REST layer decodes JSON (and the binary tensor data extension) into
these, the gRPC layer decodes protobuf messages into them; the service
(:mod:`deepserve.oip.service`) answers them without knowing which.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy

from deepserve.model import TensorSpec

__all__ = [
    "InferRequest",
    "InferResponse",
    "Inference",
    "ModelMetadata",
    "RequestedOutput",
    "ServerMetadata",
    "Tensor",
    "TensorSpec",
]


@dataclasses.dataclass
class Tensor:
    """One tensor of a request or a response.

    ``data`` is a NumPy array of ``shape`` whose dtype matches ``datatype``
    (see :func:`deepserve.oip.tensors.numpy_dtype`); ``BYTES`` tensors are
    arrays of ``object`` dtype holding :class:`bytes`.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: numpy.ndarray[Any, Any]
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RequestedOutput:
    """An output a request asks for, with its own parameters (such as
    ``binary_data``)."""

    name: str
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class InferRequest:
    """An inference request, addressed to a model (and maybe a version)."""

    model_name: str
    inputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The outputs asked for; ``None``: every output of the model.
    outputs: list[RequestedOutput] | None = None


@dataclasses.dataclass
class InferResponse:
    """An inference response: the request's ``id`` and ``parameters``
    echoed, and the outputs."""

    model_name: str
    outputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """What the protocol says of a served model."""

    name: str
    #: The versions served under the name, the default first.
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
        }


class Inference(Protocol):
    """The protocol's operations, which both transports call.

    Errors are :mod:`deepserve.exceptions` errors: ``ModelNotFound`` for an
    unknown model or version, ``BadInput`` for a request the model cannot
    take (wrong tensor names, datatypes or shapes), ``Overloaded``,
    ``DeadlineExceeded``, ``WorkerDied``, ``ModelFailed`` from the model.
    """

    def live(self) -> bool: ...

    def ready(self) -> bool: ...

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the model is ready; raises ``ModelNotFound``."""
        ...

    def server_metadata(self) -> ServerMetadata: ...

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        """Raises ``ModelNotFound``."""
        ...

    async def infer(self, request: InferRequest) -> InferResponse: ...
