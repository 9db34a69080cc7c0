"""The model contract: what a plugin provides and what deepserve hands it.

A model is a module, a class or an object that exposes the DEEPaaS V2 model
API, documented on :class:`BaseModel`. Inheriting from :class:`BaseModel` is
optional: deepserve only looks for the methods. Packages written for DEEPaaS
work unchanged, including their ``deepaas.v2.model`` entry points.

Inside deepserve every kind of model is seen through one interface,
:class:`Model`, built by :mod:`deepserve.adapters`.
"""

from __future__ import annotations

import abc
import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

if TYPE_CHECKING:  # annotations only: the model store uses this module too,
    # and the commands that read it must not import marshmallow
    import marshmallow
    from marshmallow import fields

Method = Literal["warm", "predict", "predict_batch", "train"]


class UploadedFile(NamedTuple):
    """A file uploaded by a client, as passed to ``predict`` and ``train``.

    The upload has already been written to disk: open ``filename`` to read it.
    The file is deleted when the request ends (for ``predict``) or when the
    training ends (for ``train``): copy it if you need it longer.
    """

    #: Name of the argument the file was sent in.
    name: str | None = None
    #: Absolute path of the temporary file holding the upload.
    filename: str | None = None
    #: Media type the client declared for the file.
    content_type: str | None = None
    #: The file's name on the client's side. Never use it as a path.
    original_filename: str | None = None


class ReturnedFile(NamedTuple):
    """A file returned by ``predict`` when the response is not JSON.

    deepserve sends the file at ``filename`` with the negotiated media type
    (when that is a range such as ``image/*``, the type ``content_type``
    names or the file's name or first bytes suggest); ``original_filename``,
    when set, is offered to the client as the download name.
    """

    name: str | None = None
    filename: str | None = None
    content_type: str | None = None
    original_filename: str | None = None


def is_file_tuple(value: Any) -> bool:
    """A named tuple with a ``filename``: a ``ReturnedFile`` or
    ``UploadedFile`` of deepserve, of DEEPaaS or of another package."""
    return (
        isinstance(value, tuple)
        and hasattr(value, "_fields")
        and isinstance(getattr(value, "filename", None), str)
    )


def as_returned_file(value: Any, filename: str | None = None) -> ReturnedFile:
    """A file tuple (see :func:`is_file_tuple`) as deepserve's
    :class:`ReturnedFile`, its fields kept; ``filename`` replaces its path."""
    return ReturnedFile(
        name=getattr(value, "name", None),
        filename=filename if filename is not None else value.filename,
        content_type=getattr(value, "content_type", None),
        original_filename=getattr(value, "original_filename", None),
    )


#: The tensor datatypes of the Open Inference Protocol (KServe V2), in the
#: order its specification lists them.
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)


