"""Tensors inferred at save time: from an input example run once through
each method, and from what fitting left on scikit-learn estimators."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy
import pytest

from deepserve import class_model, picklable_model, python_model
from deepserve import sklearn as ds_sklearn
from deepserve.model import TensorSpec
from deepserve.store import Signature, Store
from deepserve.store.inference import CannotInfer, datatype_of, tensors_of
from tests.store.kinds import Doubler, Incrementer, Scorer, Tokenizing

LOGGER = "deepserve.store.frameworks"


def spec(name: str, datatype: str, *shape: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(name, datatype, shape),)


# -- pure mapping --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "datatype", "shape"),
    [
        ([[1.5, 2.0]], "FP64", (-1, 2)),
        ([1, 2, 3], "INT64", (-1,)),
        (["a", "bc"], "BYTES", (-1,)),
        ([b"a"], "BYTES", (-1,)),
        ([True, False], "BOOL", (-1,)),
        (numpy.zeros((2, 3), dtype=numpy.float32), "FP32", (-1, 3)),
        (numpy.zeros((2,), dtype=numpy.uint8), "UINT8", (-1,)),
        (numpy.array(["x", "y"], dtype=object), "BYTES", (-1,)),
        (7, "INT64", ()),
        ("one text", "BYTES", ()),
    ],
)
def test_values_map_to_tensors(value: Any, datatype: str, shape: tuple[int, ...]):
    assert tensors_of(value, "t", 0) == (TensorSpec("t", datatype, shape),)


def test_the_batch_dimension_becomes_any_size() -> None:
    assert tensors_of(numpy.zeros((2, 3, 4)), "t", 1) == spec("t", "FP64", 2, -1, 4)
    # A value with no such dimension keeps its shape.
    assert tensors_of([1, 2], "t", 1) == spec("t", "INT64", 2)


def test_a_mapping_is_one_tensor_per_key() -> None:
    assert tensors_of({"a": [1.0], "b": ["x", "y"]}, "t", 0) == (
        TensorSpec("a", "FP64", (-1,)),
        TensorSpec("b", "BYTES", (-1,)),
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([{"a": 1}], "'t': it holds dict values, not text"),
        ([[1, 2], [3]], "'t': not an array"),
        ([1 + 2j], "'t': no tensor datatype for NumPy's complex128"),
        (None, "'t': None is not a tensor"),
        ({}, "an empty mapping has no tensors"),
        ({1: [1]}, "mapping key 1 is not a tensor name"),
        (numpy.array([], dtype=object), "an empty object array has no datatype"),
    ],
)
def test_values_that_do_not_map_say_why(value: Any, problem: str) -> None:
    with pytest.raises(CannotInfer) as caught:
        tensors_of(value, "t", 0)
    assert problem in str(caught.value)


def test_datatypes_of_every_numpy_kind() -> None:
    assert [datatype_of(t) for t in ("i1", "i2", "i4", "i8")] == [
        "INT8",
        "INT16",
        "INT32",
        "INT64",
    ]
    assert [datatype_of(t) for t in ("u2", "u4", "u8", "f2", "f8", "?", "U3")] == [
        "UINT16",
        "UINT32",
        "UINT64",
        "FP16",
        "FP64",
        "BOOL",
        "BYTES",
    ]
    with pytest.raises(CannotInfer, match="datetime64"):
        datatype_of("M8[s]")


# -- scikit-learn --------------------------------------------------------------


def iris() -> Any:
    from sklearn import datasets

    return datasets.load_iris()


def test_sklearn_classifier_with_integer_classes(store: Store) -> None:
    from sklearn.linear_model import LogisticRegression

    data = iris()
    clf = LogisticRegression(max_iter=500).fit(data.data, data.target)
    saved = ds_sklearn.save_model(
        "iris", clf, signatures=["predict", "predict_proba"], store=store
    )
    sigs = store.get(saved.tag).info.signatures
    assert sigs["predict"] == Signature(
        inputs=spec("input-0", "FP64", -1, 4), outputs=spec("output-0", "INT64", -1)
    )
    assert sigs["predict_proba"].inputs == spec("input-0", "FP64", -1, 4)
    assert sigs["predict_proba"].outputs == spec("output-0", "FP64", -1, 3)
    # What was inferred is what the model does.
    assert clf.predict(data.data[:2]).dtype == numpy.int64
    assert clf.predict_proba(data.data[:2]).shape == (2, 3)


def test_sklearn_classifier_with_string_classes(store: Store) -> None:
    from sklearn.svm import SVC

    data = iris()
    clf = SVC().fit(data.data[:, :2], data.target_names[data.target])
    saved = ds_sklearn.save_model(
        "iris", clf, signatures=["predict", "decision_function"], store=store
    )
    sigs = saved.info.signatures
    assert sigs["predict"].inputs == spec("input-0", "FP64", -1, 2)
    assert sigs["predict"].outputs == spec("output-0", "BYTES", -1)
    assert sigs["decision_function"].outputs == spec("output-0", "FP64", -1, 3)


def test_sklearn_regressors_one_and_many_targets(store: Store) -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.tree import DecisionTreeRegressor

    data = iris()
    one = ds_sklearn.save_model(
        "r", LinearRegression().fit(data.data, data.target), store=store
    )
    assert one.info.signatures["predict"] == Signature(
        inputs=spec("input-0", "FP64", -1, 4), outputs=spec("output-0", "FP64", -1)
    )
    many = ds_sklearn.save_model(
        "r", LinearRegression().fit(data.data[:, :3], data.data[:, 2:]), store=store
    )
    assert many.info.signatures["predict"].outputs == spec("output-0", "FP64", -1, 2)
    tree = DecisionTreeRegressor().fit(data.data, data.data[:, 1:])
    saved = ds_sklearn.save_model("t", tree, store=store)
    assert saved.info.signatures["predict"].outputs == spec("output-0", "FP64", -1, 3)
    assert tree.predict(data.data[:2]).shape == (2, 3)


def test_sklearn_input_example_wins(store: Store) -> None:
    from sklearn.linear_model import LinearRegression

    data = iris()
    model = LinearRegression().fit(data.data, data.target)
    saved = ds_sklearn.save_model(
        "r", model, input_example=data.data[:3].astype(numpy.float32), store=store
    )
    assert saved.info.signatures["predict"] == Signature(
        inputs=spec("input-0", "FP32", -1, 4), outputs=spec("output-0", "FP64", -1)
    )


def test_sklearn_unfitted_saves_without_tensors_and_warns(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from sklearn.svm import SVC

    with caplog.at_level(logging.WARNING, LOGGER):
        saved = ds_sklearn.save_model("u", SVC(), store=store)
    assert saved.info.signatures["predict"] == Signature()
    assert f"{saved.tag}: signature 'predict': tensors not inferred: SVC does not" in (
        caplog.text
    )
    assert "(is it fitted?)" in caplog.text


def test_sklearn_transform_has_inputs_and_says_why_not_outputs(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(iris().data)
    with caplog.at_level(logging.WARNING, LOGGER):
        saved = ds_sklearn.save_model(
            "s", scaler, signatures=["transform"], store=store
        )
    assert saved.info.signatures["transform"] == Signature()
    assert "the output of StandardScaler.transform is not known" in caplog.text
    with_example = ds_sklearn.save_model(
        "s",
        scaler,
        signatures=["transform"],
        input_example=[[1, 2, 3, 4]],
        store=store,
    )
    assert with_example.info.signatures["transform"] == Signature(
        inputs=spec("input-0", "INT64", -1, 4), outputs=spec("output-0", "FP64", -1, 4)
    )


# -- input examples ------------------------------------------------------------


def test_picklable_with_an_input_example(store: Store) -> None:
    saved = picklable_model.save_model(
        "d",
        Doubler(),
        signatures={"predict": {"batchable": True}, "negate": {}},
        input_example=[1, 2, 3],
        store=store,
    )
    sigs = store.get(saved.tag).info.signatures
    assert sigs["predict"] == Signature(
        batchable=True,
        inputs=spec("input-0", "INT64", -1),
        outputs=spec("output-0", "INT64", -1),
    )
    assert sigs["negate"].outputs == spec("output-0", "INT64", -1)
    called = picklable_model.save_model(
        "inc", Incrementer(), input_example=1.5, store=store
    )
    assert called.info.signatures["__call__"] == Signature(
        inputs=spec("input-0", "FP64"), outputs=spec("output-0", "FP64")
    )


def test_without_an_example_nothing_is_inferred_or_warned(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        saved = picklable_model.save_model("d", Doubler(), store=store)
    assert saved.info.signatures["predict"] == Signature()
    assert caplog.records == []


def test_declared_tensors_are_kept_and_the_rest_inferred(store: Store) -> None:
    declared = [{"name": "numbers", "datatype": "INT32", "shape": [-1]}]
    saved = picklable_model.save_model(
        "d",
        Doubler(),
        signatures={"predict": {"inputs": declared}},
        input_example=[1, 2],
        store=store,
    )
    assert saved.info.signatures["predict"] == Signature(
        inputs=spec("numbers", "INT32", -1), outputs=spec("output-0", "INT64", -1)
    )


def test_an_example_that_raises_saves_without_tensors_and_warns(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        saved = picklable_model.save_model("d", Doubler(), input_example=5, store=store)
    assert saved.info.signatures["predict"] == Signature()
    assert picklable_model.load_model(saved.tag, store=store).factor == 2
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"{saved.tag}: signature 'predict': tensors not inferred: the input "
        "example raised TypeError: 'int' object is not iterable"
    )


def test_a_result_that_does_not_map_saves_without_tensors_and_warns(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        saved = picklable_model.save_model(
            "f", lambda x: [{"v": x}], input_example=[1], store=store
        )
    assert saved.info.signatures["__call__"] == Signature()
    assert (
        "tensors not inferred: the result of the input example: 'output-0': it "
        "holds dict values, not text"
    ) in caplog.text


def test_inferred_shapes_that_do_not_batch_are_dropped(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # A batchable method whose example result is a scalar cannot be split.
    with caplog.at_level(logging.WARNING, LOGGER):
        saved = picklable_model.save_model(
            "s",
            sum,
            signatures={"__call__": {"batchable": True}},
            input_example=[1, 2],
            store=store,
        )
    assert saved.info.signatures["__call__"] == Signature(batchable=True)
    assert "what was inferred does not fit" in caplog.text
    assert "'output-0': shape [] has no dimension 0" in caplog.text


def test_python_model_with_an_input_example(store: Store, tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("hello big world")
    model = Tokenizing()
    saved = python_model.save_model(
        "tok",
        model,
        artifacts={"vocab": vocab},
        input_example="hello world",
        store=store,
    )
    assert saved.info.signatures["predict"] == Signature(
        inputs=spec("input-0", "BYTES"), outputs=spec("output-0", "INT64", -1)
    )
    # The example ran through a loaded copy: the caller's object is as it was,
    # and so is the stored one.
    assert (model.loads, model.vocab) == (0, [])
    assert python_model.load_model(saved.tag, store=store).unwrap().loads == 1


def test_class_model_with_an_input_example(store: Store, tmp_path: Path) -> None:
    offset = tmp_path / "offset.txt"
    offset.write_text("0.5")
    saved = class_model.save_model(
        "scorer",
        Scorer,
        artifacts={"offset": offset},
        input_example=[[0.1, 0.2], [1.0, 2.0]],
        store=store,
    )
    assert saved.info.signatures["predict"] == Signature(
        inputs=spec("input-0", "FP64", -1, 2),
        outputs=(
            TensorSpec("score", "FP64", (-1,)),
            TensorSpec("label", "BYTES", (-1,)),
        ),
    )


def test_a_class_model_that_cannot_be_built_saves_and_warns(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    offset = tmp_path / "offset.txt"
    offset.write_text("not a number")
    with caplog.at_level(logging.WARNING, LOGGER):
        saved = class_model.save_model(
            "scorer",
            Scorer,
            artifacts={"offset": offset},
            input_example=[[0.1]],
            store=store,
        )
    assert saved.info.signatures["predict"] == Signature()
    assert (
        f"{saved.tag}: tensors not inferred: building the model to run the input "
        "example raised ValueError"
    ) in caplog.text
