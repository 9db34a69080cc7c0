"""Tensors of the Open Inference Protocol: datatypes and encodings.

The protocol's datatypes map to NumPy dtypes (:func:`numpy_dtype`,
:func:`datatype_of`). A tensor travels either in JSON (:func:`from_json`,
:func:`to_json`) or raw (:func:`from_raw`, :func:`to_raw`: the layout of the
REST binary data extension and of gRPC's ``raw_input_contents`` and
``raw_output_contents``). A model's outputs become tensors with
:func:`from_array`, and :func:`check` holds a tensor to a model's
:class:`~deepserve.model.TensorSpec`.

Decisions the protocol leaves open:

- ``true`` and ``false`` are read as 1 and 0 in numeric tensors (as Python
  reads them); numbers are not read as ``BOOL``.
- Floats that are not finite are written in JSON as ``NaN``, ``Infinity``
  and ``-Infinity``, which Python's :mod:`json` and the Triton clients read
  (strict JSON has no such values: ask for binary outputs to avoid them);
  they are read back too.
- ``BYTES`` in JSON are strings: their UTF-8 encoding is the element's
  bytes. An element that is not UTF-8 text cannot be written in JSON
  (:class:`NotText`); :mod:`deepserve.oip.rest` sends such an output as
  binary data instead.
- Raw tensors are read without a copy: their arrays are read-only when the
  buffer is (``bytes``).

Request problems raise :class:`~deepserve.exceptions.BadInput`, whose
``errors`` name the field (``inputs[0].data``); a model output that cannot be
a tensor raises :class:`ValueError`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy

from deepserve.exceptions import BadInput
from deepserve.model import DATATYPES, TensorSpec
from deepserve.oip.types import Tensor

__all__ = [
    "NotText",
    "TensorHeader",
    "check",
    "datatype_of",
    "from_array",
    "from_json",
    "from_raw",
    "numpy_dtype",
    "parse_header",
    "to_json",
    "to_raw",
]

Buffer = bytes | bytearray | memoryview

_DTYPES: dict[str, numpy.dtype[Any]] = {
    "BOOL": numpy.dtype(numpy.bool_),
    "UINT8": numpy.dtype("<u1"),
    "UINT16": numpy.dtype("<u2"),
    "UINT32": numpy.dtype("<u4"),
    "UINT64": numpy.dtype("<u8"),
    "INT8": numpy.dtype("<i1"),
    "INT16": numpy.dtype("<i2"),
    "INT32": numpy.dtype("<i4"),
    "INT64": numpy.dtype("<i8"),
    "FP16": numpy.dtype("<f2"),
    "FP32": numpy.dtype("<f4"),
    "FP64": numpy.dtype("<f8"),
    "BYTES": numpy.dtype(object),
}
assert tuple(_DTYPES) == DATATYPES

#: (dtype kind, item size) -> datatype, whatever the byte order.
_BY_KIND = {
    (dtype.kind, dtype.itemsize): name
    for name, dtype in _DTYPES.items()
    if name != "BYTES"
}
_INTEGERS = {
    name: numpy.iinfo(dtype) for name, dtype in _DTYPES.items() if dtype.kind in "iu"
}
_FLOATS = frozenset(("FP16", "FP32", "FP64"))
_KNOWN = ", ".join(DATATYPES)
_LENGTH = struct.Struct("<I")
_RAGGED = (
    "nested lists must be regular: the lists of each level of equal length, "
    "nested at most 32 deep"
)


class NotText(ValueError):
    """A ``BYTES`` element is not UTF-8 text, so JSON cannot carry it."""


class TensorHeader(NamedTuple):
    """A tensor's description in a request, without its data."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: dict[str, Any]


class _Misfit(Exception):
    """A value that does not fit the datatype (field-less, for callers to
    turn into their own error)."""


def numpy_dtype(datatype: str) -> numpy.dtype[Any]:
    """The NumPy dtype of a protocol datatype (little-endian; ``object`` for
    ``BYTES``, whose elements are :class:`bytes`).

    :raises ValueError: for a name that is not one of :data:`DATATYPES`.
    """
    try:
        return _DTYPES[datatype]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown datatype {datatype!r}; the datatypes are {_KNOWN}"
        ) from None


