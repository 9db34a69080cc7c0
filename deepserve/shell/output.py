"""Where ``deepserve call`` puts a result: standard output or a file.

Text (JSON included) goes to standard output. Bytes and returned files go
to a file: the one ``--output`` names, or a new one in the current
directory named after the result; its path is printed. ``--output -``
sends any result, binary ones too, to standard output.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import sys
from typing import BinaryIO

from deepserve.operations.encoding import FileBody, download_name

#: ``--output -``: standard output, whatever the result is.
STDOUT = "-"
CHUNK = 256 * 1024


class OutputError(Exception):
    """The result cannot be written where it should go."""


def emit(
    body: bytes | str | FileBody, media_type: str, *, output: str | None, stem: str
) -> None:
    """Write ``body``; a file's path is printed on standard output.

    :param output: ``--output``: a path, :data:`STDOUT` or ``None``.
    :param stem: the name of a file made for bytes, before its extension.
    :raises OutputError: when the file cannot be written.
    """
    if output == STDOUT:
        _to_stdout(body)
        return
    if output is None and isinstance(body, str):
        sys.stdout.write(body if body.endswith("\n") else body + "\n")
        return
    try:
        if output is None:
            path = _new_file(body, _file_name(body, media_type, stem))
        else:
            path = output
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            with open(path, "wb") as out:
                _copy(body, out)
    except OSError as err:
        where = output or "the current directory"
        raise OutputError(f"cannot write the result to {where}: {err}") from None
    print(path)


def _to_stdout(body: bytes | str | FileBody) -> None:
    if isinstance(body, str):
        sys.stdout.write(body)
        sys.stdout.flush()
        return
    sys.stdout.flush()
    _copy(body, sys.stdout.buffer)
    sys.stdout.buffer.flush()


def _copy(body: bytes | str | FileBody, out: BinaryIO) -> None:
    if isinstance(body, str):
        out.write(body.encode("utf-8"))
    elif isinstance(body, bytes):
        out.write(body)
    else:
        with open(body.path, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK)


def _file_name(body: bytes | str | FileBody, media_type: str, stem: str) -> str:
    """A plain file name: never a path the model chose.

    The name the model offers, as the HTTP API offers it for download (no
    directory, no control characters, of bounded length), when it offers
    one; otherwise ``stem`` with an extension that fits the file or media
    type.
    """
    extension = mimetypes.guess_extension(media_type.split(";")[0].strip()) or ""
    if isinstance(body, FileBody):
        name = download_name(body.download_name or "").strip()
        if name not in ("", ".", ".."):
            return name
        extension = os.path.splitext(body.path)[1] or extension
    return stem + extension


def _new_file(body: bytes | str | FileBody, name: str) -> str:
    """Write to ``name``, or ``name-1``... when taken: never overwrite."""
    root, ext = os.path.splitext(name)
    for attempt in range(1000):
        path = name if attempt == 0 else f"{root}-{attempt}{ext}"
        try:
            out = open(path, "xb")  # noqa: SIM115 - closed right below
        except FileExistsError:
            continue
        with out:
            _copy(body, out)
        return path
    raise OSError(f"every name like '{name}' is taken")
