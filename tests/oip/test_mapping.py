"""How each kind of model takes and gives tensors (``deepserve.oip.mapping``).

DEEPaaS-style models are real adapters (:class:`DeepaasModel`) of objects
defined here, whose ``predict`` runs on what the plan hands it; stored
models are real store entries (picklable objects, a scikit-learn
estimator) served by the real stored adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy
import pytest
from marshmallow import fields, validate

from deepserve import picklable_model
from deepserve import sklearn as ds_sklearn
from deepserve.adapters.deepaas import DeepaasModel
from deepserve.adapters.stored import StoredModelAdapter
from deepserve.exceptions import BadInput, BadModelOutput
from deepserve.model import ReturnedFile, TensorSpec
from deepserve.oip import tensors
from deepserve.oip.mapping import (
    OUTPUT,
    ArgumentPlan,
    StoredPlan,
    plan_for,
    scratch_space,
)
from deepserve.oip.types import InferRequest, Tensor
from deepserve.store import Store


def tensor(
    name: str, datatype: str, data: list[Any], shape: list[int] | None = None
) -> Tensor:
    """A request tensor, decoded from JSON as the REST layer decodes it."""
    shape = [len(data)] if shape is None else shape
    obj = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    return tensors.from_json(obj)


def raw_bytes(name: str, *items: bytes) -> Tensor:
    """A ``BYTES`` tensor of arbitrary bytes (as binary data brings them)."""
    data = numpy.empty(len(items), dtype=object)
    data[:] = list(items)
    return Tensor(name, "BYTES", (len(items),), data)


def request(*inputs: Tensor, **parameters: Any) -> InferRequest:
    return InferRequest("m", list(inputs), parameters=parameters)


def refused(plan: Any, req: InferRequest, scratch: str = "/nonexistent") -> BadInput:
    with pytest.raises(BadInput) as info:
        plan.arguments(req, scratch)
    return info.value


# -- DEEPaaS-style models --------------------------------------------------------


class Everything:
    """A DEEPaaS-style model with an argument of every kind; ``predict``
    answers what it got (a file by its content)."""

    def get_predict_args(self) -> dict[str, fields.Field]:
        return {
            "count": fields.Int(required=True),
            "ratio": fields.Float(load_default=0.5),
            "loud": fields.Bool(load_default=False),
            "colour": fields.Str(
                load_default="red", validate=validate.OneOf(["red", "green"])
            ),
            "sizes": fields.List(fields.Int(), load_default=[]),
            "words": fields.List(fields.Str(), load_default=[]),
            "options": fields.Dict(load_default={}),
            "extra": fields.Raw(load_default=None, allow_none=True),
            "data": fields.Raw(
                load_default=None,
                allow_none=True,
                metadata={"type": "file", "location": "form"},
            ),
            "accept": fields.Str(
                load_default="text/plain",
                validate=validate.OneOf(["application/json", "text/plain"]),
            ),
        }

    def predict(self, **kwargs: Any) -> dict[str, Any]:
        got = dict(kwargs)
        upload = got.pop("data")
        if upload is not None:
            got["data"] = Path(upload.filename).read_bytes().decode("latin-1")
            got["data_name"] = upload.name
        return got


class WithFiles:
    """Takes a required file and a list of files."""

    def get_predict_args(self) -> dict[str, fields.Field]:
        return {
            "image": fields.Raw(required=True, metadata={"type": "file"}),
            "more": fields.List(
                fields.Raw(), load_default=[], metadata={"type": "file"}
            ),
        }

    def predict(self, **kwargs: Any) -> dict[str, Any]:
        return {
            "image": Path(kwargs["image"].filename).read_bytes().decode(),
            "more": [Path(u.filename).read_bytes().decode() for u in kwargs["more"]],
        }


class Typed:
    """Declares a response schema."""

    schema = {
        "label": fields.Str(),
        "score": fields.Float(),
        "count": fields.Int(data_key="n"),
        "ok": fields.Bool(),
        "info": fields.Dict(),
    }

    def get_predict_args(self) -> dict[str, fields.Field]:
        return {}

    def predict(self, **kwargs: Any) -> dict[str, Any]:
        return {"label": "cat", "score": 1, "n": 3, "ok": True, "info": {"a": 1}}


def argument_plan(obj: object) -> tuple[ArgumentPlan, DeepaasModel]:
    model = DeepaasModel("m", obj)
    plan = plan_for(model)
    assert isinstance(plan, ArgumentPlan)
    return plan, model


def test_every_kind_of_argument_reaches_predict(tmp_path: Path) -> None:
    plan, model = argument_plan(Everything())
    req = request(
        tensor("count", "INT64", [3]),
        tensor("ratio", "FP64", [0.25]),
        tensor("loud", "BOOL", [True]),
        tensor("colour", "BYTES", ["green"]),
        tensor("sizes", "INT64", [[1, 2], [3, 4]], [2, 2]),
        tensor("words", "BYTES", ["a", "é"]),
        tensor("options", "BYTES", ['{"k": [1, 2]}']),
        tensor("extra", "BYTES", ["plain text"]),
        raw_bytes("data", b"\x00\xffbinary"),
    )
    kwargs = plan.arguments(req, str(tmp_path))
    # the negotiated accept is JSON, whatever the model's default
    assert kwargs["accept"] == "application/json"
    got = model.call("predict", kwargs)
    assert got == {
        "count": 3,
        "ratio": 0.25,
        "loud": True,
        "colour": "green",
        "sizes": [1, 2, 3, 4],  # a list argument takes every element
        "words": ["a", "é"],
        "options": {"k": [1, 2]},  # JSON text, loaded
        "extra": "plain text",  # not JSON: the text itself
        "data": "\x00\xffbinary",
        "data_name": "data",
        "accept": "application/json",
    }
    # the file was written under the scratch directory
    assert Path(kwargs["data"].filename).parent == tmp_path


def test_defaults_apply_to_arguments_not_given(tmp_path: Path) -> None:
    plan, _ = argument_plan(Everything())
    kwargs = plan.arguments(request(tensor("count", "INT64", [1])), str(tmp_path))
    assert kwargs == {
        "count": 1,
        "ratio": 0.5,
        "loud": False,
        "colour": "red",
        "sizes": [],
        "words": [],
        "options": {},
        "extra": None,
        "data": None,
        "accept": "application/json",
    }
    assert list(tmp_path.iterdir()) == []


def test_a_number_is_taken_by_a_float_argument(tmp_path: Path) -> None:
    plan, _ = argument_plan(Everything())
    req = request(tensor("count", "INT32", [1]), tensor("ratio", "INT64", [2]))
    assert plan.arguments(req, str(tmp_path))["ratio"] == 2.0


@pytest.mark.parametrize(
    ("given", "field", "problem"),
    [
        ([], "count", "Missing data for required field"),
        ([tensor("colour", "BYTES", ["blue"])], "colour", "Must be one of"),
        ([tensor("count", "BYTES", ["three"])], "count", "Not a valid integer"),
        ([tensor("options", "BYTES", ["[1, 2]"])], "options", "Not a valid mapping"),
    ],
)
def test_values_are_validated_by_the_models_fields(
    tmp_path: Path, given: list[Tensor], field: str, problem: str
) -> None:
    plan, _ = argument_plan(Everything())
    if field != "count":
        given = [tensor("count", "INT64", [1]), *given]
    error = refused(plan, request(*given), str(tmp_path))
    assert f"'{field}'" in error.message
    assert problem in error.message
    assert list(error.errors) == [f"inputs.{field}"]
    assert problem in str(error.errors[f"inputs.{field}"])


def test_an_unknown_input_is_refused_by_name() -> None:
    plan, _ = argument_plan(Everything())
    error = refused(
        plan, request(tensor("count", "INT64", [1]), tensor("zzz", "INT64", [1]))
    )
    assert "Unknown input 'zzz'" in error.message
    assert "count" in error.message and "ratio" in error.message
    assert error.errors == {"inputs.zzz": ["Unknown input."]}


def test_accept_is_no_input() -> None:
    # negotiated, not read: the protocol always asks for JSON
    plan, _ = argument_plan(Everything())
    assert "accept" not in [spec.name for spec in plan.inputs]
    error = refused(
        plan,
        request(
            tensor("count", "INT64", [1]), tensor("accept", "BYTES", ["text/plain"])
        ),
    )
    assert error.errors == {"inputs.accept": ["Unknown input."]}


def test_an_input_given_twice_is_refused() -> None:
    plan, _ = argument_plan(Everything())
    error = refused(
        plan, request(tensor("count", "INT64", [1]), tensor("count", "INT64", [2]))
    )
    assert error.errors == {"inputs.count": ["Given twice."]}


def test_one_value_expected_but_three_given() -> None:
    plan, _ = argument_plan(Everything())
    error = refused(plan, request(tensor("count", "INT64", [1, 2, 3])))
    assert "'count' holds 3 elements" in error.message
    assert "shape [1]" in error.message
    assert error.errors == {"inputs.count": ["Takes one value."]}


def test_text_that_is_not_utf8_is_refused() -> None:
    plan, _ = argument_plan(Everything())
    error = refused(
        plan, request(tensor("count", "INT64", [1]), raw_bytes("colour", b"\xff\xfe"))
    )
    assert error.message == "Input 'colour' is not UTF-8 text"
    assert error.errors == {"inputs.colour": ["Not UTF-8 text."]}


def test_files_are_written_for_the_model(tmp_path: Path) -> None:
    plan, model = argument_plan(WithFiles())
    req = request(raw_bytes("image", b"one"), raw_bytes("more", b"two", b"three"))
    kwargs = plan.arguments(req, str(tmp_path))
    assert model.call("predict", kwargs) == {"image": "one", "more": ["two", "three"]}
    assert len(list(tmp_path.iterdir())) == 3


def test_a_missing_file_a_numeric_file_and_too_many_files_are_refused(
    tmp_path: Path,
) -> None:
    plan, _ = argument_plan(WithFiles())
    missing = refused(plan, request(), str(tmp_path))
    assert "Missing input 'image'" in missing.message
    assert missing.errors == {"inputs.image": ["Missing data for required field."]}

    numeric = refused(plan, request(tensor("image", "FP32", [1.0])), str(tmp_path))
    assert "'image' is a file: send it as BYTES, not FP32" in numeric.message
    assert numeric.errors == {"inputs.image": ["A file: BYTES expected."]}

    two = refused(plan, request(raw_bytes("image", b"a", b"b")), str(tmp_path))
    assert "'image' holds 2 files" in two.message


def test_a_scratch_space_is_removed_afterwards(tmp_path: Path) -> None:
    plan, _ = argument_plan(WithFiles())
    with scratch_space(str(tmp_path)) as scratch:
        kwargs = plan.arguments(request(raw_bytes("image", b"x")), scratch)
        assert Path(kwargs["image"].filename).is_file()
    assert list(tmp_path.iterdir()) == []


def test_metadata_lists_every_argument_and_no_output_without_a_schema() -> None:
    plan, _ = argument_plan(Everything())
    assert plan.platform == "deepserve"
    assert plan.inputs == (
        TensorSpec("count", "INT64", (1,)),
        TensorSpec("ratio", "FP64", (1,)),
        TensorSpec("loud", "BOOL", (1,)),
        TensorSpec("colour", "BYTES", (1,)),
        TensorSpec("sizes", "INT64", (-1,)),
        TensorSpec("words", "BYTES", (-1,)),
        TensorSpec("options", "BYTES", (1,)),
        TensorSpec("extra", "BYTES", (1,)),
        TensorSpec("data", "BYTES", (1,)),
    )
    assert plan.outputs == ()
    files, _ = argument_plan(WithFiles())
    assert files.inputs == (
        TensorSpec("image", "BYTES", (1,)),
        TensorSpec("more", "BYTES", (-1,)),
    )


def test_outputs_come_from_a_response_schema() -> None:
    plan, model = argument_plan(Typed())
    assert plan.inputs == ()
    assert plan.outputs == (
        TensorSpec("label", "BYTES", (-1,)),
        TensorSpec("score", "FP64", (-1,)),
        TensorSpec("n", "INT64", (-1,)),
        TensorSpec("ok", "BOOL", (-1,)),
        TensorSpec("info", "BYTES", (-1,)),
    )
    outputs = {t.name: t for t in plan.results(model.call("predict", {}), request())}
    # the declared datatypes are used: the integer score is FP64
    assert outputs["score"].datatype == "FP64"
    assert outputs["score"].data.tolist() == [1.0]
    assert outputs["n"].datatype == "INT64"
    assert outputs["ok"].data.tolist() == [True]
    assert json.loads(outputs["info"].data[0]) == {"a": 1}


def test_a_mapping_result_gives_one_tensor_per_key() -> None:
    plan, _ = argument_plan(Everything())
    result = {
        "int": 3,
        "float": 2.5,
        "ints": [1, 2, 3],
        "matrix": [[1.0, 2.0], [3.0, 4.0]],
        "text": "héllo",
        "texts": ["a", "b"],
        "flag": False,
        "nested": {"a": [1, {"b": None}]},
        "ragged": [[1], [2, 3]],
        "mixed": [1, "a"],
        "array": numpy.arange(6, dtype=numpy.int16).reshape(2, 3),
    }
    out = {t.name: t for t in plan.results(result, request())}
    assert list(out) == list(result)
    summary = {n: (t.datatype, t.shape) for n, t in out.items()}
    assert summary == {
        "int": ("INT64", (1,)),
        "float": ("FP64", (1,)),
        "ints": ("INT64", (3,)),
        "matrix": ("FP64", (2, 2)),
        "text": ("BYTES", (1,)),
        "texts": ("BYTES", (2,)),
        "flag": ("BOOL", (1,)),
        "nested": ("BYTES", (1,)),
        "ragged": ("BYTES", (1,)),
        "mixed": ("BYTES", (1,)),
        "array": ("INT16", (2, 3)),
    }
    assert out["int"].data.tolist() == [3]
    assert out["matrix"].data.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert out["text"].data.tolist() == ["héllo".encode()]
    assert out["texts"].data.tolist() == [b"a", b"b"]
    assert out["flag"].data.tolist() == [False]
    assert json.loads(out["nested"].data[0]) == {"a": [1, {"b": None}]}
    assert json.loads(out["ragged"].data[0]) == [[1], [2, 3]]
    assert json.loads(out["mixed"].data[0]) == [1, "a"]


def test_a_result_that_is_not_a_mapping_is_output_0() -> None:
    plan, _ = argument_plan(Everything())
    (scalar,) = plan.results(4.5, request())
    assert (scalar.name, scalar.datatype, scalar.shape) == (OUTPUT, "FP64", (1,))
    (listed,) = plan.results([1, 2], request())
    assert (listed.name, listed.shape, listed.data.tolist()) == (OUTPUT, (2,), [1, 2])
    (raw,) = plan.results(b"\x00\x01", request())
    assert (raw.datatype, raw.data.tolist()) == ("BYTES", [b"\x00\x01"])


def test_a_returned_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"\x89PNG\x00")
    plan, _ = argument_plan(Everything())
    (out,) = plan.results(ReturnedFile(filename=str(path)), request())
    assert (out.name, out.datatype, out.data.tolist()) == (
        OUTPUT,
        "BYTES",
        [b"\x89PNG\x00"],
    )

    # a file returned by the model's own predict, through the adapter
    class Returns:
        def predict(self) -> Any:
            return open(path, "rb")

    plan, model = argument_plan(Returns())
    (out,) = plan.results(
        model.call("predict", plan.arguments(request(), str(tmp_path))), request()
    )
    assert out.data.tolist() == [b"\x89PNG\x00"]


def test_none_is_one_json_null() -> None:
    # as over the DEEPaaS API, where it is JSON's null
    plan, _ = argument_plan(Everything())
    (out,) = plan.results({"label": None}, request())
    assert (out.datatype, out.shape, out.data.tolist()) == ("BYTES", (1,), [b"null"])


def test_what_cannot_be_a_tensor_is_a_bad_model_output() -> None:
    plan, _ = argument_plan(Everything())
    with pytest.raises(BadModelOutput, match="output 'x' \\(object\\) is not a tensor"):
        plan.results({"x": object()}, request())
    typed, _ = argument_plan(Typed())
    # declared INT64 and BOOL: a float is not truncated, 2 is no flag
    with pytest.raises(BadModelOutput, match="output 'n' \\(float\\)"):
        typed.results({"n": 1.5}, request())
    with pytest.raises(BadModelOutput, match="output 'ok' \\(int\\)"):
        typed.results({"ok": 2}, request())


# -- stored models -----------------------------------------------------------------


class Doubler:
    def predict(self, data: Any) -> Any:
        return (numpy.asarray(data) * 2).tolist()

    def total(self, data: Any) -> float:
        return float(numpy.asarray(data).sum())

    def describe(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            return {
                k: [type(x).__name__ for x in numpy.asarray(v).reshape(-1)]
                for k, v in data.items()
            }
        return {
            "type": type(data).__name__,
            "items": [type(x).__name__ for x in numpy.asarray(data).reshape(-1)],
        }


def stored_plan(
    root: Path, name: str, obj: Any, **save: Any
) -> tuple[StoredPlan, StoredModelAdapter]:
    store = Store(root)
    saved = picklable_model.save_model(name, obj, store=store, **save)
    model = StoredModelAdapter(name, store.get(str(saved.tag)))
    plan = plan_for(model)
    assert isinstance(plan, StoredPlan)
    return plan, model


DECLARED = {
    "predict": {
        "inputs": [{"name": "rows", "datatype": "FP64", "shape": [-1, 2]}],
        "outputs": [{"name": "doubled", "datatype": "FP64", "shape": [-1, 2]}],
    },
    "describe": {
        "inputs": [
            {"name": "a", "datatype": "INT64", "shape": [-1]},
            {"name": "b", "datatype": "BYTES", "shape": [-1]},
        ],
    },
    "total": {},
}


def test_declared_tensors_are_the_metadata_and_the_contract(tmp_path: Path) -> None:
    plan, model = stored_plan(tmp_path, "doubler", Doubler(), signatures=DECLARED)
    assert plan.platform == "cloudpickle"
    assert plan.inputs == (TensorSpec("rows", "FP64", (-1, 2)),)
    assert plan.outputs == (TensorSpec("doubled", "FP64", (-1, 2)),)

    good = request(tensor("rows", "FP64", [1, 2, 3, 4], [2, 2]))
    kwargs = plan.arguments(good, "/nonexistent")
    assert kwargs["signature"] == "predict"
    assert isinstance(kwargs["data"], numpy.ndarray)
    (out,) = plan.results(model.call("predict", kwargs), good)
    assert (out.name, out.datatype, out.shape) == ("doubled", "FP64", (2, 2))
    assert out.data.tolist() == [[2.0, 4.0], [6.0, 8.0]]


@pytest.mark.parametrize(
    ("given", "problem", "field"),
    [
        (
            [tensor("rows", "FP32", [1, 2], [1, 2])],
            "datatype must be FP64, got FP32",
            "rows",
        ),
        ([tensor("rows", "FP64", [1, 2, 3], [1, 3])], "shape must be [-1, 2]", "rows"),
        ([tensor("rows", "FP64", [1, 2])], "shape must be [-1, 2]", "rows"),
        (
            [tensor("other", "FP64", [1, 2], [1, 2])],
            "Unknown input 'other'",
            "inputs.other",
        ),
        ([], "Missing input 'rows'", "inputs.rows"),
    ],
)
def test_declared_tensors_are_checked(
    tmp_path: Path, given: list[Tensor], problem: str, field: str
) -> None:
    plan, _ = stored_plan(tmp_path, "doubler", Doubler(), signatures=DECLARED)
    error = refused(plan, request(*given))
    assert problem in error.message
    assert field in error.errors


def test_the_signature_parameter_picks_another_signature(tmp_path: Path) -> None:
    plan, model = stored_plan(tmp_path, "doubler", Doubler(), signatures=DECLARED)
    req = request(
        tensor("a", "INT64", [1, 2]),
        tensor("b", "BYTES", ["x", "é"]),
        signature="describe",
    )
    kwargs = plan.arguments(req, "/nonexistent")
    assert kwargs["signature"] == "describe"
    # several inputs: a mapping; BYTES elements arrive as text
    assert set(kwargs["data"]) == {"a", "b"}
    out = {t.name: t for t in plan.results(model.call("predict", kwargs), req)}
    assert out["b"].data.tolist() == [b"str", b"str"]
    assert out["a"].data.tolist() == [b"int64", b"int64"]
    # checked against that signature's tensors, not the default's
    error = refused(
        plan, request(tensor("rows", "FP64", [1, 2], [1, 2]), signature="describe")
    )
    assert "Unknown input 'rows'" in error.message


def test_the_outputs_are_those_of_the_signature_that_ran(tmp_path: Path) -> None:
    plan, model = stored_plan(tmp_path, "doubler", Doubler(), signatures=DECLARED)
    # 'total' declared no tensor: its one output is output-0, not the
    # default signature's 'doubled'
    req = request(tensor("rows", "FP64", [1.5, 2.0]), signature="total")
    (out,) = plan.results(model.call("predict", plan.arguments(req, "/x")), req)
    assert (out.name, out.datatype, out.data.tolist()) == (OUTPUT, "FP64", [3.5])


@pytest.mark.parametrize("signature", ["nope", 3, ["predict"], {"a": 1}, None])
def test_an_unknown_signature_is_refused(tmp_path: Path, signature: Any) -> None:
    plan, _ = stored_plan(tmp_path, "doubler", Doubler(), signatures=DECLARED)
    error = refused(
        plan, request(tensor("rows", "FP64", [1, 2], [1, 2]), signature=signature)
    )
    assert f"Unknown signature {signature!r}" in error.message
    assert "predict, describe, total" in error.message
    assert error.errors == {"parameters.signature": ["Unknown signature."]}


def test_undeclared_tensors_any_single_input_is_the_data(tmp_path: Path) -> None:
    plan, model = stored_plan(
        tmp_path, "free", Doubler(), signatures=["predict", "describe"]
    )
    assert (plan.inputs, plan.outputs) == ((), ())
    req = request(tensor("whatever", "INT8", [1, 2, 3]))
    kwargs = plan.arguments(req, "/x")
    assert kwargs["data"].dtype == numpy.int8
    (out,) = plan.results(model.call("predict", kwargs), req)
    assert (out.name, out.datatype, out.data.tolist()) == (OUTPUT, "INT64", [2, 4, 6])

    req = request(raw_bytes("t", b"caf\xc3\xa9", b"\xff"), signature="describe")
    text = plan.arguments(req, "/x")
    # UTF-8 elements as str, others left as bytes
    assert text["data"].tolist() == ["café", b"\xff"]
    out = {t.name: t for t in plan.results(model.call("predict", text), req)}
    assert out["type"].data.tolist() == [b"ndarray"]

    several = plan.arguments(
        request(
            tensor("x", "FP32", [1.0]),
            tensor("y", "BOOL", [True]),
            signature="describe",
        ),
        "/x",
    )
    assert set(several["data"]) == {"x", "y"}
    assert several["data"]["y"].dtype == numpy.bool_


def test_undeclared_tensors_no_input_is_refused(tmp_path: Path) -> None:
    plan, _ = stored_plan(tmp_path, "free", Doubler(), signatures=["predict"])
    error = refused(plan, request())
    assert "no input tensor" in error.message
    assert error.errors == {"inputs": ["Give at least one input tensor."]}


def test_a_scikit_learn_model_infers_its_tensors(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    rows = numpy.array([[0.0, 0.0], [0.1, 0.2], [5.0, 5.0], [5.1, 4.9]])
    clf = LogisticRegression().fit(rows, [0, 0, 1, 1])
    store = Store(tmp_path)
    saved = ds_sklearn.save_model(
        "clf", clf, signatures=["predict", "predict_proba"], store=store
    )
    model = StoredModelAdapter("clf", store.get(str(saved.tag)))
    plan = plan_for(model)
    assert plan.platform == "sklearn"
    assert plan.inputs == (TensorSpec("input-0", "FP64", (-1, 2)),)
    assert plan.outputs == (TensorSpec("output-0", "INT64", (-1,)),)
    req = request(tensor("input-0", "FP64", [0, 0, 5, 5], [2, 2]))
    (out,) = plan.results(model.call("predict", plan.arguments(req, "/x")), req)
    assert (out.name, out.datatype, out.data.tolist()) == ("output-0", "INT64", [0, 1])
    # predict_proba's outputs are its own (FP64 [-1, 2]), not predict's INT64
    req = request(tensor("input-0", "FP64", [0, 0], [1, 2]), signature="predict_proba")
    (out,) = plan.results(model.call("predict", plan.arguments(req, "/x")), req)
    assert (out.name, out.datatype, out.shape) == ("output-0", "FP64", (1, 2))
    assert out.data.sum() == pytest.approx(1.0)
    with pytest.raises(BadInput, match="shape must be \\[-1, 2\\]"):
        plan.arguments(request(tensor("input-0", "FP64", [1, 2, 3], [1, 3])), "/x")


def test_marshmallow_missing_default_is_no_value(tmp_path: Path) -> None:
    # a file argument that is optional and has no default is left out
    class Optional:
        def get_predict_args(self) -> dict[str, fields.Field]:
            return {"f": fields.Raw(metadata={"type": "file"})}

        def predict(self, **kwargs: Any) -> Any:
            return sorted(kwargs)

    plan, _ = argument_plan(Optional())
    assert plan.arguments(request(), str(tmp_path)) == {}
