"""Requirement checks, with and without the packaging library."""

from __future__ import annotations

import sys
import warnings

import pytest

from deepserve.exceptions import InvalidModel, StoreWarning
from deepserve.store.requirements import (
    check_requirements,
    check_specifiers,
    installed_version,
)

CLOUDPICKLE = installed_version("cloudpickle")


def problems_of(requirements: list[str]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = check_requirements("m:v", requirements)
    assert [str(w.message) for w in caught] == found
    assert all(w.category is StoreWarning for w in caught)
    return found


def test_specifiers_with_packaging() -> None:
    assert CLOUDPICKLE is not None
    assert check_specifiers([" cloudpickle>=1 ", "numpy[extra]~=2.0"]) == (
        "cloudpickle>=1",
        "numpy[extra]~=2.0",
    )
    assert problems_of(["cloudpickle>=1", f"cloudpickle=={CLOUDPICKLE}"]) == []
    assert problems_of(["cloudpickle<1"]) == [
        f"model 'm:v' requires 'cloudpickle<1', but cloudpickle {CLOUDPICKLE} is installed"
    ]
    assert problems_of(["no-such-dist-here>=2"]) == [
        "model 'm:v' requires 'no-such-dist-here>=2', which is not installed"
    ]
    with pytest.raises(InvalidModel, match="requirements: 'cloudpickle>=>1'"):
        check_specifiers(["cloudpickle>=>1"])
    with pytest.raises(InvalidModel, match="is not a string"):
        check_specifiers([3])  # type: ignore[list-item]


def test_without_packaging_only_exact_pins_are_understood(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry makes "import packaging.requirements" fail, as when the
    # library is not installed.
    monkeypatch.setitem(sys.modules, "packaging.requirements", None)
    assert check_specifiers(["cloudpickle", "cloudpickle==1.0"]) == (
        "cloudpickle",
        "cloudpickle==1.0",
    )
    with pytest.raises(InvalidModel, match="install 'packaging'"):
        check_specifiers(["cloudpickle>=1"])
    assert problems_of(["cloudpickle", f"cloudpickle=={CLOUDPICKLE}"]) == []
    assert problems_of(["cloudpickle==0.0.1"]) == [
        f"model 'm:v' requires 'cloudpickle==0.0.1', but cloudpickle {CLOUDPICKLE} is installed"
    ]
    assert problems_of(["no-such-dist-here"]) == [
        "model 'm:v' requires 'no-such-dist-here', which is not installed"
    ]
    # A model saved elsewhere with a range is reported, not a crash.
    assert "install 'packaging'" in problems_of(["cloudpickle>=1"])[0]
