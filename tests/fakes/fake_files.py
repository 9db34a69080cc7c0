"""A model answering with files in every way a DEEPaaS model may."""

import collections
import pathlib
import tempfile

from webargs import fields, validate

# What a package importing DEEPaaS's own ReturnedFile would return.
ReturnedFile = collections.namedtuple(
    "ReturnedFile",
    ("name", "filename", "content_type", "original_filename"),
    defaults=(None, None, None, None),
)


def get_predict_args():
    return {
        "data": fields.Raw(
            load_default=None,
            allow_none=True,
            metadata={"type": "file", "location": "form"},
        ),
        "accept": fields.Str(
            load_default="application/octet-stream",
            validate=validate.OneOf(
                ["application/octet-stream", "text/csv", "application/x-echo"]
            ),
        ),
    }


def predict(data, accept):
    if accept == "application/x-echo":
        return data  # the upload itself, sent back
    if accept == "text/csv":
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write("a,b\n1,2\n")
        return ReturnedFile(
            name="result", filename=f.name, original_filename="result.csv"
        )
    with tempfile.NamedTemporaryFile("wb", suffix=".bin", delete=False) as f:
        f.write(bytes(range(256)) * 4)
    return pathlib.Path(f.name)
