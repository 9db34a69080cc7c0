"""The Open Inference Protocol against a real server, with Triton's own clients.

One ``deepserve run`` subprocess serves, over REST and gRPC at once: a
scikit-learn classifier in two versions fitted differently (``iris_clf``),
a stored model with FP32, INT64 and BYTES tensors (``mixer``), a batchable
stored model (``stamper``), the bundled ``demo`` and a DEEPaaS 2.x model
(``oldstyle``). ``tritonclient.http`` (JSON and binary tensors) and
``tritonclient.grpc`` talk to it; aiohttp checks the bytes on the wire.
Two small servers of their own check tokens and a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy
import pytest
from openapi_spec_validator import validate

tritonhttp = pytest.importorskip("tritonclient.http")
tritongrpc = pytest.importorskip("tritonclient.grpc")

from tritonclient.http.aio import (  # noqa: E402
    InferenceServerClient as AsyncHttpClient,
)
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.conftest import subprocess_env  # noqa: E402
from tests.servers import Server, free_port, get_json  # noqa: E402

pytestmark = pytest.mark.timeout(180)

TOKEN = "interop-s3cret"
#: A status as each client reports it.
STATUS = {
    "http": {400: "400", 401: "401", 404: "404"},
    "grpc": {
        400: "StatusCode.INVALID_ARGUMENT",
        401: "StatusCode.UNAUTHENTICATED",
        404: "StatusCode.NOT_FOUND",
    },
}


@dataclass
class Stored:
    """What was saved, and what the fitted models answer."""

    root: Path
    v1: str
    v2: str
    rows: numpy.ndarray
    v1_classes: list[int]
    v2_classes: list[int]


def fill_store(root: Path) -> Stored:
    import fake_tensors  # on sys.path through the fake_site fixture
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from deepserve import picklable_model
    from deepserve import sklearn as ds_sklearn
    from deepserve.store import Store

    store = Store(root)
    iris = load_iris()
    first = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    # a stump tells only two of the three classes apart: other answers
    second = DecisionTreeClassifier(max_depth=1, random_state=0).fit(
        iris.data, iris.target
    )
    v1 = str(ds_sklearn.save_model("iris_clf", first, store=store).tag).split(":")[1]
    v2 = str(ds_sklearn.save_model("iris_clf", second, store=store).tag).split(":")[1]
    picklable_model.save_model(
        "mixer",
        fake_tensors.Mixer(),
        signatures={"predict": fake_tensors.MIXER_TENSORS},
        store=store,
    )
    picklable_model.save_model(
        "stamper",
        fake_tensors.Stamper(0.02),
        signatures={"predict": {"batchable": True, **fake_tensors.STAMPER_TENSORS}},
        store=store,
    )
    rows = iris.data[[0, 60, 120, 149]]
    stored = Stored(
        root,
        v1,
        v2,
        rows,
        first.predict(rows).tolist(),
        second.predict(rows).tolist(),
    )
    assert stored.v1_classes != stored.v2_classes  # the versions must differ
    return stored


@pytest.fixture(scope="module")
def stored(fake_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Stored:
    return fill_store(tmp_path_factory.mktemp("oip-store"))


@dataclass
class Listening:
    """A server and its gRPC address."""

    server: Server
    grpc: str

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def http(self) -> str:
        return self.server.base.removeprefix("http://")


@dataclass
class Served(Listening):
    """The module's server, and what its store holds."""

    stored: Stored


@pytest.fixture(scope="module")
def served(fake_site: Path, stored: Stored) -> Iterator[Served]:
    grpc_port = free_port()
    names = [f"iris_clf:{stored.v1}", f"iris_clf:{stored.v2}"]
    names += ["mixer", "stamper", "demo", "oldstyle"]
    srv = Server(
        [
            "--model-name",
            ",".join(names),
            "--model-store",
            str(stored.root),
            "--grpc-port",
            str(grpc_port),
            "--max-batch-size",
            "64",
            "--max-latency-ms",
            "20",
        ],
        subprocess_env(fake_site),
    )
    try:
        srv.wait_ready("", timeout=120)
        yield Served(srv, f"127.0.0.1:{grpc_port}", stored)
    finally:
        srv.stop()


