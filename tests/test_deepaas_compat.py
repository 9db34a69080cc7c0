"""A DEEPaaS model package installed the way its users install it.

``.ci/run`` builds a second virtual environment as a DEEPaaS user has one:
deepserve and ``tests/fakes/ai4os-like-module`` (requirements
``deepaas>=2.1,<3`` and ``webargs~=5.5.3``, as the AI4OS templates write
them) installed in one ``pip install`` with pip's resolver. The package
imports DEEPaaS's ``UploadedFile`` and refuses any other, so every upload
below would be a 500 if deepserve handed its own class.

Elsewhere (no deepaas installed) the module is skipped, unless
``DEEPSERVE_REQUIRE_DEEPAAS=1`` (set by ``.ci/run`` there) makes a missing
package a failure instead.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate as validate_spec

from deepserve.adapters import DeepaasModel, files
from deepserve.model import ReturnedFile, UploadedFile
from tests.fakes.fake_wildcard import png
from tests.servers import Server

try:
    from ai4os_like import api as ai4os_like
    from deepaas.model.v2 import wrapper
except ImportError as exc:
    if os.environ.get("DEEPSERVE_REQUIRE_DEEPAAS") == "1":
        raise
    pytest.skip(
        "needs deepaas and tests/fakes/ai4os-like-module installed, as in "
        f".ci/run's DEEPaaS venv ({exc})",
        allow_module_level=True,
    )

MODEL = "ai4os_like"
PREDICT = f"/v2/models/{MODEL}/predict/"
DEEPSERVE = Path(sys.executable).parent / "deepserve"
PNG = png()


def test_installed_next_to_deepaas_with_a_clean_pip_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert importlib.metadata.version("webargs").startswith("5.5.")
    assert importlib.metadata.version("deepaas").startswith("2.")


def test_the_combined_class_is_both_and_pickles() -> None:
    cls = files.upload_class()
    upload = cls("f", "/tmp/x", "image/png", "x.png")
    assert isinstance(upload, wrapper.UploadedFile)
    assert isinstance(upload, UploadedFile)
    assert pickle.loads(pickle.dumps(upload)) == upload
    assert type(pickle.loads(pickle.dumps(upload))) is cls


def test_the_adapter_hands_deepaas_classes_and_takes_theirs_back(
    tmp_path: Path,
) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    model = DeepaasModel(MODEL, ai4os_like)
    ours = UploadedFile("input_file", str(image), "image/png", "in.png")
    answer = model.call(
        "predict", {"input_file": ours, "label": "l", "accept": "application/json"}
    )
    assert answer["upload_class"] == "deepserve.adapters.files.DeepaasUploadedFile"
    returned = model.call(
        "predict", {"input_file": ours, "label": "l", "accept": "image/*"}
    )
    assert type(returned) is ReturnedFile
    # A ReturnedFile of DEEPaaS's own comes back as deepserve's, fields kept.
    theirs = wrapper.ReturnedFile("n", str(image), "image/png", "out.png")
    assert files.returned(theirs) == ReturnedFile(*theirs)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    env = dict(os.environ)
    for var in ("PYTHONPATH", "DEEPSERVE_V2_MODEL", "DEEPAAS_V2_MODEL"):
        env.pop(var, None)
    # The package's entry point, found as pip installed it.
    srv = Server(["--model-name", MODEL], env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def http(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.base) as session:
        yield session


def upload_form(name: str = "input_file") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(name, PNG, filename="pixel.png", content_type="image/png")
    return form


async def test_uploads_arrive_as_deepaas_uploadedfile(http: Any) -> None:
    resp = await http.post(PREDICT, data=upload_form(), params={"label": "cat"})
    body = await resp.json()
    assert resp.status == 200, body
    # The model's response schema: returned as is, validated.
    assert body == {
        "label": "cat",
        "filename": "pixel.png",
        "content_type": "image/png",
        "size": len(PNG),
        "upload_class": "deepserve.adapters.files.DeepaasUploadedFile",
        "warmed": 1,
    }


async def test_accept_image_png_against_an_image_range(http: Any) -> None:
    resp = await http.post(PREDICT, data=upload_form(), headers={"Accept": "image/png"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "image/png"
    assert await resp.read() == PNG


async def test_accept_zip(http: Any) -> None:
    resp = await http.post(
        PREDICT, data=upload_form(), headers={"Accept": "application/zip"}
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/zip"
    with zipfile.ZipFile(io.BytesIO(await resp.read())) as zf:
        assert zf.read("input") == PNG
        assert json.loads(zf.read("args.json"))["filename"] == "pixel.png"


async def test_an_unsatisfiable_header_gets_the_default_type(http: Any) -> None:
    resp = await http.post(PREDICT, data=upload_form(), headers={"Accept": "text/csv"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"


async def test_accept_is_read_where_the_model_declared_it_only(http: Any) -> None:
    # Declared in the headers: an accept query argument is no argument.
    resp = await http.post(PREDICT, data=upload_form(), params={"accept": "bad/type"})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"


async def test_a_missing_upload_is_422_naming_it(http: Any) -> None:
    resp = await http.post(PREDICT, data={"label": "x"})
    body = await resp.json()
    assert resp.status == 422, body
    assert list(body["errors"]) == ["input_file"]


async def test_training_with_an_upload(http: Any) -> None:
    resp = await http.post(
        f"/v2/models/{MODEL}/train/", data=upload_form("dataset"), params={"epochs": 2}
    )
    job = await resp.json()
    assert resp.status == 200, job
    for _ in range(1200):  # a fresh process imports deepaas: give it 120 s
        resp = await http.get(f"/v2/models/{MODEL}/train/{job['uuid']}")
        job = await resp.json()
        if job["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert job["status"] == "done", job
    assert job["result"]["output"] == {
        "epochs": 2,
        "dataset_size": len(PNG),
        "accuracy": 0.9,
    }
    logs = await (await http.get(f"/v2/models/{MODEL}/train/{job['uuid']}/logs")).json()
    assert "epoch 2/2" in [line["text"] for line in logs["logs"]], logs


async def test_openapi_document_is_valid_and_describes_the_model(http: Any) -> None:
    resp = await http.get("/swagger.json")
    doc = await resp.json()
    validate_spec(doc)
    predict = doc["paths"][PREDICT]["post"]
    multipart = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["properties"]["input_file"]["format"] == "binary"
    assert multipart["required"] == ["input_file"]
    # accept lives in the Accept header: documented by the response types.
    assert [p["name"] for p in predict["parameters"]] == ["label"]
    assert list(predict["responses"]["200"]["content"]) == ai4os_like.FORMATS


async def test_swagger_ui_is_served_offline(http: Any) -> None:
    page = await (await http.get("/api")).text()
    assert "swagger-ui-bundle.js" in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        resp = await http.get(f"/api/static/{asset}")
        assert resp.status == 200
        assert len(await resp.read()) > 1000


async def test_the_server_log_is_free_of_deprecation_noise(
    http: Any, server: Server
) -> None:
    """Importing deepaas turns every DeprecationWarning into a log record,
    and webargs 5 style fields each warn about marshmallow 4: dozens of
    lines in every worker, none of them the user's to act on."""
    resp = await http.post(PREDICT, data=upload_form())
    assert resp.status == 200
    assert "Warning" not in server.output, server.output


def deepserve_call(*args: str, cwd: Path | None = None) -> Any:
    """``deepserve call --model-name ai4os_like ARGS``, as a user runs it:
    the package found through its pip-installed entry point."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(DEEPSERVE), "call", "--model-name", MODEL, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_call_help_is_quiet() -> None:
    result = deepserve_call("predict", "--help")
    assert result.returncode == 0, result.stderr
    assert "--input_file" in result.stdout
    assert "Warning" not in result.stderr, result.stderr


def test_deepserve_call_hands_deepaas_classes(tmp_path: Path) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    result = deepserve_call(
        "predict", "--input_file", str(image), "--label", "cli", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["upload_class"] == "deepserve.adapters.files.DeepaasUploadedFile"
    assert answer["filename"] == "in.png"
    out = tmp_path / "out.png"
    result = deepserve_call(
        "predict", "--input_file", str(image), "--accept", "image/png", "-o", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PNG
