"""A worker pipe's messages, split as the event loop reads them
(executors/frames.py), against what multiprocessing itself writes."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from deepserve.exceptions import DeepserveError
from deepserve.executors import frames
from deepserve.executors.messages import Answer, Failure, Ready, Skipped


def written(*messages: object) -> bytes:
    """The bytes ``Connection.send`` puts on a pipe for ``messages``."""
    ours, theirs = multiprocessing.Pipe(duplex=True)
    try:
        for message in messages:
            theirs.send(message)
        out = b""
        while ours.poll(0):
            out += os.read(ours.fileno(), 1 << 20)
        return out
    finally:
        ours.close()
        theirs.close()


MESSAGES = [
    Ready(42),
    Answer({"echo": "x" * 10}),
    Skipped(),
    Answer(b"\x00" * 70_000),  # over the 16 KiB multiprocessing sends apart
    Failure(DeepserveError("boom")),
]


def values(pickles: list[bytes]) -> list[object]:
    return [frames.load(p) for p in pickles]


def test_many_messages_in_one_read_come_out_in_order():
    data = written(*MESSAGES)
    got = values(frames.Frames().feed(data))
    assert got[:4] == MESSAGES[:4]
    assert str(got[4].error) == "boom"


@pytest.mark.parametrize("step", [1, 3, 4, 5, 4097])
def test_messages_cut_anywhere_are_kept_until_whole(step):
    data = written(*MESSAGES)
    reader = frames.Frames()
    got: list[object] = []
    for start in range(0, len(data), step):
        got += values(reader.feed(data[start : start + step]))
    assert got[:4] == MESSAGES[:4]
    assert len(got) == len(MESSAGES)
    assert reader.feed(b"") == []


def test_the_long_length_form_is_read():
    """Over 2 GiB, multiprocessing writes -1 and an 8-byte length: the same
    layout, checked here with a small payload."""
    import pickle
    import struct

    body = pickle.dumps(Answer("big"))
    data = struct.pack("!i", -1) + struct.pack("!Q", len(body)) + body
    reader = frames.Frames()
    assert reader.feed(data[:6]) == []
    assert values(reader.feed(data[6:])) == [Answer("big")]


def test_the_workers_inbox_waits_looks_and_sees_the_end():
    ours, theirs = multiprocessing.Pipe(duplex=True)
    inbox = frames.Inbox(ours.fileno())
    assert not inbox.pending()  # nothing yet, and no waiting to say so
    theirs.send(Ready(1))
    theirs.send(Answer("two"))
    assert inbox.pending()
    assert inbox.get() == Ready(1)
    assert inbox.pending()
    assert inbox.get() == Answer("two")
    assert not inbox.pending()
    # A large message arrives in pieces; get() waits for all of it.
    big = Answer(b"y" * (3 * frames.READ_SIZE))
    sender = threading.Thread(target=theirs.send, args=(big,))
    sender.start()
    assert inbox.get() == big
    sender.join()
    theirs.close()
    assert inbox.pending()  # the end: get() says so at once
    with pytest.raises(EOFError):
        inbox.get()
    with pytest.raises(EOFError):
        inbox.get()
    ours.close()
