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
from collections.abc import Iterable

from deepserve.exceptions import InvalidModel
from deepserve.models import FrameworkFunctions
from deepserve.store import Store, StoredModel
from deepserve.store.frameworks import CLASS_MODEL as _FRAMEWORK

__all__ = ["fetch_artifacts", "get", "load_model", "save_model"]


_FUNCTIONS = FrameworkFunctions(_FRAMEWORK)
save_model = _FUNCTIONS.save_model
load_model = _FUNCTIONS.load_model
get = _FUNCTIONS.get


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
