"""The protocol's operations (``InferenceService``) over a real registry:
two stored versions of one model and an installed DEEPaaS-style model,
each started in its executor."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy
import pytest
import pytest_asyncio

import deepserve
from deepserve import adapters, loader, picklable_model
from deepserve.exceptions import BadInput, ModelFailed, ModelNotFound, NotRunning
from deepserve.model import TensorSpec
from deepserve.oip import tensors
from deepserve.oip.service import InferenceService
from deepserve.oip.types import InferRequest, RequestedOutput, Tensor
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ExecutorSettings
from deepserve.store import Store

SIGNATURES = ["predict", "count", "fail"]


def tensor(name: str, datatype: str, data: list[Any], shape: list[int]) -> Tensor:
    obj = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    return tensors.from_json(obj)


def rows(*values: float) -> Tensor:
    return tensor("input-0", "FP64", list(values), [len(values), 1])


class Served:
    """A started registry, its service and the two versions' names."""

    def __init__(self, registry: Registry, upload_dir: Path, old: str, new: str):
        self.registry = registry
        self.upload_dir = upload_dir
        self.service = InferenceService(registry, upload_dir=str(upload_dir))
        self.old = old
        self.new = new


async def start(root: Path, kind: str) -> Served:
    import fake_stored  # on sys.path through the fake_site fixture

    store = Store(root / "store")
    versions = []
    for factor in (1.0, 2.0):
        saved = picklable_model.save_model(
            "twin", fake_stored.Scaler(factor), signatures=SIGNATURES, store=store
        )
        versions.append(str(saved.tag))
        time.sleep(0.01)  # distinct creation times
    settings = ExecutorSettings(kind=kind)
    available = loader.discover(loader.installed_entry_points())
    refs = [
        *loader.select({}, versions, store=store),
        *loader.select(available, ["oldstyle"]),
    ]
    registry = Registry(
        [ServedModel.create(r, adapters.build(r), settings) for r in refs]
    )
    await registry.start()
    uploads = root / "uploads"
    uploads.mkdir()
    old, new = (tag.partition(":")[2] for tag in versions)
    return Served(registry, uploads, old, new)


@pytest_asyncio.fixture(params=["inline", "thread"])
async def served(
    request: pytest.FixtureRequest, fake_site: Path, tmp_path: Path
) -> AsyncIterator[Served]:
    s = await start(tmp_path, request.param)
    try:
        yield s
    finally:
        await s.registry.close()


def test_server_metadata(served: Served) -> None:
    meta = served.service.server_metadata()
    assert (meta.name, meta.version) == ("deepserve", deepserve.__version__)
    assert meta.extensions == ("binary_tensor_data",)
    assert served.service.live() and served.service.ready()


def test_model_metadata_lists_versions_default_first(served: Served) -> None:
    meta = served.service.model_metadata("twin")
    assert meta.name == "twin"
    assert meta.versions == (served.new, served.old)
    assert meta.platform == "cloudpickle"
    # the same list, whichever version is asked about
    assert served.service.model_metadata("twin", served.old).versions == meta.versions
    assert meta.to_json()["versions"] == [served.new, served.old]


def test_an_installed_model_lists_no_version(served: Served) -> None:
    meta = served.service.model_metadata("oldstyle")
    assert meta.versions == ()
    assert meta.platform == "deepserve"
    assert TensorSpec("text", "BYTES", (1,)) in meta.inputs
    assert TensorSpec("tags", "BYTES", (-1,)) in meta.inputs
    with pytest.raises(ModelNotFound):
        served.service.model_metadata("oldstyle", "1")


@pytest.mark.parametrize(
    ("name", "version", "named"),
    [("nope", None, "nope"), ("nope", "x", "nope"), ("twin", "x", "twin:x")],
)
def test_unknown_models_and_versions(
    served: Served, name: str, version: str | None, named: str
) -> None:
    for call in (served.service.model_ready, served.service.model_metadata):
        with pytest.raises(ModelNotFound, match=named):
            call(name, version)


async def test_readiness_is_per_version(served: Served) -> None:
    service = served.service
    assert service.model_ready("twin", served.old)
    assert service.model_ready("twin", served.new)
    served.registry.version("twin", served.old).drain()
    assert not service.model_ready("twin", served.old)
    assert service.model_ready("twin") and service.model_ready("twin", served.new)
    assert not service.ready()
    with pytest.raises(NotRunning, match="shutting down"):
        await service.infer(InferRequest("twin", [rows(1.0)], served.old))
    # the other version still answers
    answer = await service.infer(InferRequest("twin", [rows(1.0)], served.new))
    assert answer.outputs[0].data.tolist() == [[2.0]]