@dataclass
class Triton:
    """One of Triton's clients, and how its tensors travel.

    ``kind``: ``json`` (HTTP, tensors in JSON), ``binary`` (HTTP, binary
    tensor data) or ``grpc``.
    """

    kind: str
    client: Any

    @property
    def protocol(self) -> str:
        return "grpc" if self.kind == "grpc" else "http"

    @property
    def lib(self) -> Any:
        return tritongrpc if self.kind == "grpc" else tritonhttp

    def input(self, name: str, array: numpy.ndarray, datatype: str) -> Any:
        tensor = self.lib.InferInput(name, list(array.shape), datatype)
        if self.kind == "grpc":
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_data_from_numpy(array, binary_data=self.kind == "binary")
        return tensor

    def output(self, name: str, binary: bool | None = None) -> Any:
        if self.kind == "grpc":
            return self.lib.InferRequestedOutput(name)
        if binary is None:
            binary = self.kind == "binary"
        return self.lib.InferRequestedOutput(name, binary_data=binary)

    def infer(self, model: str, inputs: list[Any], **kwargs: Any) -> Any:
        if self.kind == "json" and "outputs" not in kwargs:
            # without outputs tritonclient asks for every output in binary
            raise AssertionError("name the outputs to get them in JSON")
        return self.client.infer(model, inputs, **kwargs)

    def status(self, http_status: int) -> str:
        return STATUS[self.protocol][http_status]

    def metadata(self, model: str, version: str = "") -> dict[str, Any]:
        """Model metadata as plain values, whichever the client."""
        meta = self.client.get_model_metadata(model, version)
        if self.kind != "grpc":
            return {
                k: meta[k]
                for k in ("name", "versions", "platform", "inputs", "outputs")
            }
        return {
            "name": meta.name,
            "versions": list(meta.versions),
            "platform": meta.platform,
            "inputs": [_spec(t) for t in meta.inputs],
            "outputs": [_spec(t) for t in meta.outputs],
        }


def _spec(tensor: Any) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }


@pytest.fixture(params=["json", "binary", "grpc"])
def triton(request: pytest.FixtureRequest, served: Served) -> Iterator[Triton]:
    if request.param == "grpc":
        client = tritongrpc.InferenceServerClient(served.grpc)
    else:
        client = tritonhttp.InferenceServerClient(served.http)
    try:
        yield Triton(request.param, client)
    finally:
        client.close()


def texts(array: numpy.ndarray) -> list[str]:
    """A BYTES output as text: tritonclient gives ``bytes`` from binary
    data, ``str`` from JSON."""
    return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]


def infer_iris(triton: Triton, rows: numpy.ndarray, **kwargs: Any) -> numpy.ndarray:
    result = triton.infer(
        "iris_clf",
        [triton.input("input-0", rows, "FP64")],
        outputs=[triton.output("output-0")],
        **kwargs,
    )
    return result.as_numpy("output-0")  # type: ignore[no-any-return]


# -- health and metadata -----------------------------------------------------


def test_health_and_readiness(triton: Triton, served: Served) -> None:
    client, stored = triton.client, served.stored
    assert client.is_server_live()
    assert client.is_server_ready()
    for name in ("iris_clf", "mixer", "stamper", "demo", "oldstyle"):
        assert client.is_model_ready(name), name
    assert client.is_model_ready("iris_clf", stored.v1)
    assert client.is_model_ready("iris_clf", stored.v2)
    for name, version in (("iris_clf", "nosuchversion"), ("nosuchmodel", "")):
        if triton.kind == "grpc":  # an unknown model is an error, as in KServe
            with pytest.raises(InferenceServerException) as info:
                client.is_model_ready(name, version)
            assert info.value.status() == triton.status(404)
        else:  # a 404
            assert not client.is_model_ready(name, version)


def test_server_metadata(triton: Triton) -> None:
    import deepserve

    meta = triton.client.get_server_metadata()
    if triton.kind == "grpc":
        assert meta.name == "deepserve"
        assert meta.version == deepserve.__version__
        assert list(meta.extensions) == ["binary_tensor_data"]
    else:
        # GET /v2 is shared with DEEPaaS, whose "version" is kept
        assert meta["name"] == "deepserve"
        assert meta["version"] == "stable"
        assert meta["extensions"] == ["binary_tensor_data"]


