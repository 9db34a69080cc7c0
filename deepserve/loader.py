"""Find models and import them.

Discovery yields :class:`ModelRef` values: small, picklable references that a
worker process turns back into the model object. The model object itself
never crosses a process boundary. Besides entry points, a requested name may
be a model store tag (``name``, ``name:latest``, ``name:version``).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import importlib_metadata

from deepserve.console import did_you_mean
from deepserve.exceptions import DeepserveError, LoaderError
from deepserve.store import Store

LOG = logging.getLogger(__name__)

#: Entry point groups searched, in order of precedence.
GROUPS = ("deepserve.v2.model", "deepaas.v2.model")

BUILTIN = "builtin"
#: The source of models found in the model store.
STORE = "store"


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Where a model comes from.

    :param name: the name the model is served under.
    :param target: ``package.module`` or ``package.module:Attribute``; for a
        stored model, its exact tag ``name:version``.
    :param source: the entry point group it was found in, ``builtin`` or
        ``store``.
    :param store: the root directory of the model store it is in.
    :param version: a stored model's version (served side by side with the
        name's other versions); ``None`` for an installed model.
    """

    name: str
    target: str
    source: str
    store: str | None = None
    version: str | None = None

    @property
    def tag(self) -> str:
        """``name:version``, or the name alone when there is no version."""
        return f"{self.name}:{self.version}" if self.version else self.name


#: Served when no model is installed and none is requested.
DEMO = ModelRef("demo", "deepserve.demo", BUILTIN)


class EntryPointLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    @property
    def group(self) -> str: ...


def installed_entry_points() -> list[EntryPointLike]:
    """The model entry points of every installed distribution."""
    found: list[EntryPointLike] = []
    for group in GROUPS:
        found.extend(importlib_metadata.entry_points(group=group))
    return found


def discover(entry_points: Iterable[EntryPointLike]) -> dict[str, ModelRef]:
    """Map model names to references.

    A name registered in both groups is taken from ``deepserve.v2.model``.
    """
    refs: dict[str, ModelRef] = {}
    rank = {group: i for i, group in enumerate(GROUPS)}
    for ep in sorted(entry_points, key=lambda e: rank.get(e.group, len(GROUPS))):
        if ep.group not in rank:
            continue
        if ep.name in refs:
            LOG.info(
                "Model '%s' is registered in %s and %s; using %s",
                ep.name,
                refs[ep.name].source,
                ep.group,
                refs[ep.name].target,
            )
            continue
        refs[ep.name] = ModelRef(ep.name, ep.value.replace(" ", ""), ep.group)
    return refs


def select(
    available: Mapping[str, ModelRef],
    requested: Sequence[str],
    *,
    store: Store | None = None,
    remote: str | None = None,
) -> list[ModelRef]:
    """Pick the requested models, or all of them, or the demo model.

    With ``remote`` (a model store's URL), a requested name that no entry
    point has comes from that store (:func:`from_remote`), not ``store``.

    A requested name that no entry point has is looked up as a tag in
    ``store``; ``name:latest`` and a bare name resolve to the newest version
    at this moment, so every worker later loads the same one.

    :raises LoaderError: when a requested model is neither installed nor
        stored, or two requested models would be served under one name.
    """
    if not requested:
        if not available:
            LOG.info("%s", _demo_notice(store))
            return [DEMO]
        return [available[name] for name in sorted(available)]
    chosen: list[ModelRef] = []
    for name in requested:
        if name in available:
            ref = available[name]
        elif name == DEMO.name:
            ref = DEMO
        elif remote is not None:
            ref = from_remote(name, remote)
        elif store is not None and (found := _from_store(store, name)) is not None:
            ref = found
        else:
            where = f"entry point groups {', '.join(GROUPS)}"
            if store is not None:
                where += f" or in the model store at {store.root}"
            tags = _stored(store)
            names = dict.fromkeys(tag.partition(":")[0] for tag in tags)
            candidates = [*available, DEMO.name, *names, *tags]
            raise LoaderError(
                f"Model '{name}' not found in {where}; available models: "
                f"{describe(available, store)}",
                hint=did_you_mean(name, candidates),
            )
        if ref in chosen:
            continue
        twin = next((c for c in chosen if _clash(c, ref)), None)
        if twin is not None:
            raise LoaderError(
                f"Models {twin.target} and {ref.target} would both be served as "
                f"'{ref.name}'; serve one of them"
            )
        chosen.append(ref)
    return chosen


