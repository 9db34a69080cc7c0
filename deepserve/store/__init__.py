"""The versioned model store.

Models are saved by the framework modules (:mod:`deepserve.picklable_model`,
:mod:`deepserve.sklearn`, :mod:`deepserve.class_model`,
:mod:`deepserve.python_model`) into a :class:`Store`, a directory of
``<name>/<version>/`` entries, and managed with :mod:`deepserve.models`.
"""

from __future__ import annotations

from deepserve.exceptions import StoreWarning
from deepserve.store.entry import ModelInfo, Signature, StoredModel
from deepserve.store.local import Store
from deepserve.store.tag import Tag

__all__ = ["ModelInfo", "Signature", "Store", "StoreWarning", "StoredModel", "Tag"]
