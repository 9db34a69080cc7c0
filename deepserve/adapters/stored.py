"""Adapter for models saved in deepserve's model store.

Every kind the store knows (picklable objects, scikit-learn estimators,
class models, python models) is served the same way: ``predict`` takes the
model's input as JSON (``{"data": ...}``) and, for class and python models,
also as an uploaded file; a ``signature`` argument picks which of the
entry's saved methods runs (the first one, ``predict`` when there is one, by
default). Signatures saved as ``batchable`` are merged into one call by the
execution engine's adaptive batching.

The stored object itself is loaded lazily, on ``warm`` or on the first call:
a server whose models run in worker processes never loads it in the server.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Mapping
from typing import Any

import marshmallow
from marshmallow import fields, validate

from deepserve.exceptions import (
    BadInput,
    DeepserveError,
    LoaderError,
    ModelFailed,
    NotSupported,
)
from deepserve.model import Method, TensorSpec, UploadedFile
from deepserve.store import Signature, StoredModel, frameworks

LOG = logging.getLogger(__name__)

#: Store modules whose models also take their input as an uploaded file.
FILE_INPUT_MODULES = frozenset({"deepserve.class_model", "deepserve.python_model"})
#: The argument that picks a signature.
SIGNATURE = "signature"


class StoredModelAdapter:
    """Serves one store entry.

    :param name: the name the model is served under.
    :param stored: the store entry.
    """

    def __init__(self, name: str, stored: StoredModel) -> None:
        self._name = name
        self._stored = stored
        self._info = stored.info
        signatures = _signatures(self._info.signatures)
        if not signatures:
            raise LoaderError(f"Model '{name}' ({stored.tag}) saved no signature")
        self._signatures = signatures
        self._default = "predict" if "predict" in signatures else next(iter(signatures))
        self._file_input = self._info.module in FILE_INPUT_MODULES
        self._predict_args = self._build_args()
        self._obj: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def response_schema(self) -> type[marshmallow.Schema] | None:
        return None

    def metadata(self) -> dict[str, Any]:
        info = self._info.to_json()
        description = self._info.metadata.get("description") or (
            f"{self._info.module} model {self._stored.tag} from the model store"
        )
        return {
            "id": self._name,
            "name": self._name,
            "description": str(description),
            "tag": self._stored.tag,
            **{k: v for k, v in info.items() if k not in ("name", "format")},
        }

    def predict_args(self) -> Mapping[str, fields.Field]:
        return self._predict_args

    @property
    def framework(self) -> str:
        """The framework that saved it (``sklearn``, ``cloudpickle``...)."""
        return self._info.framework

    @property
    def signatures(self) -> tuple[str, ...]:
        """The saved methods that may be called, the default first."""
        rest = [name for name in self._signatures if name != self._default]
        return (self._default, *rest)

    def tensors(
        self, signature: str
    ) -> tuple[tuple[TensorSpec, ...] | None, tuple[TensorSpec, ...] | None]:
        """The input and output tensors ``signature`` declared when saved;
        ``None`` for those it did not declare."""
        declared = self._info.signatures[signature]
        return getattr(declared, "inputs", None), getattr(declared, "outputs", None)

    def train_args(self) -> Mapping[str, fields.Field]:
        return {}

    def supports(self, method: Method) -> bool:
        if method == "predict_batch":
            return any(s["batchable"] for s in self._signatures.values())
        return method in ("predict", "warm")

    def batch_options(self) -> Mapping[str, Any]:
        return {}

    def call(self, method: Method, kwargs: Mapping[str, Any]) -> Any:
        if method == "warm":
            self._load()
            return None
        if method == "predict":
            signature, data = self._input(kwargs)
            return self._run(signature, [data])[0]
        if method == "predict_batch":
            return self._batch(kwargs["items"])
        raise NotSupported(self._name, method)

    def _load(self) -> Any:
        with self._lock:
            if self._obj is None:
                try:
                    self._obj = frameworks.load(self._stored)
                except DeepserveError:
                    raise
                except Exception as exc:
                    raise LoaderError(
                        f"Model '{self._name}' ({self._stored.tag}) failed to load: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            return self._obj

    def _input(self, kwargs: Mapping[str, Any]) -> tuple[str, Any]:
        """The signature to run and the input it gets."""
        signature = kwargs.get(SIGNATURE) or self._default
        upload = kwargs.get("file")
        has_data = kwargs.get("data", marshmallow.missing) is not marshmallow.missing
        if isinstance(upload, UploadedFile) and has_data:
            raise BadInput(
                "Give the input either as 'data' or as 'file', not both",
                errors={"file": ["Not allowed together with 'data'."]},
            )
        if isinstance(upload, UploadedFile):
            return signature, self._fits(signature, _read_upload(upload), "file")
        if not has_data:
            where = "'data' (JSON)" + (
                " or 'file' (upload)" if self._file_input else ""
            )
            raise BadInput(
                f"Missing input: give {where}",
                errors={"data": ["Missing data for required field."]},
            )
        return signature, self._fits(signature, kwargs["data"], "data")

    def _fits(self, signature: str, data: Any, field: str) -> Any:
        """``data``, checked against the one input tensor ``signature``
        declared, when it declared one: its rank and fixed dimensions (a
        wrongly shaped input is the client's mistake, not the model's).

        :raises BadInput: naming ``field`` and the shape expected.
        """
        declared = self._info.signatures.get(signature)
        inputs = getattr(declared, "inputs", None)
        if not inputs or len(inputs) != 1 or not isinstance(data, list | tuple):
            return data
        import numpy  # only a declared shape to check needs it

        (spec,) = inputs
        try:
            shape = numpy.asarray(data, dtype=object).shape
        except ValueError:
            shape = None
        fits = shape is not None and len(shape) == len(spec.shape)
        if fits and shape is not None:
            fits = all(w in (-1, g) for w, g in zip(spec.shape, shape, strict=True))
        if not fits:
            expected = list(spec.shape)
            got = "rows of different lengths" if shape is None else list(shape)
            raise BadInput(
                f"Input of shape {got} does not fit '{signature}', which takes "
                f"shape {expected} (-1: any size)",
                errors={field: [f"Shape {expected} expected, got {got}."]},
            )
        return data

    def _run(self, signature: str, inputs: list[Any]) -> list[Any]:
        """Call ``signature`` once per input; a failure fails them all."""
        func = self._method(signature)
        try:
            return [_jsonable(func(data)) for data in inputs]
        except DeepserveError:
            raise
        except Exception as exc:
            raise ModelFailed(
                self._name, type(exc).__name__, str(exc), traceback.format_exc()
            ) from None

    def _method(self, signature: str) -> Any:
        obj = self._load()
        if signature == "__call__":
            return obj
        func = getattr(obj, signature, None)
        if not callable(func):
            raise NotSupported(self._name, signature)
        return func

    def _batch(self, items: list[dict[str, Any]]) -> list[Any]:
        """One call per batchable signature, one per item for the others."""
        results: list[Any] = [None] * len(items)
        groups: dict[str, list[tuple[int, Any]]] = {}
        for i, item in enumerate(items):
            try:
                signature, data = self._input(item)
            except DeepserveError as exc:
                results[i] = exc
                continue
            groups.setdefault(signature, []).append((i, data))
        for signature, members in groups.items():
            if self._signatures[signature]["batchable"]:
                self._batched(signature, members, results)
            else:
                self._each(signature, members, results)
        return results

    def _each(
        self, signature: str, members: list[tuple[int, Any]], results: list[Any]
    ) -> None:
        """One call per input; each failure is that input's own."""
        for i, data in members:
            try:
                results[i] = self._run(signature, [data])[0]
            except DeepserveError as exc:
                results[i] = exc

    def _batched(
        self, signature: str, members: list[tuple[int, Any]], results: list[Any]
    ) -> None:
        axis = self._signatures[signature]["batch_dim"]
        joinable: list[tuple[int, Any]] = []
        for i, data in members:
            if _rows(data, axis) is None:
                results[i] = BadInput(
                    f"Signature '{signature}' takes a batch: 'data' must be a "
                    f"list (or an array) of rows",
                    errors={"data": ["Must be a list of rows."]},
                )
            else:
                joinable.append((i, data))
        if not joinable:
            return
        sizes = [_rows(data, axis) or 0 for _, data in joinable]
        try:
            merged = _concat([data for _, data in joinable], axis)
        except ValueError:  # rows of different shapes: run them one by one
            self._each(signature, joinable, results)
            return
        try:
            out = self._run(signature, [merged])[0]
            parts = _split(out, sizes, axis)
        except ValueError as exc:  # the output does not split into the inputs
            error = ModelFailed(self._name, "BadBatchOutput", str(exc), "")
            for i, _ in joinable:
                results[i] = error
            return
        except DeepserveError as exc:
            for i, _ in joinable:
                results[i] = exc
            return
        for (i, _), part in zip(joinable, parts, strict=True):
            results[i] = part

    def _build_args(self) -> dict[str, fields.Field]:
        args: dict[str, fields.Field] = {
            "data": fields.Raw(
                allow_none=True,
                metadata={
                    "location": "json",
                    "description": "The model's input, as JSON (for example a "
                    "list of rows).",
                },
            )
        }
        if self._file_input:
            args["file"] = fields.Raw(
                metadata={
                    "type": "file",
                    "location": "form",
                    "description": "The model's input as a file: a JSON file "
                    "(application/json) is decoded, any other file arrives as "
                    "bytes. Give either 'data' or 'file'.",
                }
            )
        if len(self._signatures) > 1:
            names = list(self._signatures)
            args[SIGNATURE] = fields.Str(
                load_default=self._default,
                validate=validate.OneOf(names),
                metadata={
                    "location": "query",
                    "description": "Which of the model's saved methods runs.",
                },
            )
        return args


