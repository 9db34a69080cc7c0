"""The REST bodies of the Open Inference Protocol, as bytes.

A request body is JSON, or, with the binary tensor data extension (what the
Triton clients send by default), a JSON header of
``Inference-Header-Content-Length`` bytes followed by the inputs' raw data
(:func:`deepserve.oip.tensors.to_raw`'s layout) in the order of the inputs
that have ``parameters.binary_data_size``. Responses are encoded the same
way when an output is to be binary: every output when the request's
``parameters.binary_data_output`` is true, unless the output's own
``parameters.binary_data`` (in the request's ``outputs``) says otherwise.

No HTTP here: :mod:`deepserve.api` reads and writes the bodies and headers.
"""

from __future__ import annotations

import json
from typing import Any

from deepserve.exceptions import BadInput
from deepserve.model import json_default
from deepserve.oip.tensors import (
    NotText,
    from_json,
    from_raw,
    parse_header,
    to_json,
    to_raw,
)
from deepserve.oip.types import InferRequest, InferResponse, RequestedOutput

__all__ = [
    "HEADER_LENGTH",
    "decode_request",
    "encode_response",
    "error_body",
]

#: The header that gives the JSON part's length when binary data follows.
HEADER_LENGTH = "Inference-Header-Content-Length"

_ENCODER = json.JSONEncoder(
    separators=(",", ":"), check_circular=False, default=json_default
)
_encode = _ENCODER.encode

_REQUEST_KEYS = ("id", "parameters", "inputs", "outputs")
_OUTPUT_KEYS = ("name", "parameters")
_INPUT_KEYS = frozenset(("name", "datatype", "shape", "parameters", "data"))
_UNSUPPORTED = {
    "classification": "the classification extension is not supported",
    "shared_memory_region": "shared memory is not supported",
}


def _bad(path: str, problem: str) -> BadInput:
    return BadInput(f"Invalid request ({path}): {problem}", {path: [problem]})


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), "null")


def decode_request(
    body: bytes,
    *,
    header_length: int | None,
    model_name: str,
    model_version: str | None,
) -> InferRequest:
    """The inference request in a REST body.

    :param header_length: the ``Inference-Header-Content-Length`` header's
        value (the JSON part's length), or ``None`` when the body is JSON
        alone.
    :raises BadInput: naming the field and the problem: malformed JSON,
        ill-typed keys, inputs that do not fit their datatype and shape,
        binary data that does not add up, or an extension asked for that is
        not supported (classification, shared memory).
    """
    size = len(body)
    if header_length is None:
        header_length = size
        binary_allowed = False
    else:
        if not 0 <= header_length <= size:
            raise _bad(
                HEADER_LENGTH,
                f"{header_length} is not a length within the body's {size} bytes",
            )
        binary_allowed = True
    try:
        obj = json.loads(body[:header_length] if header_length < size else body)
    except (ValueError, RecursionError) as error:
        problem = str(error) if isinstance(error, ValueError) else "nested too deeply"
        raise _bad("body", f"not valid JSON: {problem}") from None
    if not isinstance(obj, dict):
        raise _bad("body", f"must be a JSON object, not {_kind(obj)}")
    for key in obj:
        if key not in _REQUEST_KEYS:
            raise _bad(
                key,
                f"unknown key; a request has {', '.join(_REQUEST_KEYS)}",
            )

    request_id = obj.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("id", f"must be a string, not {_kind(request_id)}")
    parameters = obj.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _bad("parameters", f"must be an object, not {_kind(parameters)}")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise _bad("parameters.binary_data_output", "must be true or false")

    inputs = obj.get("inputs")
    if not isinstance(inputs, list):
        raise _bad(
            "inputs", "missing" if inputs is None else "must be a list of tensors"
        )
    tensors = []
    names: set[str] = set()
    offset = header_length
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        header = parse_header(item, where=where)
        for key in item:
            if key not in _INPUT_KEYS:
                raise _bad(
                    f"{where}.{key}",
                    "unknown key; an input has name, datatype, shape, parameters "
                    "and data",
                )
        if header.name in names:
            raise _bad(f"{where}.name", f"input '{header.name}' is given twice")
        names.add(header.name)
        _refuse_unsupported(header.parameters, f"{where}.parameters")
        if "binary_data_size" not in header.parameters:
            tensors.append(from_json(item, where=where, header=header))
            continue
        length = header.parameters["binary_data_size"]
        path = f"{where}.parameters.binary_data_size"
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise _bad(path, f"must be an integer >= 0, not {length!r}")
        if "data" in item:
            raise _bad(f"{where}.data", "must be absent when binary_data_size is given")
        if not binary_allowed:
            raise _bad(
                path,
                f"binary data needs the {HEADER_LENGTH} header (the JSON part's "
                "length)",
            )
        if offset + length > size:
            raise _bad(
                path,
                f"{length} bytes, but only {size - offset} bytes of binary data "
                "are left in the body",
            )
        raw = memoryview(body)[offset : offset + length]
        offset += length
        tensors.append(
            from_raw(
                header.name,
                header.datatype,
                header.shape,
                raw,
                where=where,
                parameters=header.parameters,
            )
        )
    if offset != size:
        raise _bad(
            "body",
            f"{size - header_length} bytes follow the JSON header, but the "
            f"inputs' binary_data_size add up to {offset - header_length}",
        )

    return InferRequest(
        model_name=model_name,
        inputs=tensors,
        model_version=model_version,
        id=request_id,
        parameters=parameters,
        outputs=_requested_outputs(obj.get("outputs")),
    )


