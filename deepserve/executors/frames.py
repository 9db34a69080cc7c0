"""A worker pipe's messages, read many per wake-up, at both ends.

Workers write with :meth:`multiprocessing.connection.Connection.send`:
each message is its pickle behind a 4-byte big-endian length (or ``-1``
and an 8-byte length, for a message over 2 GiB). Reading them with
``Connection.poll`` and ``recv`` costs a selector and two or more reads per
message; under load a worker's answers arrive faster than that.
:class:`Frames` takes whatever one read of the readable pipe returned and
gives back every message complete in it, keeping the rest for the next;
:class:`Inbox` does the same for the worker, which blocks on its pipe.
"""

from __future__ import annotations

import collections
import os
import select
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


class Inbox:
    """The messages coming to a worker on the pipe with descriptor ``fd``.

    :meth:`get` blocks for the next one; :meth:`pending` says, without
    blocking, whether one is there. One ``poll`` object, made once, and a
    read per wake-up instead of ``Connection.poll`` (a new selector per
    look) and two reads per message.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._closed = False
        self._frames = Frames()
        self._ready: collections.deque[bytes] = collections.deque()
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def get(self) -> Any:
        """The next message, waiting for it.

        :raises EOFError: when the pipe closed.
        """
        while not self._ready:
            self._read()
        return load(self._ready.popleft())

    def pending(self) -> bool:
        """Whether :meth:`get` would not wait: a message is here, or the
        pipe closed (``get`` then says so at once)."""
        if self._ready or self._closed:
            return True
        if self._poll.poll(0):
            try:
                self._read()
            except EOFError:
                return True
        return bool(self._ready)

    def _read(self) -> None:
        if self._closed:
            raise EOFError
        data = os.read(self._fd, READ_SIZE)
        if not data:
            self._closed = True
            raise EOFError
        self._ready.extend(self._frames.feed(data))
