"""A class model with a response schema, header and JSON arguments."""

import os
import time

import marshmallow
from marshmallow import fields, validate


class Response(marshmallow.Schema):
    label = fields.Str(required=True)
    score = fields.Float(required=True)
    warm_count = fields.Int(required=True)
    instance = fields.Int(required=True)


class ClassModel:
    schema = Response

    def __init__(self):
        self.warm_count = 0

    def get_metadata(self):
        return {"name": "classy", "description": "A class model", "version": "2.0"}

    def warm(self):
        self.warm_count += 1

    def get_predict_args(self):
        return {
            "x": fields.Float(required=True, metadata={"description": "The input"}),
            "label": fields.Str(
                load_default="pos", validate=validate.OneOf(["pos", "neg"])
            ),
            "bad_output": fields.Bool(load_default=False),
            "token": fields.Str(
                load_default="none",
                data_key="X-Token",
                metadata={"location": "headers", "description": "A header"},
            ),
            "weights": fields.List(
                fields.Float(), load_default=[], metadata={"location": "form"}
            ),
        }

    def predict(self, x, label, bad_output, token, weights):
        if bad_output:
            return {"label": label, "score": "not a number"}
        return {
            "label": f"{label}:{token}:{len(weights)}",
            "score": x * 2 + sum(weights),
            "warm_count": self.warm_count,
            "instance": id(self),
        }

    def get_train_args(self):
        return {
            "seconds": fields.Float(load_default=0.0),
            "fail": fields.Bool(load_default=False),
            "pidfile": fields.Str(load_default=None, allow_none=True),
            "data": fields.Raw(
                load_default=None,
                allow_none=True,
                metadata={"type": "file", "location": "form"},
            ),
        }

    def train(self, seconds, fail, pidfile, data):
        if pidfile:
            with open(pidfile, "w") as f:
                f.write(str(os.getpid()))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
        if fail:
            raise RuntimeError("the loss diverged")
        size = os.path.getsize(data.filename) if data is not None else None
        return {"seconds": seconds, "upload_size": size, "warm_count": self.warm_count}