def _signatures(declared: Mapping[str, Signature]) -> dict[str, dict[str, Any]]:
    """``{method: {"batchable": bool, "batch_dim": int}}`` from the entry."""
    return {
        str(name): {"batchable": sig.batchable, "batch_dim": sig.batch_dim}
        for name, sig in declared.items()
    }


def _read_upload(upload: UploadedFile) -> Any:
    """An uploaded input: JSON files decoded, others as bytes."""
    assert upload.filename is not None
    with open(upload.filename, "rb") as f:
        raw = f.read()
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    is_json = ctype == "application/json" or ctype.endswith("+json")
    if is_json or str(upload.original_filename or "").lower().endswith(".json"):
        try:
            return json.loads(raw)
        except ValueError as err:
            raise BadInput(
                f"The uploaded file is not valid JSON: {err}",
                errors={"file": [f"Not valid JSON: {err}"]},
            ) from None
    return raw


def _rows(data: Any, axis: int) -> int | None:
    """How many rows ``data`` holds along ``axis``, or ``None`` if not a batch."""
    shape = getattr(data, "shape", None)
    if shape is not None and len(shape) > axis:
        return int(shape[axis])
    if axis == 0 and isinstance(data, list | tuple):
        return len(data)
    return None


def _concat(parts: list[Any], axis: int) -> Any:
    if axis == 0 and all(isinstance(p, list | tuple) for p in parts):
        return [row for part in parts for row in part]
    import numpy  # only batches along another axis, or of arrays, need it

    return numpy.concatenate([numpy.asarray(p) for p in parts], axis=axis)


def _split(out: Any, sizes: list[int], axis: int) -> list[Any]:
    """Cut a batched result back into one part per request.

    :raises ValueError: when the result has not one row per input row.
    """
    total = sum(sizes)
    if _rows(out, axis) != total:
        raise ValueError(
            f"a batched call returned {_rows(out, axis)} rows for {total} inputs"
        )
    parts, start = [], 0
    for size in sizes:
        if isinstance(out, list):
            parts.append(out[start : start + size])
        else:
            import numpy

            index = [slice(None)] * (axis + 1)
            index[axis] = slice(start, start + size)
            parts.append(_jsonable(numpy.asarray(out)[tuple(index)]))
        start += size
    return parts


def _jsonable(value: Any) -> Any:
    """Arrays, NumPy scalars and data frames as plain JSON-able values."""
    if isinstance(value, str | int | float | bool | bytes) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and hasattr(value, "columns"):  # a pandas DataFrame
        return _jsonable(to_dict(orient="records"))
    for attr in ("tolist", "item"):  # NumPy arrays and scalars, pandas Series
        convert = getattr(value, attr, None)
        if callable(convert):
            try:
                return _jsonable(convert())
            except (TypeError, ValueError):
                break
    return value
