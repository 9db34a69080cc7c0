"""Arguments the model does not take: named in a header and the log, or refused.

Run against the shared fake models (``oldstyle`` is a DEEPaaS 2.x module
with webargs fields, hence ``compat``), over HTTP, and against real
``deepserve run`` servers for the option and the server's own log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from marshmallow import fields

from deepserve.api import args, create_app
from deepserve.operations.arguments import ArgSpec
from deepserve.settings import ApiSettings
from tests.checks import assert_error
from tests.conftest import subprocess_env
from tests.servers import Server

pytestmark = pytest.mark.compat

PREDICT = "/v2/models/oldstyle/predict/"
TRAIN = "/v2/models/oldstyle/train/"
HEADER = "Deepserve-Unknown-Arguments"
OLDSTYLE_TAKES = "accept, count, data (file), mode, tags, text"


async def serve(aiohttp_client: Any, registry: Any, **settings: Any) -> Any:
    return await aiohttp_client(create_app(registry, ApiSettings(**settings)))


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "deepserve.api.args" and r.levelno == logging.WARNING
    ]


# -- warn, the default ------------------------------------------------------


async def test_query_typos_are_served_and_named(client, caplog):
    resp = await client.post(PREDICT + "?text=hi&cont=2&txt=x&cont=3")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["text"] == "hi"  # count ignored
    assert resp.headers[HEADER] == "cont, txt"  # sorted, once each
    (line,) = warnings_of(caplog)
    assert line == (
        "Model 'oldstyle' does not take these predict arguments, which were "
        "ignored: cont, txt"
    )


async def test_a_file_answer_names_them_too(client, caplog):
    # A file is streamed: its headers go before the body, the name list too.
    resp = await client.post(PREDICT + "?text=hi&accept=image/png&cont=2")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "image/png"
    assert (await resp.read()).startswith(b"\x89PNG")
    assert resp.headers[HEADER] == "cont"
    # The handler logs once the body is sent: after the client has read it.
    for _ in range(100):
        if warnings_of(caplog):
            break
        await asyncio.sleep(0.02)
    assert len(warnings_of(caplog)) == 1


async def test_a_request_with_only_its_arguments_is_not_marked(client, caplog):
    resp = await client.post(
        PREDICT + "?text=hi&count=2",
        headers={"X-Anything": "1", "Accept": "application/json"},
    )
    assert resp.status == 200
    assert HEADER not in resp.headers
    assert warnings_of(caplog) == []
    # Headers are never arguments unless declared; a nameless value names nothing.
    resp = await client.post(PREDICT + "?=x", json={"tags": ["a"]})
    assert resp.status == 200
    assert HEADER not in resp.headers


@pytest.mark.parametrize(
    "send",
    [
        {"data": {"txt": "a", "text": "b", "cont": "2"}},  # url-encoded form
        {"json": {"txt": "a", "text": "b", "cont": 2}},
    ],
    ids=["form", "json"],
)
async def test_body_typos_are_named(client, caplog, send):
    resp = await client.post(PREDICT, **send)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["predictions"]["text"] == "b"
    assert resp.headers[HEADER] == "cont, txt"
    assert len(warnings_of(caplog)) == 1


async def test_multipart_fields_and_files_under_unknown_names(client, caplog):
    form = aiohttp.FormData()
    form.add_field("txt", "a")
    form.add_field("text", "b")
    form.add_field("dta", b"stray file", filename="x.bin")
    form.add_field("data", b"the file", filename="y.bin")
    resp = await client.post(PREDICT, data=form)
    assert resp.status == 200, await resp.text()
    predictions = (await resp.json())["predictions"]
    assert predictions["text"] == "b"
    assert predictions["file"]["size"] == len(b"the file")
    assert resp.headers[HEADER] == "dta, txt"
    (line,) = warnings_of(caplog)
    assert line.endswith("ignored: dta, txt")


async def test_names_are_made_safe_for_a_header_and_a_log_line(client, caplog):
    forged = "x\r\nSet-Cookie: a=b\n2026-01-01 ERROR forged"
    long = "L" * 5000
    body = {forged: 1, "t\u00e8xt": 2, "a,b": 3, long: 4, 'q"uo\\te': 5, "\ud800": 6}
    resp = await client.post(PREDICT, json=body)
    assert resp.status == 200, await resp.text()
    assert "Set-Cookie" not in resp.headers
    value = resp.headers[HEADER]
    assert value.isascii() and value.isprintable()
    names = value.split(", ")
    assert len(names) == len(body)
    assert "t%C3%A8xt" in names and "a%2Cb" in names and "q%22uo%5Cte" in names
    assert "x%0D%0ASet-Cookie:%20a=b%0A2026-01-01%20ERROR%20forged" in names
    (cut,) = [n for n in names if n.startswith("LLL")]
    assert cut == "L" * args.MAX_SHOWN + "..."
    (line,) = warnings_of(caplog)
    assert "\n" not in line and "\r" not in line and line.isascii()
    assert value in line


async def test_a_cut_name_never_ends_in_half_an_escape(client):
    name = "a" + "\u00e9" * 100  # each one 6 characters once escaped
    resp = await client.post(PREDICT, json={name: 1})
    (shown,) = resp.headers[HEADER].split(", ")
    assert shown.endswith("...")
    escaped = shown.removesuffix("...")
    assert escaped.startswith("a%C3%A9") and len(escaped) <= args.MAX_SHOWN
    assert escaped.endswith("%A9")  # a whole escape, then the mark


async def test_many_names_are_listed_up_to_a_limit(client, caplog):
    many = {f"n{i:02}": i for i in range(30)}
    resp = await client.post(PREDICT, json=many)
    assert resp.status == 200
    value = resp.headers[HEADER]
    listed = [f"n{i:02}" for i in range(args.MAX_LISTED)]
    assert value == ", ".join(listed) + f" (and {30 - args.MAX_LISTED} more)"
    assert warnings_of(caplog)[0].endswith(value)
    # Past what is kept of one request, the count is a lower bound.
    flood = {f"k{i:05}": 0 for i in range(args.MAX_TRACKED + 50)}
    resp = await client.post(PREDICT, json=flood)
    assert resp.status == 200
    extra = args.MAX_TRACKED - args.MAX_LISTED
    assert resp.headers[HEADER].endswith(f", k00019 (and over {extra} more)")


async def test_a_failed_request_names_them_too_and_its_body_is_unchanged(
    client, caplog
):
    resp = await client.post(PREDICT + "?count=many&cont=2")
    body = await assert_error(resp, 422)
    assert body["message"] == "Invalid arguments: count"
    assert list(body["errors"]) == ["count"]  # as DEEPaaS answers it
    assert resp.headers[HEADER] == "cont"
    # The handler logs once the body is sent: after the client has read it.
    for _ in range(100):
        if warnings_of(caplog):
            break
        await asyncio.sleep(0.02)
    assert len(warnings_of(caplog)) == 1


async def test_training_typos_are_served_and_named(client, caplog):
    resp = await client.post(TRAIN + "?epochs=2&epoch=3")
    assert resp.status == 200, await resp.text()
    job = await resp.json()
    assert job["args"]["epochs"] == 2 and "epoch" not in job["args"]
    assert resp.headers[HEADER] == "epoch"
    (line,) = warnings_of(caplog)
    assert "Model 'oldstyle' does not take these train arguments" in line


async def test_arguments_given_where_they_are_not_read(client):
    # A file argument in the query string; accept where the model does not
    # read it (HeaderModel takes it from the Accept header only).
    resp = await client.post(PREDICT + "?data=x.png")
    assert resp.status == 200
    assert resp.headers[HEADER] == "data"
    resp = await client.post("/v2/models/headeraccept/predict/?accept=application/zip")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert resp.headers[HEADER] == "accept"
    # Where they are read, they are arguments.
    resp = await client.post(
        "/v2/models/wildcard/predict/?accept=application/zip&how=typed"
    )
    assert resp.status == 200
    assert HEADER not in resp.headers
    resp = await client.post(
        "/v2/models/wildcard/predict/", json={"accept": "application/json"}
    )
    assert resp.status == 200
    assert HEADER not in resp.headers


async def test_accept_is_no_argument_of_a_model_that_does_not_declare_it(client):
    resp = await client.post("/v2/models/minimal/predict/?accept=application/json")
    assert resp.status == 200
    assert resp.headers[HEADER] == "accept"


async def test_the_header_is_readable_by_a_cross_origin_page(aiohttp_client, registry):
    origin = "https://app.example"
    client = await serve(aiohttp_client, registry, cors_origins=(origin,))
    resp = await client.post(PREDICT + "?txt=1", headers={"Origin": origin})
    assert resp.status == 200
    assert resp.headers[HEADER] == "txt"
    exposed = resp.headers["Access-Control-Expose-Headers"].split(", ")
    assert HEADER in exposed


# -- reject -----------------------------------------------------------------


async def test_reject_names_each_one_and_what_the_model_takes(
    aiohttp_client, registry, caplog
):
    client = await serve(aiohttp_client, registry, unknown_arguments="reject")
    # mode=crash: a model that were called would answer 500.
    resp = await client.post(PREDICT + "?mode=crash&cont=2&Txt=a")
    body = await assert_error(resp, 422)
    assert body["message"] == "Unknown arguments: Txt, cont"
    assert body["errors"] == {
        "Txt": [
            f"Unknown argument (did you mean 'text'?). This model takes: "
            f"{OLDSTYLE_TAKES}."
        ],
        "cont": [
            f"Unknown argument (did you mean 'count'?). This model takes: "
            f"{OLDSTYLE_TAKES}."
        ],
    }
    assert resp.headers[HEADER] == "Txt, cont"
    assert warnings_of(caplog) == []  # the client is told; nothing was ignored
    # Known arguments only: served.
    resp = await client.post(PREDICT + "?text=hi")
    assert resp.status == 200
    assert HEADER not in resp.headers


async def test_reject_with_invalid_arguments_names_both(aiohttp_client, registry):
    client = await serve(aiohttp_client, registry, unknown_arguments="reject")
    resp = await client.post(PREDICT + "?count=many", json={"zzz": 1})
    body = await assert_error(resp, 422)
    assert body["message"] == "Invalid arguments: count; unknown arguments: zzz"
    assert body["errors"]["count"] == ["Not a valid integer."]
    assert body["errors"]["zzz"] == [
        f"Unknown argument. This model takes: {OLDSTYLE_TAKES}."
    ]


async def test_reject_multipart_and_misplaced_arguments(aiohttp_client, registry):
    client = await serve(aiohttp_client, registry, unknown_arguments="reject")
    form = aiohttp.FormData()
    form.add_field("dta", b"stray", filename="x.bin")
    resp = await client.post(PREDICT + "?data=y", data=form)
    body = await assert_error(resp, 422)
    assert body["errors"] == {
        "data": [
            "A file: send it as a file part of a multipart/form-data body, "
            "not in the query string."
        ],
        "dta": [
            f"Unknown argument (did you mean 'data'?). This model takes: "
            f"{OLDSTYLE_TAKES}."
        ],
    }
    resp = await client.post("/v2/models/headeraccept/predict/", json={"accept": "*/*"})
    body = await assert_error(resp, 422)
    assert body["errors"] == {"accept": ["Read from the 'Accept' header only."]}
    resp = await client.post("/v2/models/minimal/predict/", data={"x": "1"})
    body = await assert_error(resp, 422)
    assert body["errors"] == {"x": ["Unknown argument. This model takes no arguments."]}


async def test_reject_starts_no_training(aiohttp_client, registry, tmp_path):
    client = await serve(aiohttp_client, registry, unknown_arguments="reject")
    pidfile = tmp_path / "pid"
    resp = await client.post(TRAIN, json={"pidfile": str(pidfile), "epoch": 3})
    body = await assert_error(resp, 422)
    assert list(body["errors"]) == ["epoch"]
    assert "did you mean 'epochs'?" in body["errors"]["epoch"][0]
    trainings = await (await client.get(TRAIN + "?limit=1000")).json()
    assert not [t for t in trainings if t["args"].get("pidfile") == str(pidfile)]
    assert not pidfile.exists()


# -- the rule itself, for declarations no fake model makes --------------------


@pytest.mark.parametrize(
    ("location", "reads", "query_problem", "body_problem"),
    [
        ("query", {"query"}, None, "Read from the query string only, not from the request body."),
        ("form", {"body"}, "Read from the request body only, not from the query string.", None),
        ("headers", {"headers"}, "Read from the 'Accept' header only.", "Read from the 'Accept' header only."),
        (None, {"query", "body"}, None, None),
    ],
)  # fmt: skip
def test_where_accept_is_read(location, reads, query_problem, body_problem):
    meta = {"location": location} if location else {}
    spec = ArgSpec.prepare(
        {"accept": fields.Str(metadata=meta), "lang": fields.Str(metadata={"location": "headers"})},
        negotiate_accept=True,
    )  # fmt: skip
    assert spec.reads["accept"] == reads
    assert spec.reads["lang"] == {"headers"}
    if query_problem:
        assert spec.not_taken("accept", "query") == query_problem
    if body_problem:
        assert spec.not_taken("accept", "body") == body_problem
    header = "accept (header)" if location == "headers" else "accept"
    assert spec.described == (header, "lang (header)")
    assert spec.not_taken("lang", "query") == "Read from the 'lang' header only."


# -- a real server: the option and the server's log -------------------------


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp), resp.headers
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.load(err), err.headers


@pytest.fixture
def started(fake_site: Path) -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.kill()


def test_a_real_server_warns_once_per_request_in_its_log(fake_site, started, tmp_path):
    jobs = ["--jobs-database", str(tmp_path / "jobs.sqlite")]
    server = Server(
        ["--model-name", "oldstyle", "--executor", "inline", *jobs],
        subprocess_env(fake_site),
        split_stderr=True,
    )
    started.append(server)
    server.wait_ready()
    forged = "cont\n2026-01-01 00:00:00,000 ERROR deepserve: forged"
    status, _, headers = post(
        server.base + PREDICT + "?txt=1", {"text": "hi", forged: 1}
    )
    assert status == 200
    request_id = headers["X-Request-ID"]
    status, _, headers = post(server.base + TRAIN, {"epochs": 1, "epoch": 2})
    assert status == 200
    assert headers[HEADER] == "epoch"
    server.stop()
    log = server.stderr.splitlines()
    warned = [line for line in log if "does not take these" in line]
    assert len(warned) == 2, server.stderr
    assert "WARNING deepserve.api.args" in warned[0]
    assert f"[{request_id}]" in warned[0]
    assert warned[0].endswith(
        "Model 'oldstyle' does not take these predict arguments, which were "
        "ignored: cont%0A2026-01-01%2000:00:00%2C000%20ERROR%20deepserve:%20forged, txt"
    )
    assert warned[1].endswith("train arguments, which were ignored: epoch")
    assert not [line for line in log if "forged" in line and line not in warned]


def test_a_config_file_makes_a_real_server_reject(fake_site, started, tmp_path):
    conf = tmp_path / "deepserve.conf"
    conf.write_text("[DEFAULT]\nunknown_arguments = reject\n")
    jobs = ["--jobs-database", str(tmp_path / "jobs.sqlite")]
    server = Server(
        ["--model-name", "oldstyle", "--config-file", str(conf), *jobs],
        subprocess_env(fake_site),
        split_stderr=True,
    )
    started.append(server)
    server.wait_ready()
    status, body, headers = post(server.base + PREDICT, {"text": "hi", "cnt": 2})
    assert status == 422
    assert body["errors"]["cnt"][0].startswith("Unknown argument (did you mean")
    assert headers[HEADER] == "cnt"
    pidfile = tmp_path / "pid"
    status, body, _ = post(server.base + TRAIN, {"pidfile": str(pidfile), "x": 1})
    assert status == 422 and list(body["errors"]) == ["x"]
    with urllib.request.urlopen(server.base + TRAIN, timeout=60) as resp:
        assert json.load(resp) == []  # no training was recorded
    assert not pidfile.exists()
    server.stop()
    assert "does not take these" not in server.stderr


def test_the_option_takes_warn_or_reject_only(fake_site):
    server = Server(
        ["--model-name", "oldstyle", "--unknown-arguments", "ignore"],
        subprocess_env(fake_site),
    )
    out = server.finish()
    assert server.proc.returncode == 2
    assert "--unknown-arguments" in out and "'ignore'" in out
    assert "warn" in out and "reject" in out


async def test_the_header_is_in_the_openapi_document(client):
    doc = await (await client.get("/swagger.json")).json()
    for path in (PREDICT, TRAIN):
        headers = doc["paths"][path]["post"]["responses"]["200"]["headers"]
        assert "ignored" in headers[HEADER]["description"]
