"""Find models and import them.

Discovery yields :class:`ModelRef` values: small, picklable references that a
worker process turns back into the model object. The model object itself
never crosses a process boundary.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import importlib_metadata

from deepserve.exceptions import LoaderError

LOG = logging.getLogger(__name__)

#: Entry point groups searched, in order of precedence.
GROUPS = ("deepserve.v2.model", "deepaas.v2.model")

BUILTIN = "builtin"


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Where a model comes from.

    :param name: the name the model is served under.
    :param target: ``package.module`` or ``package.module:Attribute``.
    :param source: the entry point group it was found in, or ``builtin``.
    """

    name: str
    target: str
    source: str


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
    available: Mapping[str, ModelRef], requested: Sequence[str]
) -> list[ModelRef]:
    """Pick the requested models, or all of them, or the demo model.

    :raises LoaderError: when a requested model is not installed.
    """
    if not requested:
        if not available:
            LOG.warning("No model installed; serving the bundled demo model")
            return [DEMO]
        return [available[name] for name in sorted(available)]
    chosen: list[ModelRef] = []
    for name in requested:
        if name in available:
            ref = available[name]
        elif name == DEMO.name:
            ref = DEMO
        else:
            raise LoaderError(
                f"Model '{name}' not found in entry point groups "
                f"{', '.join(GROUPS)}; available models: {describe(available)}"
            )
        if ref not in chosen:
            chosen.append(ref)
    return chosen


def describe(available: Mapping[str, ModelRef]) -> str:
    return ", ".join(sorted(available)) or "(none installed)"


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
