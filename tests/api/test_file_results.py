"""Every way ``predict`` may hand back a file."""

from __future__ import annotations

import aiohttp

URL = "/v2/models/files/predict/"


async def test_pathlib_path_is_sent_with_the_negotiated_type(client):
    resp = await client.post(URL)
    assert resp.status == 200
    assert resp.content_type == "application/octet-stream"
    assert await resp.read() == bytes(range(256)) * 4


async def test_a_foreign_returned_file_tuple_is_sent_with_its_name(client):
    resp = await client.post(URL, headers={"Accept": "text/csv"})
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"] == 'inline; filename="result.csv"'
    assert await resp.text() == "a,b\n1,2\n"


async def test_the_upload_itself_can_be_sent_back(client):
    payload = b"\x00\x01echo me" * 5000
    form = aiohttp.FormData()
    form.add_field("data", payload, filename="in.bin")
    resp = await client.post(URL, data=form, headers={"Accept": "application/x-echo"})
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == 'inline; filename="in.bin"'
    assert await resp.read() == payload


async def test_returning_no_file_for_a_file_type_is_a_500_naming_the_model(client):
    resp = await client.post(URL, headers={"Accept": "application/x-echo"})
    assert resp.status == 500
    body = await resp.json()
    assert body["model"] == "files"
    assert "NoneType" in body["message"]
