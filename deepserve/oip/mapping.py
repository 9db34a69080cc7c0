"""How each kind of model takes and gives tensors.

A :class:`Plan` is worked out once per served model: the tensors its
metadata lists, how a request's input tensors become the keyword arguments
of its ``predict``, and how what ``predict`` returned becomes output
tensors.

- A stored model (:class:`StoredPlan`) takes its input as the ``data`` of
  its signature: one input tensor as an array, several as a mapping from
  name to array. The tensors declared (or inferred) when it was saved are
  its metadata and are checked, datatype and shape, before it runs. The
  ``signature`` request parameter picks another saved method.
- A DEEPaaS-style model (:class:`ArgumentPlan`) takes one input tensor per
  argument, named like the argument: ``BYTES`` for strings, files (the
  element's bytes are the file) and JSON values, ``INT64``, ``FP64`` and
  ``BOOL`` for numbers and flags, shape ``[1]`` for one value and ``[-1]``
  for a list. The values are then loaded by the model's own fields, as
  over HTTP, so defaults and validation are the same.

Either way a result that is a mapping gives one output tensor per key,
anything else one tensor, ``output-0`` (or the one output declared).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import marshmallow
import numpy
from marshmallow import fields as mf

from deepserve.adapters.stored import StoredModelAdapter
from deepserve.exceptions import BadInput, BadModelOutput
from deepserve.model import Model, TensorSpec, UploadedFile, is_file_tuple
from deepserve.oip import tensors
from deepserve.oip.types import InferRequest, Tensor
from deepserve.operations.arguments import ArgSpec, location_of, one_line
from deepserve.operations.negotiation import ACCEPT

#: The name of the one output of a model that declared none.
OUTPUT = "output-0"
#: The request parameter that picks a stored model's signature.
SIGNATURE = "signature"


class Plan(Protocol):
    """What the protocol needs of a served model."""

    @property
    def platform(self) -> str: ...

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def arguments(self, request: InferRequest, scratch: str) -> dict[str, Any]:
        """``predict``'s keyword arguments; files go under ``scratch``.

        :raises BadInput: naming the tensor and the problem.
        """
        ...

    def results(self, result: Any, request: InferRequest) -> list[Tensor]:
        """The output tensors of what ``predict`` returned for ``request``.

        :raises BadModelOutput: when it cannot be a tensor.
        """
        ...


def plan_for(model: Model) -> Plan:
    """The plan of ``model``, by its kind."""
    if isinstance(model, StoredModelAdapter):
        return StoredPlan(model)
    return ArgumentPlan(model)


@contextmanager
def scratch_space(upload_dir: str | None) -> Iterator[str]:
    """A directory for one request's files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="deepserve-oip-", dir=upload_dir) as path:
        yield path


class StoredPlan:
    """A stored model: its signature's tensors, its input as ``data``."""

    def __init__(self, model: StoredModelAdapter) -> None:
        self._model = model
        self._declared = {name: model.tensors(name) for name in model.signatures}
        self._default = model.signatures[0]
        self.platform = model.framework
        inputs, outputs = self._declared[self._default]
        self.inputs: tuple[TensorSpec, ...] = inputs or ()
        self.outputs: tuple[TensorSpec, ...] = outputs or ()

    def _signature(self, request: InferRequest) -> str:
        chosen = request.parameters.get(SIGNATURE, self._default)
        # Parameters are any JSON: a list or an object is no name either.
        if not isinstance(chosen, str) or chosen not in self._declared:
            raise BadInput(
                f"Unknown signature {chosen!r}; this model has: "
                f"{', '.join(self._declared)}",
                errors={f"parameters.{SIGNATURE}": ["Unknown signature."]},
            )
        return str(chosen)

    def arguments(self, request: InferRequest, scratch: str) -> dict[str, Any]:
        signature = self._signature(request)
        declared, _ = self._declared[signature]
        given = _by_name(request.inputs)
        if declared is not None:
            _check_names(given, [spec.name for spec in declared])
            for spec in declared:
                tensors.check(spec, given[spec.name])
        if not given:
            raise BadInput(
                "The request has no input tensor",
                errors={"inputs": ["Give at least one input tensor."]},
            )
        arrays = {name: _native(t) for name, t in given.items()}
        data = next(iter(arrays.values())) if len(arrays) == 1 else arrays
        return {"data": data, "signature": signature}

    def results(self, result: Any, request: InferRequest) -> list[Tensor]:
        # The outputs of the signature that ran, not the default's.
        _, declared = self._declared[self._signature(request)]
        return _outputs(self._model.name, result, declared or ())


