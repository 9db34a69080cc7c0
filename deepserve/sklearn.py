"""Save and load scikit-learn estimators.

``obj`` is a scikit-learn estimator. The versions of scikit-learn, numpy
and scipy are recorded; loading under other versions warns with
:class:`~deepserve.store.StoreWarning`. Needs ``pip install 'deepserve[sklearn]'``.

Every function takes ``store=``; the default is
:func:`deepserve.models.default_store`.
"""

from __future__ import annotations

from deepserve.models import FrameworkFunctions
from deepserve.store.frameworks import SKLEARN as _FRAMEWORK

__all__ = ["get", "load_model", "save_model"]


_FUNCTIONS = FrameworkFunctions(_FRAMEWORK)
save_model = _FUNCTIONS.save_model
load_model = _FUNCTIONS.load_model
get = _FUNCTIONS.get
