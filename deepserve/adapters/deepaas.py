"""Adapter for DEEPaaS V2 style models: modules, classes and instances."""

from __future__ import annotations

import inspect
import io
import logging
import os
import traceback
from collections.abc import Mapping
from typing import Any

import marshmallow
from marshmallow import fields

from deepserve.adapters import files
from deepserve.exceptions import (
    DeepserveError,
    LoaderError,
    ModelFailed,
    ModelHTTPError,
    NotSupported,
)
from deepserve.model import BaseModel, Method, ReturnedFile

LOG = logging.getLogger(__name__)


class DeepaasModel:
    """Wraps a module, a class (instantiated once) or an object.

    :param name: the name the model is served under.
    :param target: what the entry point points to.
    :raises LoaderError: when the class cannot be instantiated or the model's
        argument or response declarations are malformed.
    """

    def __init__(self, name: str, target: object) -> None:
        self._name = name
        if inspect.isclass(target):
            cls = target
            try:
                target = cls()
            except Exception as exc:
                raise LoaderError(
                    f"Model '{name}': creating {cls.__qualname__} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        self._obj = target
        # DEEPaaS's own UploadedFile where deepaas is importable: decided
        # once, here, in the process that runs the model.
        self._upload_cls = files.upload_class()
        self._predict_args = self._read_args("get_predict_args")
        self._train_args = self._read_args("get_train_args")
        self._schema = self._read_schema()

    @property
    def name(self) -> str:
        return self._name

    @property
    def response_schema(self) -> type[marshmallow.Schema] | None:
        return self._schema

    def metadata(self) -> dict[str, Any]:
        fallback = {
            "id": self._name,
            "name": self._name,
            "description": f"No metadata provided by model '{self._name}'",
        }
        getter = getattr(self._obj, "get_metadata", None)
        if getter is None:
            return fallback
        try:
            meta = getter()
        except NotImplementedError:
            return fallback
        except Exception:
            LOG.exception("get_metadata() of model '%s' failed", self._name)
            return fallback
        if not isinstance(meta, Mapping):
            LOG.error("get_metadata() of model '%s' did not return a dict", self._name)
            return fallback
        return dict(meta)

    def predict_args(self) -> Mapping[str, fields.Field]:
        return self._predict_args

    def train_args(self) -> Mapping[str, fields.Field]:
        return self._train_args

    def supports(self, method: Method) -> bool:
        if method == "predict" and not self._has("predict"):
            return self._has("predict_batch")  # served as a batch of one
        return self._has(method)

    def _has(self, method: Method) -> bool:
        func = getattr(self._obj, method, None)
        # BaseModel's own placeholders only raise NotImplementedError.
        inherited = getattr(func, "__func__", None) is getattr(BaseModel, method)
        return callable(func) and not inherited

    def call(self, method: Method, kwargs: Mapping[str, Any]) -> Any:
        if (
            method == "predict"
            and not self._has("predict")
            and self._has("predict_batch")
        ):
            (result,) = self.call("predict_batch", {"items": [dict(kwargs)]})
            if isinstance(result, DeepserveError):
                raise result
            return result
        func = getattr(self._obj, method, None)
        if not callable(func):
            if method == "warm":
                return None
            raise NotSupported(self._name, method)
        try:
            if method == "predict_batch":
                items = [files.to_model(i, self._upload_cls) for i in kwargs["items"]]
                return self._batch(func, items)
            result = func(**files.to_model(kwargs, self._upload_cls))
        except NotImplementedError as exc:
            if method == "warm":
                return None
            raise NotSupported(self._name, method) from exc
        except DeepserveError:
            raise
        except Exception as exc:
            raise self._error(exc, traceback.format_exc()) from None
        return _portable(result) if method == "predict" else result

    def batch_options(self) -> Mapping[str, Any]:
        options = getattr(self._obj, "batching", None)
        return dict(options) if isinstance(options, Mapping) else {}

    def _batch(self, func: Any, items: list[dict[str, Any]]) -> list[Any]:
        results = func(items)
        if not isinstance(results, list | tuple):
            return results  # type: ignore[no-any-return]  # the batcher says why
        return [
            self._error(r, "") if isinstance(r, BaseException) else _portable(r)
            for r in results
        ]

    def _error(self, exc: BaseException, trace: str) -> DeepserveError:
        """The domain error for an exception the model raised or returned."""
        if isinstance(exc, DeepserveError):
            return exc
        status = _http_status(exc)
        if status is not None:
            text = getattr(exc, "text", None) or str(exc)
            return ModelHTTPError(self._name, status, str(text))
        return ModelFailed(self._name, type(exc).__name__, str(exc), trace)

    def _read_args(self, getter_name: str) -> dict[str, fields.Field]:
        getter = getattr(self._obj, getter_name, None)
        if getter is None:
            return {}
        try:
            args = getter()
        except NotImplementedError:
            return {}
        except Exception as exc:
            raise LoaderError(
                f"Model '{self._name}': {getter_name}() failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if args is None:
            return {}
        if not isinstance(args, Mapping):
            raise LoaderError(
                f"Model '{self._name}': {getter_name}() must return a dict of "
                f"fields, not {type(args).__name__}"
            )
        for key, field in args.items():
            if not isinstance(field, fields.Field):
                raise LoaderError(
                    f"Model '{self._name}': argument '{key}' of {getter_name}() "
                    f"is a {type(field).__name__}, not a marshmallow field"
                )
        # Our own dict: the plugin's dict and its fields are never touched.
        return dict(args)

    def _read_schema(self) -> type[marshmallow.Schema] | None:
        schema = getattr(self._obj, "schema", None)
        if schema is None:
            return None
        if isinstance(schema, Mapping):
            try:
                return marshmallow.Schema.from_dict(
                    dict(schema), name=f"{_camel(self._name)}Response"
                )
            except Exception as exc:
                raise LoaderError(
                    f"Model '{self._name}': invalid response schema: {exc}"
                ) from exc
        if inspect.isclass(schema) and issubclass(schema, marshmallow.Schema):
            return schema
        raise LoaderError(
            f"Model '{self._name}': 'schema' must be a marshmallow Schema class "
            f"or a dict of fields, not {type(schema).__name__}"
        )


def _http_status(exc: BaseException) -> int | None:
    """The status of an aiohttp ``HTTPException``, recognised without aiohttp."""
    for cls in type(exc).__mro__:
        if cls.__name__ == "HTTPException" and cls.__module__.startswith("aiohttp"):
            status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
            return int(status) if status else None
    return None


def _portable(result: Any) -> Any:
    """Make what ``predict`` returned safe to send across processes."""
    result = files.returned(result)
    if isinstance(result, io.BytesIO):
        return result.getvalue()
    if isinstance(result, io.IOBase) and hasattr(result, "read"):
        name = getattr(result, "name", None)
        if isinstance(name, str) and os.path.isfile(name):
            result.close()
            return ReturnedFile(filename=os.path.abspath(name))
        data = result.read()
        result.close()
        return data.encode() if isinstance(data, str) else data
    return result


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
