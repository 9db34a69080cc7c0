"""Save any picklable Python object and call it through named methods.

``obj`` is any object cloudpickle can pickle. ``signatures`` names the
methods to serve (``__call__`` included), as a list of names or a mapping
``{"method": {"batchable": bool, "batch_dim": int}}``; by default
``predict`` when the object has one, else ``__call__``.

Every function takes ``store=``; the default is
:func:`deepserve.models.default_store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from deepserve.models import resolve_store
from deepserve.store import Store, StoredModel
from deepserve.store.frameworks import PICKLABLE as _FRAMEWORK
from deepserve.store.frameworks import Artifacts, PathList, Signatures

__all__ = ["get", "load_model", "save_model"]


def save_model(
    name: str,
    obj: Any,
    *,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    custom_objects: Mapping[str, Any] | None = None,
    signatures: Signatures | None = None,
    artifacts: Artifacts | None = None,
    code_paths: PathList | None = None,
    requirements: Iterable[str] | None = None,
    store: Store | None = None,
) -> StoredModel:
    """Save ``obj`` as a new version of the model ``name``.

    :param name: the model's name (lowercase letters, digits, ``_-.``).
    :param obj: the model (see the module's description).
    :param labels: string -> string labels for managing models.
    :param metadata: JSON-able data: metrics, data set versions...
    :param custom_objects: name -> object, pickled with cloudpickle and
        given back by :attr:`StoredModel.custom_objects`.
    :param signatures: the methods to serve, as names or
        ``{"method": {"batchable": bool, "batch_dim": int}}``.
    :param artifacts: key -> file or directory, copied into the entry.
    :param code_paths: files or directories of source code, copied into the
        entry and importable when the model loads.
    :param requirements: pip requirement specifiers, checked at load.
    :returns: the stored model; its ``tag`` is ``name:version``.
    :raises BadTag: when ``name`` is not a valid name.
    :raises InvalidModel: naming the argument that cannot be saved.
    """
    return _FRAMEWORK.save(
        resolve_store(store),
        name,
        obj,
        labels=labels,
        metadata=metadata,
        custom_objects=custom_objects,
        signatures=signatures,
        artifacts=artifacts,
        code_paths=code_paths,
        requirements=requirements,
    )


def load_model(tag: str | StoredModel, *, store: Store | None = None) -> Any:
    """Load the model named by ``tag``.

    Version differences with the save are warned about with
    :class:`~deepserve.store.StoreWarning`.

    :raises WrongModule: when the model was saved by another module.
    """
    return _FRAMEWORK.load(resolve_store(store), tag)


def get(tag: str | StoredModel, *, store: Store | None = None) -> StoredModel:
    """The stored model named by ``tag``, checked to be saved by this module.

    :raises ModelTagNotFound: when the store has no such model.
    :raises WrongModule: when the model was saved by another module.
    """
    return _FRAMEWORK.get(resolve_store(store), tag)