class ArgumentPlan:
    """A model with DEEPaaS-style argument fields: one tensor per argument."""

    platform = "deepserve"

    def __init__(self, model: Model) -> None:
        self._name = model.name
        self._spec = ArgSpec.prepare(model.predict_args(), negotiate_accept=True)
        self._args = {arg.key: arg for arg in self._spec.plan}
        self.inputs = tuple(
            TensorSpec(arg.key, *_tensor_of(arg.field, arg.multiple))
            for arg in self._spec.plan
        )
        schema = model.response_schema
        self.outputs = (
            tuple(
                TensorSpec(field.data_key or name, _tensor_of(field, True)[0], (-1,))
                for name, field in schema().fields.items()
            )
            if schema is not None
            else ()
        )

    def arguments(self, request: InferRequest, scratch: str) -> dict[str, Any]:
        given = _by_name(request.inputs)
        unknown = sorted(set(given) - set(self._args))
        if unknown:
            raise BadInput(
                f"Unknown input {unknown[0]!r}; this model takes: "
                f"{', '.join(self._args) or 'no input'}",
                errors={f"inputs.{name}": ["Unknown input."] for name in unknown},
            )
        values: dict[str, Any] = {}
        files: dict[str, Any] = {}
        for key, tensor in given.items():
            arg = self._args[key]
            if location_of(arg.field) == "files":
                files[arg.name] = _files(tensor, arg.multiple, scratch)
            else:
                values[key] = _values(tensor, arg.field, arg.multiple)
        for arg in self._spec.plan:
            if location_of(arg.field) == "files" and arg.key not in given:
                if arg.field.required:
                    raise BadInput(
                        f"Missing input {arg.key!r} (a file, as BYTES)",
                        errors={
                            f"inputs.{arg.key}": ["Missing data for required field."]
                        },
                    )
                if arg.field.load_default is not marshmallow.missing:
                    files[arg.name] = arg.field.load_default
        try:
            kwargs: dict[str, Any] = self._spec.schema.load(values)
        except marshmallow.ValidationError as err:
            messages = err.messages if isinstance(err.messages, Mapping) else {}
            errors = {f"inputs.{k}": v for k, v in messages.items()}
            first = next(iter(errors), "inputs")
            raise BadInput(
                f"Invalid input {first.removeprefix('inputs.')!r}: "
                f"{one_line(messages.get(first.removeprefix('inputs.'), err.messages))}",
                errors=errors or {"inputs": [str(err.messages)]},
            ) from None
        kwargs.update(files)
        if self._spec.accept is not None:
            kwargs[ACCEPT] = "application/json"
        return kwargs

    def results(self, result: Any, request: InferRequest) -> list[Tensor]:
        return _outputs(self._name, result, self.outputs)


def _by_name(inputs: list[Tensor]) -> dict[str, Tensor]:
    found: dict[str, Tensor] = {}
    for tensor in inputs:
        if tensor.name in found:
            raise BadInput(
                f"Input {tensor.name!r} is given twice",
                errors={f"inputs.{tensor.name}": ["Given twice."]},
            )
        found[tensor.name] = tensor
    return found


def _check_names(given: Mapping[str, Tensor], declared: list[str]) -> None:
    unknown = sorted(set(given) - set(declared))
    missing = [name for name in declared if name not in given]
    if unknown:
        raise BadInput(
            f"Unknown input {unknown[0]!r}; this model takes: {', '.join(declared)}",
            errors={f"inputs.{name}": ["Unknown input."] for name in unknown},
        )
    if missing:
        raise BadInput(
            f"Missing input {missing[0]!r}; this model takes: {', '.join(declared)}",
            errors={f"inputs.{name}": ["Missing input."] for name in missing},
        )


def _native(tensor: Tensor) -> Any:
    """A stored model's input: the array (``BYTES`` elements as text when
    they are UTF-8, as models given strings expect)."""
    if tensor.datatype != "BYTES":
        return tensor.data
    flat = [_text(item) for item in tensor.data.reshape(-1).tolist()]
    out = numpy.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(tensor.data.shape)


def _text(item: Any) -> Any:
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            return item
    return item


