"""The values that cross the pipes between the server and its workers."""

from __future__ import annotations

import pickle

import pytest

from deepserve.exceptions import ModelFailed
from deepserve.executors.messages import (
    Answer,
    Call,
    Cancel,
    Failure,
    LogLine,
    Ready,
    Skipped,
    StartFailed,
)

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
