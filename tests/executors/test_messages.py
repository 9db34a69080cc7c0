"""The values that cross the pipes between the server and its workers."""

from __future__ import annotations

import multiprocessing
import pickle
from multiprocessing.reduction import ForkingPickler

import pytest

from deepserve.exceptions import ModelFailed
from deepserve.executors.capture import Capture
from deepserve.executors.messages import (
    Answer,
    Call,
    Cancel,
    Failure,
    LogLine,
    Ready,
    Skipped,
    StartFailed,
    WorkerStart,
)
from deepserve.loader import ModelRef

MESSAGES = [
    Call(7, "predict", {"text": "hi", "n": [1, 2]}, "req-1"),
    Call(8, "train", {}, None),
    Cancel(7),
    Ready(1234),
    StartFailed(ModelFailed("m", "ValueError", "bad", "Traceback ...")),
    Answer({"text": "hi"}),
    Failure(ModelFailed("m", "KeyError", "'x'", "Traceback ...")),
    Skipped(),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_survive_the_pipe_as_themselves(message: object) -> None:
    back = pickle.loads(pickle.dumps(message))
    assert type(back) is type(message)
    for ours, theirs in zip(back, message, strict=True):  # type: ignore[call-overload]
        if isinstance(theirs, BaseException):
            assert type(ours) is type(theirs) and str(ours) == str(theirs)
        else:
            assert ours == theirs


def test_a_log_line_is_one_line_of_json_and_reads_back() -> None:
    line = LogLine(1700000000.25, "INFO", "train: epoch 1\nloss 0.5")
    raw = line.encode()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert LogLine.decode(raw.decode().removesuffix("\n")) == line


@pytest.mark.parametrize(
    "text",
    [
        "plain text a process wrote",
        "[1, 2, 3]",
        '"a string"',
        '{"time": 1.0, "level": "INFO"}',
        '{"time": "soon", "level": "INFO", "text": "x"}',
    ],
)
def test_what_is_not_a_log_line_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        LogLine.decode(text)


REF = ModelRef("m", "m:1.0", "store", store="/models", version="1.0")


def test_a_workers_start_survives_pickling_as_itself() -> None:
    start = WorkerStart(REF, True, 4321, 10, "json")

    back = pickle.loads(pickle.dumps(start))

    assert type(back) is WorkerStart and back == start
    assert (back.ref, back.warm, back.parent_pid) == (REF, True, 4321)
    assert (back.log_level, back.log_format) == (10, "json")
    assert back.capture is None and back.own_group is False


def test_a_job_process_start_carries_working_pipes() -> None:
    """Spawn pickles the start with its reducer: the copy's capture pipes
    still reach the server's ends."""
    ctx = multiprocessing.get_context("spawn")
    ends = {name: ctx.Pipe(duplex=False) for name in ("stdout", "stderr", "log")}
    capture = Capture(*(write for _, write in ends.values()))
    start = WorkerStart(REF, False, 4321, 20, "text", capture, own_group=True)

    back = pickle.loads(bytes(ForkingPickler.dumps(start)))

    assert (back.ref, back.own_group, back.log_format) == (REF, True, "text")
    assert isinstance(back.capture, Capture)
    for name, (read, _) in ends.items():
        getattr(back.capture, name).send_bytes(name.encode())
        assert read.recv_bytes() == name.encode()
    for read, write in ends.values():
        read.close()
        write.close()
    for conn in (back.capture.stdout, back.capture.stderr, back.capture.log):
        conn.close()
