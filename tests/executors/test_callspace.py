"""Each prediction's temporary directory (executors/callspace.py): the
pure rules here; a real server serving a model that writes temporary
files on every prediction in tests/test_server.py."""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Iterator

import pytest

from deepserve.executors import callspace
from deepserve.model import ReturnedFile


@pytest.fixture
def base(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The temporary directory, as the worker and the server see it."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield os.path.realpath(root)


def write(path: str, data: bytes = b"x") -> str:
    pathlib.Path(path).write_bytes(data)
    return path


def test_the_call_writes_into_its_space_and_a_plain_result_removes_it(base):
    with callspace.space(base) as space:
        assert tempfile.gettempdir() == space
        fd, leftover = tempfile.mkstemp()
        os.close(fd)
    assert tempfile.gettempdir() == base  # put back
    assert os.path.dirname(leftover) == space
    assert callspace.settle("predict", {"a": 1}, space) == {"a": 1}
    assert os.listdir(base) == []


def test_a_returned_file_keeps_its_space_until_released(base):
    with callspace.space(base) as space:
        result = ReturnedFile(filename=write(os.path.join(space, "out.png")))
    assert callspace.settle("predict", result, space) is result
    assert os.path.exists(result.filename)
    assert callspace.space_of(result.filename) == space
    callspace.release(result)
    assert os.listdir(base) == []


def test_a_batch_gives_each_file_its_own_space(base):
    with callspace.space(base) as space:
        shared = write(os.path.join(space, "shared.bin"), b"s")
        nested = os.path.join(space, "sub")
        os.mkdir(nested)
        deep = pathlib.Path(write(os.path.join(nested, "deep.bin"), b"d"))
    results = callspace.settle(
        "predict_batch",
        [
            ReturnedFile(filename=shared, content_type="a/b"),
            deep,
            {"json": 1},
            ReturnedFile(filename=shared),
        ],
        space,
    )
    assert not os.path.exists(space)
    first, second, plain, third = results
    assert plain == {"json": 1}
    assert first.content_type == "a/b"
    spaces = {
        callspace.space_of(str(f.filename if hasattr(f, "filename") else f))
        for f in (first, second, third)
    }
    assert len(spaces) == 3 and None not in spaces
    assert pathlib.Path(third.filename).read_bytes() == b"s"
    for item in (first, second, third):
        callspace.release(item)
    assert os.listdir(base) == []


def test_a_failed_call_removes_its_space(base):
    with pytest.raises(ValueError), callspace.space(base) as space:
        write(os.path.join(space, "half.bin"))
        raise ValueError("model failed")
    assert os.listdir(base) == []


def test_files_outside_a_space_are_the_models(base, tmp_path):
    mine = write(str(tmp_path / "kept.bin"))
    callspace.release(ReturnedFile(filename=mine))
    callspace.release(pathlib.Path(base) / "not-a-space" / "x")
    callspace.release(b"bytes")
    assert os.path.exists(mine)


def test_sweep_removes_a_dead_workers_spaces_only(base):
    dead = os.path.join(base, f"{callspace.PREFIX}999999-abc")
    alive = os.path.join(base, f"{callspace.PREFIX}{os.getpid()}-def")
    os.mkdir(dead)
    os.mkdir(alive)
    callspace.sweep(999999, base)
    assert os.listdir(base) == [os.path.basename(alive)]


def test_spaces_hand_an_empty_space_to_the_next_call(base):
    spaces = callspace.Spaces(base)
    seen = []
    for _ in range(3):
        assert spaces.run("predict", lambda: seen.append(tempfile.gettempdir())) is None
    assert seen[0].startswith(os.path.join(base, callspace.PREFIX))
    assert seen == [seen[0]] * 3  # one directory made, not three
    assert os.listdir(base) == [os.path.basename(seen[0])]
    assert tempfile.gettempdir() == base
    spaces.close()
    assert os.listdir(base) == []


def test_spaces_never_hand_on_a_space_a_call_wrote_in(base):
    spaces = callspace.Spaces(base)

    def leaves_a_file():
        fd, _path = tempfile.mkstemp()
        os.close(fd)
        return {"ok": 1}

    spaces.run("predict", leaves_a_file)
    assert os.listdir(base) == []  # removed with what it held
    first = spaces.run("predict", tempfile.gettempdir)
    result = spaces.run(
        "predict", lambda: ReturnedFile(filename=write(os.path.join(first, "o.png")))
    )
    # The space now holds a file to send: the next call gets a new one.
    assert callspace.space_of(result.filename) == first
    second = spaces.run("predict", tempfile.gettempdir)
    assert second != first
    callspace.release(result)
    assert os.listdir(base) == [os.path.basename(second)]
    batch = spaces.run(
        "predict_batch",
        lambda: [ReturnedFile(filename=write(os.path.join(second, "b.bin")))],
    )
    assert not os.path.exists(second)  # the batch's space went, its item moved
    callspace.release(batch[0])
    spaces.close()
    assert os.listdir(base) == []


def test_spaces_remove_the_space_of_a_call_that_raised(base):
    spaces = callspace.Spaces(base)
    spaces.run("predict", lambda: None)

    def fails():
        raise ValueError("model failed")

    with pytest.raises(ValueError):
        spaces.run("predict", fails)
    assert os.listdir(base) == []
    assert spaces.run("predict", tempfile.gettempdir).startswith(base)
    spaces.close()