def test_model_metadata(triton: Triton, served: Served) -> None:
    stored = served.stored
    iris = {
        "name": "iris_clf",
        "versions": [stored.v2, stored.v1],  # the default (newest) first
        "platform": "sklearn",
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "output-0", "datatype": "INT64", "shape": [-1]}],
    }
    assert triton.metadata("iris_clf") == iris
    assert triton.metadata("iris_clf", stored.v1) == iris
    mixer = triton.metadata("mixer")
    assert mixer["platform"] == "cloudpickle"
    assert len(mixer["versions"]) == 1
    assert mixer["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "n", "datatype": "INT64", "shape": [-1]},
        {"name": "word", "datatype": "BYTES", "shape": [-1]},
    ]
    assert [o["name"] for o in mixer["outputs"]] == ["scaled", "total", "shout"]
    oldstyle = triton.metadata("oldstyle")
    # an installed model: no versions; one tensor per argument
    assert (oldstyle["versions"], oldstyle["platform"]) == ([], "deepserve")
    assert {i["name"]: (i["datatype"], i["shape"]) for i in oldstyle["inputs"]} == {
        "data": ("BYTES", [1]),
        "text": ("BYTES", [1]),
        "count": ("INT64", [1]),
        "mode": ("BYTES", [1]),
        "tags": ("BYTES", [-1]),
    }


# -- inference ---------------------------------------------------------------


def test_iris_predicts_like_the_fitted_model(triton: Triton, served: Served) -> None:
    stored = served.stored
    got = infer_iris(triton, stored.rows)
    assert got.dtype == numpy.int64
    assert got.tolist() == stored.v2_classes  # unversioned: the newest


def test_each_version_answers_with_its_own_model(
    triton: Triton, served: Served
) -> None:
    stored = served.stored
    rows = stored.rows
    assert (
        infer_iris(triton, rows, model_version=stored.v1).tolist() == stored.v1_classes
    )
    assert (
        infer_iris(triton, rows, model_version=stored.v2).tolist() == stored.v2_classes
    )
    result = triton.infer(
        "iris_clf",
        [triton.input("input-0", rows, "FP64")],
        outputs=[triton.output("output-0")],
        model_version=stored.v1,
    )
    response = result.get_response()
    version = (
        response.model_version if triton.kind == "grpc" else response["model_version"]
    )
    assert version == stored.v1
    with pytest.raises(InferenceServerException) as info:
        infer_iris(triton, rows, model_version="nosuchversion")
    assert info.value.status() == triton.status(404)
    assert "nosuchversion" in info.value.message()


def test_fp32_int64_and_bytes_tensors_in_and_out(triton: Triton) -> None:
    x = numpy.array([[1.5, -2.0], [0.25, 4.0], [3.0, 0.5]], dtype=numpy.float32)
    n = numpy.array([2, 3, -1], dtype=numpy.int64)
    words = numpy.array([b"hi", "\u00e9t\u00e9".encode(), b"ok"], dtype=object)
    result = triton.infer(
        "mixer",
        [
            triton.input("x", x, "FP32"),
            triton.input("n", n, "INT64"),
            triton.input("word", words, "BYTES"),
        ],
        outputs=[triton.output(name) for name in ("scaled", "total", "shout")],
        request_id="req-7",
    )
    scaled = result.as_numpy("scaled")
    assert scaled.dtype == numpy.float32
    numpy.testing.assert_array_equal(scaled, x * n[:, None])
    total = result.as_numpy("total")
    assert (total.dtype, total.tolist()) == (numpy.int64, [4])
    shout = result.as_numpy("shout")
    assert texts(shout) == ["HI!", "\u00c9T\u00c9!", "OK!"]
    response = result.get_response()
    assert (response.id if triton.kind == "grpc" else response["id"]) == "req-7"