def _refuse_unsupported(parameters: dict[str, Any], path: str) -> None:
    for key, problem in _UNSUPPORTED.items():
        if key in parameters:
            raise _bad(f"{path}.{key}", problem)


def _requested_outputs(outputs: Any) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise _bad("outputs", f"must be a list, not {_kind(outputs)}")
    requested = []
    names: set[str] = set()
    for index, item in enumerate(outputs):
        where = f"outputs[{index}]"
        if not isinstance(item, dict):
            raise _bad(where, f"must be an object, not {_kind(item)}")
        for key in item:
            if key not in _OUTPUT_KEYS:
                raise _bad(
                    f"{where}.{key}", "unknown key; an output has name and parameters"
                )
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(
                f"{where}.name",
                "missing" if name is None else "must be a non-empty string",
            )
        if name in names:
            raise _bad(f"{where}.name", f"output '{name}' is asked for twice")
        names.add(name)
        parameters = item.get("parameters", {})
        if not isinstance(parameters, dict):
            raise _bad(
                f"{where}.parameters", f"must be an object, not {_kind(parameters)}"
            )
        _refuse_unsupported(parameters, f"{where}.parameters")
        if not isinstance(parameters.get("binary_data", False), bool):
            raise _bad(f"{where}.parameters.binary_data", "must be true or false")
        requested.append(RequestedOutput(name, parameters))
    return requested


def encode_response(
    response: InferResponse, request: InferRequest
) -> tuple[bytes, int | None]:
    """The REST body of a response, and the JSON part's length
    (``Inference-Header-Content-Length``) when binary data follows it;
    ``None`` when the body is JSON alone.

    Outputs are binary as ``request`` asks (see the module's description).
    A ``BYTES`` output that is not UTF-8 text, which JSON cannot carry, is
    sent as binary data even when asked for in JSON.
    """
    binary_default = request.parameters.get("binary_data_output") is True
    asked = {
        output.name: output.parameters.get("binary_data")
        for output in request.outputs or ()
    }
    outputs: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for tensor in response.outputs:
        binary = asked.get(tensor.name)
        if binary is None:
            binary = binary_default
        if not binary:
            try:
                outputs.append(to_json(tensor))
                continue
            except NotText:
                pass
        raw = to_raw(tensor)
        tail.append(raw)
        outputs.append(to_json(tensor, binary_size=len(raw)))
    obj: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        obj["model_version"] = response.model_version
    if response.id is not None:
        obj["id"] = response.id
    if response.parameters:
        obj["parameters"] = response.parameters
    obj["outputs"] = outputs
    header = _encode(obj).encode()
    if not tail:
        return header, None
    return b"".join((header, *tail)), len(header)


def error_body(message: str) -> bytes:
    """The protocol's error body: ``{"error": message}``."""
    return _encode({"error": message}).encode()
