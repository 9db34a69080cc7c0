"""A worker pipe's messages, read on the event loop many per wake-up.

Workers write with :meth:`multiprocessing.connection.Connection.send`:
each message is its pickle behind a 4-byte big-endian length (or ``-1``
and an 8-byte length, for a message over 2 GiB). Reading them with
``Connection.poll`` and ``recv`` costs a selector and two or more reads per
message; under load a worker's answers arrive faster than that.
:class:`Frames` takes whatever one read of the readable pipe returned and
gives back every message complete in it, keeping the rest for the next.
"""

from __future__ import annotations

import struct
from multiprocessing.reduction import ForkingPickler
from typing import Any

#: Bytes read per wake-up of the event loop.
READ_SIZE = 256 * 1024

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


class Frames:
    """Splits the bytes of a pipe into its messages' pickles."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The pickles completed by ``data``, in order."""
        buffer = self._buffer
        buffer += data
        found: list[bytes] = []
        start = 0
        end = len(buffer)
        while end - start >= _SHORT.size:
            (size,) = _SHORT.unpack_from(buffer, start)
            head = _SHORT.size
            if size == -1:
                if end - start < head + _LONG.size:
                    break
                (size,) = _LONG.unpack_from(buffer, start + head)
                head += _LONG.size
            if end - start < head + size:
                break
            found.append(bytes(buffer[start + head : start + head + size]))
            start += head + size
        if start:
            del buffer[:start]
        return found


def load(pickle: bytes) -> Any:
    """A message's value (as ``Connection.recv`` gives it)."""
    return ForkingPickler.loads(pickle)