#: The tensor datatype of a field's values.
_DATATYPES: tuple[tuple[type[mf.Field], str], ...] = (
    (mf.Boolean, "BOOL"),
    (mf.Integer, "INT64"),
    (mf.Float, "FP64"),
    (mf.Decimal, "FP64"),
    (mf.Number, "FP64"),
)


def _tensor_of(field: mf.Field, multiple: bool) -> tuple[str, tuple[int, ...]]:
    """The datatype and shape of the tensor that carries ``field``."""
    inner = field
    if multiple and isinstance(field, mf.List):
        inner = field.inner
    datatype = "BYTES"
    if location_of(field) != "files":
        for kind, name in _DATATYPES:
            if isinstance(inner, kind):
                datatype = name
                break
    return datatype, ((-1,) if multiple else (1,))


def _values(tensor: Tensor, field: mf.Field, multiple: bool) -> Any:
    """The value(s) a tensor gives an argument, for its field to load."""
    items = tensor.data.reshape(-1).tolist()
    if tensor.datatype == "BYTES":
        items = [_decoded(tensor.name, item, field) for item in items]
    if multiple:
        return items
    if len(items) != 1:
        raise BadInput(
            f"Input {tensor.name!r} holds {len(items)} elements; the argument "
            "takes one value (shape [1])",
            errors={f"inputs.{tensor.name}": ["Takes one value."]},
        )
    return items[0]


def _decoded(name: str, item: Any, field: mf.Field) -> Any:
    try:
        text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
    except UnicodeDecodeError:
        raise BadInput(
            f"Input {name!r} is not UTF-8 text",
            errors={f"inputs.{name}": ["Not UTF-8 text."]},
        ) from None
    if isinstance(field, mf.Raw | mf.Dict | mf.Nested | mf.Mapping):
        try:
            return json.loads(text)
        except ValueError:
            return text  # a plain string
    return text


def _files(tensor: Tensor, multiple: bool, scratch: str) -> Any:
    """Each element of a ``BYTES`` tensor as an uploaded file."""
    if tensor.datatype != "BYTES":
        raise BadInput(
            f"Input {tensor.name!r} is a file: send it as BYTES, not {tensor.datatype}",
            errors={f"inputs.{tensor.name}": ["A file: BYTES expected."]},
        )
    uploads = []
    for index, item in enumerate(tensor.data.reshape(-1).tolist()):
        content = item if isinstance(item, bytes) else str(item).encode()
        handle, path = tempfile.mkstemp(dir=scratch, prefix=f"{index}-")
        with os.fdopen(handle, "wb") as f:
            f.write(content)
        uploads.append(
            UploadedFile(
                name=tensor.name,
                filename=path,
                content_type="application/octet-stream",
                original_filename=tensor.name,
            )
        )
    if multiple:
        return uploads
    if len(uploads) != 1:
        raise BadInput(
            f"Input {tensor.name!r} holds {len(uploads)} files; the argument takes one",
            errors={f"inputs.{tensor.name}": ["Takes one file."]},
        )
    return uploads[0]


def _outputs(model: str, result: Any, declared: tuple[TensorSpec, ...]) -> list[Tensor]:
    """Output tensors from a result: one per key of a mapping, else one."""
    types = {spec.name: spec.datatype for spec in declared}
    if isinstance(result, Mapping):
        parts = {str(key): value for key, value in result.items()}
    else:
        parts = {declared[0].name if len(declared) == 1 else OUTPUT: result}
    return [
        _output(model, name, value, types.get(name)) for name, value in parts.items()
    ]


def _output(model: str, name: str, value: Any, datatype: str | None) -> Tensor:
    if is_file_tuple(value):
        with open(value.filename, "rb") as f:
            value = f.read()
    try:
        tensor = tensors.from_array(name, value, datatype)
    except (ValueError, TypeError):
        if value is not None and not isinstance(value, Mapping | list | tuple):
            raise BadModelOutput(
                model, f"output {name!r} ({type(value).__name__}) is not a tensor"
            ) from None
        # nested, ragged or None: one JSON text
        text = json.dumps(value, default=str, separators=(",", ":"))
        tensor = tensors.from_array(name, [text.encode()], "BYTES")
    if not tensor.shape:  # a scalar: one element
        tensor.shape = (1,)
        tensor.data = tensor.data.reshape(1)
    return tensor
