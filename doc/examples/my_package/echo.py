"""A module model: every function is a module-level function."""

from marshmallow import fields


def get_metadata():
    return {
        "name": "echo",
        "description": "Repeats a text",
        "author": "Me",
        "license": "MIT",
        "version": "1.0",
    }


def get_predict_args():
    return {
        "text": fields.Str(required=True, metadata={"description": "Text to repeat"}),
        "times": fields.Int(load_default=2, metadata={"description": "How often"}),
    }


def predict(text, times):
    return " ".join([text] * times)
