"""Files across a Ray cluster (executors/rayserve/shipping.py), without Ray:
the object store is reached through the put and get functions given."""

from __future__ import annotations

import collections
import os
import pathlib

import pytest

from deepserve.executors import callspace
from deepserve.executors.messages import ReturnedBytes, ShippedFile
from deepserve.executors.rayserve import shipping
from deepserve.model import ReturnedFile, UploadedFile

# What a DEEPaaS package importing DEEPaaS's own ReturnedFile returns.
ForeignFile = collections.namedtuple(
    "ForeignFile", ("name", "filename", "content_type", "original_filename")
)


def upload(tmp_path: pathlib.Path, name: str, data: bytes) -> UploadedFile:
    path = tmp_path / f"upload-{name}"
    path.write_bytes(data)
    return UploadedFile(name, str(path), "text/plain", f"../../{name}.txt")


def test_uploads_travel_as_bytes_and_land_as_files_of_the_replica(tmp_path):
    front, replica = tmp_path / "front", tmp_path / "replica"
    front.mkdir()
    replica.mkdir()
    kwargs = {
        "data": upload(front, "a", b"first"),
        "many": [upload(front, "b", b"second"), upload(front, "c", b"third")],
        "text": "hello",
    }
    assert shipping.has_files(kwargs)
    packed = shipping.pack(kwargs)
    assert shipping.has_shipped(packed) and not shipping.has_shipped({"text": "x"})
    assert isinstance(packed["data"], ShippedFile) and packed["data"].data == b"first"
    assert packed["text"] == "hello"
    # The front's files may go: the call carries their bytes.
    for path in front.iterdir():
        path.unlink()
    local = shipping.unpack(packed, str(replica))
    assert local["text"] == "hello"
    got = [local["data"], *local["many"]]
    assert [pathlib.Path(u.filename).read_bytes() for u in got] == [
        b"first",
        b"second",
        b"third",
    ]
    for u in got:
        assert isinstance(u, UploadedFile)
        # Under the call's directory, whatever the client called its file.
        assert pathlib.Path(u.filename).parent == replica
    assert local["data"].original_filename == "../../a.txt"
    assert local["data"].content_type == "text/plain"
    assert local["data"].name == "a"


def test_a_batch_s_uploads_travel_too(tmp_path):
    # A batch is {"items": [each prediction's arguments]}.
    front, replica = tmp_path / "front", tmp_path / "replica"
    front.mkdir()
    replica.mkdir()
    kwargs = {
        "items": [
            {"data": upload(front, "a", b"first"), "x": 1},
            {"data": upload(front, "b", b"second"), "x": 2},
        ]
    }
    assert shipping.has_files(kwargs)
    packed = shipping.pack(kwargs)
    assert all(isinstance(i["data"], ShippedFile) for i in packed["items"])
    assert shipping.has_shipped(packed)
    local = shipping.unpack(packed, str(replica))
    assert [i["x"] for i in local["items"]] == [1, 2]
    assert [pathlib.Path(i["data"].filename).read_bytes() for i in local["items"]] == [
        b"first",
        b"second",
    ]
    # A model's numbers are not walked (nor changed).
    numbers = {"data": list(range(1000))}
    assert not shipping.has_files(numbers)
    assert shipping.pack(numbers) == numbers


def test_large_uploads_go_through_the_object_store(tmp_path):
    store: dict[int, bytes] = {}

    def put(path: str) -> int:
        store[len(store)] = pathlib.Path(path).read_bytes()
        return len(store) - 1

    big = upload(tmp_path, "big", b"x" * shipping.LARGE)
    small = upload(tmp_path, "small", b"y")
    packed = shipping.pack({"big": big, "small": small}, put)
    assert packed["big"].data == 0  # a reference, not the bytes
    assert packed["small"].data == b"y"
    out = tmp_path / "out"
    out.mkdir()
    local = shipping.unpack(packed, str(out), store.__getitem__)
    assert pathlib.Path(local["big"].filename).read_bytes() == b"x" * shipping.LARGE
    with pytest.raises(ValueError, match="object store"):
        shipping.unpack(packed, str(out))


def test_no_files_no_work():
    kwargs = {"a": 1, "b": [1, 2], "c": None}
    assert not shipping.has_files(kwargs)
    assert shipping.pack(kwargs) == kwargs


@pytest.mark.parametrize(
    "make",
    [
        lambda p: pathlib.Path(p),
        lambda p: ReturnedFile("result", p, "text/csv", "result.csv"),
        lambda p: ForeignFile("result", p, "text/csv", "result.csv"),
    ],
    ids=["path", "ReturnedFile", "foreign tuple"],
)
def test_returned_files_come_back_into_a_call_space_of_the_front(tmp_path, make):
    made = tmp_path / "made.csv"
    made.write_bytes(b"a,b\n1,2\n")
    packed = shipping.pack_result("predict", make(str(made)))
    assert isinstance(packed, ReturnedBytes) and packed.data == b"a,b\n1,2\n"
    made.unlink()  # the replica's call space goes once the answer is sent
    assert shipping.has_returned_files("predict", packed)
    result = shipping.unpack_result("predict", packed)
    path = str(result) if isinstance(result, pathlib.PurePath) else result.filename
    assert pathlib.Path(path).read_bytes() == b"a,b\n1,2\n"
    assert pathlib.Path(path).name == "made.csv"
    space = callspace.space_of(path)
    assert space is not None and os.path.basename(space).startswith(
        f"{callspace.PREFIX}{os.getpid()}-"
    )
    if not isinstance(result, pathlib.PurePath):
        assert isinstance(result, ReturnedFile)
        assert (result.name, result.content_type, result.original_filename) == (
            "result",
            "text/csv",
            "result.csv",
        )
    callspace.release(result)  # what the server does once the file is sent
    assert not os.path.exists(space)


def test_batches_carry_each_item_s_file(tmp_path):
    files = []
    for i in range(2):
        f = tmp_path / f"{i}.bin"
        f.write_bytes(bytes([i]) * 3)
        files.append(pathlib.Path(f))
    packed = shipping.pack_result("predict_batch", [files[0], {"x": 1}, files[1]])
    assert shipping.has_returned_files("predict_batch", packed)
    result = shipping.unpack_result("predict_batch", packed)
    assert result[1] == {"x": 1}
    assert [pathlib.Path(r).read_bytes() for r in (result[0], result[2])] == [
        b"\0\0\0",
        b"\1\1\1",
    ]
    for r in result:
        callspace.release(r)


def test_plain_results_pass_untouched():
    assert shipping.pack_result("predict", {"a": 1}) == {"a": 1}
    assert not shipping.has_returned_files("predict", {"a": 1})
    assert shipping.unpack_result("predict", [1, 2]) == [1, 2]
