"""Save python models that carry their own pre- and post-processing.

``obj`` is an instance with ``predict(context, model_input)`` and,
optionally, ``load_context(context)`` (see :class:`PythonModel`);
:func:`load_model` calls ``load_context`` once and returns a
:class:`LoadedPythonModel` whose ``predict(model_input)`` passes the
context.

Every function takes ``store=``; the default is
:func:`deepserve.models.default_store`.
"""

from __future__ import annotations

from deepserve.models import FrameworkFunctions
from deepserve.store.frameworks import PYTHON_MODEL as _FRAMEWORK
from deepserve.store.pyfunc import LoadedPythonModel, PythonModel, PythonModelContext

__all__ = [
    "LoadedPythonModel",
    "PythonModel",
    "PythonModelContext",
    "get",
    "load_model",
    "save_model",
]


_FUNCTIONS = FrameworkFunctions(_FRAMEWORK)
save_model = _FUNCTIONS.save_model
load_model = _FUNCTIONS.load_model
get = _FUNCTIONS.get
