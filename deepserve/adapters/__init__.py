"""Turn whatever a loader found into the one :class:`~deepserve.model.Model`."""

from __future__ import annotations

from deepserve.adapters.deepaas import DeepaasModel
from deepserve.loader import ModelRef, import_target
from deepserve.model import Model


def build(ref: ModelRef) -> Model:
    """Import ``ref`` and wrap it; the same call runs in the server and workers.

    :raises LoaderError: when the model cannot be imported or is malformed.
    """
    return DeepaasModel(ref.name, import_target(ref))


__all__ = ["DeepaasModel", "build"]
