"""Where arguments are read from, and requests the fuzzer found wanting."""

from __future__ import annotations

from tests.checks import assert_error

PREDICT = "/v2/models/oldstyle/predict/"


async def test_an_argument_given_in_the_query_and_the_body_is_refused(client):
    resp = await client.post(PREDICT + "?count=2", json={"count": 3})
    body = await assert_error(resp, 422)
    assert "query string and in the body" in body["errors"]["count"][0]
    resp = await client.post(PREDICT + "?text=a", data={"text": "b"})
    body = await assert_error(resp, 422)
    assert list(body["errors"]) == ["text"]


async def test_accept_given_twice_is_refused(client):
    resp = await client.post(
        PREDICT + "?accept=application/json", json={"accept": "image/png"}
    )
    body = await assert_error(resp, 422)
    assert list(body["errors"]) == ["accept"]


async def test_query_arguments_still_come_from_a_body_alone(client):
    resp = await client.post(PREDICT, json={"count": 3, "text": "hey"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["text"] == "heyheyhey"


async def test_a_multipart_part_with_an_invalid_header_is_a_400(client):
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="te\x07xt"\r\n\r\n'
        "hello\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    resp = await client.post(
        PREDICT,
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    body_json = await assert_error(resp, 400)
    assert "multipart" in body_json["message"]
