"""A model whose arguments cover every kind of ``deepserve call`` option.

It prints, as many models do. ``warm()`` appends a line to the file named by ``FAKE_TYPED_WARM_LOG`` when
that variable is set, so a test in another process can see it ran.
"""

import hashlib
import os

from marshmallow import fields, validate

_STATE = {"warm_calls": 0}


def get_metadata():
    return {"name": "typed", "description": "Every kind of argument", "version": "3"}


def warm():
    _STATE["warm_calls"] += 1
    log = os.environ.get("FAKE_TYPED_WARM_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")


def get_predict_args():
    return {
        "count": fields.Int(required=True, metadata={"description": "How many"}),
        "ratio": fields.Float(
            load_default=0.5,
            validate=validate.Range(min=0, max=1),
            metadata={"description": "A share, 0 to 100%"},
        ),
        "loud": fields.Bool(load_default=False),
        "colour": fields.Str(
            load_default="red", validate=validate.OneOf(["red", "green", "blue"])
        ),
        "words": fields.List(fields.Str(), load_default=[]),
        "sizes": fields.List(fields.Int(), load_default=[]),
        "when": fields.Date(load_default=None, allow_none=True),
        "options": fields.Dict(
            load_default={}, metadata={"description": "Free-form settings"}
        ),
        "data": fields.Raw(
            load_default=None,
            allow_none=True,
            metadata={"type": "file", "location": "form", "description": "A file"},
        ),
    }


def predict(**kwargs):
    print("typed: predicting")  # chatty, as many models are
    result = dict(kwargs, warmed=_STATE["warm_calls"] > 0)
    upload = kwargs["data"]
    if upload is not None:
        with open(upload.filename, "rb") as f:
            content = f.read()
        result["data"] = {
            "name": upload.name,
            "original_filename": upload.original_filename,
            "content_type": upload.content_type,
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    return result


def get_train_args():
    return {
        "epochs": fields.Int(load_default=1, validate=validate.Range(min=1)),
        # Named like deepserve call's own --output: the model's name wins.
        "output": fields.Str(load_default="weights.bin"),
        "data": fields.Raw(
            required=True, metadata={"type": "file", "location": "form"}
        ),
    }


def train(epochs, output, data):
    print(f"typed: training for {epochs} epochs")
    return {
        "epochs": epochs,
        "output": output,
        "size": os.path.getsize(data.filename),
        "warmed": _STATE["warm_calls"] > 0,
    }