class TensorSpec(NamedTuple):
    """One input or output tensor a model takes or gives.

    :param name: the tensor's name.
    :param datatype: one of :data:`DATATYPES`.
    :param shape: its dimensions; ``-1`` for a dimension of any size (such
        as the batch dimension).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class BaseModel(abc.ABC):  # noqa: B024 - every method is optional
    """Base class for models; inheriting from it is optional.

    Every method below may be left out: a model without ``train`` answers
    training requests with 501, a model without ``get_metadata`` gets
    generated metadata, and so on.
    """

    schema: type[marshmallow.Schema] | dict[str, fields.Field] | None = None
    """Schema of the prediction response, or ``None``.

    Either a :class:`marshmallow.Schema` subclass (the class, not an
    instance) or a dict of fields. When set, every JSON prediction is
    validated against it and returned as the model produced it, and the
    OpenAPI document describes it. When unset, JSON predictions are wrapped
    as ``{"status": "OK", "predictions": <what predict returned>}``. For
    example::

        schema = {
            "status": fields.Str(required=True),
            "predictions": fields.List(fields.Nested({
                "label": fields.Str(required=True),
                "probability": fields.Float(required=True),
            })),
        }
    """

    def get_metadata(self) -> dict[str, Any]:
        """Return the model's metadata, for example::

        {
            "name": "my-model",
            "description": "What the model does",
            "author": "Author name",
            "license": "MIT",
            "url": "https://example.org/my-model",
            "version": "1.0",
        }
        """
        raise NotImplementedError()

    def warm(self) -> None:
        """Load and prepare the model before the first request.

        It runs once in every worker process, before the server reports
        ready; what it sets on the model (weights, caches) is there for every
        later ``predict`` and ``train`` call of that worker.
        """
        raise NotImplementedError()

    def get_predict_args(self) -> dict[str, fields.Field]:
        """Return the arguments of ``predict`` as webargs/marshmallow fields.

        Old DEEPaaS style keywords keep working: ``missing=`` (default),
        ``description=``, ``enum=``, ``location=`` (``"query"``, ``"form"``,
        ``"headers"``) and ``type="file"`` for uploads::

            def get_predict_args(self):
                return {
                    "data": fields.Field(
                        required=True, type="file", location="form",
                        description="Image to classify"),
                    "top_k": fields.Int(
                        load_default=5, metadata={"description": "Labels"}),
                    "accept": fields.Str(
                        load_default="application/json",
                        validate=validate.OneOf(["application/json", "image/png"])),
                }

        A file argument arrives as an :class:`UploadedFile`. An ``accept``
        argument declares the media types ``predict`` can return (its
        ``OneOf`` choices); ``predict`` then receives the negotiated type.
        """
        raise NotImplementedError()

    def predict(self, **kwargs: Any) -> Any:
        """Run a prediction with the parsed arguments.

        Return JSON-serialisable data for ``application/json``; for other
        media types return ``bytes``, an open binary file, a
        :class:`ReturnedFile` or a :class:`pathlib.Path`. Raise an aiohttp
        ``HTTPException`` (e.g. ``HTTPBadRequest``) to answer with that
        status and text.
        """
        raise NotImplementedError()

    batching: dict[str, Any] | None = None
    """Batching settings for :meth:`predict_batch`, e.g.
    ``{"max_batch_size": 16, "max_latency_ms": 2}``; the configuration may
    override them."""

    def predict_batch(self, items: list[dict[str, Any]]) -> list[Any]:
        """Optional: run many predictions in one call.

        When a model has it, deepserve merges concurrent predictions (up to
        ``max_batch_size``, waiting at most ``max_latency_ms`` for a batch to
        fill) and calls it with their parsed arguments, oldest first. Return
        one result per item, in the same order. To fail one item only, put an
        exception in its place: that client gets the error, the others their
        results. Raising fails the whole batch.
        """
        raise NotImplementedError()

    def get_train_args(self) -> dict[str, fields.Field]:
        """Return the arguments of ``train``, like :meth:`get_predict_args`."""
        raise NotImplementedError()

    def train(self, **kwargs: Any) -> Any:
        """Train with the parsed arguments; return a JSON-serialisable result."""
        raise NotImplementedError()


class Model(Protocol):
    """deepserve's one internal view of a model, whatever its kind."""

    @property
    def name(self) -> str: ...

    @property
    def response_schema(self) -> type[marshmallow.Schema] | None: ...

    def metadata(self) -> dict[str, Any]:
        """The model's metadata (generated when the model has none)."""
        ...

    def predict_args(self) -> Mapping[str, fields.Field]: ...

    def train_args(self) -> Mapping[str, fields.Field]: ...

    def supports(self, method: Method) -> bool:
        """Whether the model implements ``method``."""
        ...

    def batch_options(self) -> Mapping[str, Any]:
        """The model's own batching settings (``max_batch_size``,
        ``max_latency_ms``); empty when it declares none."""
        ...

    def call(self, method: Method, kwargs: Mapping[str, Any]) -> Any:
        """Run ``method``; raise only :mod:`deepserve.exceptions` errors.

        ``predict_batch`` takes ``{"items": [kwargs, ...]}`` and returns a
        list with one result, or one deepserve error, per item.
        """
        ...


def json_default(obj: Any) -> Any:
    """What ``json.dumps`` writes for values JSON has no type for, in a
    model's results: NumPy arrays and scalars as lists and numbers, dates
    in ISO format, sets and tuples as lists, bytes as text; anything else
    as its ``str()``. Predictions over HTTP and recorded training results
    are written alike."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    return str(obj)
