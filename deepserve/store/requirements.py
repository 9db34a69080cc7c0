"""Requirements and package versions recorded with a stored model.

A model pickled under one version of a library may fail, or silently
misbehave, under another. Versions are recorded at save and compared at load,
where any difference becomes a :class:`~deepserve.exceptions.StoreWarning`:
the model may still work, so loading goes on.

Requirement specifiers are parsed with :mod:`packaging` when it is installed
(it is with pip-based environments almost always); otherwise only ``name``
and ``name==version`` are understood.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import warnings
from collections.abc import Iterable, Mapping

from deepserve.exceptions import InvalidModel, StoreWarning

# PEP 508 names; with packaging missing, the fallback understands only
# "name" and "name==version".
_SIMPLE = re.compile(
    r"\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*"
    r"(?:==\s*(?P<version>[A-Za-z0-9.+!*_-]+))?\s*"
)


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def python_version() -> str:
    return platform.python_version()


def versions_of(distributions: Iterable[str]) -> dict[str, str]:
    """Distribution -> installed version, for those installed."""
    found = {}
    for name in distributions:
        version = installed_version(name)
        if version is not None:
            found[name] = version
    return found


def check_specifiers(requirements: Iterable[str]) -> tuple[str, ...]:
    """Validate pip requirement specifiers before they are saved.

    :raises InvalidModel: naming the first one that does not parse.
    """
    checked = []
    for text in requirements:
        if not isinstance(text, str):
            raise InvalidModel(f"requirements: {text!r} is not a string")
        _parse(text)
        checked.append(text.strip())
    return tuple(checked)


def _parse(text: str) -> tuple[str, object]:
    """(distribution name, a matcher) for one requirement."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        match = _SIMPLE.fullmatch(text)
        if not match:
            raise InvalidModel(
                f"requirements: cannot read {text!r} (install 'packaging' for "
                "full specifier support; without it only 'name' and "
                "'name==version' are understood)"
            ) from None
        return match["name"], match["version"]
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        raise InvalidModel(f"requirements: {text!r}: {error}") from None
    return requirement.name, requirement


def _satisfied(matcher: object, version: str) -> bool:
    if matcher is None:
        return True
    if isinstance(matcher, str):
        return matcher == version
    from packaging.requirements import Requirement

    assert isinstance(matcher, Requirement)
    if matcher.marker is not None and not matcher.marker.evaluate():
        return True
    return matcher.specifier.contains(version, prereleases=True)


def _applies(matcher: object) -> bool:
    if isinstance(matcher, str) or matcher is None:
        return True
    from packaging.requirements import Requirement

    assert isinstance(matcher, Requirement)
    return matcher.marker is None or matcher.marker.evaluate()


def check_requirements(tag: str, requirements: Iterable[str]) -> list[str]:
    """Warn about each requirement missing or unmet here.

    :returns: the problems found (each also issued as a StoreWarning).
    """
    problems = []
    for text in requirements:
        try:
            name, matcher = _parse(text)
        except InvalidModel as error:
            problems.append(f"model '{tag}': {error}")
            continue
        if not _applies(matcher):
            continue
        version = installed_version(name)
        if version is None:
            problems.append(f"model '{tag}' requires '{text}', which is not installed")
        elif not _satisfied(matcher, version):
            problems.append(
                f"model '{tag}' requires '{text}', but {name} {version} is installed"
            )
    for problem in problems:
        warnings.warn(problem, StoreWarning, stacklevel=3)
    return problems


def check_versions(tag: str, saved_python: str, saved: Mapping[str, str]) -> list[str]:
    """Warn when the framework's packages or Python differ from the save's.

    Python is compared on major.minor: pickles (cloudpickle's by-value code
    in particular) are not portable across Python minor versions.
    """
    problems = []
    here = python_version()
    if saved_python.split(".")[:2] != here.split(".")[:2]:
        problems.append(
            f"model '{tag}' was saved with Python {saved_python}; this is Python {here}"
        )
    for name, version in saved.items():
        installed = installed_version(name)
        if installed is None:
            problems.append(
                f"model '{tag}' was saved with {name} {version}, which is not installed"
            )
        elif installed != version:
            problems.append(
                f"model '{tag}' was saved with {name} {version}; "
                f"{installed} is installed"
            )
    for problem in problems:
        warnings.warn(problem, StoreWarning, stacklevel=3)
    return problems