def from_remote(
    tag: str, url: str, cache_root: str | os.PathLike[str] | None = None
) -> ModelRef:
    """A stored model of the model store at ``url`` (an fsspec URL), fetched
    into the node-local cache (``cache_root``, by default
    ``~/.cache/deepserve/models``) unless it is there already.

    ``name`` and ``name:latest`` resolve to the newest version now: resolve
    once (the server does) and hand the exact tag on, so that every replica
    serves the same version.

    :raises LoaderError: when the store cannot be reached, has no such
        model, or its archive fails the store's checks.
    """
    from deepserve.store.remote import RemoteStore, default_cache_root

    try:
        remote = RemoteStore(url)
        exact = remote.resolve(tag)
        root = cache_root if cache_root is not None else default_cache_root()
        remote.fetch(exact, root)
        found = _from_store(Store(root), exact)
    except DeepserveError as exc:
        raise LoaderError(f"Model '{tag}': {exc}") from exc
    if found is None:  # fetched, yet not in the cache: never expected
        raise LoaderError(f"Model '{tag}' is not in the cache at {root} after fetching")
    return found


def _clash(one: ModelRef, other: ModelRef) -> bool:
    """Whether two references cannot be served together: one name, and not
    two versions of one stored model."""
    if one.name != other.name:
        return False
    return one.version is None or other.version is None or one.version == other.version


def _from_store(store: Store, tag: str) -> ModelRef | None:
    """The stored model ``tag`` names, or ``None`` when there is none.

    :raises LoaderError: when ``tag`` is not a valid tag but looks meant as
        one, or the store cannot be read.
    """
    try:
        stored = store.get(tag)
    except KeyError:  # no such model or version (ModelNotFound is a KeyError)
        return None
    except DeepserveError as exc:
        if ":" not in tag:
            return None  # not even a tag: report it as an unknown model
        raise LoaderError(f"Model '{tag}': {exc}") from exc
    name, _, version = str(stored.tag).partition(":")
    return ModelRef(name, str(stored.tag), STORE, str(store.root), version=version)


#: Stored tags named in a list of available models, at most.
LISTED_TAGS = 10


def describe(available: Mapping[str, ModelRef], store: Store | None = None) -> str:
    """The models one may name: the installed ones, the bundled demo and
    the stored ones (up to :data:`LISTED_TAGS` tags, newest first)."""
    names = [*sorted(available)]
    if DEMO.name not in available:
        names.append(f"{DEMO.name} (bundled)")
    tags = _stored(store)
    names += tags[:LISTED_TAGS]
    if len(tags) > LISTED_TAGS:
        names.append(f"and {len(tags) - LISTED_TAGS} more in the model store")
    return ", ".join(names)


def _stored(store: Store | None) -> list[str]:
    """Tags of the stored models, newest first; none when unreadable."""
    if store is None:
        return []
    try:
        entries = store.list()
    except (OSError, DeepserveError) as exc:
        LOG.debug("Cannot list the model store at %s: %s", store.root, exc)
        return []
    entries.sort(key=lambda m: m.info.created, reverse=True)
    return [str(m.tag) for m in entries]


def _demo_notice(store: Store | None) -> str:
    stored = _stored(store)
    if not stored:
        return "No model installed; using the bundled demo model"
    shown = ", ".join(stored[:3]) + (", ..." if len(stored) > 3 else "")
    return (
        f"No model named and none installed; using the bundled demo model. "
        f"The model store holds {len(stored)} ({shown}): name them with "
        f"--model-name to serve them"
    )


def import_target(ref: ModelRef) -> object:
    """Import the module or attribute a reference points to.

    :raises LoaderError: naming the model and the exception when it fails.
    """
    module_name, _, attr_path = ref.target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for attr in filter(None, attr_path.split(".")):
            obj = getattr(obj, attr)
    except Exception as exc:
        raise LoaderError(
            f"Model '{ref.name}' ({ref.target}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return obj
