"""The ``echo`` model of deepserve's benchmarks.

A DEEPaaS V2 module model that both DEEPaaS 2.6.0 and deepserve serve
unchanged, so that the benchmarks time the servers, not the model:

* ``predict(text=...)`` returns ``{"echo": text}``; with an uploaded file
  ``data`` it also returns the file's size, read in chunks so that the model
  itself never holds the file in memory;
* ``train(seconds=...)`` keeps one CPU busy with pure-Python arithmetic for
  that long, so that a training can run while predictions are measured.

Fields are declared with marshmallow 3 keywords and put the DEEPaaS keys
(``type``, ``location``) in ``metadata``, where webargs 5 (DEEPaaS 2.6.0) and
deepserve both look for them.
"""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields

CHUNK = 1 << 20


def get_metadata() -> dict[str, Any]:
    return {
        "name": "echo",
        "description": "Echoes its text argument; sizes an optional upload.",
        "author": "deepserve benchmarks",
        "license": "Apache-2.0",
        "version": "1.0",
    }


def get_predict_args() -> dict[str, fields.Field]:
    return {
        "text": fields.Str(
            load_default="x", metadata={"description": "Text to echo back."}
        ),
        "data": fields.Raw(
            load_default=None,
            allow_none=True,
            metadata={
                "description": "Optional file; its size is returned.",
                "type": "file",
                "location": "form",
            },
        ),
    }


def predict(**kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"echo": kwargs["text"]}
    upload = kwargs.get("data")
    if upload is not None:
        size = 0
        with open(upload.filename, "rb") as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
        result["size"] = size
    return result


def get_train_args() -> dict[str, fields.Field]:
    return {
        "seconds": fields.Float(
            load_default=30.0,
            metadata={"description": "How long to keep one CPU busy."},
        ),
    }


def train(**kwargs: Any) -> dict[str, Any]:
    seconds = float(kwargs["seconds"])
    deadline = time.monotonic() + seconds
    loops = 0
    acc = 0
    # Pure-Python arithmetic, not a sleep: like a real training, it keeps one
    # CPU busy (and holds its process's GIL) until the deadline. The clock is
    # read every 10,000 steps only.
    while time.monotonic() < deadline:
        for i in range(10_000):
            acc = (acc * 31 + i) & 0xFFFFFFFF
        loops += 1
    return {"seconds": seconds, "loops": loops, "checksum": acc}