def test_only_the_requested_outputs_in_their_order(triton: Triton) -> None:
    x = numpy.array([[1.0, 2.0]], dtype=numpy.float32)
    n = numpy.array([3], dtype=numpy.int64)
    words = numpy.array([b"a"], dtype=object)
    inputs = [
        triton.input("x", x, "FP32"),
        triton.input("n", n, "INT64"),
        triton.input("word", words, "BYTES"),
    ]
    if triton.kind == "grpc":
        outputs = [triton.output("shout"), triton.output("scaled")]
    else:  # one in binary, one in JSON
        outputs = [
            triton.output("shout", binary=True),
            triton.output("scaled", binary=False),
        ]
    result = triton.infer("mixer", inputs, outputs=outputs)
    response = result.get_response()
    if triton.kind == "grpc":
        assert [o.name for o in response.outputs] == ["shout", "scaled"]
    else:
        assert [o["name"] for o in response["outputs"]] == ["shout", "scaled"]
        shout, scaled = response["outputs"]
        assert shout["parameters"]["binary_data_size"] > 0 and "data" not in shout
        assert scaled["data"] == [3.0, 6.0]
        assert "binary_data_size" not in scaled.get("parameters", {})
    assert result.as_numpy("total") is None
    assert texts(result.as_numpy("shout")) == ["A!"]
    assert result.as_numpy("scaled").tolist() == [[3.0, 6.0]]


def test_a_deepaas_model_takes_its_arguments_as_tensors(triton: Triton) -> None:
    text = numpy.array([b"ab"], dtype=object)
    count = numpy.array([3], dtype=numpy.int64)
    tags = numpy.array([b"x", b"y"], dtype=object)
    result = triton.infer(
        "oldstyle",
        [
            triton.input("text", text, "BYTES"),
            triton.input("count", count, "INT64"),
            triton.input("tags", tags, "BYTES"),
        ],
        outputs=[triton.output("text"), triton.output("tags")],
    )
    assert texts(result.as_numpy("text")) == ["ababab"]
    assert texts(result.as_numpy("tags")) == ["x", "y"]
    demo = triton.infer(
        "demo",
        [triton.input("text", numpy.array([b"two words"], dtype=object), "BYTES")],
        outputs=[triton.output("words"), triton.output("characters")],
    )
    assert demo.as_numpy("words").tolist() == [2]
    assert demo.as_numpy("characters").tolist() == [9]


def test_fp64_to_a_stored_model_that_declared_fp32_is_refused(triton: Triton) -> None:
    rows = numpy.array([[1.0, 2.0]], dtype=numpy.float64)
    with pytest.raises(InferenceServerException) as info:
        triton.infer(
            "stamper",
            [triton.input("rows", rows, "FP64")],
            outputs=[triton.output("stamped")],
        )
    assert info.value.status() == triton.status(400)
    assert "rows" in info.value.message() and "FP32" in info.value.message()


# -- errors ------------------------------------------------------------------


def test_an_unknown_model_is_not_found(triton: Triton) -> None:
    rows = numpy.zeros((1, 4))
    with pytest.raises(InferenceServerException) as info:
        triton.infer(
            "nosuchmodel",
            [triton.input("input-0", rows, "FP64")],
            outputs=[triton.output("output-0")],
        )
    assert info.value.status() == triton.status(404)
    assert "nosuchmodel" in info.value.message()


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("shape", ["input-0", "shape"]),
        ("datatype", ["input-0", "datatype", "FP64"]),
        ("unknown", ["unknown", "extra"]),
        ("missing", ["missing", "word"]),
    ],
)
def test_bad_inputs_are_invalid_arguments(
    triton: Triton, case: str, words: list[str]
) -> None:
    good = numpy.zeros((2, 4))
    model, output = (
        ("mixer", "total") if case == "missing" else ("iris_clf", "output-0")
    )
    inputs = {
        "shape": [triton.input("input-0", numpy.zeros((2, 3)), "FP64")],
        "datatype": [triton.input("input-0", good.astype(numpy.float32), "FP32")],
        "unknown": [
            triton.input("input-0", good, "FP64"),
            triton.input("extra", good, "FP64"),
        ],
        "missing": [
            triton.input("x", numpy.zeros((1, 2), numpy.float32), "FP32"),
            triton.input("n", numpy.zeros(1, numpy.int64), "INT64"),
        ],
    }[case]
    with pytest.raises(InferenceServerException) as info:
        triton.infer(model, inputs, outputs=[triton.output(output)])
    assert info.value.status() == triton.status(400)
    message = info.value.message().lower()
    for word in words:
        assert word.lower() in message, message


# -- the wire, by hand -------------------------------------------------------