def datatype_of(array: numpy.ndarray[Any, Any]) -> str:
    """The protocol datatype of a NumPy array: ``BYTES`` for arrays of
    ``object``, ``str`` or ``bytes``.

    :raises ValueError: for a dtype the protocol has no datatype for.
    """
    dtype = array.dtype
    if dtype.kind in "OUS":
        return "BYTES"
    try:
        return _BY_KIND[dtype.kind, dtype.itemsize]
    except KeyError:
        raise ValueError(
            f"NumPy dtype {dtype} has no Open Inference Protocol datatype "
            f"(they are {_KNOWN})"
        ) from None


# -- JSON ---------------------------------------------------------------------


def _bad(where: str, name: str | None, field: str, problem: str) -> BadInput:
    path = f"{where}.{field}" if field else where
    if name is None:
        what = path
    elif where == name:
        what = f"{field} of tensor '{name}'"
    else:
        what = f"tensor '{name}' ({path})"
    return BadInput(f"Invalid {what}: {problem}", {path: [problem]})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_header(obj: Any, *, where: str = "inputs[0]") -> TensorHeader:
    """Validate a request tensor's ``name``, ``datatype``, ``shape`` and
    ``parameters`` (not its data).

    :param where: the tensor's place in the request, for the errors' field
        paths.
    :raises BadInput: naming the field and the problem.
    """
    if not isinstance(obj, Mapping):
        raise _bad(where, None, "", f"must be an object, not {_json_type(obj)}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        problem = (
            "missing" if name is None else f"must be a non-empty string, not {name!r}"
        )
        raise _bad(where, None, "name", problem)
    datatype = obj.get("datatype")
    if datatype not in _DTYPES:
        problem = (
            "missing"
            if datatype is None
            else f"unknown datatype {datatype!r}; the datatypes are {_KNOWN}"
        )
        raise _bad(where, name, "datatype", problem)
    shape = obj.get("shape")
    if not isinstance(shape, list):
        problem = "missing" if shape is None else "must be a list of integers"
        raise _bad(where, name, "shape", problem)
    if not all(_is_int(dim) and dim >= 0 for dim in shape):
        raise _bad(
            where, name, "shape", f"dimensions must be integers >= 0, got {shape}"
        )
    parameters = obj.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _bad(
            where,
            name,
            "parameters",
            f"must be an object, not {_json_type(parameters)}",
        )
    return TensorHeader(name, datatype, tuple(shape), parameters)


def from_json(
    obj: Any, *, where: str = "inputs[0]", header: TensorHeader | None = None
) -> Tensor:
    """A request tensor from its JSON object; ``data`` flat or nested, in
    row-major order.

    :param where: the tensor's place in the request, for the errors' field
        paths (``inputs[0].data``).
    :param header: ``parse_header(obj)``, when the caller has it already.
    :raises BadInput: naming the field and the problem, for anything missing,
        ill-typed or not fitting the datatype and shape.
    """
    if header is None:
        header = parse_header(obj, where=where)
    if "data" not in obj:
        raise _bad(where, header.name, "data", "missing")
    name, datatype, shape, _ = header
    data = obj["data"]
    if not isinstance(data, list):
        raise _bad(where, name, "data", f"must be a list, not {_json_type(data)}")
    try:
        if datatype == "BYTES":
            array = _text_array(data)
        else:
            try:
                parsed = numpy.array(data)
            except ValueError:
                raise _Misfit(_RAGGED) from None
            except OverflowError:
                parsed = numpy.array(data, dtype=object)
            array = _cast(parsed, datatype, data)
    except _Misfit as problem:
        raise _bad(where, name, "data", str(problem)) from None
    except RecursionError:
        raise _bad(where, name, "data", _RAGGED) from None
    count = math.prod(shape)
    if array.size != count:
        raise _bad(
            where,
            name,
            "data",
            f"has {array.size} elements, but shape {list(shape)} needs {count}",
        )
    return Tensor(name, datatype, shape, array.reshape(shape), header.parameters)


