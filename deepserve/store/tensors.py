"""The input and output tensors of a signature: checked, written and read.

A signature may declare its tensors as the Open Inference Protocol
describes them: a list of ``{"name": ..., "datatype": ..., "shape": [...]}``
(or :class:`~deepserve.model.TensorSpec` values), ``-1`` in a shape for a
dimension of any size. The same checks serve the ``signatures=`` of a save
and the ``model.json`` of an entry.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from deepserve.exceptions import StoreError
from deepserve.model import DATATYPES, TensorSpec

#: Names people write for a datatype (NumPy's, Python's) -> the datatype.
_ALIASES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "int": "INT64",
    "float16": "FP16",
    "half": "FP16",
    "float32": "FP32",
    "float": "FP32",
    "float64": "FP64",
    "double": "FP64",
    "str": "BYTES",
    "string": "BYTES",
    "bytes": "BYTES",
    "object": "BYTES",
}

_FIELDS = ("name", "datatype", "shape")


def parse_specs(where: str, value: Any) -> tuple[TensorSpec, ...]:
    """The tensors ``value`` declares, checked.

    :param where: what to name in errors, e.g. ``signatures: 'predict': inputs``.
    :raises StoreError: naming ``where``, the tensor and the problem.
    """
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise StoreError(
            f"{where}: must be a list of tensors, not {type(value).__name__}"
        )
    if not value:
        raise StoreError(f"{where}: name at least one tensor, or leave it out")
    specs = tuple(_spec(f"{where}[{i}]", item) for i, item in enumerate(value))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise StoreError(f"{where}: two tensors are named '{spec.name}'")
        seen.add(spec.name)
    return specs


def _spec(where: str, item: Any) -> TensorSpec:
    if isinstance(item, TensorSpec):
        item = item._asdict()
    if not isinstance(item, Mapping):
        raise StoreError(
            f"{where}: a tensor is a mapping with {', '.join(_FIELDS)}, "
            f"not {type(item).__name__}"
        )
    unknown = sorted(str(key) for key in set(item) - set(_FIELDS))
    if unknown:
        raise StoreError(
            f"{where}: unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(_FIELDS)}"
        )
    missing = [key for key in _FIELDS if key not in item]
    if missing:
        raise StoreError(f"{where}: missing field(s) {', '.join(missing)}")
    name = item["name"]
    if not isinstance(name, str) or not name:
        raise StoreError(f"{where}: name must be a non-empty string, not {name!r}")
    where = f"{where} ('{name}')"
    return TensorSpec(
        name, _datatype(where, item["datatype"]), _shape(where, item["shape"])
    )


def _datatype(where: str, datatype: Any) -> str:
    if isinstance(datatype, str) and datatype in DATATYPES:
        return datatype
    if not isinstance(datatype, str):
        raise StoreError(
            f"{where}: datatype must be a string, not {type(datatype).__name__}"
        )
    guess = _ALIASES.get(datatype.lower())
    if guess is None:
        close = difflib.get_close_matches(datatype.upper(), DATATYPES, n=1)
        guess = close[0] if close else None
    hint = f"; did you mean '{guess}'?" if guess else ""
    raise StoreError(
        f"{where}: unknown datatype {datatype!r}{hint} (one of {', '.join(DATATYPES)})"
    )


def _shape(where: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, str | bytes | Mapping) or not isinstance(shape, Sequence):
        raise StoreError(
            f"{where}: shape must be a list of integers, not {type(shape).__name__}"
        )
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise StoreError(
                f"{where}: shape {list(shape)!r}: dimensions are integers, "
                f"not {type(dim).__name__}"
            )
        if dim < -1:
            raise StoreError(
                f"{where}: shape {list(shape)!r}: a dimension is -1 (any size) "
                f"or a size >= 0, not {dim}"
            )
    return tuple(int(dim) for dim in shape)


def check_batch_dim(where: str, specs: Sequence[TensorSpec], batch_dim: int) -> None:
    """Check that each tensor of a batchable signature can be batched: it has
    dimension ``batch_dim`` and leaves its size open (``-1``).

    :raises StoreError: naming the tensor and its shape.
    """
    for spec in specs:
        shape = list(spec.shape)
        if len(shape) <= batch_dim:
            raise StoreError(
                f"{where}: '{spec.name}': shape {shape} has no dimension "
                f"{batch_dim}, the batch_dim of this batchable signature"
            )
        if shape[batch_dim] != -1:
            raise StoreError(
                f"{where}: '{spec.name}': shape {shape} fixes dimension "
                f"{batch_dim} to {shape[batch_dim]}, but it is the batch_dim of "
                "this batchable signature: make it -1"
            )


def specs_to_json(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    """The JSON form of ``specs``, as :func:`parse_specs` reads it."""
    return [spec.to_json() for spec in specs]
