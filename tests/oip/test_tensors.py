"""Tensors: datatypes, JSON and raw encodings, model outputs, contracts.

The raw layout is checked against the Triton client's own BYTES functions
(``tritonclient.utils``) and NumPy's byte layout.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from deepserve.exceptions import BadInput
from deepserve.model import DATATYPES, TensorSpec
from deepserve.oip import tensors
from deepserve.oip.types import Tensor

NUMERIC = [d for d in DATATYPES if d != "BYTES"]


def bad_input(call: Any, *args: Any, **kwargs: Any) -> BadInput:
    with pytest.raises(BadInput) as info:
        call(*args, **kwargs)
    return info.value


def sample(datatype: str, shape: tuple[int, ...] = (2, 3)) -> numpy.ndarray[Any, Any]:
    count = math.prod(shape)
    if datatype == "BYTES":
        values = [f"é{i}".encode() + b"\x00" * (i % 2) for i in range(count)]
        array = numpy.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    if datatype == "BOOL":
        return (numpy.arange(count) % 3 == 0).reshape(shape)
    dtype = tensors.numpy_dtype(datatype)
    if dtype.kind == "f":
        return (numpy.arange(count) * 0.5 - 1).astype(dtype).reshape(shape)
    info = numpy.iinfo(dtype)
    extremes = [
        int(info.min),
        int(info.max),
        0,
        1,
        int(info.max) - 1,
        int(info.min) + 1,
    ]
    return numpy.array((extremes * count)[:count], dtype=dtype).reshape(shape)


# -- datatypes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "expected"),
    [
        ("BOOL", numpy.bool_),
        ("UINT8", numpy.uint8),
        ("UINT16", numpy.uint16),
        ("UINT32", numpy.uint32),
        ("UINT64", numpy.uint64),
        ("INT8", numpy.int8),
        ("INT16", numpy.int16),
        ("INT32", numpy.int32),
        ("INT64", numpy.int64),
        ("FP16", numpy.float16),
        ("FP32", numpy.float32),
        ("FP64", numpy.float64),
        ("BYTES", numpy.object_),
    ],
)
def test_numpy_dtype_and_back(datatype: str, expected: type) -> None:
    dtype = tensors.numpy_dtype(datatype)
    assert dtype == numpy.dtype(expected)
    assert dtype.byteorder in "<|="
    assert tensors.datatype_of(numpy.zeros(2, dtype=dtype)) == datatype


def test_every_datatype_has_a_dtype() -> None:
    assert [tensors.datatype_of(numpy.zeros(1, tensors.numpy_dtype(d))) for d in DATATYPES] == list(DATATYPES)  # fmt: skip


def test_unknown_datatype() -> None:
    with pytest.raises(ValueError, match=r"Unknown datatype 'FP8'.*BOOL, UINT8"):
        tensors.numpy_dtype("FP8")


def test_datatype_of_text_and_big_endian() -> None:
    assert tensors.datatype_of(numpy.array(["a", "bc"])) == "BYTES"
    assert tensors.datatype_of(numpy.array([b"a"])) == "BYTES"
    assert tensors.datatype_of(numpy.zeros(2, dtype=">f4")) == "FP32"


@pytest.mark.parametrize("dtype", ["complex64", "datetime64[s]", "V4", "longdouble"])
def test_datatype_of_unsupported(dtype: str) -> None:
    if numpy.dtype(dtype).itemsize == 8 and numpy.dtype(dtype).kind == "f":
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(ValueError, match="has no Open Inference Protocol datatype"):
        tensors.datatype_of(numpy.zeros(1, dtype=dtype))


# -- JSON: requests -----------------------------------------------------------


def request_tensor(datatype: str, shape: list[int], data: Any, **extra: Any) -> Any:
    return {"name": "x", "datatype": datatype, "shape": shape, "data": data, **extra}


@pytest.mark.parametrize("datatype", DATATYPES)
def test_from_json_flat_and_nested(datatype: str) -> None:
    expected = sample(datatype)
    if datatype == "BYTES":
        # JSON carries text: the elements' UTF-8 encoding.
        texts = [b.decode() for b in expected.reshape(-1)]
        flat: list[Any] = texts
        nested: list[Any] = [texts[:3], texts[3:]]
    else:
        flat = expected.reshape(-1).tolist()
        nested = expected.tolist()
    for data in (flat, nested):
        tensor = tensors.from_json(request_tensor(datatype, [2, 3], data))
        assert tensor.name == "x"
        assert tensor.datatype == datatype
        assert tensor.shape == (2, 3)
        assert tensor.data.shape == (2, 3)
        assert tensor.data.dtype == tensors.numpy_dtype(datatype)
        assert tensor.data.tolist() == expected.tolist()


def test_from_json_keeps_parameters() -> None:
    tensor = tensors.from_json(request_tensor("INT32", [1], [7], parameters={"a": 1}))
    assert tensor.parameters == {"a": 1}


def test_from_json_scalar_and_empty() -> None:
    scalar = tensors.from_json(request_tensor("FP32", [], [2.5]))
    assert scalar.shape == ()
    assert scalar.data.shape == ()
    assert float(scalar.data) == 2.5
    empty = tensors.from_json(request_tensor("INT8", [0, 3], []))
    assert empty.data.shape == (0, 3)
    assert empty.data.dtype == numpy.int8


def test_from_json_integers_into_floats_and_bools_as_numbers() -> None:
    tensor = tensors.from_json(request_tensor("FP16", [3], [1, 2.5, True]))
    assert tensor.data.dtype == numpy.float16
    assert tensor.data.tolist() == [1.0, 2.5, 1.0]


def test_from_json_nan_and_infinity() -> None:
    tensor = tensors.from_json(
        request_tensor("FP32", [3], [float("nan"), float("inf"), -float("inf")])
    )
    assert numpy.isnan(tensor.data[0])
    assert tensor.data[1:].tolist() == [float("inf"), -float("inf")]


def test_from_json_uint64_beyond_int64() -> None:
    tensor = tensors.from_json(request_tensor("UINT64", [2], [0, 2**64 - 1]))
    assert tensor.data.tolist() == [0, 2**64 - 1]


@pytest.mark.parametrize(
    ("obj", "field", "problem"),
    [
        ([], "inputs[0]", "must be an object, not a list"),
        ({"datatype": "FP32", "shape": [1], "data": [1]}, "inputs[0].name", "missing"),
        (
            {"name": 3, "datatype": "FP32", "shape": [1], "data": [1]},
            "inputs[0].name",
            "must be a non-empty string",
        ),
        ({"name": "x", "shape": [1], "data": [1]}, "inputs[0].datatype", "missing"),
        (
            request_tensor("FLOAT", [1], [1]),
            "inputs[0].datatype",
            "unknown datatype 'FLOAT'; the datatypes are BOOL",
        ),
        ({"name": "x", "datatype": "FP32", "data": [1]}, "inputs[0].shape", "missing"),
        (request_tensor("FP32", "3", [1]), "inputs[0].shape", "must be a list"),
        (
            request_tensor("FP32", [2, -1], [1]),
            "inputs[0].shape",
            "dimensions must be integers >= 0, got [2, -1]",
        ),
        (
            request_tensor("FP32", [1.0], [1]),
            "inputs[0].shape",
            "dimensions must be integers >= 0",
        ),
        (
            request_tensor("FP32", [True], [1]),
            "inputs[0].shape",
            "dimensions must be integers >= 0",
        ),
        (
            request_tensor("FP32", [1], [1], parameters=[]),
            "inputs[0].parameters",
            "must be an object, not a list",
        ),
        ({"name": "x", "datatype": "FP32", "shape": [1]}, "inputs[0].data", "missing"),
        (
            request_tensor("FP32", [1], 1.0),
            "inputs[0].data",
            "must be a list, not a number",
        ),
        (
            request_tensor("FP32", [2, 3], [1, 2, 3, 4, 5]),
            "inputs[0].data",
            "has 5 elements, but shape [2, 3] needs 6",
        ),
        (
            request_tensor("FP32", [2, 3], [[1, 2, 3], [4, 5]]),
            "inputs[0].data",
            "nested lists must be regular",
        ),
        (
            request_tensor("FP32", [3], [1, [2, 3]]),
            "inputs[0].data",
            "nested lists must be regular",
        ),
        (
            request_tensor("INT64", [2], [1, 3.5]),
            "inputs[0].data",
            "element 1 is 3.5, not an integer (datatype INT64)",
        ),
        (
            request_tensor("INT32", [2], [1, 2.0]),
            "inputs[0].data",
            "element 1 is 2.0, not an integer",
        ),
        (
            request_tensor("UINT8", [2], [1, 300]),
            "inputs[0].data",
            "element 1 is 300, out of range for UINT8 (0 to 255)",
        ),
        (
            request_tensor("UINT32", [2], [[0], [-1]]),
            "inputs[0].data",
            "element 1 is -1, out of range for UINT32",
        ),
        (
            request_tensor("INT64", [2], [-1, 2**63]),
            "inputs[0].data",
            f"element 1 is {2**63}, out of range for INT64",
        ),
        (
            request_tensor("UINT64", [1], [2**64]),
            "inputs[0].data",
            f"element 0 is {2**64}, out of range for UINT64",
        ),
        (
            request_tensor("FP32", [2], [1, "2"]),
            "inputs[0].data",
            "element 1 is '2', not a number",
        ),
        (
            request_tensor("FP64", [2], [None, 1]),
            "inputs[0].data",
            "element 0 is null, not a number",
        ),
        (
            request_tensor("FP32", [2], [1, {}]),
            "inputs[0].data",
            "element 1 is an object, not a number",
        ),
        (
            request_tensor("FP16", [2], [1, 70000]),
            "inputs[0].data",
            "element 1 is 70000, out of range for FP16",
        ),
        (
            request_tensor("FP32", [1], [1e39]),
            "inputs[0].data",
            "element 0 is 1e+39, out of range for FP32",
        ),
        (
            request_tensor("FP64", [1], [10**400]),
            "inputs[0].data",
            "element 0 is 1000000000000000000000000000000000000..., out of range for FP64",
        ),
        (
            request_tensor("BOOL", [2], [True, 1]),
            "inputs[0].data",
            "element 1 is 1, not true or false",
        ),
        (
            request_tensor("BOOL", [2], [False, "true"]),
            "inputs[0].data",
            "element 1 is 'true', not true or false",
        ),
        (
            request_tensor("BYTES", [2], ["a", 1]),
            "inputs[0].data",
            "element 1 is 1, not a string (datatype BYTES)",
        ),
        (
            request_tensor("BYTES", [2], [["a"], [None]]),
            "inputs[0].data",
            "element 1 is null, not a string",
        ),
        (
            request_tensor("BYTES", [3], ["a", "b"]),
            "inputs[0].data",
            "has 2 elements, but shape [3] needs 3",
        ),
    ],
)
def test_from_json_errors_name_the_field(obj: Any, field: str, problem: str) -> None:
    error = bad_input(tensors.from_json, obj)
    assert list(error.errors) == [field]
    [message] = error.errors[field]
    assert message.startswith(problem), message
    assert field in error.message
    assert problem in error.message
    if isinstance(obj, dict) and isinstance(obj.get("name"), str):
        assert f"tensor '{obj['name']}'" in error.message


def test_from_json_where_names_the_tensor() -> None:
    error = bad_input(
        tensors.from_json, request_tensor("INT8", [1], [999]), where="inputs[4]"
    )
    assert list(error.errors) == ["inputs[4].data"]
    assert error.message.startswith("Invalid tensor 'x' (inputs[4].data): element 0")


def test_from_json_deeply_nested_data() -> None:
    data: Any = [1.0]
    for _ in range(100):
        data = [data]
    error = bad_input(tensors.from_json, request_tensor("FP32", [1], data))
    assert "nested at most 32 deep" in error.errors["inputs[0].data"][0]
    for _ in range(2000):
        data = [data]
    error = bad_input(tensors.from_json, request_tensor("BYTES", [1], data))
    assert list(error.errors) == ["inputs[0].data"]


# -- JSON: responses ----------------------------------------------------------


@pytest.mark.parametrize("datatype", NUMERIC)
def test_to_json_numbers(datatype: str) -> None:
    data = sample(datatype)
    obj = tensors.to_json(Tensor("y", datatype, (2, 3), data))
    assert obj == {
        "name": "y",
        "datatype": datatype,
        "shape": [2, 3],
        "data": data.reshape(-1).tolist(),
    }
    assert all(type(v) is type(data.reshape(-1).tolist()[0]) for v in obj["data"])


def test_to_json_fp16_as_floats_and_parameters() -> None:
    data = numpy.array([0.1, 65504], dtype=numpy.float16)
    obj = tensors.to_json(Tensor("y", "FP16", (2,), data, {"p": "q"}))
    assert obj["data"] == [float(numpy.float16(0.1)), 65504.0]
    assert all(type(v) is float for v in obj["data"])
    assert obj["parameters"] == {"p": "q"}


def test_to_json_converts_to_the_datatype() -> None:
    data = numpy.array([[1, 2]], dtype=">i8")
    assert tensors.to_json(Tensor("y", "FP32", (1, 2), data))["data"] == [1.0, 2.0]


def test_to_json_bytes_as_text() -> None:
    data = numpy.array([b"caf\xc3\xa9", b"", b"a\x00"], dtype=object)
    obj = tensors.to_json(Tensor("y", "BYTES", (3,), data))
    assert obj["data"] == ["café", "", "a\x00"]


def test_to_json_bytes_that_are_not_text() -> None:
    data = numpy.array([b"ok", b"\xff\xfe"], dtype=object)
    with pytest.raises(tensors.NotText, match="Element 1 of tensor 'y' is not UTF-8"):
        tensors.to_json(Tensor("y", "BYTES", (2,), data))


def test_to_json_binary_leaves_data_out() -> None:
    obj = tensors.to_json(
        Tensor("y", "INT32", (2,), numpy.array([1, 2]), {"p": 1}), binary_size=8
    )
    assert obj == {
        "name": "y",
        "datatype": "INT32",
        "shape": [2],
        "parameters": {"p": 1, "binary_data_size": 8},
    }


# -- raw ------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", NUMERIC)
def test_raw_round_trip_numbers(datatype: str) -> None:
    data = sample(datatype)
    raw = tensors.to_raw(Tensor("y", datatype, (2, 3), data))
    dtype = tensors.numpy_dtype(datatype)
    assert raw == data.astype(dtype.newbyteorder("<")).tobytes()
    assert len(raw) == 6 * dtype.itemsize
    back = tensors.from_raw("y", datatype, [2, 3], raw)
    assert back.shape == (2, 3)
    assert back.data.dtype == dtype
    assert numpy.array_equal(back.data, data)


def test_raw_is_little_endian_row_major() -> None:
    data = numpy.array([[1, 2], [3, 4]], dtype=">i2").T  # big-endian, Fortran order
    raw = tensors.to_raw(Tensor("y", "INT16", (2, 2), data))
    assert raw == struct.pack("<4h", 1, 3, 2, 4)
    assert tensors.to_raw(Tensor("b", "BOOL", (3,), numpy.array([1, 0, 1], bool))) == (
        b"\x01\x00\x01"
    )


def test_from_raw_is_not_a_copy_of_a_writable_buffer() -> None:
    raw = bytearray(struct.pack("<2f", 1.5, 2.5))
    tensor = tensors.from_raw("x", "FP32", (2,), raw)
    raw[0:4] = struct.pack("<f", 9.0)
    assert tensor.data.tolist() == [9.0, 2.5]


def test_from_raw_of_bytes_is_writable_as_a_model_may_expect() -> None:
    data = tensors.from_raw("x", "FP32", (2,), struct.pack("<2f", 1.5, 2.5)).data
    data *= 2  # in place, as a model may do to its input
    assert data.tolist() == [3.0, 5.0]


def test_from_raw_memoryview_slice() -> None:
    body = b"head" + struct.pack("<3i", 1, -2, 3) + b"tail"
    tensor = tensors.from_raw("x", "INT32", [3], memoryview(body)[4:16])
    assert tensor.data.tolist() == [1, -2, 3]


def test_bytes_raw_matches_tritonclient() -> None:
    data = sample("BYTES", (2, 2))
    data[0, 0] = b""
    raw = tensors.to_raw(Tensor("s", "BYTES", (2, 2), data))
    assert raw == serialize_byte_tensor(data).item()
    assert deserialize_bytes_tensor(raw).tolist() == data.reshape(-1).tolist()
    back = tensors.from_raw("s", "BYTES", (2, 2), raw)
    assert back.data.shape == (2, 2)
    assert back.data.tolist() == data.tolist()
    assert all(type(v) is bytes for v in back.data.reshape(-1))


def test_bytes_raw_from_tritonclient_strings() -> None:
    texts = numpy.array(["naïve", "x"], dtype=object)
    raw = serialize_byte_tensor(texts).item()
    assert tensors.from_raw("s", "BYTES", [2], raw).data.tolist() == [
        "naïve".encode(),
        b"x",
    ]


def test_empty_tensors_raw() -> None:
    assert tensors.to_raw(Tensor("s", "BYTES", (0,), numpy.empty(0, object))) == b""
    assert tensors.from_raw("s", "BYTES", [0, 4], b"").data.shape == (0, 4)
    assert tensors.from_raw("s", "FP64", [3, 0], b"").data.shape == (3, 0)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "field", "problem"),
    [
        ("FP32", [2, 2], b"\x00" * 15, "x.data", "has 15 bytes, but shape [2, 2] of FP32 needs 16"),
        ("INT64", [1], b"\x00" * 9, "x.data", "has 9 bytes, but shape [1] of INT64 needs 8"),
        ("BOOL", [3], b"\x01\x00\x02", "x.data", "byte 2 is 2; BOOL elements are 0 or 1"),
        ("FP9", [1], b"", "x.datatype", "unknown datatype 'FP9'"),
        ("FP32", [-1], b"", "x.shape", "dimensions must be integers >= 0, got [-1]"),
        ("BYTES", [2], struct.pack("<I", 1) + b"a", "x.data", "ends after 1 of 2 BYTES elements"),
        ("BYTES", [1], b"\x01\x00", "x.data", "ends after 0 of 1 BYTES elements (in a length prefix)"),
        ("BYTES", [1], struct.pack("<I", 5) + b"abc", "x.data", "BYTES element 0 claims 5 bytes, but only 3 remain"),
        ("BYTES", [1], struct.pack("<I", 1) + b"ab", "x.data", "has 1 bytes left after the 1 BYTES elements"),
        ("BYTES", [0], struct.pack("<I", 0), "x.data", "has 4 bytes left after the 0 BYTES elements"),
    ],
)  # fmt: skip
def test_from_raw_errors(
    datatype: str, shape: list[int], raw: bytes, field: str, problem: str
) -> None:
    error = bad_input(tensors.from_raw, "x", datatype, shape, raw)
    assert list(error.errors) == [field]
    assert error.errors[field][0].startswith(problem)
    assert "tensor 'x'" in error.message


def test_from_raw_where() -> None:
    error = bad_input(
        tensors.from_raw, "x", "FP32", [1], b"", where="raw_input_contents[2]"
    )
    assert list(error.errors) == ["raw_input_contents[2].data"]
    assert "tensor 'x' (raw_input_contents[2].data)" in error.message


# -- model outputs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "datatype", "shape", "expected"),
    [
        ([[1, 2], [3, 4]], "INT64", (2, 2), [[1, 2], [3, 4]]),
        ([0.5, 1], "FP64", (2,), [0.5, 1.0]),
        ([True, False], "BOOL", (2,), [True, False]),
        (3, "INT64", (), 3),
        (2.5, "FP64", (), 2.5),
        (numpy.float32(1.5), "FP32", (), 1.5),
        (numpy.arange(6, dtype=numpy.uint16).reshape(3, 2), "UINT16", (3, 2), [[0, 1], [2, 3], [4, 5]]),
        ("héllo", "BYTES", (), "héllo".encode()),
        (b"\xff\x00", "BYTES", (), b"\xff\x00"),
        (["a", "bc"], "BYTES", (2,), [b"a", b"bc"]),
        ([b"a\x00", b"b"], "BYTES", (2,), [b"a\x00", b"b"]),
        ([["a"], [b"b"]], "BYTES", (2, 1), [[b"a"], [b"b"]]),
        (numpy.array(["x", "yz"]), "BYTES", (2,), [b"x", b"yz"]),
        (numpy.array([b"x\x00"], dtype=object), "BYTES", (1,), [b"x\x00"]),
        ([], "FP64", (0,), []),
    ],
)  # fmt: skip
def test_from_array(
    value: Any, datatype: str, shape: tuple[int, ...], expected: Any
) -> None:
    tensor = tensors.from_array("out", value)
    assert tensor.name == "out"
    assert tensor.datatype == datatype
    assert tensor.shape == shape
    assert tensor.data.shape == shape
    assert tensor.data.dtype == tensors.numpy_dtype(datatype)
    assert tensor.data.tolist() == expected


def test_from_array_with_datatype() -> None:
    tensor = tensors.from_array("out", numpy.array([1.5, 2], dtype=">f8"), "FP16")
    assert tensor.data.dtype == numpy.float16
    assert tensor.data.tolist() == [1.5, 2.0]
    tensor = tensors.from_array("out", [1, 2], "UINT8")
    assert tensor.data.dtype == numpy.uint8
    big = tensors.from_array("out", numpy.array([1, 2], dtype=">i4"))
    assert big.data.dtype == numpy.dtype("<i4")
    assert big.datatype == "INT32"


@pytest.mark.parametrize(
    ("value", "datatype", "problem"),
    [
        ([[1, 2], [3]], None, "Output 'out' is ragged"),
        ([1, [2]], None, "Output 'out' is ragged"),
        (numpy.array([1j]), None, "Output 'out': NumPy dtype complex128 has no Open Inference Protocol datatype"),
        ([1.5], "INT32", "Output 'out' as INT32: element 0 is 1.5, not an integer"),
        ([1, 2**40], "INT32", f"Output 'out' as INT32: element 1 is {2**40}, out of range for INT32"),
        ([1, -1], "UINT8", "element 1 is -1, out of range for UINT8"),
        ([1e300], "FP32", "element 0 is 1e+300, out of range for FP32"),
        ([1, 0], "BOOL", "element 0 is 1, not true or false"),
        (numpy.array(["a"]), "FP32", "Output 'out' holds text, but its datatype is FP32"),
        (["a"], "FP32", "Output 'out' as FP32: element 0 is 'a', not a number"),
        ([1.0], "BYTES", "Output 'out' holds numbers (float64), but its datatype is BYTES"),
        (["a", 1], None, "Output 'out': element 1 is 1, not a string or bytes"),
        ([b"a", None], None, "element 1 is null, not a string or bytes"),
        ([["a", "b"], ["c"]], None, "Output 'out' is ragged"),
        (numpy.array([["a", "b"], ["c"]], dtype=object), None, "element 0 is ['a', 'b'], not a string or bytes (nested lists must all have the same length)"),
        ([1], "FP8", "Output 'out': unknown datatype 'FP8'"),
    ],
)  # fmt: skip
def test_from_array_errors(value: Any, datatype: str | None, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        tensors.from_array("out", value, datatype)
    assert problem in str(info.value)


# -- contracts ------------------------------------------------------------------


def test_check_accepts() -> None:
    spec = TensorSpec("x", "FP32", (-1, 3))
    tensors.check(spec, Tensor("x", "FP32", (5, 3), numpy.zeros((5, 3), "f4")))
    tensors.check(spec, Tensor("x", "FP32", (0, 3), numpy.zeros((0, 3), "f4")))
    tensors.check(TensorSpec("s", "BYTES", ()), Tensor("s", "BYTES", (), numpy.empty((), object)))  # fmt: skip


@pytest.mark.parametrize(
    ("datatype", "shape", "problems"),
    [
        ("INT64", (5, 3), ["datatype must be FP32, got INT64"]),
        ("FP32", (5, 4), ["shape must be [-1, 3] (-1: any size), got [5, 4]"]),
        ("FP32", (15,), ["shape must be [-1, 3] (-1: any size), got [15]"]),
        ("FP32", (1, 5, 3), ["shape must be [-1, 3] (-1: any size), got [1, 5, 3]"]),
        (
            "FP64",
            (3,),
            [
                "datatype must be FP32, got FP64",
                "shape must be [-1, 3] (-1: any size), got [3]",
            ],
        ),
    ],
)
def test_check_refuses(
    datatype: str, shape: tuple[int, ...], problems: list[str]
) -> None:
    spec = TensorSpec("x", "FP32", (-1, 3))
    tensor = Tensor(
        "x", datatype, shape, numpy.zeros(shape, tensors.numpy_dtype(datatype))
    )
    error = bad_input(tensors.check, spec, tensor)
    assert error.errors == {"x": problems}
    assert error.message.startswith("Tensor 'x' does not fit the model: ")
    assert all(problem in error.message for problem in problems)
    error = bad_input(tensors.check, spec, tensor, where="inputs[1]")
    assert error.errors == {"inputs[1]": problems}
