"""The bundled demo model, served when no other model is installed.

It is a complete module model: metadata, warm, prediction arguments with an
optional file upload and content negotiation, a response schema, and a
training that takes time and can be cancelled. Read it as an example of the
model API.
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


#: The prediction's JSON answer. Declared, it is what the server sends as it
#: is (without DEEPaaS's ``{"status": "OK", "predictions": ...}`` envelope),
#: after checking that ``predict`` returned what it says; and the OpenAPI
#: document describes it, so Swagger UI shows this example: what ``predict``
#: answers for the default text, with ``upper`` and a file ``notes.txt``
#: holding that text and a newline.
schema = {
    "text": fields.Str(
        required=True,
        metadata={"description": "The text described.", "example": "Hello, deepserve!"},
    ),
    "characters": fields.Int(
        required=True,
        metadata={"description": "Its length, in characters.", "example": 17},
    ),
    "words": fields.Int(
        required=True,
        metadata={
            "description": "How many words it has (separated by whitespace).",
            "example": 2,
        },
    ),
    "warmed": fields.Bool(
        required=True,
        metadata={"description": "Whether warm() ran first.", "example": True},
    ),
    "upper": fields.Str(
        metadata={
            "description": "The text in capitals (when 'upper' is true).",
            "example": "HELLO, DEEPSERVE!",
        }
    ),
    "file": fields.Nested(
        {
            "original_filename": fields.Str(
                required=True,
                allow_none=True,
                metadata={
                    "description": "Its name on the client's side.",
                    "example": "notes.txt",
                },
            ),
            "content_type": fields.Str(
                required=True,
                allow_none=True,
                metadata={
                    "description": "The media type the client declared.",
                    "example": "text/plain",
                },
            ),
            "size": fields.Int(
                required=True,
                metadata={"description": "Its size, in bytes.", "example": 18},
            ),
            "sha256": fields.Str(
                required=True,
                metadata={
                    "description": "Its SHA-256 digest, in hexadecimal.",
                    "example": (
                        "217daa76f288f545d55d906caa9e997d"
                        "863b3148b8a8492e46ab30da703eb4e0"
                    ),
                },
            ),
        },
        metadata={"description": "The uploaded file (when 'data' is sent)."},
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
        # Shown as it comes by `deepserve call ... train`, and kept in the
        # training's log (GET .../train/UUID/logs) by a server.
        print(f"epoch {epoch + 1}/{kwargs['epochs']}: loss {losses[-1]}", flush=True)
    return {"epochs": kwargs["epochs"], "losses": losses, "final_loss": losses[-1]}
