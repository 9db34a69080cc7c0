"""deepserve.client against a real ``deepserve run`` server.

One server (every fake model, plus ``fake_jsondata``) serves the whole
module; each test runs with the asynchronous and the blocking client.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from deepserve.client import (
    ApiError,
    ArgumentError,
    AsyncClient,
    AsyncDeployedModel,
    Client,
    ClientError,
    DeployedModel,
    FileResult,
    Training,
    TrainingFailed,
    WaitTimeout,
)
from tests.conftest import subprocess_env, write_dist
from tests.servers import Server

# The first test also waits for the server and its workers to start.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(fake_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    extra = write_dist(
        tmp_path_factory.mktemp("client-site"),
        "client-fakes",
        {"jsondata": ("deepserve.v2.model", "fake_jsondata")},
    )
    srv = Server([], subprocess_env(fake_site, extra))
    try:
        srv.wait_ready("", timeout=240)
        yield srv.base
    finally:
        srv.stop()


class Calls:
    """Either client behind one awaitable interface.

    The blocking client's calls run in a thread, so that they never block
    the loop of the test (which may run a server of its own).
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if inspect.iscoroutinefunction(method):
                return await method(*args, **kwargs)
            return await asyncio.to_thread(method, *args, **kwargs)

        return call


async def open_calls(kind: str, cls: dict[str, Any], *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
    """The async or blocking variant of a client class, opened."""
    if kind == "async":
        return Calls(cls["async"](*args, **kwargs))
    return Calls(await asyncio.to_thread(cls["sync"], *args, **kwargs))


CLIENTS = {"async": AsyncClient, "sync": Client}


@pytest.fixture(params=["async", "sync"])
async def api(request: pytest.FixtureRequest, server: str) -> AsyncIterator[Calls]:
    calls = await open_calls(request.param, CLIENTS, server)
    yield calls
    await calls.close()


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    path = tmp_path / "input.bin"
    path.write_bytes(os.urandom(70_000))
    return path


# -- models and metadata ------------------------------------------------------


async def test_models_and_metadata(api: Calls) -> None:
    names = {m["name"] for m in await api.models()}
    assert {"oldstyle", "classy", "files", "minimal", "batchy", "jsondata"} <= names
    meta = await api.metadata("oldstyle")
    assert meta["id"] == "oldstyle"
    assert meta["author"] == "Someone"
    assert meta["description"] == "An old DEEPaaS model"


async def test_document_and_operations(api: Calls) -> None:
    doc = await api.document()
    assert doc["openapi"].startswith("3.")
    op = await api.operation("classy")
    where = {name: arg.where for name, arg in op.arguments.items()}
    assert where == {
        "x": "query",
        "label": "query",
        "bad_output": "query",
        "X-Token": "header",
        "weights": "form",
    }
    assert op.arguments["x"].required and op.arguments["x"].description == "The input"
    assert not op.envelope  # classy has a response schema
    train = await api.operation("classy", "train")
    assert train.arguments["data"].where == "file"
    assert (await api.operation("jsondata")).arguments["data"].where == "json"
    assert (await api.operation("oldstyle")).envelope


async def test_operation_not_offered(api: Calls) -> None:
    with pytest.raises(ClientError, match="'minimal' does not offer 'train'"):
        await api.operation("minimal", "train")
    with pytest.raises(ApiError) as err:
        await api.operation("nope")
    assert err.value.status == 404


# -- predict ------------------------------------------------------------------


async def test_predict_with_query_arguments(api: Calls) -> None:
    result = await api.predict("oldstyle", text="ab", count=3, tags=["x", "y"])
    assert result["status"] == "OK"
    assert result["predictions"]["text"] == "ababab"
    assert result["predictions"]["tags"] == ["x", "y"]


async def test_predict_places_header_form_and_query_arguments(api: Calls) -> None:
    # The server reads X-Token only from the headers: sent anywhere else,
    # the model would see its default, "none".
    result = await api.predict(
        "classy", x=1.5, label="neg", weights=[1.0, 2.0], **{"X-Token": "abc"}
    )
    assert result["label"] == "neg:abc:2"
    assert result["score"] == 6.0


async def test_predict_json_argument(api: Calls) -> None:
    result = await api.predict("jsondata", data=[[1, 2], [3, 4.5]])
    assert result == {"status": "OK", "predictions": [3, 7.5]}


@pytest.mark.parametrize("how", ["path", "open file", "tuple", "keyword", "bytes"])
async def test_file_upload_round_trip(api: Calls, upload: Path, how: str) -> None:
    content = upload.read_bytes()
    with upload.open("rb") as f:
        value: Any = {
            "path": upload,
            "open file": f,
            "tuple": ("renamed.csv", content, "text/csv"),
            "keyword": str(upload),
            "bytes": content,
        }[how]
        if how == "keyword":
            result = await api.predict("oldstyle", data=value)
        else:
            result = await api.predict("oldstyle", files={"data": value})
    sent = result["predictions"]["file"]
    assert sent["size"] == len(content)
    assert sent["sha256"] == hashlib.sha256(content).hexdigest()
    name, ctype = {
        "tuple": ("renamed.csv", "text/csv"),
        "bytes": ("data", "application/octet-stream"),
    }.get(how, ("input.bin", "application/octet-stream"))
    assert sent["original_filename"] == name
    assert sent["content_type"] == ctype


async def test_an_open_file_is_sent_from_where_it_stands(
    api: Calls, tmp_path: Path
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"HEADER" + b"x" * 1000)
    with path.open("rb") as f:
        f.read(6)
        answer = await api.predict("oldstyle", data=f)
    assert answer["predictions"]["file"]["size"] == 1000


async def test_files_with_form_values_alongside(api: Calls, upload: Path) -> None:
    result = await api.predict(
        "oldstyle", data=upload, text="t", count=2, tags=["a", "b"]
    )
    assert result["predictions"]["text"] == "tt"
    assert result["predictions"]["tags"] == ["a", "b"]
    assert result["predictions"]["file"]["size"] == upload.stat().st_size


async def test_binary_result_round_trip(api: Calls) -> None:
    payload = os.urandom(100_000)
    result = await api.predict(
        "files", data=("blob.bin", payload, None), accept="application/x-echo"
    )
    assert isinstance(result, FileResult)
    assert result.content == payload
    assert result.content_type == "application/x-echo"
    assert result.filename == "blob.bin"


async def test_file_result_with_name_and_text(api: Calls, tmp_path: Path) -> None:
    result = await api.predict("files", accept="text/csv")
    assert result.filename == "result.csv"
    assert result.text == "a,b\n1,2\n"
    saved = result.save(tmp_path)
    assert saved == tmp_path / "result.csv"
    assert saved.read_text() == "a,b\n1,2\n"


async def test_binary_result_without_name(api: Calls, tmp_path: Path) -> None:
    result = await api.predict("files")
    assert result.content == bytes(range(256)) * 4
    assert result.content_type == "application/octet-stream"
    assert result.filename is None
    with pytest.raises(ValueError, match="no filename"):
        result.save(tmp_path)
    assert result.save(tmp_path / "out.bin").read_bytes() == result.content


async def test_accept_picks_the_media_type(api: Calls) -> None:
    png = await api.predict("oldstyle", accept="image/png")
    assert png.content_type == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    text = await api.predict("oldstyle", text="hi", count=2, accept="text/plain")
    assert text.text == "hihi"


# -- errors ---------------------------------------------------------------------


async def test_unknown_model_is_a_404(api: Calls) -> None:
    for call in (
        api.predict("nope", x=1),
        api.metadata("nope"),
        api.train("nope"),
        api.trainings("nope"),
    ):
        with pytest.raises(ApiError) as err:
            await call
        assert err.value.status == 404
        assert err.value.body["code"] == 404
        assert "'nope' is not served here" in err.value.detail
        assert "/v2/models/nope/" in str(err.value)


async def test_bad_arguments_are_a_422(api: Calls) -> None:
    with pytest.raises(ApiError) as err:
        await api.predict("classy", x=1, label="maybe")
    assert err.value.status == 422
    assert set(err.value.errors) == {"label"}
    with pytest.raises(ApiError) as err:
        await api.predict("classy")
    assert err.value.status == 422
    assert "x" in err.value.errors
    with pytest.raises(ApiError) as err:
        await api.predict("oldstyle", count="many")
    assert set(err.value.errors) == {"count"}


async def test_unknown_argument_is_refused_before_sending(api: Calls) -> None:
    with pytest.raises(ArgumentError) as err:
        await api.predict("oldstyle", colour="red")
    message = str(err.value)
    assert "takes no argument 'colour'" in message
    assert "valid arguments: accept, count, data, mode, tags, text" in message
    assert isinstance(err.value, TypeError)
    with pytest.raises(ArgumentError, match="'text' is not a file argument"):
        await api.predict("oldstyle", files={"text": b"x"})
    with pytest.raises(ArgumentError, match="given both"):
        await api.predict("oldstyle", data=b"x", files={"data": b"y"})
    with pytest.raises(ArgumentError, match="takes no argument 'epochs'"):
        await api.train("classy", epochs=3)


async def test_bad_file_values(api: Calls, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="argument 'data'"):
        await api.predict("oldstyle", data=tmp_path / "missing.png")
    with (
        pytest.raises(ArgumentError, match="binary mode"),
        (tmp_path / "t.txt").open("w") as f,
    ):
        await api.predict("oldstyle", data=f)
    with pytest.raises(ArgumentError, match="not int"):
        await api.predict("oldstyle", data=42)


async def test_model_errors_keep_the_servers_body(api: Calls) -> None:
    with pytest.raises(ApiError) as err:
        await api.predict("oldstyle", mode="badrequest")
    assert err.value.status == 400
    assert "The text is not acceptable" in err.value.detail
    with pytest.raises(ApiError) as err:
        await api.predict("oldstyle", mode="crash")
    assert err.value.status == 500
    assert err.value.body["error_type"] == "ValueError"


async def test_accept_is_a_preference(api: Calls) -> None:
    """Sent as the Accept header: a type the model does not offer gets its
    default type, as HTTP allows, not an error."""
    result = await api.predict("classy", x=1, accept="text/csv")
    assert result["score"] == 2.0


async def test_operation_the_model_lacks(api: Calls) -> None:
    with pytest.raises(ApiError) as err:
        await api.train("minimal", epochs=1)
    assert err.value.status == 501
    assert "does not implement 'train'" in err.value.detail


# -- trainings ----------------------------------------------------------------


async def test_train_with_a_file_and_wait(api: Calls, upload: Path) -> None:
    started = await api.train("classy", seconds=0.2, data=upload)
    assert isinstance(started, Training)
    assert started.model == "classy"
    assert started.status in ("running", "done")
    assert started.args["data"]["original_filename"] == "input.bin"
    done = await api.wait("classy", started.id, timeout=60, poll=0.05)
    assert done.status == "done" and done.done
    assert done.output["upload_size"] == upload.stat().st_size
    assert done.output["seconds"] == 0.2
    assert done.duration is not None and done.duration.total_seconds() >= 0.2
    again = await api.training("classy", started)
    assert again.id == started.id and again.status == "done"
    listed = {t.id: t for t in await api.trainings("classy")}
    assert listed[started.id].status == "done"


async def test_training_failure_raises_with_the_reason(api: Calls) -> None:
    started = await api.train("classy", fail=True)
    with pytest.raises(TrainingFailed) as err:
        await api.wait("classy", started.id, timeout=60, poll=0.05)
    assert err.value.training.status == "error"
    assert "the loss diverged" in str(err.value)
    assert started.id in str(err.value)


async def test_unknown_training_is_a_404(api: Calls) -> None:
    with pytest.raises(ApiError) as err:
        await api.training("classy", "no-such-id")
    assert err.value.status == 404
    assert "no-such-id" in err.value.detail


# -- DeployedModel ----------------------------------------------------------------

DEPLOYED = {"async": AsyncDeployedModel, "sync": DeployedModel}


@pytest.fixture(params=["async", "sync"])
async def deployed(request: pytest.FixtureRequest, server: str) -> AsyncIterator[Any]:
    """Opens deployed models of the server by name; closes them after."""
    opened: list[Calls] = []

    async def open_model(name: str) -> Calls:
        model = await open_calls(request.param, DEPLOYED, server, name)
        opened.append(model)
        return model

    yield open_model
    for model in opened:
        await model.close()


async def test_deployed_model_predicts_on_json_data(deployed: Any) -> None:
    model = await deployed("jsondata")
    assert await model.predict([[1, 2], [3, 4.5]]) == [3, 7.5]
    assert (await model.metadata())["description"] == "Sums rows of numbers"
    with pytest.raises(ApiError) as err:
        await model.predict()
    assert err.value.status == 422 and "data" in err.value.errors
    with pytest.raises(ArgumentError, match="'data' given twice"):
        await model.predict([[1]], data=[[2]])


async def test_deployed_model_sends_a_data_file(deployed: Any, upload: Path) -> None:
    model = await deployed("oldstyle")
    result = await model.predict(upload)
    assert result["file"]["size"] == upload.stat().st_size
    assert result["file"]["original_filename"] == "input.bin"
    assert (await model.predict(text="hi", count=2))["text"] == "hihi"
    png = await model.predict(accept="image/png")
    assert isinstance(png, FileResult) and png.content_type == "image/png"


async def test_deployed_model_keeps_a_schema_response(deployed: Any) -> None:
    model = await deployed("classy")
    result = await model.predict(x=2)
    assert result["label"] == "pos:none:0"
    assert result["score"] == 4.0


async def test_deployed_model_without_a_data_argument(deployed: Any) -> None:
    model = await deployed("batchy")
    with pytest.raises(ArgumentError) as err:
        await model.predict([1])
    assert "takes no 'data' argument" in str(err.value)
    assert "valid arguments: delay, x" in str(err.value)
    result = await model.predict(x=3)
    assert result["double"] == 6


async def test_deployed_model_of_an_unknown_model(deployed: Any) -> None:
    model = await deployed("nope")
    with pytest.raises(ApiError) as err:
        await model.predict([1])
    assert err.value.status == 404


# Last: cancelling replaces the model's worker.
async def test_wait_timeout_then_cancel(api: Calls) -> None:
    started = await api.train("oldstyle", seconds=120)
    with pytest.raises(WaitTimeout) as err:
        await api.wait("oldstyle", started.id, timeout=0.3, poll=0.05)
    assert isinstance(err.value, TimeoutError)
    assert err.value.training.status == "running"
    assert "still running after 0.3 s" in str(err.value)
    cancelled = await api.cancel("oldstyle", started.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(TrainingFailed, match="was cancelled"):
        await api.wait("oldstyle", started.id, timeout=30)


# -- a server still starting ---------------------------------------------------------


def test_a_client_waits_for_a_model_that_is_still_starting(
    fake_site: Path, slow_site: Path, tmp_path: Path
) -> None:
    """The server answers 503 + Retry-After while the model warms; the
    client retries until it is warm (a real server, a real warm-up)."""
    gate = tmp_path / "warm"
    env = {**subprocess_env(fake_site, slow_site), "FAKE_SLOW_WARM_GATE": str(gate)}
    srv = Server(["--model-name", "slow"], env)
    try:
        srv.wait_live("")
        with Client(srv.base, retries=0) as impatient:
            with pytest.raises(ApiError) as err:
                impatient.predict("slow")
            assert err.value.status == 503
            assert "still starting" in str(err.value)
        threading.Timer(1.5, gate.touch).start()
        with Client(srv.base, retries=30) as client:
            assert client.predict("slow")["predictions"]["slept"] == 0.0
        assert "Ready" in srv.output
    finally:
        gate.touch()
        srv.stop()
