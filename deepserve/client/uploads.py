"""Files given for ``type="file"`` arguments, in the forms a caller has them."""

from __future__ import annotations

import dataclasses
import errno
import io
import mimetypes
import os
from pathlib import Path
from typing import IO, Any, TypeAlias

from deepserve.client.errors import ArgumentError

#: What a file argument accepts: a path; an open binary file; raw bytes;
#: ``(filename, bytes or binary file)``; ``(filename, bytes or binary file,
#: content type)``. Paths are opened and closed by the request; an open file
#: is read from where it stands to its end, and closed by aiohttp once sent.
FileValue: TypeAlias = (
    str
    | os.PathLike[str]
    | bytes
    | IO[bytes]
    | tuple[str, bytes | IO[bytes]]
    | tuple[str, bytes | IO[bytes], str | None]
)

OCTET_STREAM = "application/octet-stream"


def _guess(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or OCTET_STREAM


@dataclasses.dataclass(frozen=True)
class Upload:
    """One file to send in a multipart body.

    :param filename: the name the server sees.
    :param content: bytes, an open binary file, or a path opened (and closed)
        by the request that sends it.
    :param content_type: its media type.
    """

    filename: str
    content: bytes | IO[bytes] | Path
    content_type: str

    @classmethod
    def of(cls, argument: str, value: Any) -> Upload:
        """Normalise what was given for file argument ``argument``.

        :raises ArgumentError: for a value that is not a file.
        :raises FileNotFoundError: for a path that names no file.
        """
        if isinstance(value, tuple) and len(value) in (2, 3):
            filename, content = value[0], value[1]
            ctype = value[2] if len(value) == 3 else None
            if not isinstance(filename, str):
                raise ArgumentError(
                    f"File argument '{argument}': the filename of a tuple must be "
                    f"a str, not {type(filename).__name__}"
                )
            inner = cls._content(argument, content)
            return cls(filename, inner, ctype or _guess(filename))
        if isinstance(value, str | os.PathLike):
            path = Path(value)
            if not path.is_file():
                raise FileNotFoundError(
                    errno.ENOENT, f"No file for argument '{argument}'", str(path)
                )
            return cls(path.name, path, _guess(path.name))
        content = cls._content(argument, value)
        name = getattr(value, "name", None)
        filename = os.path.basename(name) if isinstance(name, str) else argument
        return cls(filename, content, _guess(filename))

    @staticmethod
    def _content(argument: str, value: Any) -> bytes | IO[bytes]:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        if isinstance(value, io.TextIOBase):
            raise ArgumentError(
                f"File argument '{argument}': open the file in binary mode ('rb')"
            )
        if hasattr(value, "read"):
            return value  # type: ignore[no-any-return]
        raise ArgumentError(
            f"File argument '{argument}' takes a path, bytes, a binary file or "
            f"a (filename, content[, content type]) tuple, not "
            f"{type(value).__name__}"
        )
