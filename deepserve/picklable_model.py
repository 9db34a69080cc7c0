"""Save any picklable Python object and call it through named methods.

``obj`` is any object cloudpickle can pickle. ``signatures`` names the
methods to serve (``__call__`` included), as a list of names or a mapping
``{"method": {"batchable": bool, "batch_dim": int}}``; by default
``predict`` when the object has one, else ``__call__``.

Every function takes ``store=``; the default is
:func:`deepserve.models.default_store`.
"""

from __future__ import annotations

from deepserve.models import FrameworkFunctions
from deepserve.store.frameworks import PICKLABLE as _FRAMEWORK

__all__ = ["get", "load_model", "save_model"]


_FUNCTIONS = FrameworkFunctions(_FRAMEWORK)
save_model = _FUNCTIONS.save_model
load_model = _FUNCTIONS.load_model
get = _FUNCTIONS.get
