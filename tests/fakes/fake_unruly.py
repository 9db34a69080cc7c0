"""A module model whose results run its code while they are written out.

Its results hold a :class:`Lazy` value: JSON has no type for it, so it is
written as its ``str()``, which prints, or exits when ``mode`` is ``exit``
(as a script's own code may). ``mode=file`` returns a file whose offered
name has control characters and a directory in it.
"""

import sys
import tempfile

from marshmallow import fields, validate

from deepserve.model import ReturnedFile

#: What a Lazy value's str() does: print (and be "lazy"), or exit.
MODES = ("print", "exit", "file")


class Lazy:
    def __init__(self, mode):
        self.mode = mode

    def __str__(self):
        print("unruly: printed while written")
        if self.mode == "exit":
            sys.exit("unruly: \x1b[2Jgone while written")
        return "lazy"


def get_metadata():
    return {"name": "unruly", "description": "Runs when written", "lazy": Lazy("print")}


def get_predict_args():
    return {
        "mode": fields.Str(load_default="print", validate=validate.OneOf(MODES)),
        "accept": fields.Str(
            load_default="application/json",
            validate=validate.OneOf(["application/json", "text/csv"]),
        ),
    }


def get_train_args():
    return {"mode": fields.Str(load_default="print", validate=validate.OneOf(MODES))}


def predict(mode, accept="application/json"):
    if mode == "file":
        with tempfile.NamedTemporaryFile("wb", suffix=".csv", delete=False) as out:
            out.write(b"a,b\n")
        return ReturnedFile(
            filename=out.name,
            content_type="text/csv",
            original_filename="../dir/\x1b]0;title\x07evil\nname.csv",
        )
    return {"value": Lazy(mode)}


def train(mode):
    return {"value": Lazy(mode)}
