"""A prediction's result as the body of the media type chosen for it.

Protocol-neutral, so that ``deepserve call`` answers exactly what the HTTP
API would: :func:`encode` gives bytes, text or a :class:`FileBody`, and each
protocol layer sends that its own way.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import marshmallow

from deepserve.exceptions import BadModelOutput
from deepserve.model import json_default
from deepserve.operations.negotiation import is_json, result_path


def dumps(data: Any) -> str:
    """``data`` as JSON text; values JSON has no type for are written as
    :func:`deepserve.model.json_default` says."""
    return json.dumps(data, default=json_default)


def encode(
    result: Any,
    media_type: str,
    *,
    model: str,
    schema: type[marshmallow.Schema] | None,
) -> bytes | str | FileBody:
    """What ``predict`` returned, as the body of a ``media_type`` answer.

    Protocol-neutral, so that ``deepserve call`` answers exactly what the
    HTTP API would: bytes as they are, text (JSON included) as ``str``, and
    a returned file as a :class:`FileBody`.

    :raises BadModelOutput: when the result does not fit ``media_type`` or
        the model's response schema.
    """
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result)
    path = result_path(result)
    if path is not None:
        return _file_response(path, media_type, model, result)
    if is_json(media_type):
        if schema is None:
            return dumps({"status": "OK", "predictions": result})
        return _checked(result, model, schema)
    if isinstance(result, str):
        return result
    raise BadModelOutput(
        model, f"got {type(result).__name__} for media type '{media_type}'"
    )


def _checked(result: Any, model: str, schema: type[marshmallow.Schema]) -> str:
    """``result`` as JSON text, once its JSON form (what a client reads)
    matched ``schema``."""
    if not isinstance(result, Mapping):
        raise BadModelOutput(
            model,
            f"expected an object matching its schema, got {type(result).__name__}",
        )
    text = dumps(result)
    errors = _validator(schema).validate(json.loads(text))
    if errors:
        raise BadModelOutput(model, f"it does not match the model's schema: {errors}")
    return text


@functools.lru_cache(maxsize=256)
def _validator(schema: type[marshmallow.Schema]) -> marshmallow.Schema:
    """One instance of each response schema, made once (validating keeps no
    state on it)."""
    return schema()


@dataclasses.dataclass(frozen=True)
class FileBody:
    """A file that is the answer's body, as a protocol layer sends it (the
    HTTP API streams it, ``deepserve call`` copies it)."""

    path: str
    media_type: str
    download_name: str | None


def _file_response(path: str, media_type: str, model: str, result: Any) -> FileBody:
    if not path or not os.path.isfile(path):
        raise BadModelOutput(model, f"the returned file '{path}' does not exist")
    name = getattr(result, "original_filename", None)
    return FileBody(path, media_type, os.path.basename(str(name)) if name else None)


#: Longest file name put in a Content-Disposition header.
MAX_NAME = 200


def download_name(name: str) -> str:
    """A file name fit for a header: the client may have chosen it (an
    upload sent back), so no path, no quotes, no control characters (header
    injection), and of bounded length, its extension kept."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    safe = "".join(c for c in base if c.isprintable() and c not in '"\\')
    if len(safe) > MAX_NAME:
        stem, dot, ext = safe.rpartition(".")
        if dot and stem and len(ext) < 16:
            safe = stem[: MAX_NAME - len(ext) - 1] + "." + ext
        else:
            safe = safe[:MAX_NAME]
    return safe.strip()
