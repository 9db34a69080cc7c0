"""Declared input and output tensors: checked, kept in model.json and in
archives; entries saved before they existed still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deepserve import picklable_model
from deepserve.exceptions import InvalidModel, StoreError
from deepserve.model import TensorSpec
from deepserve.store import Signature, Store, StoredModel
from tests.store.kinds import Doubler

INPUTS = [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
OUTPUTS = [
    {"name": "label", "datatype": "BYTES", "shape": [-1]},
    {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
]


def declared(store: Store, **options: Any) -> StoredModel:
    return picklable_model.save_model(
        "declared",
        Doubler(),
        signatures={"predict": {"inputs": INPUTS, "outputs": OUTPUTS, **options}},
        store=store,
    )


def test_declared_tensors_round_trip_through_model_json(store: Store) -> None:
    saved = declared(store, batchable=True)
    expected = Signature(
        batchable=True,
        batch_dim=0,
        inputs=(TensorSpec("input-0", "FP64", (-1, 4)),),
        outputs=(
            TensorSpec("label", "BYTES", (-1,)),
            TensorSpec("scores", "FP32", (-1, 3)),
        ),
    )
    assert saved.info.signatures == {"predict": expected}
    on_disk = json.loads((saved.path / "model.json").read_text())
    assert on_disk["format"] == 1
    assert on_disk["signatures"]["predict"] == {
        "batchable": True,
        "batch_dim": 0,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }
    assert StoredModel.read(saved.path).info.signatures == {"predict": expected}


def test_tensor_specs_are_accepted_as_declarations(store: Store) -> None:
    spec = TensorSpec("x", "INT32", (2, -1))
    saved = picklable_model.save_model(
        "d", Doubler(), signatures={"predict": {"inputs": [spec]}}, store=store
    )
    assert saved.info.signatures["predict"].inputs == (spec,)
    assert saved.info.signatures["predict"].outputs is None
    assert (
        "outputs"
        not in json.loads((saved.path / "model.json").read_text())["signatures"][
            "predict"
        ]
    )


def test_declared_tensors_travel_in_archives(store: Store, tmp_path: Path) -> None:
    saved = declared(store)
    archive = store.export_model(saved.tag, tmp_path)
    fresh = Store(tmp_path / "fresh")
    imported = fresh.import_model(archive)
    assert imported.info.signatures == saved.info.signatures
    assert imported.info.signatures["predict"].outputs is not None


def test_an_old_model_json_without_tensors_loads(store: Store) -> None:
    saved = picklable_model.save_model("old", Doubler(), store=store)
    path = saved.path / "model.json"
    data = json.loads(path.read_text())
    # What deepserve wrote before tensors existed.
    data["signatures"] = {"predict": {"batchable": False, "batch_dim": 0}}
    path.write_text(json.dumps(data))
    info = StoredModel.read(saved.path).info
    assert info.signatures == {"predict": Signature()}
    assert info.signatures["predict"].inputs is None
    assert info.signatures["predict"].outputs is None
    assert picklable_model.load_model(saved.tag, store=store).predict([1]) == [2]


def tensor(**fields: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": [-1], **fields}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"inputs": "x"}, "'predict': inputs: must be a list of tensors, not str"),
        ({"outputs": {"name": "x"}}, "outputs: must be a list of tensors, not dict"),
        ({"inputs": []}, "'predict': inputs: name at least one tensor"),
        ({"inputs": [["x", "FP32", [1]]]}, "inputs[0]: a tensor is a mapping"),
        ({"inputs": [tensor(dims=[1])]}, "inputs[0]: unknown field(s) dims"),
        (
            {"inputs": [{"name": "x", "shape": [1]}]},
            "inputs[0]: missing field(s) datatype",
        ),
        ({"inputs": [tensor(name="")]}, "inputs[0]: name must be a non-empty"),
        ({"inputs": [tensor(name=3)]}, "inputs[0]: name must be a non-empty"),
        (
            {"inputs": [tensor(datatype="float64")]},
            "inputs[0] ('x'): unknown datatype 'float64'; did you mean 'FP64'?",
        ),
        (
            {"outputs": [tensor(datatype="FP46")]},
            "outputs[0] ('x'): unknown datatype 'FP46'; did you mean 'FP64'?",
        ),
        (
            {"inputs": [tensor(datatype="int")]},
            "unknown datatype 'int'; did you mean 'INT64'?",
        ),
        ({"inputs": [tensor(datatype="TENSOR")]}, "unknown datatype 'TENSOR' (one of"),
        ({"inputs": [tensor(datatype=8)]}, "datatype must be a string, not int"),
        ({"inputs": [tensor(shape="-1")]}, "shape must be a list of integers"),
        ({"inputs": [tensor(shape=[-1, 2.5])]}, "dimensions are integers, not float"),
        ({"inputs": [tensor(shape=[True])]}, "dimensions are integers, not bool"),
        (
            {"inputs": [tensor(shape=[-1, -2])]},
            "shape [-1, -2]: a dimension is -1 (any size) or a size >= 0, not -2",
        ),
        (
            {"outputs": [tensor(), tensor(datatype="INT8")]},
            "'predict': outputs: two tensors are named 'x'",
        ),
        (
            {"batchable": True, "inputs": [tensor(shape=[4, 3])]},
            "inputs: 'x': shape [4, 3] fixes dimension 0 to 4",
        ),
        (
            {"batchable": True, "batch_dim": 1, "outputs": [tensor(shape=[-1])]},
            "outputs: 'x': shape [-1] has no dimension 1",
        ),
        ({"inputs": [tensor()], "output": []}, "unknown option(s) output"),
    ],
)
def test_bad_declarations_fail_the_save_naming_the_problem(
    store: Store, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidModel) as caught:
        picklable_model.save_model(
            "bad", Doubler(), signatures={"predict": options}, store=store
        )
    assert message in str(caught.value)
    assert str(caught.value).startswith("signatures: 'predict': ")
    assert store.list() == []


def test_zero_sized_dimensions_and_scalars_are_allowed(store: Store) -> None:
    saved = picklable_model.save_model(
        "ok",
        Doubler(),
        signatures={
            "predict": {
                "inputs": [tensor(shape=[0, -1])],
                "outputs": [tensor(shape=[])],
            }
        },
        store=store,
    )
    assert saved.info.signatures["predict"].inputs == (
        TensorSpec("x", "FP32", (0, -1)),
    )
    assert saved.info.signatures["predict"].outputs == (TensorSpec("x", "FP32", ()),)


def test_a_damaged_tensor_in_model_json_is_a_store_error(store: Store) -> None:
    saved = declared(store)
    path = saved.path / "model.json"
    data = json.loads(path.read_text())
    data["signatures"]["predict"]["inputs"][0]["shape"] = [-1, "4"]
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError) as caught:
        StoredModel.read(saved.path)
    assert str(caught.value).startswith(
        "model.json: signatures: 'predict': inputs[0] ('input-0'): shape"
    )
