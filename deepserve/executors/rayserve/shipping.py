"""Files across a Ray cluster: uploads to the replica, returned files back.

A replica may run on another machine than the server, so a path means
nothing there. Before a call, :func:`pack` turns each uploaded file in its
arguments into a :class:`~deepserve.executors.messages.ShippedFile` carrying
the bytes (or, for large files, a reference into Ray's object store, filled
straight from the file); in the replica :func:`unpack` writes them to a
directory of the call's own and passes the model ordinary
:class:`~deepserve.model.UploadedFile` values. After the call, a returned
file travels back as :class:`~deepserve.executors.messages.ReturnedBytes`
(:func:`pack_result`) and :func:`unpack_result` writes it into a call space
of the server (see :mod:`~deepserve.executors.callspace`), which the server
removes once the file is sent, as for the other executors.

Nothing here imports Ray: the object store is reached through the ``put``
and ``get`` functions the caller passes.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from deepserve.executors.callspace import PREFIX
from deepserve.executors.messages import ReturnedBytes, ShippedFile
from deepserve.model import UploadedFile, as_returned_file, is_file_tuple

#: Files at least this large go through Ray's object store, not inline in
#: the call's arguments.
LARGE = 1024 * 1024

#: Takes the path of a large file; returns what the replica reads it from.
Put = Callable[[str], Any]
#: Takes what :data:`Put` returned; returns the bytes (any buffer).
Get = Callable[[Any], Any]


def has_files(kwargs: Mapping[str, Any]) -> bool:
    """Whether any argument holds an uploaded file: itself, or in a list or
    dict (a batch's ``items`` are dicts of each prediction's arguments)."""
    return _holds(kwargs, _is_upload)


def has_shipped(kwargs: Mapping[str, Any]) -> bool:
    """Whether any argument holds a shipped file (as :func:`has_files`)."""
    return _holds(kwargs, lambda v: isinstance(v, ShippedFile))


def pack(kwargs: Mapping[str, Any], put: Put | None = None) -> dict[str, Any]:
    """``kwargs`` with each uploaded file replaced by its bytes.

    Blocking (it reads the files): call it in a thread. ``put`` stores a
    file of :data:`LARGE` bytes or more; without it every file is inline.
    """
    return dict(_walk(kwargs, _is_upload, lambda upload: _ship(upload, put)))


def unpack(
    kwargs: Mapping[str, Any], directory: str, get: Get | None = None
) -> dict[str, Any]:
    """``kwargs`` with each shipped file written under ``directory`` and
    passed as an :class:`UploadedFile` naming that copy."""
    counter = iter(range(1_000_000_000))
    return dict(
        _walk(
            kwargs,
            lambda v: isinstance(v, ShippedFile),
            lambda shipped: _write_upload(shipped, directory, next(counter), get),
        )
    )


def pack_result(method: str, result: Any) -> Any:
    """A call's result with returned files as their bytes (read now: the
    replica removes its call space once the call is answered)."""
    if method == "predict_batch" and isinstance(result, list | tuple):
        return [_pack_file(item) for item in result]
    return _pack_file(result)


def unpack_result(method: str, value: Any) -> Any:
    """What the replica sent back, with each returned file written to a call
    space of this process (removed by :func:`callspace.release` once sent).

    Blocking when a file came back: call it in a thread then.
    """
    if method == "predict_batch" and isinstance(value, list):
        return [_unpack_file(item) for item in value]
    return _unpack_file(value)


async def received(method: str, value: Any) -> Any:
    """A call's answer value as the server passes it on: returned files
    written to call spaces of this process (in a thread: it blocks)."""
    if has_returned_files(method, value):
        return await asyncio.to_thread(unpack_result, method, value)
    return value


def has_returned_files(method: str, value: Any) -> bool:
    if method == "predict_batch" and isinstance(value, list):
        return any(isinstance(item, ReturnedBytes) for item in value)
    return isinstance(value, ReturnedBytes)


# -- uploads ------------------------------------------------------------------


def _is_upload(value: Any) -> bool:
    return isinstance(value, UploadedFile) or (
        is_file_tuple(value) and not isinstance(value, ShippedFile)
    )


def _holds(value: Any, wanted: Callable[[Any], bool]) -> bool:
    """Whether ``value`` is, or holds in its lists and dicts, a wanted one."""
    if wanted(value):
        return True
    if isinstance(value, Mapping):
        return any(_holds(v, wanted) for v in value.values())
    if isinstance(value, list) and value and _nests(value[0], wanted):
        # Only lists of files, dicts or lists: a list of numbers (a model's
        # data) is not walked on every call.
        return any(_holds(v, wanted) for v in value)
    return False


def _nests(first: Any, wanted: Callable[[Any], bool]) -> bool:
    return isinstance(first, Mapping | list) or wanted(first)


def _walk(
    value: Any, wanted: Callable[[Any], bool], change: Callable[[Any], Any]
) -> Any:
    """``value`` with each wanted one in it (in lists and dicts) changed."""
    if wanted(value):
        return change(value)
    if isinstance(value, Mapping):
        return {k: _walk(v, wanted, change) for k, v in value.items()}
    if isinstance(value, list) and value and _nests(value[0], wanted):
        return [_walk(v, wanted, change) for v in value]
    return value


def _ship(upload: Any, put: Put | None) -> ShippedFile:
    path = str(upload.filename)
    data: Any
    if put is not None and os.path.getsize(path) >= LARGE:
        data = put(path)
    else:
        data = pathlib.Path(path).read_bytes()
    return ShippedFile(
        name=getattr(upload, "name", None),
        content_type=getattr(upload, "content_type", None),
        original_filename=getattr(upload, "original_filename", None),
        data=data,
    )


def _write_upload(
    shipped: ShippedFile, directory: str, number: int, get: Get | None
) -> UploadedFile:
    data = shipped.data
    if not isinstance(data, bytes | bytearray | memoryview):
        if get is None:
            raise ValueError("a file in Ray's object store, and no way to read it")
        data = get(data)
    path = os.path.join(directory, f"{number}-{_safe(shipped.original_filename)}")
    with open(path, "wb") as out:
        out.write(memoryview(data).cast("B"))
    return UploadedFile(
        name=shipped.name,
        filename=path,
        content_type=shipped.content_type,
        original_filename=shipped.original_filename,
    )


def _safe(name: str | None) -> str:
    """A file name for the replica's copy: the client's name, tamed (it is
    never used as a path)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(name or ""))[-100:]
    return base.lstrip(".") or "upload"


# -- returned files -----------------------------------------------------------


def _pack_file(value: Any) -> Any:
    if is_file_tuple(value):  # an UploadedFile too: the upload sent back
        kind, path = "tuple", str(value.filename)
    elif isinstance(value, pathlib.PurePath):
        kind, path = "path", str(value)
    else:
        return value
    return ReturnedBytes(
        kind=kind,
        basename=os.path.basename(path),
        name=getattr(value, "name", None),
        content_type=getattr(value, "content_type", None),
        original_filename=getattr(value, "original_filename", None),
        data=pathlib.Path(path).read_bytes(),
    )


def _unpack_file(value: Any) -> Any:
    if not isinstance(value, ReturnedBytes):
        return value
    space = tempfile.mkdtemp(
        prefix=f"{PREFIX}{os.getpid()}-", dir=os.path.realpath(tempfile.gettempdir())
    )
    path = os.path.join(space, _safe(value.basename))
    pathlib.Path(path).write_bytes(value.data)
    if value.kind == "path":
        return pathlib.Path(path)
    return as_returned_file(value, path)
