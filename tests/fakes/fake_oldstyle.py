"""A DEEPaaS 2.x style module model, written for webargs 5.

It uses the old field keywords (``missing=``, ``description=``,
``location=``, ``type="file"``, ``enum=``) and is registered only under
``deepaas.v2.model``, like the packages deepserve must serve unchanged.
"""

import hashlib
import io
import os
import struct
import tempfile
import zipfile
import zlib

from aiohttp import web
from webargs import fields, validate

_STATE = {"warm_calls": 0}


def get_metadata():
    return {
        "name": "oldstyle",
        "description": "An old DEEPaaS model",
        "author": "Someone",
        "license": "MIT",
        "version": "0.1.0",
        "url": "https://example.org/oldstyle",
    }


def warm():
    _STATE["warm_calls"] += 1


def get_predict_args():
    return {
        "data": fields.Field(
            description="Data file to perform inference on.",
            required=False,
            missing=None,
            type="file",
            location="form",
        ),
        "text": fields.Str(description="Some text", missing="hello"),
        "count": fields.Int(description="How many times", missing=1),
        "mode": fields.Str(
            description="What to do",
            missing="echo",
            enum=["echo", "badrequest", "crash", "exit", "sleep"],
        ),
        "tags": fields.List(fields.Str(), description="Tags", missing=[]),
        "accept": fields.Str(
            description="Media type(s) that is/are acceptable for the response.",
            missing="application/json",
            validate=validate.OneOf(
                ["application/json", "image/png", "application/zip", "text/plain"]
            ),
        ),
    }


def _png(width=4, height=3):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def predict(**kwargs):
    mode = kwargs["mode"]
    if mode == "badrequest":
        raise web.HTTPBadRequest(reason="The text is not acceptable")
    if mode == "crash":
        raise ValueError("boom")
    if mode == "exit":
        os._exit(3)
    if mode == "sleep":
        import time

        time.sleep(float(kwargs["text"]))
    accept = kwargs["accept"]
    if accept == "image/png":
        fd, path = tempfile.mkstemp(suffix=".png")
        with os.fdopen(fd, "wb") as f:
            f.write(_png())
        return open(path, "rb")
    if accept == "application/zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("result.txt", kwargs["text"] * kwargs["count"])
        return buf.getvalue()
    if accept == "text/plain":
        return kwargs["text"] * kwargs["count"]
    result = {
        "text": kwargs["text"] * kwargs["count"],
        "tags": kwargs["tags"],
        "warm_calls": _STATE["warm_calls"],
        "pid": os.getpid(),
    }
    upload = kwargs["data"]
    if upload is not None:
        with open(upload.filename, "rb") as f:
            content = f.read()
        result["file"] = {
            "name": upload.name,
            "path": upload.filename,
            "original_filename": upload.original_filename,
            "content_type": upload.content_type,
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    return result


def get_train_args():
    return {
        "epochs": fields.Int(description="Epochs", missing=1),
        "pidfile": fields.Str(description="Where to write the PID", missing=None),
        "seconds": fields.Float(description="How long to train", missing=0.0),
    }


def train(**kwargs):
    import time

    if kwargs["pidfile"]:
        with open(kwargs["pidfile"], "w") as f:
            f.write(str(os.getpid()))
    time.sleep(kwargs["seconds"])
    return {"epochs": kwargs["epochs"], "warm_calls": _STATE["warm_calls"]}
