"""Protocol messages to deepserve's OIP values and back (pure logic)."""

from __future__ import annotations

import struct
from typing import Any

import numpy
import pytest

pytest.importorskip("grpc")

from deepserve.exceptions import BadInput
from deepserve.grpc import convert, proto
from deepserve.model import TensorSpec
from deepserve.oip.types import (
    InferResponse,
    ModelMetadata,
    ServerMetadata,
    Tensor,
)

#: Datatype -> (little-endian dtype, sample values of shape (2, 3)).
FIXED = {
    "BOOL": ("?", [[True, False, True], [False, False, True]]),
    "UINT8": ("<u1", [[0, 1, 255], [7, 8, 9]]),
    "UINT16": ("<u2", [[0, 1, 65535], [7, 8, 9]]),
    "UINT32": ("<u4", [[0, 1, 2**32 - 1], [7, 8, 9]]),
    "UINT64": ("<u8", [[0, 1, 2**64 - 1], [7, 8, 9]]),
    "INT8": ("<i1", [[-128, 0, 127], [7, 8, 9]]),
    "INT16": ("<i2", [[-(2**15), 0, 2**15 - 1], [7, 8, 9]]),
    "INT32": ("<i4", [[-(2**31), 0, 2**31 - 1], [7, 8, 9]]),
    "INT64": ("<i8", [[-(2**63), 0, 2**63 - 1], [7, 8, 9]]),
    "FP16": ("<f2", [[0.5, -1.0, 65504.0], [1, 2, 3]]),
    "FP32": ("<f4", [[0.5, -1.5, 3.25], [1e30, 2, 3]]),
    "FP64": ("<f8", [[0.5, -1.5, 1e300], [1, 2, 3]]),
}
CONTENTS = {
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
}
WORDS = [[b"a", b"", b"\x00\xff"], ["é".encode(), b"x" * 300, b"z"]]