async def test_each_version_answers_and_says_which(served: Served) -> None:
    service = served.service
    for version, expected in ((served.old, 3.0), (served.new, 6.0), (None, 6.0)):
        answer = await service.infer(InferRequest("twin", [rows(3.0)], version))
        assert answer.model_name == "twin"
        assert answer.model_version == (version or served.new)
        (out,) = answer.outputs
        assert (out.name, out.datatype, out.shape) == ("output-0", "FP64", (1, 1))
        assert out.data.tolist() == [[expected]]


async def test_id_and_parameters_are_echoed(served: Served) -> None:
    request = InferRequest(
        "twin", [rows(1.0)], id="req-42", parameters={"a": 1, "b": "two"}
    )
    answer = await served.service.infer(request)
    assert answer.id == "req-42"
    assert answer.parameters == {"a": 1, "b": "two"}
    assert answer.parameters is not request.parameters
    plain = await served.service.infer(InferRequest("twin", [rows(1.0)]))
    assert (plain.id, plain.parameters) == (None, {})


async def test_requested_outputs_in_their_order_without_transport_parameters(
    served: Served,
) -> None:
    request = InferRequest(
        "twin",
        [rows(1.0, 2.0, 3.0)],
        parameters={"signature": "count"},
        outputs=[
            RequestedOutput("calls", {"binary_data": True}),
            RequestedOutput("rows"),
        ],
    )
    answer = await served.service.infer(request)
    assert [o.name for o in answer.outputs] == ["calls", "rows"]
    # binary_data tells the transport how to send; it is not echoed
    assert answer.outputs[0].parameters == {}
    assert answer.outputs[1].parameters == {}
    assert answer.outputs[1].data.tolist() == [3]
    # one of them only
    request.outputs = [RequestedOutput("rows")]
    answer = await served.service.infer(request)
    assert [o.name for o in answer.outputs] == ["rows"]
    # all of them, in the model's order, when none is named
    request.outputs = None
    answer = await served.service.infer(request)
    assert [o.name for o in answer.outputs] == ["rows", "calls"]


async def test_an_unknown_requested_output_is_refused(served: Served) -> None:
    request = InferRequest(
        "twin",
        [rows(1.0)],
        parameters={"signature": "count"},
        outputs=[RequestedOutput("rows"), RequestedOutput("zzz")],
    )
    with pytest.raises(
        BadInput, match="Unknown output 'zzz'; this model gave: rows, calls"
    ) as info:
        await served.service.infer(request)
    assert info.value.errors == {"outputs.zzz": ["Unknown output."]}


async def test_a_failing_model_is_a_model_failure(served: Served) -> None:
    request = InferRequest("twin", [rows(1.0)], parameters={"signature": "fail"})
    with pytest.raises(
        ModelFailed, match="Model 'twin' failed with ValueError"
    ) as info:
        await served.service.infer(request)
    assert "cannot handle" in info.value.detail
    # the model still answers afterwards
    answer = await served.service.infer(InferRequest("twin", [rows(1.0)]))
    assert answer.outputs[0].data.tolist() == [[2.0]]


async def test_a_deepaas_model_with_a_file_and_its_files_are_removed(
    served: Served,
) -> None:
    content = numpy.empty(1, dtype=object)
    content[:] = [b"\x00file content\xff"]
    request = InferRequest(
        "oldstyle",
        [
            tensor("text", "BYTES", ["ab"], [1]),
            tensor("count", "INT64", [2], [1]),
            tensor("tags", "BYTES", ["x", "y"], [2]),
            Tensor("data", "BYTES", (1,), content),
        ],
    )
    answer = await served.service.infer(request)
    assert answer.model_version is None
    out = {o.name: o for o in answer.outputs}
    assert out["text"].data.tolist() == [b"abab"]
    assert out["tags"].data.tolist() == [b"x", b"y"]
    assert (out["warm_calls"].datatype, out["warm_calls"].shape) == ("INT64", (1,))
    described = json.loads(out["file"].data[0])
    assert described["sha256"] == hashlib.sha256(b"\x00file content\xff").hexdigest()
    # the upload was written under upload_dir, and is gone
    assert Path(described["path"]).is_relative_to(served.upload_dir)
    assert list(served.upload_dir.iterdir()) == []


async def test_bad_input_is_refused_before_the_model_runs(served: Served) -> None:
    with pytest.raises(BadInput, match="'count': Not a valid integer"):
        await served.service.infer(
            InferRequest("oldstyle", [tensor("count", "BYTES", ["many"], [1])])
        )
    with pytest.raises(ModelNotFound, match="twin:nope"):
        await served.service.infer(InferRequest("twin", [rows(1.0)], "nope"))
