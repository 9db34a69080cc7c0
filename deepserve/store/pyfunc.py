"""Python models: objects that carry their own pre- and post-processing.

A python model (in the spirit of MLflow's ``PythonModel``) is an instance
with ``predict(context, model_input)`` and, optionally,
``load_context(context)``, called once when the model loads, where it opens
its artifacts (a tokenizer, weights...) through ``context.artifacts``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class PythonModelContext:
    """What a python model is given when it loads and predicts.

    :param artifacts: artifact key -> absolute path of the file or directory
        in the store entry.
    """

    artifacts: Mapping[str, str]


class PythonModel:
    """Optional base class for python models.

    Subclass it and implement :meth:`predict`; override :meth:`load_context`
    to load artifacts once, when the model is loaded.
    """

    def load_context(self, context: PythonModelContext) -> None:
        """Called once when the model loads, before any prediction."""

    def predict(self, context: PythonModelContext, model_input: Any) -> Any:
        """Return the prediction for ``model_input``."""
        raise NotImplementedError


class LoadedPythonModel:
    """A loaded python model: call :meth:`predict` with the input only.

    :param model: the python model, whose ``load_context`` has been called.
    :param context: the context it was loaded with.
    """

    def __init__(self, model: Any, context: PythonModelContext) -> None:
        self._model = model
        #: The context handed to the model.
        self.context = context

    def predict(self, model_input: Any) -> Any:
        """The model's prediction for ``model_input``."""
        return self._model.predict(self.context, model_input)

    def unwrap(self) -> Any:
        """The python model object itself."""
        return self._model

    def __repr__(self) -> str:
        return f"LoadedPythonModel({type(self._model).__qualname__})"
