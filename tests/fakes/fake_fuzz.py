"""A well-behaved model with every kind of argument, for fuzzing the API.

Nothing it does depends on its input beyond echoing it back, so any 5xx or
non-conforming response a fuzzer finds is the server's fault.
"""

from marshmallow import fields, validate

schema = {
    "status": fields.Str(required=True),
    "echo": fields.Dict(required=True),
}


def get_metadata():
    return {"name": "fuzz", "description": "Echoes its arguments"}


def get_predict_args():
    return {
        "count": fields.Int(
            load_default=1,
            validate=validate.Range(min=0, max=100),
            metadata={"description": "A bounded integer"},
        ),
        "ratio": fields.Float(load_default=0.5, metadata={"description": "Any float"}),
        "flag": fields.Bool(load_default=False),
        "mode": fields.Str(load_default="a", validate=validate.OneOf(["a", "b", "c"])),
        "words": fields.List(fields.Str(), load_default=[]),
        "name": fields.Str(required=True, metadata={"location": "form"}),
        "token": fields.Str(
            load_default="none", data_key="X-Token", metadata={"location": "headers"}
        ),
        "upload": fields.Raw(
            load_default=None,
            allow_none=True,
            metadata={"type": "file", "location": "form"},
        ),
    }


def predict(**kwargs):
    upload = kwargs.pop("upload")
    echo = {k: v for k, v in kwargs.items()}
    echo["upload"] = None if upload is None else upload.original_filename
    return {"status": "OK", "echo": echo}


def get_train_args():
    return {
        "epochs": fields.Int(load_default=1, validate=validate.Range(min=1, max=3)),
        "note": fields.Str(load_default=""),
    }


def train(**kwargs):
    return {"trained": kwargs}
