"""The REST bodies, checked against the Triton HTTP client's own encoder and
parser (``generate_request_body`` and ``parse_response_body``: exactly what
``tritonclient.http`` sends and how it reads answers), without a server."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy
import pytest
import tritonclient.http as triton

from deepserve.exceptions import BadInput
from deepserve.oip import rest
from deepserve.oip.types import InferRequest, InferResponse, RequestedOutput, Tensor

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
             "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]  # fmt: skip


def array(datatype: str, shape: tuple[int, ...] = (2, 3)) -> numpy.ndarray[Any, Any]:
    count = int(numpy.prod(shape))
    if datatype == "BYTES":
        values = numpy.empty(count, dtype=object)
        values[:] = [f"wörd {i}".encode() for i in range(count)]
        return values.reshape(shape)
    if datatype == "BOOL":
        return (numpy.arange(count) % 2 == 0).reshape(shape)
    np_dtype = numpy.dtype(_TRITON_DTYPES[datatype])
    if np_dtype.kind == "f":
        return (numpy.arange(count) / 4 - 0.75).astype(np_dtype).reshape(shape)
    info = numpy.iinfo(np_dtype)
    values = [int(info.max), int(info.min), 0, 1, int(info.max) - 1, 7]
    return numpy.array((values * count)[:count], dtype=np_dtype).reshape(shape)


_TRITON_DTYPES = {
    "BOOL": "bool", "UINT8": "u1", "UINT16": "u2", "UINT32": "u4", "UINT64": "u8",
    "INT8": "i1", "INT16": "i2", "INT32": "i4", "INT64": "i8",
    "FP16": "f2", "FP32": "f4", "FP64": "f8",
}  # fmt: skip


def triton_body(
    inputs: list[tuple[str, numpy.ndarray[Any, Any], str, bool]], **kwargs: Any
) -> tuple[bytes, int | None]:
    """What tritonclient.http sends for these inputs: (name, array,
    datatype, binary)."""
    infer_inputs = []
    for name, values, datatype, binary in inputs:
        infer_input = triton.InferInput(name, list(values.shape), datatype)
        infer_input.set_data_from_numpy(values, binary_data=binary)
        infer_inputs.append(infer_input)
    body, length = triton.InferenceServerClient.generate_request_body(
        infer_inputs, **kwargs
    )
    return body, length


def decode(body: bytes, length: int | None) -> InferRequest:
    return rest.decode_request(
        body, header_length=length, model_name="m", model_version="2"
    )


def bad_request(body: bytes | dict[str, Any], length: int | None = None) -> BadInput:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    with pytest.raises(BadInput) as info:
        decode(body, length)
    return info.value


def triton_result(body: bytes, length: int | None) -> Any:
    return triton.InferenceServerClient.parse_response_body(body, header_length=length)


# -- requests -------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_decode_what_tritonclient_sends(datatype: str, binary: bool) -> None:
    values = array(datatype)
    body, length = triton_body([("x", values, datatype, binary)], request_id="r1")
    assert (length is not None) == binary
    request = decode(body, length)
    assert request.model_name == "m"
    assert request.model_version == "2"
    assert request.id == "r1"
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, (2, 3))
    assert tensor.data.dtype == (object if datatype == "BYTES" else values.dtype)
    assert tensor.data.tolist() == values.tolist()
    # No outputs named: tritonclient asks for every output in binary.
    assert request.outputs is None
    assert request.parameters == {"binary_data_output": True}


def test_decode_mixed_binary_and_json_inputs() -> None:
    a = array("FP32", (4,))
    b = array("BYTES", (2, 1))
    c = array("INT64", (1, 2))
    d = array("BOOL", (3,))
    body, length = triton_body(
        [
            ("a", a, "FP32", True),
            ("b", b, "BYTES", True),
            ("c", c, "INT64", False),
            ("d", d, "BOOL", True),
        ]
    )
    request = decode(body, length)
    assert [t.name for t in request.inputs] == ["a", "b", "c", "d"]
    for tensor, values in zip(request.inputs, [a, b, c, d], strict=True):
        assert tensor.data.shape == values.shape
        assert tensor.data.tolist() == values.tolist()
    assert request.inputs[0].parameters == {"binary_data_size": 16}


def test_decode_empty_binary_tensors() -> None:
    body, length = triton_body(
        [
            ("e", numpy.zeros((0, 3), numpy.float32), "FP32", True),
            ("s", numpy.empty((0,), object), "BYTES", True),
            ("x", numpy.ones(2, numpy.int8), "INT8", True),
        ]
    )
    request = decode(body, length)
    assert [t.data.shape for t in request.inputs] == [(0, 3), (0,), (2,)]
    assert request.inputs[2].data.tolist() == [1, 1]


def test_decode_requested_outputs_and_parameters() -> None:
    outputs = [
        triton.InferRequestedOutput("y", binary_data=True),
        triton.InferRequestedOutput("z", binary_data=False),
    ]
    body, length = triton_body(
        [("x", array("FP32"), "FP32", True)],
        outputs=outputs,
        request_id="abc",
        priority=3,
        timeout=500,
        parameters={"temperature": 0.5},
    )
    request = decode(body, length)
    assert request.outputs == [
        RequestedOutput("y", {"binary_data": True}),
        RequestedOutput("z", {"binary_data": False}),
    ]
    assert request.parameters == {"priority": 3, "timeout": 500, "temperature": 0.5}
    assert request.id == "abc"


def test_decode_json_alone() -> None:
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP64",
                    "shape": [2, 2],
                    "data": [[1, 2], [3, 4]],
                }
            ],
            "outputs": [{"name": "y"}],
        }
    ).encode()
    request = decode(body, None)
    assert request.inputs[0].data.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert request.outputs == [RequestedOutput("y", {})]
    assert request.id is None
    assert request.parameters == {}
    # The header length may also cover the whole body.
    assert decode(body, len(body)).inputs[0].data.tolist() == [[1, 2], [3, 4]]


def binary_request(
    inputs: list[dict[str, Any]], tail: bytes, **extra: Any
) -> tuple[bytes, int]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + tail, len(header)


def binary_input(name: str, size: Any, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "INT32",
        "shape": [2],
        "parameters": {"binary_data_size": size},
        **extra,
    }


TWO_INTS = struct.pack("<2i", 5, 6)


@pytest.mark.parametrize(
    ("body", "length", "field", "problem"),
    [
        (b"{not json", None, "body", "not valid JSON: "),
        (b"\xff\xfe\x00", None, "body", "not valid JSON: "),
        (b"[" * 100000 + b"]" * 100000, None, "body", "not valid JSON: nested too deeply"),
        (b"[]", None, "body", "must be a JSON object, not a list"),
        (b"{}", None, "inputs", "missing"),
        (b'{"inputs": {}}', None, "inputs", "must be a list of tensors"),
        (b'{"inputs": [], "input": []}', None, "input", "unknown key; a request has id, parameters, inputs, outputs"),
        (b'{"inputs": [], "id": 5}', None, "id", "must be a string, not a number"),
        (b'{"inputs": [], "parameters": "x"}', None, "parameters", "must be an object, not a string"),
        (b'{"inputs": [], "parameters": {"binary_data_output": 1}}', None, "parameters.binary_data_output", "must be true or false"),
        (b'{"inputs": [], "outputs": {}}', None, "outputs", "must be a list, not an object"),
        (b'{"inputs": [], "outputs": ["y"]}', None, "outputs[0]", "must be an object, not a string"),
        (b'{"inputs": [], "outputs": [{}]}', None, "outputs[0].name", "missing"),
        (b'{"inputs": [], "outputs": [{"name": ""}]}', None, "outputs[0].name", "must be a non-empty string"),
        (b'{"inputs": [], "outputs": [{"name": "y", "data": 1}]}', None, "outputs[0].data", "unknown key; an output has name and parameters"),
        (b'{"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]}', None, "outputs[1].name", "output 'y' is asked for twice"),
        (b'{"inputs": [], "outputs": [{"name": "y", "parameters": []}]}', None, "outputs[0].parameters", "must be an object, not a list"),
        (b'{"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}', None, "outputs[0].parameters.binary_data", "must be true or false"),
        (b'{"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 2}}]}', None, "outputs[0].parameters.classification", "the classification extension is not supported"),
        (b'{"inputs": [], "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r"}}]}', None, "outputs[0].parameters.shared_memory_region", "shared memory is not supported"),
        (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1], "parameters": {"shared_memory_region": "r"}}]}', None, "inputs[0].parameters.shared_memory_region", "shared memory is not supported"),
        (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1], "contents": {}}]}', None, "inputs[0].contents", "unknown key; an input has"),
        (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}, {"name": "x", "datatype": "INT8", "shape": [1], "data": [2]}]}', None, "inputs[1].name", "input 'x' is given twice"),
        (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1000]}]}', None, "inputs[0].data", "element 0 is 1000, out of range for INT8"),
        (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [-1], "data": []}]}', None, "inputs[0].shape", "dimensions must be integers >= 0"),
        (*binary_request([binary_input("x", 8)], TWO_INTS), "inputs[0]", None),
        (*binary_request([binary_input("x", -1)], b""), "inputs[0].parameters.binary_data_size", "must be an integer >= 0, not -1"),
        (*binary_request([binary_input("x", "8")], TWO_INTS), "inputs[0].parameters.binary_data_size", "must be an integer >= 0, not '8'"),
        (*binary_request([binary_input("x", True)], TWO_INTS), "inputs[0].parameters.binary_data_size", "must be an integer >= 0, not True"),
        (*binary_request([binary_input("x", 8, data=[1, 2])], TWO_INTS), "inputs[0].data", "must be absent when binary_data_size is given"),
        (*binary_request([binary_input("x", 12)], TWO_INTS), "inputs[0].parameters.binary_data_size", "12 bytes, but only 8 bytes of binary data are left in the body"),
        (*binary_request([binary_input("x", 8), binary_input("y", 8)], TWO_INTS), "inputs[1].parameters.binary_data_size", "8 bytes, but only 0 bytes"),
        (*binary_request([binary_input("x", 8)], TWO_INTS + b"\x00"), "body", "9 bytes follow the JSON header, but the inputs' binary_data_size add up to 8"),
        (*binary_request([binary_input("x", 4)], TWO_INTS[:4]), "inputs[0].data", "has 4 bytes, but shape [2] of INT32 needs 8"),
        (b'{"inputs": []}', 15, rest.HEADER_LENGTH, "15 is not a length within the body's 14 bytes"),
        (b'{"inputs": []}', -1, rest.HEADER_LENGTH, "-1 is not a length within"),
        (binary_request([binary_input("x", 8)], TWO_INTS)[0], None, "body", "not valid JSON: Extra data"),
        (json.dumps({"inputs": [binary_input("x", 8)]}).encode(), None, "inputs[0].parameters.binary_data_size", "binary data needs the Inference-Header-Content-Length header"),
    ],
)  # fmt: skip
def test_decode_errors_name_the_field(
    body: bytes, length: int | None, field: str, problem: str | None
) -> None:
    if problem is None:  # the valid request these cases spoil
        assert decode(body, length).inputs[0].data.tolist() == [5, 6]
        return
    error = bad_request(body, length)
    assert list(error.errors) == [field]
    assert error.errors[field][0].startswith(problem), error.errors[field][0]
    assert field in error.message


# -- responses --------------------------------------------------------------------


def response(*outputs: Tensor, **extra: Any) -> InferResponse:
    return InferResponse(model_name="m", outputs=list(outputs), **extra)


def request(
    outputs: list[RequestedOutput] | None = None, **parameters: Any
) -> InferRequest:
    return InferRequest("m", [], outputs=outputs, parameters=parameters)


def tensor(name: str, datatype: str, shape: tuple[int, ...] = (2, 3)) -> Tensor:
    return Tensor(name, datatype, shape, array(datatype, shape))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_tritonclient_reads_responses(datatype: str, binary: bool) -> None:
    out = tensor("y", datatype)
    body, length = rest.encode_response(
        response(out, id="r1", model_version="2"),
        request(binary_data_output=binary),
    )
    assert (length is not None) == binary
    result = triton_result(body, length)
    got = result.as_numpy("y")
    assert got.shape == (2, 3)
    if datatype == "BYTES":
        # JSON carries text: tritonclient gives str back; binary: bytes.
        expected = out.data if binary else numpy.vectorize(bytes.decode)(out.data)
        assert got.tolist() == expected.tolist()
    else:
        assert got.dtype == out.data.dtype
        assert numpy.array_equal(got, out.data)
    header = result.get_response()
    assert header["model_name"] == "m"
    assert header["model_version"] == "2"
    assert header["id"] == "r1"
    assert ("data" in header["outputs"][0]) != binary


def test_binary_per_output_overrides_the_request() -> None:
    outs = [tensor("a", "FP32"), tensor("b", "INT64"), tensor("c", "BYTES")]
    body, length = rest.encode_response(
        response(*outs),
        request(
            [
                RequestedOutput("a", {"binary_data": False}),
                RequestedOutput("b", {}),
                RequestedOutput("c", {"binary_data": True}),
            ],
            binary_data_output=True,
        ),
    )
    assert length is not None
    header = json.loads(body[:length])
    a, b, c = header["outputs"]
    assert "data" in a and "parameters" not in a
    assert b["parameters"] == {"binary_data_size": 6 * 8}
    assert "data" not in b and "data" not in c
    assert len(body) - length == 6 * 8 + c["parameters"]["binary_data_size"]
    result = triton_result(body, length)
    for out in outs:
        assert result.as_numpy(out.name).tolist() == out.data.tolist()


def test_json_unless_asked() -> None:
    out = tensor("y", "FP32")
    body, length = rest.encode_response(response(out), request())
    assert length is None
    assert json.loads(body) == {
        "model_name": "m",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2, 3], "data": out.data.reshape(-1).tolist()}
        ],
    }  # fmt: skip
    body, length = rest.encode_response(
        response(out), request([RequestedOutput("y", {"binary_data": False})], binary_data_output=True)
    )  # fmt: skip
    assert length is None


def test_what_tritonclient_asks_is_answered_as_asked() -> None:
    """The request as tritonclient sends it decides the response's encoding."""
    body, length = triton_body(
        [("x", array("FP32"), "FP32", True)],
        outputs=[
            triton.InferRequestedOutput("y", binary_data=True),
            triton.InferRequestedOutput("z", binary_data=False),
        ],
    )
    asked = decode(body, length)
    outs = [tensor("y", "FP16"), tensor("z", "UINT8")]
    body, length = rest.encode_response(response(*outs), asked)
    assert length is not None
    header = json.loads(body[:length])
    assert [("data" in o) for o in header["outputs"]] == [False, True]
    result = triton_result(body, length)
    for out in outs:
        assert numpy.array_equal(result.as_numpy(out.name), out.data)


