"""Content negotiation of predictions: Accept headers and ``accept`` args."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import zipfile
from typing import Any

import pytest

PREDICT = "/v2/models/{}/predict/"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OFFERED = ["application/json", "image/png", "application/zip", "text/plain"]


async def post(client: Any, model: str = "oldstyle", **kwargs: Any) -> Any:
    return await client.post(PREDICT.format(model), **kwargs)


async def test_accept_png(client):
    resp = await post(client, headers={"Accept": "image/png"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "image/png"
    body = await resp.read()
    assert body.startswith(PNG_SIGNATURE)
    assert len(body) == int(resp.headers["Content-Length"])


async def test_file_responses_keep_the_connection_usable(client, caplog):
    """A file is sent once, cleanly, and the connection serves the next request."""
    for _ in range(3):
        resp = await post(client, headers={"Accept": "image/png"})
        assert resp.status == 200, await resp.text()
        assert (await resp.read()).startswith(PNG_SIGNATURE)
    resp = await client.get("/v2/")
    assert resp.status == 200
    # Let the server finish with the last response, and anything it left
    # open be collected here rather than in some later test.
    await asyncio.sleep(0.2)
    gc.collect()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_accept_zip(client):
    resp = await post(
        client,
        params={"text": "ab", "count": "2"},
        headers={"Accept": "application/zip"},
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await resp.read())) as zf:
        assert zf.read("result.txt") == b"abab"


async def test_accept_query_argument(client):
    resp = await post(client, params={"accept": "text/plain", "text": "plain"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    assert await resp.text() == "plain"


async def test_accept_argument_wins_over_header(client):
    resp = await post(
        client, params={"accept": "text/plain"}, headers={"Accept": "image/png"}
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"


async def test_accept_json_body_argument(client):
    resp = await post(client, json={"accept": "application/zip", "text": "j"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await resp.read())) as zf:
        assert zf.read("result.txt") == b"j"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("image/*", "image/png"),
        ("*/*", "application/json"),
        ("application/json;q=0.5, image/png", "image/png"),
        ("image/png;q=0.2, application/zip;q=0.9", "application/zip"),
        ("text/html, image/gif;q=0.9, text/*;q=0.5", "text/plain"),
        ("image/png;q=0, */*", "application/json"),
        ("*/*;q=0.1, image/png;q=0.8", "image/png"),
        ("application/json", "application/json"),
    ],
)
async def test_accept_header_negotiation(client, accept, expected):
    resp = await post(client, headers={"Accept": accept})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == expected


async def test_no_accept_header_gives_json(client):
    resp = await post(client, skip_auto_headers=["Accept"])
    assert "Accept" not in resp.request_info.headers
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["status"] == "OK"


async def test_unoffered_type_is_406_listing_offered_types(client):
    resp = await post(client, headers={"Accept": "image/gif"})
    text = await resp.text()
    assert resp.status == 406, text
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["code"] == 406
    assert "image/gif" in body["message"]
    for offered in OFFERED:
        assert offered in body["message"]


async def test_model_without_accept_arg_only_offers_json(client):
    resp = await post(
        client, "classy", params={"x": "1"}, headers={"Accept": "image/png"}
    )
    assert resp.status == 406, await resp.text()
    assert resp.content_type == "application/json"
    assert "application/json" in (await resp.json())["message"]

    resp = await post(client, "classy", params={"x": "1"}, headers={"Accept": "*/*"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    assert (await resp.json())["score"] == 2.0