def bytes_raw(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def request(*inputs: tuple[str, str, list[int]], raw: list[bytes] | None = None) -> Any:
    message = proto.ModelInferRequest(model_name="m")
    for name, datatype, shape in inputs:
        message.inputs.add(name=name, datatype=datatype, shape=shape)
    message.raw_input_contents.extend(raw or [])
    return message


def bad(message: Any, *words: str) -> None:
    with pytest.raises(BadInput) as caught:
        convert.request_from_proto(message)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("datatype", sorted(FIXED))
def test_raw_inputs_become_arrays_of_their_datatype(datatype: str) -> None:
    dtype, values = FIXED[datatype]
    expected = numpy.array(values, dtype=dtype)
    got = convert.request_from_proto(
        request(("x", datatype, [2, 3]), raw=[expected.tobytes()])
    ).inputs[0]
    assert (got.name, got.datatype, got.shape) == ("x", datatype, (2, 3))
    assert got.data.dtype == numpy.dtype(dtype)
    numpy.testing.assert_array_equal(got.data, expected)
    got.data[0, 0] = got.data[1, 1]  # a model may write into its inputs


def test_raw_bytes_inputs_become_object_arrays_of_bytes() -> None:
    flat = [item for row in WORDS for item in row]
    got = convert.request_from_proto(
        request(("s", "BYTES", [2, 3]), raw=[bytes_raw(flat)])
    ).inputs[0]
    assert got.data.dtype == object
    assert got.data.shape == (2, 3)
    assert got.data.tolist() == WORDS


@pytest.mark.parametrize("datatype", sorted(CONTENTS))
def test_typed_contents_become_arrays_of_their_datatype(datatype: str) -> None:
    dtype, values = FIXED[datatype]
    message = request(("x", datatype, [2, 3]))
    field = getattr(message.inputs[0].contents, CONTENTS[datatype])
    field.extend([v for row in values for v in row])
    got = convert.request_from_proto(message).inputs[0]
    assert got.data.dtype == numpy.dtype(dtype)
    numpy.testing.assert_array_equal(got.data, numpy.array(values, dtype=dtype))


def test_typed_bytes_contents_become_object_arrays() -> None:
    message = request(("s", "BYTES", [2, 3]))
    message.inputs[0].contents.bytes_contents.extend([w for row in WORDS for w in row])
    got = convert.request_from_proto(message).inputs[0]
    assert got.data.dtype == object
    assert got.data.tolist() == WORDS


def test_an_empty_tensor_needs_no_data() -> None:
    got = convert.request_from_proto(request(("e", "FP32", [0, 4]))).inputs[0]
    assert got.data.shape == (0, 4)
    assert got.data.dtype == numpy.float32


def test_the_request_fields_and_parameters_are_kept() -> None:
    message = request(("x", "INT64", [1]), raw=[numpy.int64(5).tobytes()])
    message.id = "r1"
    message.model_version = "2"
    message.parameters["n"].int64_param = -3
    message.parameters["big"].uint64_param = 2**64 - 1
    message.parameters["f"].double_param = 0.5
    message.parameters["flag"].bool_param = False
    message.parameters["s"].string_param = "x"
    message.inputs[0].parameters["p"].string_param = "q"
    wanted = message.outputs.add(name="y")
    wanted.parameters["binary_data"].bool_param = True
    got = convert.request_from_proto(message)
    assert (got.model_name, got.model_version, got.id) == ("m", "2", "r1")
    assert got.parameters == {
        "n": -3,
        "big": 2**64 - 1,
        "f": 0.5,
        "flag": False,
        "s": "x",
    }
    assert got.inputs[0].parameters == {"p": "q"}
    assert got.outputs is not None
    assert [(o.name, o.parameters) for o in got.outputs] == [
        ("y", {"binary_data": True})
    ]


def test_unset_optional_fields_are_none() -> None:
    got = convert.request_from_proto(request(("x", "BOOL", [1]), raw=[b"\x01"]))
    assert (got.model_version, got.id, got.outputs, got.parameters) == (
        None,
        None,
        None,
        {},
    )


def test_inputs_follow_raw_contents_in_order() -> None:
    got = convert.request_from_proto(
        request(
            ("a", "INT32", [2]),
            ("b", "BYTES", [1]),
            raw=[numpy.array([1, 2], "<i4").tobytes(), bytes_raw([b"hi"])],
        )
    )
    assert [t.name for t in got.inputs] == ["a", "b"]
    assert got.inputs[0].data.tolist() == [1, 2]
    assert got.inputs[1].data.tolist() == [b"hi"]


def test_a_request_needs_a_model_name() -> None:
    message = request(("x", "BOOL", [1]), raw=[b"\x01"])
    message.model_name = ""
    bad(message, "model_name")


@pytest.mark.parametrize(
    ("inputs", "raw", "words"),
    [
        ([("x", "FP32", [2])], [b"\x00" * 7], ["'x'", "7 bytes", "needs 8"]),
        ([("x", "FP32", [-1])], [b""], ["'x'", "negative"]),
        ([("x", "FLOAT", [1])], [b"\x00" * 4], ["'x'", "FLOAT"]),
        ([("", "FP32", [1])], [b"\x00" * 4], ["Input 0", "no name"]),
        (
            [("x", "BOOL", [1]), ("x", "BOOL", [1])],
            [b"\x01", b"\x01"],
            ["'x'", "twice"],
        ),
        ([("x", "BOOL", [1]), ("y", "BOOL", [1])], [b"\x01"], ["1 entries", "2"]),
        ([("x", "BOOL", [2])], [b"\x01\x02"], ["'x'", "0 or 1"]),
        ([("s", "BYTES", [1])], [b"\x05\x00"], ["'s'", "length"]),
        ([("s", "BYTES", [1])], [b"\x05\x00\x00\x00ab"], ["'s'", "only 2"]),
        ([("s", "BYTES", [3])], [bytes_raw([b"a", b"b"])], ["'s'", "2 of 3 BYTES"]),
    ],
)
def test_bad_raw_inputs_are_refused_by_name(
    inputs: list[tuple[str, str, list[int]]], raw: list[bytes], words: list[str]
) -> None:
    bad(request(*inputs, raw=raw), *words)


def test_contents_and_raw_data_do_not_mix() -> None:
    message = request(("x", "FP32", [1]), ("y", "FP32", [1]), raw=[b"\0" * 4] * 2)
    message.inputs[1].contents.fp32_contents.append(1.0)
    bad(message, "'y'", "raw_input_contents")


def test_typed_contents_must_match_the_datatype() -> None:
    message = request(("x", "FP32", [2]))
    message.inputs[0].contents.int64_contents.extend([1, 2])
    bad(message, "'x'", "fp32_contents", "int64_contents")


def test_typed_contents_must_fill_the_shape() -> None:
    message = request(("x", "INT64", [2, 2]))
    message.inputs[0].contents.int64_contents.extend([1, 2, 3])
    bad(message, "'x'", "needs 4", "has 3")


def test_an_input_without_data_is_refused() -> None:
    bad(request(("x", "INT64", [2])), "'x'", "no data")


def test_fp16_has_no_typed_contents() -> None:
    message = request(("h", "FP16", [1]))
    message.inputs[0].contents.fp32_contents.append(1.0)
    bad(message, "'h'", "raw_input_contents")


@pytest.mark.parametrize(
    ("datatype", "value"), [("INT8", 128), ("INT16", -(2**15) - 1), ("UINT8", 256)]
)
def test_narrow_integers_out_of_range_are_refused(datatype: str, value: int) -> None:
    message = request(("x", datatype, [2]))
    getattr(message.inputs[0].contents, CONTENTS[datatype]).extend([0, value])
    bad(message, "'x'", "range")


def test_a_parameter_without_value_is_refused() -> None:
    message = request(("x", "BOOL", [1]), raw=[b"\x01"])
    message.inputs[0].parameters["p"].SetInParent()
    bad(message, "'p'", "input 'x'")


def decode_output(message: Any, index: int) -> Any:
    output = message.outputs[index]
    raw = message.raw_output_contents[index]
    if output.datatype == "BYTES":
        from tritonclient.utils import deserialize_bytes_tensor

        return deserialize_bytes_tensor(raw).reshape(tuple(output.shape))
    dtype = FIXED[output.datatype][0]
    return numpy.frombuffer(raw, dtype=dtype).reshape(tuple(output.shape))


def test_responses_carry_every_output_raw_with_its_shape_and_datatype() -> None:
    outputs = [
        Tensor(dt, dt, (2, 3), numpy.array(FIXED[dt][1], dtype=FIXED[dt][0]))
        for dt in sorted(FIXED)
    ]
    words = numpy.array(WORDS, dtype=object)
    outputs.append(Tensor("s", "BYTES", (2, 3), words, {"note": "n"}))
    # Fortran order, and text elements, still travel row-major as bytes.
    outputs.append(
        Tensor("t", "BYTES", (1, 2), numpy.array([["ab", "é"]], dtype=object))
    )
    outputs.append(
        Tensor("f", "INT32", (2, 2), numpy.asfortranarray([[1, 2], [3, 4]], "<i4"))
    )
    response = InferResponse(
        "m", outputs, model_version="1", id="r", parameters={"k": 1}
    )
    message = convert.response_to_proto(response)
    assert (message.model_name, message.model_version, message.id) == ("m", "1", "r")
    assert message.parameters["k"].int64_param == 1
    assert len(message.raw_output_contents) == len(outputs)
    for index, tensor in enumerate(outputs[: len(FIXED) + 1]):
        got = message.outputs[index]
        assert (got.name, got.datatype, list(got.shape)) == (
            tensor.name,
            tensor.datatype,
            [2, 3],
        )
        numpy.testing.assert_array_equal(decode_output(message, index), tensor.data)
    assert message.outputs[len(FIXED)].parameters["note"].string_param == "n"
    assert decode_output(message, len(FIXED) + 1).tolist() == [[b"ab", "é".encode()]]
    assert decode_output(message, len(FIXED) + 2).tolist() == [[1, 2], [3, 4]]


def test_unset_response_fields_are_empty() -> None:
    message = convert.response_to_proto(InferResponse("m", []))
    assert (message.model_version, message.id, len(message.outputs)) == ("", "", 0)


def test_an_output_whose_data_does_not_fit_its_shape_is_an_error() -> None:
    tensor = Tensor("y", "FP32", (3,), numpy.zeros(2, numpy.float32))
    with pytest.raises(ValueError, match="'y'"):
        convert.response_to_proto(InferResponse("m", [tensor]))


def test_an_output_is_never_cast_unsafely() -> None:
    tensor = Tensor("y", "INT32", (1,), numpy.array([1.5]))
    with pytest.raises(TypeError):
        convert.response_to_proto(InferResponse("m", [tensor]))


def test_a_bytes_output_holds_bytes() -> None:
    tensor = Tensor("y", "BYTES", (1,), numpy.array([3], dtype=object))
    with pytest.raises(ValueError, match="BYTES element is 3, not bytes"):
        convert.response_to_proto(InferResponse("m", [tensor]))


def test_parameters_go_out_as_their_own_kinds() -> None:
    message = proto.ModelInferResponse()
    convert.parameters_to_proto(
        message.parameters,
        {
            "b": True,
            "i": -(2**63),
            "u": 2**64 - 1,
            "d": 0.25,
            "s": "x",
            "np": numpy.int32(4),
            "npf": numpy.float32(0.5),
        },
    )
    kinds = {
        key: (
            value.WhichOneof("parameter_choice"),
            getattr(value, str(value.WhichOneof("parameter_choice"))),
        )
        for key, value in message.parameters.items()
    }
    assert kinds == {
        "b": ("bool_param", True),
        "i": ("int64_param", -(2**63)),
        "u": ("uint64_param", 2**64 - 1),
        "d": ("double_param", 0.25),
        "s": ("string_param", "x"),
        "np": ("int64_param", 4),
        "npf": ("double_param", 0.5),
    }
    assert convert.parameters_from_proto(message.parameters, "x") == {
        key: value for key, (_, value) in kinds.items()
    }


@pytest.mark.parametrize(
    ("value", "error"), [([1], TypeError), (None, TypeError), (2**64, ValueError)]
)
def test_parameters_grpc_cannot_carry_are_errors(value: Any, error: type) -> None:
    with pytest.raises(error, match="'p'"):
        convert.parameters_to_proto(proto.ModelInferResponse().parameters, {"p": value})


def test_metadata_responses() -> None:
    server = convert.server_metadata_to_proto(
        ServerMetadata("deepserve", "1.2", ("binary_tensor_data",))
    )
    assert (server.name, server.version, list(server.extensions)) == (
        "deepserve",
        "1.2",
        ["binary_tensor_data"],
    )
    model = convert.model_metadata_to_proto(
        ModelMetadata(
            "m",
            ("2", "1"),
            "deepserve",
            (TensorSpec("x", "FP32", (-1, 3)),),
            (TensorSpec("y", "BYTES", (-1,)), TensorSpec("z", "INT64", ())),
        )
    )
    assert (model.name, list(model.versions), model.platform) == (
        "m",
        ["2", "1"],
        "deepserve",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("x", "FP32", [-1, 3])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("y", "BYTES", [-1]),
        ("z", "INT64", []),
    ]
