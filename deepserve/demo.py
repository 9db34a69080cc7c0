"""The bundled demo model, served when no other model is installed.

It is a complete module model: metadata, warm, prediction arguments with an
optional file upload and content negotiation, and a training that takes time
and can be cancelled. Read it as an example of the model API.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from marshmallow import fields, validate

_STATE: dict[str, Any] = {}


def get_metadata() -> dict[str, Any]:
    return {
        "name": "demo",
        "description": (
            "deepserve's demo model: describes a text and an optional uploaded "
            "file (size, SHA-256, word counts)."
        ),
        "author": "deepserve",
        "license": "Apache-2.0",
        "version": "1.0",
        "url": "https://pypi.org/project/deepserve/",
    }


def warm() -> None:
    _STATE["warmed_at"] = time.time()


def get_predict_args() -> dict[str, fields.Field]:
    return {
        "text": fields.Str(
            load_default="Hello, deepserve!",
            metadata={"description": "Text to describe."},
        ),
        "data": fields.Raw(
            load_default=None,
            allow_none=True,
            metadata={
                "description": "Optional file to describe.",
                "type": "file",
                "location": "form",
            },
        ),
        "upper": fields.Bool(
            load_default=False,
            metadata={"description": "Also return the text in capitals."},
        ),
        "accept": fields.Str(
            load_default="application/json",
            validate=validate.OneOf(["application/json", "text/plain"]),
            metadata={"description": "Media type of the response."},
        ),
    }


def predict(**kwargs: Any) -> Any:
    text: str = kwargs["text"]
    result: dict[str, Any] = {
        "text": text,
        "characters": len(text),
        "words": len(text.split()),
        "warmed": "warmed_at" in _STATE,
    }
    if kwargs.get("upper"):
        result["upper"] = text.upper()
    upload = kwargs.get("data")
    if upload is not None:
        digest = hashlib.sha256()
        size = 0
        with open(upload.filename, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        result["file"] = {
            "original_filename": upload.original_filename,
            "content_type": upload.content_type,
            "size": size,
            "sha256": digest.hexdigest(),
        }
    if kwargs.get("accept") == "text/plain":
        return json.dumps(result, indent=2) + "\n"
    return result


def get_train_args() -> dict[str, fields.Field]:
    return {
        "epochs": fields.Int(
            load_default=3,
            validate=validate.Range(min=1, max=1000),
            metadata={"description": "Number of epochs."},
        ),
        "seconds_per_epoch": fields.Float(
            load_default=0.5,
            validate=validate.Range(min=0, max=60),
            metadata={"description": "How long each epoch takes."},
        ),
    }


def train(**kwargs: Any) -> dict[str, Any]:
    losses = []
    for epoch in range(kwargs["epochs"]):
        time.sleep(kwargs["seconds_per_epoch"])
        losses.append(round(1.0 / (epoch + 1), 4))
    return {"epochs": kwargs["epochs"], "losses": losses, "final_loss": losses[-1]}
