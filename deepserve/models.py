"""Manage the model store: get, list, delete, export and import models.

Every function works on the store at ``$DEEPSERVE_HOME/models``
(``~/deepserve/models`` when ``DEEPSERVE_HOME`` is unset), read when the
function is called, or on the store passed as ``store=``::

    import deepserve.models

    model = deepserve.models.get("iris_clf:latest")
    print(model.tag, model.path, model.info.labels)
    path = deepserve.models.export_model("iris_clf:latest", "/tmp")
    deepserve.models.import_model(path, store=Store("/srv/models"))

Models are saved with the ``save_model`` of a framework module, e.g.
:func:`deepserve.sklearn.save_model`.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepserve.store import Store, StoredModel

if TYPE_CHECKING:  # annotations only: the command line need not import them
    from deepserve.store.frameworks import (
        Artifacts,
        Framework,
        PathList,
        Signatures,
    )
    from deepserve.store.local import Progress

#: Environment variable naming deepserve's home directory.
HOME_ENV = "DEEPSERVE_HOME"
DEFAULT_HOME = "~/deepserve"


def default_store() -> Store:
    """The store at ``$DEEPSERVE_HOME/models`` (default ``~/deepserve/models``).

    The variable is read on every call, so it can be changed at run time.
    """
    home = os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Store(Path(home).expanduser() / "models")


def resolve_store(store: Store | None) -> Store:
    """``store``, or the default store when it is ``None``."""
    return store if store is not None else default_store()


def _tag(tag: str | StoredModel) -> str:
    return tag.tag if isinstance(tag, StoredModel) else tag


def get(tag: str | StoredModel, *, store: Store | None = None) -> StoredModel:
    """The stored model named by ``tag`` (``name``, ``name:latest`` or
    ``name:version``).

    :raises BadTag: when ``tag`` is not a valid tag.
    :raises ModelTagNotFound: when the store has no such model.
    """
    return resolve_store(store).get(_tag(tag))


def list(
    name: str | None = None, *, store: Store | None = None
) -> builtins.list[StoredModel]:
    """Every stored model, or every version of ``name``, oldest first."""
    return resolve_store(store).list(name)


def delete(tag: str | StoredModel, *, store: Store | None = None) -> StoredModel:
    """Remove the model named by ``tag`` from the store; returns it.

    :raises ModelTagNotFound: when the store has no such model.
    """
    return resolve_store(store).delete(_tag(tag))


def export_model(
    tag: str | StoredModel,
    path: str | os.PathLike[str],
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> str:
    """Write the model named by ``tag`` to one archive file.

    :param path: a file path, a directory (the file is then named after the
        tag: ``<name>-<version>.dsmodel``) or an fsspec URL.
    :param progress: called with ``(bytes done, bytes in all)`` as it goes.
    :param overwrite: replace an archive file already there (the default);
        when false, an existing file is left alone and the export fails.
    :returns: the path or URL written.
    :raises ArchiveExists: when the file exists and ``overwrite`` is false.
    """
    return resolve_store(store).export_model(
        _tag(tag), path, progress=progress, overwrite=overwrite
    )


def import_model(
    path: str | os.PathLike[str],
    *,
    store: Store | None = None,
    progress: Progress | None = None,
) -> StoredModel:
    """Add the model in the archive at ``path`` (a file or URL) to the store.

    The archive is checked before anything enters the store: on any error
    the store is unchanged.

    :raises BadArchive: when the archive is unsafe or damaged.
    :raises TagExists: when the store already holds that tag.
    """
    return resolve_store(store).import_model(path, progress=progress)


class FrameworkFunctions:
    """``save_model``, ``load_model`` and ``get`` of one framework module
    (:mod:`deepserve.sklearn`, :mod:`deepserve.class_model`...), each
    taking ``store=`` (default: :func:`default_store`)."""

    def __init__(self, framework: Framework) -> None:
        self._framework = framework

    def save_model(
        self,
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
        input_example: Any = None,
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
            ``{"method": {"batchable": bool, "batch_dim": int, "inputs":
            [...], "outputs": [...]}}``, the tensors as ``{"name": str,
            "datatype": str, "shape": [int, ...]}`` (``-1``: any size).
        :param artifacts: key -> file or directory, copied into the entry.
        :param code_paths: files or directories of source code, copied into the
            entry and importable when the model loads.
        :param requirements: pip requirement specifiers, checked at load.
        :param input_example: an input, run once through each signature's
            method to infer the tensors the signature does not declare.
        :returns: the stored model; its ``tag`` is ``name:version``.
        :raises BadTag: when ``name`` is not a valid name.
        :raises InvalidModel: naming the argument that cannot be saved.
        """
        return self._framework.save(
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
            input_example=input_example,
        )

    def load_model(self, tag: str | StoredModel, *, store: Store | None = None) -> Any:
        """Load the model named by ``tag``.

        Version differences with the save are warned about with
        :class:`~deepserve.store.StoreWarning`.

        :raises WrongModule: when the model was saved by another module.
        """
        return self._framework.load(resolve_store(store), tag)

    def get(self, tag: str | StoredModel, *, store: Store | None = None) -> StoredModel:
        """The stored model named by ``tag``, checked to be saved by this module.

        :raises ModelTagNotFound: when the store has no such model.
        :raises WrongModule: when the model was saved by another module.
        """
        return self._framework.get(resolve_store(store), tag)