def test_bytes_that_are_not_text_go_binary() -> None:
    values = numpy.array([b"\xff\x00", b"ok"], dtype=object)
    out = Tensor("raw", "BYTES", (2,), values)
    body, length = rest.encode_response(response(out, tensor("t", "INT8")), request())
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4 + 2 + 4 + 2}
    assert "data" in header["outputs"][1]
    result = triton_result(body, length)
    assert result.as_numpy("raw").tolist() == [b"\xff\x00", b"ok"]
    assert result.as_numpy("t").tolist() == array("INT8").tolist()


def test_non_finite_floats_in_json() -> None:
    values = numpy.array([numpy.nan, numpy.inf, -numpy.inf, 1.5], dtype=numpy.float32)
    body, length = rest.encode_response(
        response(Tensor("f", "FP32", (4,), values)), request()
    )
    assert length is None
    assert b"[NaN,Infinity,-Infinity,1.5]" in body
    got = triton_result(body, length).as_numpy("f")
    assert numpy.array_equal(got, values, equal_nan=True)
    # And deepserve reads them back in requests.
    again = decode(
        b'{"inputs":[{"name":"f","datatype":"FP32","shape":[4],'
        b'"data":[NaN,Infinity,-Infinity,1.5]}]}',
        None,
    )
    assert numpy.array_equal(again.inputs[0].data, values, equal_nan=True)


