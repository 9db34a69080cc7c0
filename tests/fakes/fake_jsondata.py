"""A model whose predict takes one JSON input, ``data``, like a stored model."""

from marshmallow import fields


def get_metadata():
    return {"name": "jsondata", "description": "Sums rows of numbers"}


def get_predict_args():
    return {
        "data": fields.Raw(
            required=True,
            metadata={"location": "json", "description": "Rows of numbers"},
        )
    }


def predict(data):
    return [sum(row) for row in data]
