"""The model's DEEPaaS interface, as the AI4OS templates write one.

It imports DEEPaaS's own ``UploadedFile`` and refuses anything else, returns
JSON, a zip or the image it was given depending on ``accept`` (declared in
the headers, as the templates do), and trains, printing as it goes.
"""

import json
import logging
import os
import shutil
import tempfile
import time
import zipfile

from deepaas.model.v2.wrapper import UploadedFile
from webargs import fields, validate

logger = logging.getLogger(__name__)

#: What ``predict`` can answer; ``image/*`` sends the uploaded image back.
FORMATS = ["application/json", "application/zip", "image/*"]

_STATE = {"warmed": 0}


def get_metadata():
    return {
        "name": "ai4os_like",
        "description": "A DEEPaaS model shaped like the AI4OS templates",
        "author": "deepserve tests",
        "license": "Apache-2.0",
        "version": "0.1.0",
    }


def warm():
    _STATE["warmed"] += 1


def _check_upload(name, value):
    if not isinstance(value, UploadedFile):
        # What the AI4OS demo app does: a plain exception (a 500).
        raise TypeError(
            f"{name} is a {type(value).__module__}.{type(value).__qualname__}, "
            "not a deepaas.model.v2.wrapper.UploadedFile"
        )


def get_predict_args():
    return {
        "input_file": fields.Field(
            required=True,
            type="file",
            location="form",
            description="An image to describe",
        ),
        "label": fields.Str(
            required=False,
            missing="unnamed",
            description="A label to echo",
        ),
        "accept": fields.Str(
            metadata={
                "description": "Return format for method response.",
                "location": "headers",
            },
            required=True,
            validate=validate.OneOf(FORMATS),
        ),
    }


def predict(**kwargs):
    upload = kwargs["input_file"]
    _check_upload("input_file", upload)
    accept = kwargs["accept"]
    described = {
        "label": kwargs["label"],
        "filename": upload.original_filename,
        "content_type": upload.content_type,
        "size": os.path.getsize(upload.filename),
        "upload_class": f"{type(upload).__module__}.{type(upload).__qualname__}",
        "warmed": _STATE["warmed"],
    }
    if accept == "application/json":
        return described
    if accept == "application/zip":
        folder = tempfile.mkdtemp(prefix="ai4os-like-")
        with open(os.path.join(folder, "args.json"), "w") as f:
            json.dump(described, f, sort_keys=True)
        shutil.copyfile(upload.filename, os.path.join(folder, "input"))
        archive = folder + ".zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for name in sorted(os.listdir(folder)):
                zf.write(os.path.join(folder, name), name)
        shutil.rmtree(folder)
        return open(archive, "rb")
    if accept == "image/*":
        return open(upload.filename, "rb")
    raise ValueError(f"accept {accept!r} is not one of {FORMATS}")


# Validates the JSON answer of predict (the templates declare one too).
schema = {
    "label": fields.Str(required=True),
    "filename": fields.Str(),
    "content_type": fields.Str(allow_none=True),
    "size": fields.Int(required=True),
    "upload_class": fields.Str(required=True, description="Class of the upload"),
    "warmed": fields.Int(),
}


def get_train_args():
    return {
        "epochs": fields.Int(
            required=False,
            missing=2,
            validate=validate.Range(min=1, max=100),
            description="Number of training epochs",
        ),
        "dataset": fields.Field(
            required=False,
            missing=None,
            type="file",
            location="form",
            description="A dataset file (optional)",
        ),
    }


def train(**kwargs):
    dataset = kwargs["dataset"]
    size = 0
    if dataset is not None:
        _check_upload("dataset", dataset)
        size = os.path.getsize(dataset.filename)
    for epoch in range(kwargs["epochs"]):
        print(f"epoch {epoch + 1}/{kwargs['epochs']}", flush=True)
        logger.info("finished epoch %d", epoch + 1)
        time.sleep(0.05)
    return {"epochs": kwargs["epochs"], "dataset_size": size, "accuracy": 0.9}
