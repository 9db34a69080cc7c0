"""The gRPC messages of :mod:`.proto` to and from :mod:`deepserve.oip.types`.

A request's inputs come from ``raw_input_contents`` (one entry per input, in
order) when it has any, otherwise from each input's typed ``contents``;
responses always carry their outputs in ``raw_output_contents``, which is
what Triton's clients read. Whatever a client got wrong raises
:class:`~deepserve.exceptions.BadInput` naming the input and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy

from deepserve.exceptions import BadInput
from deepserve.grpc import proto
from deepserve.model import DATATYPES
from deepserve.oip import tensors
from deepserve.oip.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorSpec,
)

__all__ = [
    "model_metadata_to_proto",
    "parameters_from_proto",
    "parameters_to_proto",
    "request_from_proto",
    "response_to_proto",
    "server_metadata_to_proto",
]

_INT64 = (-(2**63), 2**63)
_UINT64 = (0, 2**64)


# --- Raw tensor data ------------------------------------------------------
# The protocol's raw layout is deepserve.oip.tensors', shared with REST's
# binary tensor data extension.


def _numpy_dtype(datatype: str) -> numpy.dtype[Any]:
    """The NumPy dtype of a protocol datatype (``object`` for ``BYTES``).

    :raises BadInput: for an unknown datatype.
    """
    try:
        return tensors.numpy_dtype(datatype)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> Tensor:
    """The tensor ``name`` from its raw bytes, checked against its shape."""
    return tensors.from_raw(name, datatype, shape, raw)


def _to_raw(tensor: Tensor) -> bytes:
    """The raw bytes of a tensor's data, its dtype exactly the datatype's."""
    if tensor.datatype != "BYTES":
        dtype = _numpy_dtype(tensor.datatype)
        data = numpy.asarray(tensor.data).astype(dtype, casting="safe", copy=False)
        tensor = Tensor(tensor.name, tensor.datatype, tensor.shape, data)
    return tensors.to_raw(tensor)


# --- Requests -------------------------------------------------------------

#: Datatype -> the field of ``InferTensorContents`` holding its values
#: (FP16 has none: it travels raw).
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: The datatypes narrower than the contents field that holds them.
_NARROW = {"UINT8", "UINT16", "INT8", "INT16"}


def request_from_proto(message: Any) -> InferRequest:
    """The :class:`InferRequest` of a ``ModelInferRequest`` message."""
    if not message.model_name:
        raise BadInput("model_name is required", {"model_name": ["required"]})
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise BadInput(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} "
            "inputs: it needs one per input, in the order of the inputs",
            {"raw_input_contents": ["one entry per input"]},
        )
    inputs: list[Tensor] = []
    for index, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise BadInput(
                f"Input {index} has no name", {f"inputs[{index}]": ["no name"]}
            )
        if any(other.name == name for other in inputs):
            raise _bad(name, "the input is given twice")
        if tensor.datatype not in DATATYPES:
            raise _bad(
                name,
                f"unknown datatype '{tensor.datatype}', expected one of "
                f"{', '.join(DATATYPES)}",
            )
        shape = tuple(tensor.shape)
        if any(dim < 0 for dim in shape):
            raise _bad(name, f"shape {list(shape)} has a negative dimension")
        if raw:
            if tensor.HasField("contents"):
                raise _bad(
                    name,
                    "contents is set while the request uses raw_input_contents; "
                    "send every input one way",
                )
            value = _from_raw(name, tensor.datatype, shape, raw[index])
        else:
            value = _from_contents(name, tensor.datatype, shape, tensor.contents)
        value.parameters = parameters_from_proto(tensor.parameters, f"input '{name}'")
        inputs.append(value)
    outputs = [
        RequestedOutput(
            output.name,
            parameters_from_proto(output.parameters, f"output '{output.name}'"),
        )
        for output in message.outputs
    ]
    return InferRequest(
        model_name=message.model_name,
        inputs=inputs,
        model_version=message.model_version or None,
        id=message.id or None,
        parameters=parameters_from_proto(message.parameters, "the request"),
        outputs=outputs or None,
    )


def _from_contents(
    name: str, datatype: str, shape: tuple[int, ...], contents: Any
) -> Tensor:
    count = math.prod(shape)
    field = _CONTENTS.get(datatype)
    given = [descriptor.name for descriptor, _ in contents.ListFields()]
    if field is None:
        raise _bad(
            name,
            f"{datatype} data must be sent in raw_input_contents "
            "(the protocol has no typed contents for it)",
        )
    if others := [other for other in given if other != field]:
        raise _bad(name, f"datatype {datatype} takes {field}, not {', '.join(others)}")
    values = list(getattr(contents, field))
    if len(values) != count:
        raise _bad(
            name,
            f"shape {list(shape)} needs {count} elements, {field} has {len(values)}"
            if given
            else f"no data: set its contents.{field} or the request's "
            "raw_input_contents",
        )
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, _object_array(values).reshape(shape))
    dtype = _numpy_dtype(datatype)
    if datatype in _NARROW:
        wide = numpy.array(values, dtype=numpy.int64)
        info = numpy.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise _bad(
                name, f"a value is out of {datatype}'s range [{info.min}, {info.max}]"
            )
        data = wide.astype(dtype)
    else:
        data = numpy.array(values, dtype=dtype)
    return Tensor(name, datatype, shape, data.reshape(shape))


def _object_array(items: list[bytes]) -> numpy.ndarray[Any, Any]:
    array = numpy.empty(len(items), dtype=object)
    array[:] = items
    return array


def _bad(name: str, problem: str) -> BadInput:
    return BadInput(f"Input '{name}': {problem}", {f"inputs.{name}": [problem]})


# --- Parameters -----------------------------------------------------------


def parameters_from_proto(parameters: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as a dict of ``bool``, ``int``,
    ``float`` and ``str``; ``where`` names its owner in errors."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise BadInput(
                f"Parameter '{key}' of {where} has no value",
                {f"parameters.{key}": ["no value"]},
            )
        values[key] = getattr(parameter, choice)
    return values


def parameters_to_proto(target: Any, values: Mapping[str, Any]) -> None:
    """Write ``values`` (``bool``, ``int``, ``float``, ``str``, or NumPy
    scalars of those) into the ``map<string, InferParameter>`` ``target``;
    any other value raises ``TypeError``, an integer beyond 64 bits
    ``ValueError``."""
    for key, value in values.items():
        if isinstance(value, numpy.generic):
            value = value.item()
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            if _INT64[0] <= value < _INT64[1]:
                parameter.int64_param = value
            elif _UINT64[0] <= value < _UINT64[1]:
                parameter.uint64_param = value
            else:
                raise ValueError(f"Parameter '{key}' does not fit in 64 bits")
        elif isinstance(value, float):
            parameter.double_param = value
        elif isinstance(value, str):
            parameter.string_param = value
        else:
            raise TypeError(
                f"Parameter '{key}' is a {type(value).__name__}: gRPC parameters "
                "are bool, int, float or str"
            )


# --- Responses ------------------------------------------------------------


def response_to_proto(response: InferResponse) -> Any:
    """The ``ModelInferResponse`` of an :class:`InferResponse`, its outputs'
    data in ``raw_output_contents``."""
    message = proto.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    parameters_to_proto(message.parameters, response.parameters)
    for tensor in response.outputs:
        if numpy.size(tensor.data) != math.prod(tensor.shape):
            raise ValueError(
                f"Output '{tensor.name}' has {numpy.size(tensor.data)} elements "
                f"for shape {list(tensor.shape)}"
            )
        output = message.outputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape)
        )
        parameters_to_proto(output.parameters, tensor.parameters)
        message.raw_output_contents.append(_to_raw(tensor))
    return message


def server_metadata_to_proto(metadata: ServerMetadata) -> Any:
    return proto.ServerMetadataResponse(
        name=metadata.name,
        version=metadata.version,
        extensions=list(metadata.extensions),
    )


def model_metadata_to_proto(metadata: ModelMetadata) -> Any:
    message = proto.ModelMetadataResponse(
        name=metadata.name,
        versions=list(metadata.versions),
        platform=metadata.platform,
    )
    _add_specs(message.inputs, metadata.inputs)
    _add_specs(message.outputs, metadata.outputs)
    return message


def _add_specs(target: Any, specs: Iterable[TensorSpec]) -> None:
    for spec in specs:
        target.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
