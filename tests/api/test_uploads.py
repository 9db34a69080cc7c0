"""File uploads: streamed to disk, handed to the model, always removed."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from deepserve.api import create_app
from deepserve.settings import ApiSettings
from tests.checks import assert_error

PREDICT = "/v2/models/oldstyle/predict/"
BOUNDARY = "deepserve-test-boundary"


def upload(content: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    # A stream, not bytes: aiohttp warns about large raw bytes bodies.
    form.add_field(
        "data",
        io.BytesIO(content),
        filename="blob.bin",
        content_type="application/octet-stream",
    )
    for name, value in fields.items():
        form.add_field(name, value)
    return form


@pytest.fixture
async def upload_client(aiohttp_client, registry, tmp_path):  # type: ignore[no-untyped-def]
    """A client whose uploads go to ``tmp_path`` (empty at the start)."""
    return await aiohttp_client(
        create_app(registry, ApiSettings(upload_dir=str(tmp_path)))
    )


async def test_upload_round_trip(client):
    content = os.urandom(3 * 1024 * 1024 + 17)
    resp = await client.post(PREDICT, data=upload(content))
    assert resp.status == 200, await resp.text()
    file = (await resp.json())["predictions"]["file"]
    assert file["size"] == len(content)
    assert file["sha256"] == hashlib.sha256(content).hexdigest()
    assert file["original_filename"] == "blob.bin"
    assert file["content_type"] == "application/octet-stream"
    assert file["name"] == "data"


async def test_upload_with_other_args(client):
    resp = await client.post(PREDICT, data=upload(b"abc", text="t", count="3"))
    assert resp.status == 200, await resp.text()
    predictions = (await resp.json())["predictions"]
    assert predictions["text"] == "ttt"
    assert predictions["file"]["size"] == 3


async def test_temp_file_is_removed_after_the_response(upload_client, tmp_path):
    resp = await upload_client.post(PREDICT, data=upload(b"x" * 5000))
    assert resp.status == 200, await resp.text()
    path = Path((await resp.json())["predictions"]["file"]["path"])
    assert tmp_path in path.parents
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


async def test_temp_file_is_removed_when_the_model_fails(upload_client, tmp_path):
    resp = await upload_client.post(PREDICT, data=upload(b"x" * 5000, mode="crash"))
    await assert_error(resp, 500)
    assert list(tmp_path.iterdir()) == []


async def test_temp_file_is_removed_when_an_arg_is_invalid(upload_client, tmp_path):
    resp = await upload_client.post(PREDICT, data=upload(b"x" * 5000, count="x"))
    body = await assert_error(resp, 422)
    assert "count" in body["errors"]
    assert list(tmp_path.iterdir()) == []


async def test_temp_file_is_removed_when_the_accept_argument_is_refused(
    upload_client, tmp_path
):
    resp = await upload_client.post(
        PREDICT, data=upload(b"x" * 5000), params={"accept": "image/gif"}
    )
    await assert_error(resp, 422)
    assert list(tmp_path.iterdir()) == []


# -- the size limit ---------------------------------------------------------------


@pytest.fixture
async def small_client(aiohttp_client, registry, tmp_path):  # type: ignore[no-untyped-def]
    settings = ApiSettings(
        client_max_size=1024, upload_max_size=1024, upload_dir=str(tmp_path)
    )
    return await aiohttp_client(create_app(registry, settings))


async def test_multipart_over_the_limit_is_413(small_client, tmp_path):
    resp = await small_client.post(PREDICT, data=upload(os.urandom(10 * 1024)))
    await assert_error(resp, 413)
    assert list(tmp_path.iterdir()) == []


def chunked_multipart(content: bytes) -> AsyncIterator[bytes]:
    """A multipart body sent without Content-Length, in small chunks."""

    async def gen() -> AsyncIterator[bytes]:
        yield (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="data"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for start in range(0, len(content), 512):
            yield content[start : start + 512]
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return gen()


async def test_streamed_multipart_over_the_limit_is_413(small_client, tmp_path):
    resp = await small_client.post(
        PREDICT,
        data=chunked_multipart(os.urandom(10 * 1024)),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert "Content-Length" not in resp.request_info.headers
    await assert_error(resp, 413)
    assert list(tmp_path.iterdir()) == []


async def test_streamed_multipart_under_the_limit_is_accepted(small_client, tmp_path):
    content = os.urandom(600)
    resp = await small_client.post(
        PREDICT,
        data=chunked_multipart(content),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert resp.status == 200, await resp.text()
    file = (await resp.json())["predictions"]["file"]
    assert file["sha256"] == hashlib.sha256(content).hexdigest()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"data": {"text": "y" * 10 * 1024}},
        {"json": {"text": "y" * 10 * 1024}},
    ],
    ids=["urlencoded", "json"],
)
async def test_body_over_the_limit_is_413(small_client, tmp_path, kwargs):
    resp = await small_client.post(PREDICT, **kwargs)
    await assert_error(resp, 413)
    assert list(tmp_path.iterdir()) == []


async def test_streamed_json_over_the_limit_is_413(small_client):
    async def gen() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(20):
            yield b"y" * 512
        yield b'"}'

    resp = await small_client.post(
        PREDICT, data=gen(), headers={"Content-Type": "application/json"}
    )
    assert "Content-Length" not in resp.request_info.headers
    await assert_error(resp, 413)


async def test_body_under_the_limit_is_accepted(small_client):
    resp = await small_client.post(PREDICT, json={"text": "small"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["text"] == "small"


# -- a file argument that is not a file ------------------------------------------


async def test_file_field_sent_as_text_is_422(upload_client, tmp_path):
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("data", "just some text")
    resp = await upload_client.post(PREDICT, data=form)
    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {"data"}
    assert "data" in body["message"]
    assert list(tmp_path.iterdir()) == []


async def test_file_field_sent_in_json_is_422(client):
    resp = await client.post(PREDICT, json={"data": "not a file"})
    body = await assert_error(resp, 422)
    assert set(body["errors"]) == {"data"}


# -- separate limits for memory and disk ------------------------------------------


def limited(body: dict, limit: int, option: str) -> None:
    assert body["limit"] == limit
    assert f"{limit} bytes" in body["message"] and option in body["message"]


async def test_413_names_the_limit_it_passed(small_client, tmp_path):
    body = await assert_error(
        await small_client.post(PREDICT, data=upload(os.urandom(10 * 1024))), 413
    )
    limited(body, 1024, "upload-max-size")
    body = await assert_error(
        await small_client.post(PREDICT, json={"text": "y" * 2000}), 413
    )
    limited(body, 1024, "client-max-size")


@pytest.fixture
async def split_client(aiohttp_client, registry, tmp_path):  # type: ignore[no-untyped-def]
    """Small text, large files."""
    settings = ApiSettings(
        client_max_size=1024, upload_max_size=64 * 1024, upload_dir=str(tmp_path)
    )
    return await aiohttp_client(create_app(registry, settings))


async def test_files_may_exceed_the_memory_limit(split_client, tmp_path):
    content = os.urandom(32 * 1024)
    resp = await split_client.post(PREDICT, data=upload(content))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["file"]["size"] == len(content)
    resp = await split_client.post(PREDICT, data=chunked_multipart(content), headers={
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"
    })  # fmt: skip
    assert resp.status == 200, await resp.text()
    assert list(tmp_path.iterdir()) == []


async def test_text_fields_of_a_multipart_body_keep_the_memory_limit(
    split_client, tmp_path
):
    resp = await split_client.post(PREDICT, data=upload(b"small", text="y" * 2000))
    limited(await assert_error(resp, 413), 1024, "client-max-size")
    assert list(tmp_path.iterdir()) == []


async def test_files_over_the_upload_limit_are_413(split_client, tmp_path):
    resp = await split_client.post(
        PREDICT,
        data=chunked_multipart(os.urandom(80 * 1024)),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    limited(await assert_error(resp, 413), 64 * 1024, "upload-max-size")
    assert list(tmp_path.iterdir()) == []


async def test_zero_means_no_limit(aiohttp_client, registry):
    settings = ApiSettings(client_max_size=0, upload_max_size=0)
    client = await aiohttp_client(create_app(registry, settings))
    text = "y" * (2 * 1024 * 1024)
    resp = await client.post(
        PREDICT,
        data=io.BytesIO(f'{{"text": "{text}"}}'.encode()),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()


# -- the client's filename is metadata, never a path ------------------------------


def raw_upload(disposition: str, content: bytes) -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="data"; {disposition}\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


HOSTILE_NAMES = {
    "traversal": ('filename="../../etc/passwd"', "../../etc/passwd"),
    "absolute": ('filename="/etc/passwd"', "/etc/passwd"),
    "long": (f'filename="{"a" * 5000}.bin"', "a" * 5000 + ".bin"),
    "nul": ("filename*=UTF-8''evil%00name.txt", "evil\x00name.txt"),
    "newline": (
        "filename*=UTF-8''x%0D%0ASet-Cookie%3A%20a%3Db",
        "x\r\nSet-Cookie: a=b",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_NAMES, ids=list(HOSTILE_NAMES))
async def test_hostile_filenames_are_only_metadata(
    aiohttp_client, registry, tmp_path, case
):
    disposition, original = HOSTILE_NAMES[case]
    uploads = tmp_path / "a" / "b" / "uploads"
    uploads.mkdir(parents=True)
    client = await aiohttp_client(
        create_app(registry, ApiSettings(upload_dir=str(uploads)))
    )
    resp = await client.post(
        PREDICT,
        data=raw_upload(disposition, b"content"),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert resp.status == 200, await resp.text()
    file = (await resp.json())["predictions"]["file"]
    # (aiohttp drops a leading slash.)
    assert file["original_filename"].lstrip("/") == original.lstrip("/")
    assert file["size"] == len(b"content")
    # Written under a name of the server's making, inside the upload dir.
    path = Path(file["path"])
    assert path.resolve().parent.parent == uploads.resolve()
    assert path.name.startswith("tmp") and "passwd" not in str(path)
    # Nothing written anywhere else, and the upload is gone.
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [
        Path("a"), Path("a/b"), Path("a/b/uploads")
    ]  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE_NAMES, ids=list(HOSTILE_NAMES))
async def test_hostile_filenames_sent_back_are_made_safe(client, case):
    """A model echoing the upload: the name in Content-Disposition is the
    base name, without control characters, and of bounded length."""
    disposition, _original = HOSTILE_NAMES[case]
    resp = await client.post(
        "/v2/models/files/predict/?accept=application/x-echo",
        data=raw_upload(disposition, b"content"),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert resp.status == 200, await resp.text()
    assert await resp.read() == b"content"
    assert "Set-Cookie" not in resp.headers
    header = resp.headers.get("Content-Disposition", "")
    assert "/" not in header
    assert not any(ord(c) < 32 or ord(c) == 127 for c in header)
    assert len(header) < 300


# -- a full disk ------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system (tmpfs) to upload into: it fills up for real.
    Needs root (CI runs as root); skipped, saying so, elsewhere."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_an_upload_that_fills_the_disk_is_507_and_leaves_nothing(
    aiohttp_client, registry, tiny_disk, caplog
):
    client = await aiohttp_client(
        create_app(registry, ApiSettings(upload_dir=str(tiny_disk)))
    )
    resp = await client.post(PREDICT, data=upload(os.urandom(1024 * 1024)))
    body = await assert_error(resp, 507)
    assert "disk space" in body["message"]
    assert list(tiny_disk.iterdir()) == []
    # The operator hears of it: one line, no traceback.
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "disk space" in logged.getMessage() and logged.exc_info is None
    # Space is back: the next upload that fits goes through.
    resp = await client.post(PREDICT, data=upload(b"x" * 1000))
    assert resp.status == 200, await resp.text()
    assert list(tiny_disk.iterdir()) == []


# -- hostile bodies -------------------------------------------------------------


def gzip_bomb(prefix: bytes, size: int, suffix: bytes) -> bytes:
    """``prefix``, ``size`` zero bytes and ``suffix``, gzipped (tiny)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(prefix)
        chunk = b"0" * (1024 * 1024)
        for _ in range(size // len(chunk)):
            gz.write(chunk)
        gz.write(suffix)
    return out.getvalue()


async def test_a_gzipped_json_bomb_is_413_before_it_is_inflated(small_client):
    bomb = gzip_bomb(b'{"text": "', 64 * 1024 * 1024, b'"}')
    assert len(bomb) < 200 * 1024
    resp = await small_client.post(
        PREDICT,
        data=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    await assert_error(resp, 413)


async def test_a_gzipped_multipart_bomb_is_413_and_leaves_no_file(
    small_client, tmp_path
):
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="data"; filename="bomb.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    bomb = gzip_bomb(head, 64 * 1024 * 1024, f"\r\n--{BOUNDARY}--\r\n".encode())
    resp = await small_client.post(
        PREDICT,
        data=bomb,
        headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Encoding": "gzip",
        },
    )
    await assert_error(resp, 413)
    assert list(tmp_path.iterdir()) == []


async def test_an_unterminated_multipart_body_is_400_and_leaves_no_file(
    upload_client, tmp_path
):
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="data"; filename="cut.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + os.urandom(4096)  # no closing boundary: the body just ends
    resp = await upload_client.post(
        PREDICT,
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    await assert_error(resp, 400)
    assert list(tmp_path.iterdir()) == []