def _text_array(data: list[Any]) -> numpy.ndarray[Any, Any]:
    """``BYTES`` data: strings (encoded in UTF-8), flat or nested."""
    items = list(_flatten(data))
    encoded = numpy.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise _Misfit(
                f"element {index} is {_show(item)}, not a string (datatype BYTES)"
            )
        encoded[index] = item.encode("utf-8", "surrogatepass")
    return encoded


def _flatten(data: Any) -> Iterator[Any]:
    """The elements of nested lists, in row-major order; a value that is
    no list (a 0-d array's) is its one element."""
    if not isinstance(data, list):
        yield data
        return
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _cast(
    array: numpy.ndarray[Any, Any], datatype: str, source: list[Any] | None
) -> numpy.ndarray[Any, Any]:
    """``array`` (what NumPy made of ``source``, nested lists; ``None``:
    the array's own values) as ``datatype``, if every value fits it;
    vectorised unless something does not fit.

    :raises _Misfit: naming the first element that does not fit.
    """
    kind = array.dtype.kind
    dtype = _DTYPES[datatype]
    if source is None:
        source = array.tolist() if kind not in "biuf" else None
    if datatype == "BOOL":
        if kind != "b" and array.size:
            index, value = _first(
                source or array.tolist(), lambda v: not isinstance(v, bool)
            )
            if index >= 0:
                raise _Misfit(f"element {index} is {_show(value)}, not true or false")
        return array.astype(dtype, copy=False)
    if datatype in _INTEGERS:
        info = _INTEGERS[datatype]
        if kind not in "biu" and array.size:
            source = source or array.tolist()
            index, value = _first(source, lambda v: not isinstance(v, int))
            if index >= 0:
                raise _Misfit(
                    f"element {index} is {_show(value)}, not an integer "
                    f"(datatype {datatype})"
                )
            # Integers only, yet not one NumPy integer type: out of range.
            array = numpy.array(source, dtype=object)
        if array.size:
            low, high = array.min(), array.max()
            if low < info.min or high > info.max:
                flat = array.reshape(-1)
                index = int(numpy.flatnonzero((flat < info.min) | (flat > info.max))[0])
                raise _Misfit(
                    f"element {index} is {flat[index]}, out of range for {datatype} "
                    f"({info.min} to {info.max})"
                )
        return array.astype(dtype, copy=False)
    # FP16, FP32, FP64
    if kind not in "biuf" and array.size:
        source = source or array.tolist()
        index, value = _first(source, lambda v: not isinstance(v, int | float))
        if index >= 0:
            raise _Misfit(f"element {index} is {_show(value)}, not a number")
        floats = []
        for index, value in enumerate(_flatten(source)):
            try:  # integers too large for NumPy's integer types
                floats.append(float(value))
            except OverflowError:
                raise _Misfit(
                    f"element {index} is {_show(value)}, out of range for {datatype}"
                ) from None
        shape = array.shape if len(floats) == array.size else (len(floats),)
        array = numpy.array(floats).reshape(shape)
    with numpy.errstate(over="ignore"):
        cast = array.astype(dtype, copy=False)
    if array.dtype.kind != "b":
        overflow = numpy.isinf(cast) & ~numpy.isinf(array)
        if overflow.any():
            index = int(numpy.flatnonzero(overflow.reshape(-1))[0])
            raise _Misfit(
                f"element {index} is {array.reshape(-1)[index]}, out of range for "
                f"{datatype}"
            )
    return cast


def _first(source: Any, bad: Callable[[Any], bool]) -> tuple[int, Any]:
    """The index and value of the first element of nested lists that is
    ``bad``; ``(-1, None)`` if none is."""
    for index, value in enumerate(_flatten(source)):
        if bad(value):
            return index, value
    return -1, None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def to_json(tensor: Tensor, *, binary_size: int | None = None) -> dict[str, Any]:
    """A response tensor as JSON: ``name``, ``datatype``, ``shape``, the
    tensor's ``parameters`` (when it has any) and ``data`` as a flat list.

    :param binary_size: the tensor's data travels as binary data of this
        many bytes (its :func:`to_raw` encoding): ``data`` is left out and
        ``parameters.binary_data_size`` set instead.
    :raises NotText: for a ``BYTES`` element that is not UTF-8 text.
    """
    obj: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    parameters = dict(tensor.parameters)
    if binary_size is not None:
        parameters["binary_data_size"] = binary_size
    if parameters:
        obj["parameters"] = parameters
    if binary_size is None:
        obj["data"] = _json_data(tensor)
    return obj


