"""Turn whatever a loader found into the one :class:`~deepserve.model.Model`."""

from __future__ import annotations

from deepserve.adapters.deepaas import DeepaasModel
from deepserve.adapters.quiet import deepaas_code
from deepserve.adapters.stored import StoredModelAdapter
from deepserve.exceptions import DeepserveError, LoaderError
from deepserve.loader import STORE, ModelRef, import_target
from deepserve.model import Model
from deepserve.store import Store


def build(ref: ModelRef) -> Model:
    """Import ``ref`` and wrap it; the same call runs in the server and workers.

    :raises LoaderError: when the model cannot be imported or is malformed.
    """
    if ref.source == STORE:
        try:
            stored = Store(ref.store or "").get(ref.target)
        except DeepserveError as exc:
            raise LoaderError(f"Model '{ref.name}' ({ref.target}): {exc}") from exc
        return StoredModelAdapter(ref.name, stored)
    with deepaas_code():
        return DeepaasModel(ref.name, import_target(ref))


__all__ = ["DeepaasModel", "StoredModelAdapter", "build"]