async def _post(url: str, body: bytes | None = None, **kwargs: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, **kwargs) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_json_inference_on_the_wire(served: Served) -> None:
    stored = served.stored
    request = {
        "id": "abc",
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP64",
                "shape": [4, 4],
                "data": stored.rows.reshape(-1).tolist(),
            }
        ],
    }
    status, headers, body = await _post(
        served.base + f"/v2/models/iris_clf/versions/{stored.v1}/infer",
        json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert "Inference-Header-Content-Length" not in headers
    assert json.loads(body) == {
        "model_name": "iris_clf",
        "model_version": stored.v1,
        "id": "abc",
        "outputs": [
            {
                "name": "output-0",
                "datatype": "INT64",
                "shape": [4],
                "data": stored.v1_classes,
            }
        ],
    }


async def test_binary_tensor_data_by_hand(served: Served) -> None:
    stored = served.stored
    raw = stored.rows.astype("<f8").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP64",
                    "shape": [4, 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "output-0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, headers, body = await _post(
        served.base + "/v2/models/iris_clf/infer",
        header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert status == 200, body
    length = int(headers["Inference-Header-Content-Length"])
    answer = json.loads(body[:length])
    assert answer["model_version"] == stored.v2
    (output,) = answer["outputs"]
    assert output["parameters"]["binary_data_size"] == 32
    assert {k: output[k] for k in ("name", "datatype", "shape")} == {
        "name": "output-0",
        "datatype": "INT64",
        "shape": [4],
    }
    assert "data" not in output
    assert numpy.frombuffer(body[length:], "<i8").tolist() == stored.v2_classes


@pytest.mark.parametrize("header", ["abc", "-1", "100000"])
async def test_a_malformed_header_length_is_a_bad_request(
    served: Served, header: str
) -> None:
    status, headers, body = await _post(
        served.base + "/v2/models/iris_clf/infer",
        b'{"inputs": []}',
        headers={"Inference-Header-Content-Length": header},
    )
    assert status == 400, body
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert list(error) == ["error"]
    assert "Inference-Header-Content-Length" in error["error"]


@pytest.mark.parametrize(
    ("path", "tensor", "status"),
    [
        ("/v2/models/nosuchmodel/infer", ("input-0", "FP64", [1, 4]), 404),
        ("/v2/models/iris_clf/versions/nope/infer", ("input-0", "FP64", [1, 4]), 404),
        ("/v2/models/iris_clf/infer", ("input-0", "FP64", [2, 2]), 400),
        ("/v2/models/iris_clf/infer", ("input-0", "INT64", [1, 4]), 400),
        ("/v2/models/iris_clf/infer", ("other", "FP64", [1, 4]), 400),
    ],
)
async def test_errors_are_the_protocols_error_body(
    served: Served, path: str, tensor: tuple[str, str, list[int]], status: int
) -> None:
    name, datatype, shape = tensor
    request = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "data": [1] * 4}
        ]
    }
    got, headers, body = await _post(served.base + path, json.dumps(request).encode())
    assert got == status, body
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert list(error) == ["error"]
    assert isinstance(error["error"], str) and error["error"]
    assert "Traceback" not in error["error"]


async def test_a_body_that_is_not_json_is_a_bad_request(served: Served) -> None:
    status, _, body = await _post(served.base + "/v2/models/iris_clf/infer", b"{oops")
    assert status == 400
    assert "not valid JSON" in json.loads(body)["error"]


def test_metadata_documents_on_the_wire(served: Served) -> None:
    stored = served.stored
    server = get_json(served.base + "/v2")
    assert isinstance(server, dict)
    # the protocol's keys and DEEPaaS's, DEEPaaS's "version" kept
    assert set(server) == {"name", "version", "extensions", "id", "links"}
    assert (server["name"], server["version"], server["id"]) == (
        "deepserve",
        "stable",
        "v2",
    )
    for path in ("/v2/models/iris_clf", f"/v2/models/iris_clf/versions/{stored.v1}"):
        meta = get_json(served.base + path)
        assert isinstance(meta, dict)
        assert {"name", "versions", "platform", "inputs", "outputs"} <= set(meta)
        # and DEEPaaS's keys, on the same path
        assert {"id", "links"} <= set(meta), meta
        for tensor in (*meta["inputs"], *meta["outputs"]):
            assert set(tensor) == {"name", "datatype", "shape"}
    ready = get_json(served.base + f"/v2/models/iris_clf/versions/{stored.v1}/ready")
    assert ready == {"name": "iris_clf", "ready": True}
    assert get_json(served.base + "/v2/health/live") == {"live": True}
    assert get_json(served.base + "/v2/health/ready") == {"ready": True}