def test_parameters_and_tensor_parameters_are_echoed() -> None:
    out = Tensor("y", "INT32", (1,), numpy.array([4], numpy.int32), {"unit": "cm"})
    body, length = rest.encode_response(
        response(out, id="q", parameters={"took": numpy.float64(0.5), "s": "é"}),
        request(binary_data_output=True),
    )
    assert length is not None
    header = json.loads(body[:length])
    assert header["id"] == "q"
    assert header["parameters"] == {"took": 0.5, "s": "é"}
    assert header["outputs"][0]["parameters"] == {"unit": "cm", "binary_data_size": 4}
    assert body[length:] == struct.pack("<i", 4)
    assert body[:length].isascii()


def test_empty_outputs() -> None:
    outs = [Tensor("e", "FP32", (0, 2), numpy.zeros((0, 2), numpy.float32)),
            Tensor("s", "BYTES", (0,), numpy.empty(0, object))]  # fmt: skip
    for binary in (True, False):
        body, length = rest.encode_response(
            response(*outs), request(binary_data_output=binary)
        )
        result = triton_result(body, length)
        assert result.as_numpy("e").shape == (0, 2)
        assert result.as_numpy("s").shape == (0,)


def test_round_trip_through_the_codec() -> None:
    """What tritonclient sends, answered back as outputs, reads the same."""
    sent = {d: array(d, (3, 2)) for d in DATATYPES}
    body, length = triton_body(
        [(f"in_{d}", v, d, i % 2 == 0) for i, (d, v) in enumerate(sent.items())]
    )
    asked = decode(body, length)
    outs = [
        Tensor(t.name.replace("in_", "out_"), t.datatype, t.shape, t.data)
        for t in asked.inputs
    ]
    body, length = rest.encode_response(response(*outs), asked)
    result = triton_result(body, length)
    for datatype, values in sent.items():
        assert result.as_numpy(f"out_{datatype}").tolist() == values.tolist()


def test_error_body() -> None:
    assert rest.error_body('Model "x" is not served') == (
        b'{"error":"Model \\"x\\" is not served"}'
    )
    assert json.loads(rest.error_body("naïve")) == {"error": "naïve"}
