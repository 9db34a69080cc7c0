"""Store errors: their HTTP statuses and their trip across processes."""

from __future__ import annotations

import pickle

import pytest

from deepserve import exceptions as exc
from deepserve.api.errors import status_for


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (exc.BadTag("Iris", "the name must be lowercase ('iris')"), 422),
        (exc.ModelTagNotFound("iris:latest", "/store"), 404),
        (exc.TagExists("iris:v1"), 409),
        (exc.BadArchive("member '../x': leaves the archive"), 400),
        (exc.WrongModule("iris:v1", "deepserve.sklearn", "deepserve.class_model"), 422),
        (exc.InvalidModel("signatures: no method 'x'"), 422),
        (exc.StoreError("entry damaged"), 500),
    ],
)
def test_store_errors_have_statuses_and_survive_pickling(
    error: exc.StoreError, status: int
) -> None:
    assert status_for(error) == status
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_a_missing_tag_is_a_missing_model() -> None:
    error = exc.ModelTagNotFound("iris:latest", "/store")
    assert isinstance(error, exc.ModelNotFound)
    assert isinstance(error, KeyError)
    assert str(error) == "Model 'iris:latest' is not in the store at /store"
    assert isinstance(exc.BadTag("X", "bad"), ValueError)
