"""Inferring a signature's tensors at save time.

From an input example (run once through the method: its tensors are the
inputs, what comes back the outputs), or for scikit-learn estimators from
what fitting left on them (``n_features_in_``, ``classes_``...). A value
maps to one tensor named ``input-0`` / ``output-0``, a mapping to one
tensor per key; the batch dimension becomes ``-1``. Anything that does not
map raises :class:`CannotInfer`, saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from deepserve.model import TensorSpec

INPUT = "input-0"
OUTPUT = "output-0"

#: What an inference found: the inputs and the outputs, ``None`` when unknown.
Found = tuple[tuple[TensorSpec, ...] | None, tuple[TensorSpec, ...] | None]


class CannotInfer(Exception):
    """A value's tensors cannot be inferred; the message says why."""


def datatype_of(dtype: Any, values: Any = None) -> str:
    """The protocol's datatype for a NumPy ``dtype``.

    :param values: the array, to check that an ``object`` array holds text.
    :raises CannotInfer: for dtypes the protocol has no datatype for.
    """
    import numpy

    dtype = numpy.dtype(dtype)
    bits = dtype.itemsize * 8
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind == "u" and bits <= 64:
        return f"UINT{bits}"
    if dtype.kind == "i" and bits <= 64:
        return f"INT{bits}"
    if dtype.kind == "f" and bits in (16, 32, 64):
        return f"FP{bits}"
    if dtype.kind in "US":
        return "BYTES"
    if dtype.kind == "O" and values is not None:
        kinds = {type(item) for item in numpy.asarray(values).flat}
        odd = sorted(k.__name__ for k in kinds if not issubclass(k, str | bytes))
        if not kinds:
            raise CannotInfer("an empty object array has no datatype")
        if odd:
            raise CannotInfer(f"it holds {', '.join(odd)} values, not text")
        return "BYTES"
    raise CannotInfer(f"no tensor datatype for NumPy's {dtype}")


def tensors_of(value: Any, default: str, batch_dim: int) -> tuple[TensorSpec, ...]:
    """The tensors ``value`` is: one named ``default``, or one per key of a
    mapping; dimension ``batch_dim`` (when there is one) is ``-1``.

    :raises CannotInfer: naming the tensor and why.
    """
    if isinstance(value, Mapping):
        if not value:
            raise CannotInfer("an empty mapping has no tensors")
        bad = [key for key in value if not isinstance(key, str) or not key]
        if bad:
            raise CannotInfer(f"mapping key {bad[0]!r} is not a tensor name")
        return tuple(_tensor(key, item, batch_dim) for key, item in value.items())
    return (_tensor(default, value, batch_dim),)


def _tensor(name: str, value: Any, batch_dim: int) -> TensorSpec:
    import numpy

    if value is None:
        raise CannotInfer(f"'{name}': None is not a tensor")
    try:
        array = numpy.asarray(value)
    except (ValueError, TypeError) as error:
        raise CannotInfer(f"'{name}': not an array: {error}") from None
    try:
        datatype = datatype_of(array.dtype, array)
    except CannotInfer as error:
        raise CannotInfer(f"'{name}': {error}") from None
    shape = [int(dim) for dim in array.shape]
    if len(shape) > batch_dim:
        shape[batch_dim] = -1
    return TensorSpec(name, datatype, tuple(shape))


def from_example(func: Callable[[Any], Any], example: Any, batch_dim: int) -> Found:
    """The inputs ``example`` is and the outputs ``func(example)`` gives.

    :raises CannotInfer: when ``func`` raises or a value does not map.
    """
    try:
        inputs = tensors_of(example, INPUT, batch_dim)
    except CannotInfer as error:
        raise CannotInfer(f"the input example: {error}") from None
    try:
        result = func(example)
    except Exception as error:
        raise CannotInfer(
            f"the input example raised {type(error).__name__}: {error}"
        ) from None
    try:
        outputs = tensors_of(result, OUTPUT, batch_dim)
    except CannotInfer as error:
        raise CannotInfer(f"the result of the input example: {error}") from None
    return inputs, outputs


#: Methods whose output a fitted classifier's ``classes_`` tells.
_SCORES = ("predict_proba", "predict_log_proba", "decision_function")


def from_estimator(estimator: Any, method: str) -> Found:
    """The tensors of a fitted scikit-learn estimator's ``method``: input
    ``[-1, n_features_in_]`` FP64; ``predict`` of a classifier gives its
    classes' datatype, of a regressor FP64; ``predict_proba`` and the like
    FP64 per class.

    :raises CannotInfer: when neither can be told (not fitted, a method
        whose output the estimator does not tell).
    """
    from sklearn.base import is_regressor  # type: ignore[import-untyped]

    n_features = getattr(estimator, "n_features_in_", None)
    inputs = None
    if isinstance(n_features, int) and n_features > 0:
        inputs = (TensorSpec(INPUT, "FP64", (-1, n_features)),)
    classes = getattr(estimator, "classes_", None)
    outputs = None
    if classes is not None and method == "predict":
        outputs = (_class_output(classes),)
    elif classes is not None and method in _SCORES:
        outputs = (_score_output(classes, method),)
    elif is_regressor(estimator) and method == "predict" and inputs is not None:
        n_outputs = _regression_outputs(estimator)
        shape = (-1,) if n_outputs is None else (-1, n_outputs)
        outputs = (TensorSpec(OUTPUT, "FP64", shape),)
    if inputs is None and outputs is None:
        raise CannotInfer(
            f"{type(estimator).__name__} does not tell its tensors (is it "
            "fitted?); pass input_example="
        )
    if outputs is None:
        raise CannotInfer(
            f"the output of {type(estimator).__name__}.{method} is not known "
            "without an input example; pass input_example="
        )
    return inputs, outputs


def _class_output(classes: Any) -> TensorSpec:
    import numpy

    if isinstance(classes, list):  # one array of classes per output
        datatypes = {datatype_of(c.dtype, c) for c in classes}
        if len(datatypes) != 1:
            raise CannotInfer(
                f"the outputs' classes differ in datatype ({sorted(datatypes)})"
            )
        return TensorSpec(OUTPUT, datatypes.pop(), (-1, len(classes)))
    array = numpy.asarray(classes)
    return TensorSpec(OUTPUT, datatype_of(array.dtype, array), (-1,))


def _score_output(classes: Any, method: str) -> TensorSpec:
    if isinstance(classes, list):
        raise CannotInfer(
            f"{method} of a multi-output classifier gives one array per output"
        )
    n_classes = len(classes)
    if method == "decision_function" and n_classes == 2:
        return TensorSpec(OUTPUT, "FP64", (-1,))
    return TensorSpec(OUTPUT, "FP64", (-1, n_classes))


def _regression_outputs(estimator: Any) -> int | None:
    """How many targets a regressor predicts per row; ``None`` for one, as a
    1-D result."""
    shape: tuple[int, ...] = getattr(getattr(estimator, "coef_", None), "shape", ())
    if len(shape) == 2:  # fitted on 2-D targets
        return int(shape[0])
    n_outputs = getattr(estimator, "n_outputs_", 1)
    return int(n_outputs) if isinstance(n_outputs, int) and n_outputs > 1 else None
