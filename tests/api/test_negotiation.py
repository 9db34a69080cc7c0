"""Content negotiation of predictions: Accept headers and ``accept`` args."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import zipfile
from typing import Any

import pytest
from marshmallow import fields as mf
from marshmallow import validate
from multidict import MultiDict

from deepserve.api import args, media
from deepserve.exceptions import BadInput
from deepserve.model import ReturnedFile
from deepserve.operations import negotiation
from deepserve.operations.arguments import ArgSpec

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


async def test_a_header_nothing_offered_satisfies_gets_the_default(client):
    """RFC 9110 lets a server answer its default instead of 406; DEEPaaS
    clients send headers that name no offered type and expect a 200."""
    resp = await post(client, headers={"Accept": "image/gif"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    assert (await resp.json())["status"] == "OK"


async def test_an_explicit_accept_argument_outside_the_offer_is_422(client):
    for how in ("params", "json"):
        resp = await post(client, **{how: {"accept": "image/gif"}})
        assert resp.status == 422, await resp.text()
        body = await resp.json()
        assert list(body["errors"]) == ["accept"]
        assert body["errors"]["accept"] == [f"Must be one of: {', '.join(OFFERED)}."]


async def test_an_accept_argument_of_star_star_gets_the_default(client):
    # DEEPaaS adds */* to the choices of every accept argument.
    resp = await post(client, params={"accept": "*/*"}, headers={"Accept": "image/png"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"


async def test_model_without_accept_arg_answers_json_to_any_header(client):
    for accept in ("image/png", "*/*", "text/html, application/xml;q=0.9"):
        resp = await post(
            client, "classy", params={"x": "1"}, headers={"Accept": accept}
        )
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        assert (await resp.json())["score"] == 2.0


# -- a model offering a range (image/*), as the AI4OS demo app does -------------


@pytest.mark.parametrize("model", ["wildcard", "headeraccept"])
async def test_a_concrete_header_satisfies_a_range_offer(client, model):
    resp = await post(
        client, model, params={"how": "raw"}, headers={"Accept": "image/png"}
    )
    assert resp.status == 200, await resp.text()
    # Nothing in the result says its type: the one the client named.
    assert resp.content_type == "image/png"
    assert (await resp.read()).startswith(b"\x00\x01")


@pytest.mark.parametrize(
    ("how", "accept", "expected"),
    [
        # The model's own ReturnedFile says image/png: that wins.
        ("typed", "image/gif", "image/png"),
        ("typed", "image/*", "image/png"),
        # The returned file's name says .png.
        ("named", "image/webp", "image/png"),
        ("named", "image/*", "image/png"),
        # Only the bytes say it: a PNG, whatever the client would prefer.
        ("bare", "image/gif", "image/png"),
        ("bare", "image/*", "image/png"),
    ],
)
async def test_the_answer_carries_the_concrete_type_it_has(
    client, how, accept, expected
):
    resp = await post(
        client, "headeraccept", params={"how": how}, headers={"Accept": accept}
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == expected
    assert (await resp.read()).startswith(PNG_SIGNATURE)


async def test_nothing_concrete_known_answers_the_range(client):
    """The bytes are of no known format and the client asked for the range
    itself: the model's own value, as DEEPaaS sends it."""
    resp = await post(
        client, "headeraccept", params={"how": "raw"}, headers={"Accept": "image/*"}
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "image/*"


async def test_the_model_receives_its_own_range(client):
    """The model compares ``accept`` with its own choices ("image/*"), so it
    gets that, not the concrete type the client named; anything else would
    make the fake raise (500)."""
    resp = await post(client, "wildcard", params={"accept": "image/png", "how": "bare"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "image/png"
    resp = await post(client, "wildcard", params={"accept": "image/*", "how": "named"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "image/png"


async def test_a_range_in_the_header_picks_the_first_type_it_covers(client):
    resp = await post(client, "wildcard", headers={"Accept": "application/*"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    resp = await post(
        client, "wildcard", headers={"Accept": "application/zip, */*;q=0.1"}
    )
    assert resp.content_type == "application/zip"


async def test_accept_declared_in_headers_is_read_from_the_header_only(client):
    # The query string and the body are not where the model said: ignored,
    # so no 422 for a value that would be refused there, and no effect.
    resp = await post(client, "headeraccept", params={"accept": "text/csv"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    resp = await post(
        client,
        "headeraccept",
        json={"accept": "application/zip"},
        headers={"Accept": "image/png"},
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "image/png"
    # And a header nothing offered satisfies is a preference, not an error.
    resp = await post(client, "headeraccept", headers={"Accept": "text/csv"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"


# -- the rules, without a server ----------------------------------------------


def offer(*types: str, default: str | None = None) -> negotiation.Offer:
    return negotiation.Offer(types, default or types[0])


@pytest.mark.parametrize(
    ("header", "offered", "requested"),
    [
        (None, "application/json", None),
        ("", "application/json", None),
        ("image/png", "image/*", "image/png"),
        ("IMAGE/PNG; q=0.9", "image/*", "image/png"),
        ("image/*", "image/*", None),
        ("text/*", "text/plain", None),
        ("text/csv", "application/json", None),  # nothing satisfied: default
        ("text/csv;q=0.1, application/zip", "application/zip", None),
        ("*/*", "application/json", None),
    ],
)
def test_header_rules(header, offered, requested):
    choice = offer("application/json", "image/*", "application/zip", "text/plain")
    got = choice.choose(argument=None, header=header)
    assert got == negotiation.Choice(offered, requested)


def test_an_exact_offer_beats_a_range():
    choice = offer("image/*", "image/png").choose(argument="image/png", header=None)
    assert choice == negotiation.Choice("image/png")


def test_argument_rules():
    o = offer("application/json", "image/*")
    assert o.choose(argument="image/jpeg", header="application/json") == (
        negotiation.Choice("image/*", "image/jpeg")
    )
    assert o.choose(argument="*/*", header="image/png") == negotiation.Choice(
        "application/json"
    )
    assert o.choose(argument=" ", header="image/png") == negotiation.Choice(
        "image/*", "image/png"
    )
    with pytest.raises(BadInput) as err:
        o.choose(argument="text/csv", header=None)
    assert err.value.errors == {
        "accept": ["Must be one of: application/json, image/*."]
    }


def test_negotiate_hands_the_choice_to_the_models_accept_argument():
    field = mf.Str(validate=validate.OneOf(["application/json", "image/*"]))
    o = negotiation.Offer.from_accept_field(field)
    assert o.takes_argument
    kwargs: dict[str, Any] = {"x": 1, "accept": "image/png"}
    # The argument wins over the header, and the model gets its own type.
    choice = negotiation.negotiate(o, kwargs, "application/json")
    assert choice == negotiation.Choice("image/*", "image/png")
    assert kwargs == {"x": 1, "accept": "image/*"}
    # No argument (or a null one): the header decides, and the model is told.
    for given in ({}, {"accept": None}):
        kwargs = {"x": 1, **given}
        choice = negotiation.negotiate(o, kwargs, "image/gif")
        assert choice == negotiation.Choice("image/*", "image/gif")
        assert kwargs == {"x": 1, "accept": "image/*"}
    kwargs = {}
    assert negotiation.negotiate(o, kwargs, None) == negotiation.Choice(
        "application/json"
    )
    assert kwargs == {"accept": "application/json"}


def test_negotiate_keeps_accept_from_a_model_without_the_argument():
    o = negotiation.Offer.from_accept_field(None)
    assert o == negotiation.Offer(("application/json",), "application/json")
    assert not o.takes_argument
    kwargs: dict[str, Any] = {"x": 1, "accept": "application/json"}
    choice = negotiation.negotiate(o, kwargs, None)
    assert choice == negotiation.Choice("application/json")
    assert kwargs == {"x": 1}
    with pytest.raises(BadInput) as err:
        negotiation.negotiate(o, {"accept": "image/png"}, None)
    assert err.value.errors == {"accept": ["Must be one of: application/json."]}


def test_media_type_of_an_answer(tmp_path):
    named = tmp_path / "x.jpg"
    named.write_bytes(b"")
    ranged = negotiation.Choice("image/*", "image/png")
    assert ranged.media_type(b"") == "image/png"
    assert ranged.media_type(named) == "image/jpeg"
    assert ranged.media_type(
        ReturnedFile(filename=str(named), content_type="image/gif")
    ) == ("image/gif")
    # A type outside the range is not believed.
    assert ranged.media_type(ReturnedFile(filename="x", content_type="text/plain")) == (
        "image/png"
    )
    assert negotiation.Choice("image/*").media_type(b"") == "image/*"
    # The bytes, when nothing else says: over what the client asked for.
    assert ranged.media_type(b"GIF89a...") == "image/gif"
    assert negotiation.Choice("image/*").media_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    # A type the bytes show outside the range is not believed either.
    assert ranged.media_type(b"%PDF-1.7") == "image/png"
    assert (
        negotiation.Choice("text/plain", "text/plain").media_type(named) == "text/plain"
    )


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (None, None),
        ("query", "query"),
        ("form", "form"),
        ("json", "form"),
        ("headers", "headers"),
        ("header", "headers"),
    ],
)
def test_where_the_accept_argument_is_read(location, expected):
    meta = {"location": location} if location else {}
    field = mf.Str(validate=validate.OneOf(["a/b"]), metadata=meta)
    spec = ArgSpec.prepare({"accept": field}, negotiate_accept=True)
    assert spec.accept_from == expected
    query = MultiDict({"accept": "q/q"})
    form = MultiDict({"accept": "f/f"})
    found = args._accept(spec, (query, form), {"accept": "j/j"})
    seen = {None: "q/q", "query": "q/q", "form": "f/f", "headers": args._ABSENT}
    if expected is None:
        assert found is args._TWICE  # in the query string and the body
    else:
        assert found == seen[expected]
    assert (
        args._accept(spec, (MultiDict(), MultiDict()), {"accept": "j/j"})
        == (
            {
                None: "j/j",
                "query": args._ABSENT,
                "form": "j/j",
                "headers": args._ABSENT,
            }[expected]
        )
    )


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG_SIGNATURE + b"....", "image/png"),
        (b"\xff\xd8\xff\xdb", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"XXXX\x00\x00\x00\x00WEBP", None),  # not RIFF
        (b"PK\x03\x04", "application/zip"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x00\x00\x00\x1cftypavif", "image/avif"),
        (b"\x00\x00\x00\x18ftypheic", "image/heic"),
        (b"\x00\x00\x00\x20ftypM4A ", "audio/mp4"),
        (b"\x00\x00\x00\x14ftypqt  ", "video/quicktime"),
        (b"\x00\x00\x00\x14ftypzzzz", None),  # a brand we do not know
        (b"BM6\x00\x0c\x00\x00\x00\x00\x006\x00", "image/bmp"),
        (b"BMW was here", None),
        (b"%PDF-1.4", "application/pdf"),
        (b"", None),
        (b"plain text", None),
    ],
)
def test_sniff(head, expected):
    assert negotiation.sniff(head) == expected


@pytest.mark.parametrize(
    "bad", ["*", "*/png", "image", "image/png\r\nX-Evil: 1", "a b/c"]
)
def test_a_malformed_accept_argument_is_422(bad):
    with pytest.raises(BadInput) as err:
        offer("application/json", "image/*").choose(argument=bad, header=None)
    assert list(err.value.errors) == ["accept"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # Refused types are not chosen for a range that covers them.
        ("image/*, image/png;q=0", negotiation.Choice("image/jpeg")),
        ("*/*, application/json;q=0", negotiation.Choice("image/png")),
        # Malformed items are skipped, the rest still counts.
        ("*/png, image, image/jpeg;q=0.5", negotiation.Choice("image/jpeg")),
        ("\r\n, ,;q=1", negotiation.Choice("application/json")),
    ],
)
def test_refused_and_malformed_header_items(header, expected):
    o = offer("application/json", "image/png", "image/jpeg")
    assert o.choose(argument=None, header=header) == expected


def test_an_offered_type_with_parameters_is_sent_as_written():
    o = offer("text/csv; charset=latin-1", "application/json")
    choice = o.choose(argument="text/csv", header=None)
    assert choice == negotiation.Choice("text/csv; charset=latin-1")
    response = media.render("é,1\n", choice.media_type(""), model="m", schema=None)
    assert response.headers["Content-Type"] == "text/csv; charset=latin-1"
    assert response.body == "é,1\n".encode("latin-1")
    json_with_charset = media.render(
        {"a": 1}, "application/json; charset=utf-8", model="m", schema=None
    )
    assert json.loads(json_with_charset.body) == {
        "status": "OK",
        "predictions": {"a": 1},
    }


async def test_every_accept_header_line_counts(client):
    resp = await post(
        client,
        "wildcard",
        headers=[("Accept", "text/html"), ("Accept", "application/zip")],
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/zip"


async def test_a_json_null_accept_is_no_preference(client):
    resp = await post(client, json={"accept": None}, headers={"Accept": "text/plain"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
