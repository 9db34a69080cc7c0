"""The user-facing store API, deepserve.models, on the default store."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepserve import models, picklable_model
from deepserve.exceptions import ModelTagNotFound
from tests.store.kinds import Doubler


def test_the_default_store_follows_deepserve_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPSERVE_HOME", str(tmp_path / "one"))
    saved = picklable_model.save_model("doubler", Doubler())
    assert saved.path.is_relative_to(tmp_path / "one" / "models")
    assert models.get("doubler") == saved
    assert models.get(saved) == saved
    assert picklable_model.load_model("doubler").predict([1]) == [2]

    # Read at every call: another home is another store.
    monkeypatch.setenv("DEEPSERVE_HOME", str(tmp_path / "two"))
    assert models.list() == []
    with pytest.raises(ModelTagNotFound):
        models.get("doubler")

    monkeypatch.setenv("DEEPSERVE_HOME", str(tmp_path / "one"))
    assert [m.tag for m in models.list("doubler")] == [saved.tag]
    assert models.delete(saved) == saved
    assert models.list() == []


def test_the_default_home_is_in_the_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPSERVE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.default_store().root == tmp_path / "deepserve" / "models"