def _json_data(tensor: Tensor) -> list[Any]:
    flat = tensor.data.reshape(-1)
    if tensor.datatype != "BYTES":
        values: list[Any] = flat.astype(_DTYPES[tensor.datatype], copy=False).tolist()
        return values
    texts = []
    for index, item in enumerate(flat.tolist()):
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(_as_bytes(item).decode("utf-8"))
        except UnicodeDecodeError:
            raise NotText(
                f"Element {index} of tensor '{tensor.name}' is not UTF-8 text, "
                "so JSON cannot carry it; ask for it as binary data"
            ) from None
    return texts


# -- raw ----------------------------------------------------------------------


def from_raw(
    name: str,
    datatype: str,
    shape: Sequence[int],
    raw: Buffer,
    *,
    where: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> Tensor:
    """A tensor from its raw encoding: fixed-size types little-endian in
    row-major order, ``BOOL`` one byte each (0 or 1), ``BYTES`` each element
    as a 4-byte little-endian length and its bytes. Not copied: the array is
    read-only when ``raw`` is.

    :param where: the tensor's field path in errors (default: its name).
    :raises BadInput: for an unknown datatype, a bad shape, or a buffer that
        does not hold exactly ``product(shape)`` elements.
    """
    where = where or name
    if datatype not in _DTYPES:
        raise _bad(
            where,
            name,
            "datatype",
            f"unknown datatype {datatype!r}; the datatypes are {_KNOWN}",
        )
    if not all(_is_int(dim) and dim >= 0 for dim in shape):
        raise _bad(
            where, name, "shape", f"dimensions must be integers >= 0, got {list(shape)}"
        )
    shape = tuple(shape)
    count = math.prod(shape)
    if datatype == "BYTES":
        array = _parse_bytes(raw, count, where, name)
    else:
        dtype = _DTYPES[datatype]
        needed = count * dtype.itemsize
        if memoryview(raw).nbytes != needed:
            raise _bad(
                where,
                name,
                "data",
                f"has {memoryview(raw).nbytes} bytes, but shape {list(shape)} of {datatype} "
                f"needs {needed}",
            )
        if datatype == "BOOL" and count:
            octets = numpy.frombuffer(raw, dtype=numpy.uint8)
            if octets.max() > 1:
                index = int(numpy.flatnonzero(octets > 1)[0])
                raise _bad(
                    where,
                    name,
                    "data",
                    f"byte {index} is {octets[index]}; BOOL elements are 0 or 1",
                )
        array = numpy.frombuffer(raw, dtype=dtype)
        if not array.flags.writeable:
            # A model may change its input in place, as it may its own arrays.
            array = array.copy()
    return Tensor(name, datatype, shape, array.reshape(shape), parameters or {})


def _parse_bytes(
    raw: Buffer, count: int, where: str, name: str
) -> numpy.ndarray[Any, Any]:
    view = memoryview(raw).cast("B")
    size = len(view)
    items = numpy.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > size:
            raise _bad(
                where,
                name,
                "data",
                f"ends after {index} of {count} BYTES elements"
                + (" (in a length prefix)" if offset < size else ""),
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise _bad(
                where,
                name,
                "data",
                f"BYTES element {index} claims {length} bytes, but only "
                f"{size - offset} remain",
            )
        items[index] = view[offset : offset + length].tobytes()
        offset += length
    if offset != size:
        raise _bad(
            where,
            name,
            "data",
            f"has {size - offset} bytes left after the {count} BYTES elements "
            "its shape holds",
        )
    return items


def to_raw(tensor: Tensor) -> bytes:
    """The raw encoding of a tensor (see :func:`from_raw`)."""
    if tensor.datatype != "BYTES":
        data = tensor.data.astype(_DTYPES[tensor.datatype], copy=False)
        return data.tobytes(order="C")
    parts = []
    pack = _LENGTH.pack
    for item in tensor.data.reshape(-1).tolist():
        encoded = _as_bytes(item)
        parts.append(pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass")
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    raise ValueError(f"A BYTES element is {_show(item)}, not bytes")


# -- model outputs --------------------------------------------------------------


def from_array(name: str, array: Any, datatype: str | None = None) -> Tensor:
    """A tensor from what a model returned: a NumPy array or scalar, a
    number, a string, ``bytes``, or nested lists of those.

    Strings become ``BYTES`` (encoded in UTF-8). With ``datatype``, the
    values are converted to it if they fit (integers must be in range and
    floats are not turned into integers).

    :raises ValueError: for ragged lists, mixed text and numbers, a dtype
        the protocol has no datatype for, or values that do not fit
        ``datatype``.
    """
    if datatype is not None and datatype not in _DTYPES:
        raise ValueError(
            f"Output '{name}': unknown datatype {datatype!r}; the datatypes are {_KNOWN}"
        )
    values = _as_array(name, array)
    kind = values.dtype.kind
    if datatype is None:
        try:
            datatype = datatype_of(values)
        except ValueError as error:
            raise ValueError(f"Output '{name}': {error}") from None
    if datatype == "BYTES":
        if kind not in "OUS":
            raise ValueError(
                f"Output '{name}' holds numbers ({values.dtype}), but its "
                "datatype is BYTES"
            )
        data = _bytes_array(name, values)
    elif kind in "US":
        raise ValueError(f"Output '{name}' holds text, but its datatype is {datatype}")
    else:
        try:
            data = _cast(values, datatype, None)
        except _Misfit as problem:
            raise ValueError(f"Output '{name}' as {datatype}: {problem}") from None
    return Tensor(name, datatype, tuple(data.shape), data)


def _as_array(name: str, value: Any) -> numpy.ndarray[Any, Any]:
    if isinstance(value, numpy.ndarray):
        return value
    if isinstance(value, str | bytes):
        array = numpy.empty((), dtype=object)
        array[()] = value
        return array
    try:
        array = numpy.asarray(value)
    except ValueError:
        raise ValueError(
            f"Output '{name}' is ragged: nested lists must all have the same length"
        ) from None
    except OverflowError:
        raise ValueError(
            f"Output '{name}' holds an integer too large for any datatype"
        ) from None
    if array.dtype.kind in "US":
        # Again as objects: NumPy's "S" arrays drop trailing zero bytes.
        array = numpy.array(value, dtype=object)
    return array


def _bytes_array(name: str, values: numpy.ndarray[Any, Any]) -> numpy.ndarray[Any, Any]:
    flat = values.reshape(-1).tolist()
    data = numpy.empty(len(flat), dtype=object)
    for index, item in enumerate(flat):
        if isinstance(item, bytes):
            data[index] = item
        elif isinstance(item, str):
            data[index] = item.encode("utf-8", "surrogatepass")
        elif isinstance(item, bytearray | memoryview):
            data[index] = bytes(item)
        else:
            ragged = " (nested lists must all have the same length)"
            raise ValueError(
                f"Output '{name}': element {index} is {_show(item)}, not a string "
                f"or bytes{ragged if isinstance(item, list) else ''}"
            )
    return data.reshape(values.shape)


# -- contracts ------------------------------------------------------------------


def check(spec: TensorSpec, tensor: Tensor, *, where: str | None = None) -> None:
    """Hold ``tensor`` to ``spec``: the same datatype and rank, and each
    dimension equal unless the spec's is ``-1``.

    :param where: the tensor's field path in errors (default: its name).
    :raises BadInput: naming the tensor, what was expected and what came.
    """
    problems = []
    if tensor.datatype != spec.datatype:
        problems.append(f"datatype must be {spec.datatype}, got {tensor.datatype}")
    if len(tensor.shape) != len(spec.shape) or any(
        want not in (-1, got)
        for want, got in zip(spec.shape, tensor.shape, strict=False)
    ):
        problems.append(
            f"shape must be {list(spec.shape)} (-1: any size), got {list(tensor.shape)}"
        )
    if problems:
        path = where or tensor.name
        raise BadInput(
            f"Tensor '{tensor.name}' does not fit the model: {'; '.join(problems)}",
            {path: problems},
        )