# -- both protocols on one server ----------------------------------------------


async def test_the_deepaas_api_answers_beside_the_protocol(served: Served) -> None:
    stored = served.stored
    listed = get_json(served.base + "/v2/models/")
    assert isinstance(listed, dict)
    names = {m["name"] for m in listed["models"]}
    assert {"iris_clf", "mixer", "stamper", "demo", "oldstyle"} <= names
    status, _, body = await _post(served.base + "/v2/models/demo/predict/?text=hi")
    assert status == 200, body
    assert json.loads(body) == {
        "text": "hi",
        "characters": 2,
        "words": 1,
        "warmed": True,
    }
    for version, classes in (
        (stored.v1, stored.v1_classes),
        (stored.v2, stored.v2_classes),
    ):
        status, _, body = await _post(
            served.base + f"/v2/models/iris_clf/versions/{version}/predict/",
            json.dumps({"data": stored.rows.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert status == 200, body
        assert json.loads(body)["predictions"] == classes


def test_openapi_document_lists_the_protocols_paths(served: Served) -> None:
    spec = get_json(served.base + "/swagger.json")
    validate(spec)  # type: ignore[arg-type]
    paths = spec["paths"]  # type: ignore[index]
    for path in (
        "/v2/models/iris_clf/infer",
        "/v2/models/iris_clf/versions/{version}/infer",
        "/v2/models/mixer/infer",
        "/v2/models/iris_clf/predict/",
    ):
        assert path in paths, path
        assert "post" in paths[path]


# -- batching and metrics ------------------------------------------------------


def _metrics(served: Served) -> str:
    with urllib.request.urlopen(served.base + "/metrics", timeout=10) as resp:
        return resp.read().decode()  # type: ignore[no-any-return]


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name`` with (at least) ``labels``."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if not match or match[1] != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2]))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append(float(match[3]))
    assert len(found) == 1, (name, labels, found)
    return found[0]


def _batches(text: str) -> tuple[float, float]:
    """How many ``stamper`` batches ran, and how many predictions they held."""
    count = _sample(text, "deepserve_batch_size_count", model="stamper")
    total = _sample(text, "deepserve_batch_size_sum", model="stamper")
    return count, total


def test_concurrent_grpc_calls_are_batched_and_split_back(served: Served) -> None:
    before = _batches(_metrics(served))
    client = tritongrpc.InferenceServerClient(served.grpc)

    def one(i: int) -> numpy.ndarray:
        rows = numpy.array([[i, -i]] * (i % 3 + 1), dtype=numpy.float32)
        tensor = tritongrpc.InferInput("rows", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        return client.infer("stamper", [tensor]).as_numpy("stamped")  # type: ignore[no-any-return]

    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(16)))
    finally:
        client.close()
    for i, got in enumerate(results):
        assert got.dtype == numpy.float32
        assert got.tolist() == [[10 * i + 1, -10 * i + 1]] * (i % 3 + 1)
    count, total = _batches(_metrics(served))
    assert total - before[1] == 16  # every call went through the batcher
    assert count - before[0] < 16  # and some were merged


async def test_concurrent_http_calls_are_batched_and_split_back(
    served: Served,
) -> None:
    before = _batches(_metrics(served))

    async def one(client: AsyncHttpClient, i: int) -> numpy.ndarray:
        rows = numpy.array([[i, 0.5]] * (i % 2 + 1), dtype=numpy.float32)
        tensor = tritonhttp.InferInput("rows", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = await client.infer("stamper", [tensor])
        return result.as_numpy("stamped")  # type: ignore[no-any-return]

    client = AsyncHttpClient(served.http)
    try:
        results = await asyncio.gather(*(one(client, i) for i in range(16)))
    finally:
        await client.close()
    for i, got in enumerate(results):
        assert got.tolist() == [[10 * i + 1, 6.0]] * (i % 2 + 1)
    count, total = _batches(_metrics(served))
    assert total - before[1] == 16
    assert count - before[0] < 16


def test_metrics_count_grpc_calls(served: Served) -> None:
    client = tritongrpc.InferenceServerClient(served.grpc)
    try:
        rows = numpy.zeros((1, 4))
        tensor = tritongrpc.InferInput("input-0", [1, 4], "FP64")
        tensor.set_data_from_numpy(rows)
        endpoint = "/inference.GRPCInferenceService/ModelInfer"

        def calls(text: str, status: str) -> float:
            try:
                return _sample(
                    text, "deepserve_requests_total", endpoint=endpoint, status=status
                )
            except AssertionError:
                return 0.0

        before = _metrics(served)
        client.infer("iris_clf", [tensor])
        client.infer("iris_clf", [tensor])
        with pytest.raises(InferenceServerException):
            client.infer("nosuchmodel", [tensor])
        after = _metrics(served)
    finally:
        client.close()
    assert calls(after, "OK") - calls(before, "OK") == 2
    assert calls(after, "NOT_FOUND") - calls(before, "NOT_FOUND") == 1


# -- tokens --------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(fake_site: Path) -> Iterator[Listening]:
    """A server of its own, with a token: the demo model over both protocols."""
    grpc_port = free_port()
    srv = Server(
        ["--model-name", "demo", "--grpc-port", str(grpc_port), "--auth-token", TOKEN],
        subprocess_env(fake_site),
    )
    try:
        srv.wait_ready("", timeout=120)
        yield Listening(srv, f"127.0.0.1:{grpc_port}")
    finally:
        srv.stop()


def demo_input(lib: Any, text: bytes = b"a b c") -> list[Any]:
    tensor = lib.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(numpy.array([text], dtype=object))
    return [tensor]


async def test_http_inference_needs_the_token(guarded: Listening) -> None:
    url = guarded.base + "/v2/models/demo/infer"
    request = json.dumps(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a b"]}
            ]
        }
    ).encode()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, got, body = await _post(url, request, headers=headers)
        assert status == 401, body
        assert got["Content-Type"].startswith("application/json")
        error = json.loads(body)
        assert list(error) == ["error"] and error["error"]
    status, _, body = await _post(
        url, request, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200, body
    outputs = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
    assert outputs["words"] == [2]

    client = tritonhttp.InferenceServerClient(guarded.http)
    try:
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as info:
            client.infer("demo", demo_input(tritonhttp))
        assert info.value.status() == "401"
        result = client.infer(
            "demo", demo_input(tritonhttp), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert result.as_numpy("words").tolist() == [3]
    finally:
        client.close()


def test_grpc_inference_needs_the_token(guarded: Listening) -> None:
    client = tritongrpc.InferenceServerClient(guarded.grpc)
    try:
        # the health probes are open
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("demo")
        for headers in (None, {"authorization": "Bearer wrong"}):
            with pytest.raises(InferenceServerException) as info:
                client.infer("demo", demo_input(tritongrpc), headers=headers)
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        # the metadata is public, as GET /v2/models/demo is over HTTP
        assert client.get_model_metadata("demo").name == "demo"
        good = {"authorization": f"Bearer {TOKEN}"}
        result = client.infer("demo", demo_input(tritongrpc), headers=good)
        assert result.as_numpy("words").tolist() == [3]
    finally:
        client.close()


# -- shutdown --------------------------------------------------------------------


def test_an_inference_in_flight_completes_on_shutdown(
    slow_site: Path, tmp_path: Path
) -> None:
    grpc_port = free_port()
    srv = Server(
        ["--model-name", "slow", "--grpc-port", str(grpc_port)],
        subprocess_env(slow_site),
    )
    client = tritongrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    marker, release = tmp_path / "running", tmp_path / "release"
    marker.mkdir()
    inputs = []
    for name, value in (("marker", marker), ("release", release)):
        tensor = tritongrpc.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(numpy.array([str(value).encode()], dtype=object))
        inputs.append(tensor)
    try:
        srv.wait_ready("", timeout=120)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(client.infer, "slow", inputs)
            _until(lambda: any(marker.iterdir()))  # the prediction runs
            srv.proc.send_signal(signal.SIGTERM)
            _until(lambda: not _ready(srv))  # the server is shutting down
            release.touch()
            result = call.result(timeout=30)
        assert result.as_numpy("slept").tolist() == [0.0]
        srv.finish()
        assert srv.proc.returncode == 0, srv.output
    finally:
        client.close()
        srv.stop()


def _ready(srv: Server) -> bool:
    try:
        get_json(srv.base + "/v2/health/ready")
    except OSError:
        return False
    return True


def _until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)
