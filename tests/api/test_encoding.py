"""A JSON prediction checked against the model's response schema
(operations/encoding.py): the unit part; over HTTP in test_predict.py."""

from __future__ import annotations

import json

import marshmallow
import numpy as np
import pytest

from deepserve.exceptions import BadModelOutput
from deepserve.operations import encoding


class Scores(marshmallow.Schema):
    label = marshmallow.fields.Str(required=True)
    score = marshmallow.fields.Float(required=True)

    made = 0

    def __init__(self, *args, **kwargs):
        type(self).made += 1
        super().__init__(*args, **kwargs)


def test_a_matching_result_is_sent_as_its_json_form():
    result = {"label": "cat", "score": np.float32(0.5)}
    text = encoding.encode(result, "application/json", model="m", schema=Scores)
    assert json.loads(text) == {"label": "cat", "score": 0.5}


def test_a_result_that_does_not_match_is_the_models_error():
    with pytest.raises(BadModelOutput, match="does not match the model's schema"):
        encoding.encode({"label": 3}, "application/json", model="m", schema=Scores)
    with pytest.raises(BadModelOutput, match="expected an object"):
        encoding.encode(["x"], "application/json", model="m", schema=Scores)


def test_the_schema_is_made_once_not_per_prediction():
    before = Scores.made
    for score in range(50):
        encoding.encode(
            {"label": "x", "score": score}, "application/json", model="m", schema=Scores
        )
    assert Scores.made - before <= 1


def test_without_a_schema_the_result_is_wrapped():
    text = encoding.encode({"a": 1}, "application/json", model="m", schema=None)
    assert json.loads(text) == {"status": "OK", "predictions": {"a": 1}}
