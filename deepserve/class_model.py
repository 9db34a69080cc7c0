"""Save class models: ``__init__(self, artifacts)`` and ``predict(self, data)``.

``obj`` is the CLASS, not an instance. ``artifacts`` maps keys to files or
directories, copied into the store entry; :func:`load_model` builds the
class with ``artifacts`` mapping the same keys to the copies' absolute
paths.

Every function takes ``store=``; the default is
:func:`deepserve.models.default_store`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Any

from deepserve.exceptions import InvalidModel
from deepserve.models import resolve_store
from deepserve.store import Store, StoredModel
from deepserve.store.frameworks import CLASS_MODEL as _FRAMEWORK
from deepserve.store.frameworks import Artifacts, PathList, Signatures

__all__ = ["fetch_artifacts", "get", "load_model", "save_model"]


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


def fetch_artifacts(
    tag: str | StoredModel,
    keys: Iterable[str] | None = None,
    *,
    store: Store | None = None,
) -> dict[str, str]:
    """Artifact key -> absolute path in the store, to build the class by hand.

    For local tests, as with Verta's ``fetch_artifacts``::

        artifacts = deepserve.class_model.fetch_artifacts("embedder:latest")
        model = Embedder(artifacts=artifacts)

    :param keys: the keys wanted; all of them by default.
    :raises InvalidModel: when a key was not saved with the model.
    """
    paths = get(tag, store=store).artifacts
    if keys is None:
        return paths
    wanted = [keys] if isinstance(keys, str) else builtins.list(keys)
    missing = [key for key in wanted if key not in paths]
    if missing:
        raise InvalidModel(
            f"no artifact {', '.join(map(repr, missing))} in this model; "
            f"it has: {', '.join(sorted(paths)) or 'none'}"
        )
    return {key: paths[key] for key in wanted}
