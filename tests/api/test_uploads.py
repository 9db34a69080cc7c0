"""File uploads: streamed to disk, handed to the model, always removed."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
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


async def test_temp_file_is_removed_when_the_answer_is_not_acceptable(
    upload_client, tmp_path
):
    resp = await upload_client.post(
        PREDICT, data=upload(b"x" * 5000), headers={"Accept": "image/gif"}
    )
    await assert_error(resp, 406)
    assert list(tmp_path.iterdir()) == []


# -- the size limit ---------------------------------------------------------------


@pytest.fixture
async def small_client(aiohttp_client, registry, tmp_path):  # type: ignore[no-untyped-def]
    settings = ApiSettings(client_max_size=1024, upload_dir=str(tmp_path))
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
