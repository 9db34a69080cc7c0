"""Writes temporary files on every prediction, as DEEPaaS demo modules do.

``file`` returns a ``mkstemp`` file, ``zip`` builds an archive next to a
``TemporaryDirectory`` it leaves behind (the AI4OS demo app's way), and
``json`` leaves an intermediate file and answers JSON. Nobody removes any
of them but deepserve.
"""

import os
import pathlib
import shutil
import tempfile
import time

from marshmallow import fields, validate

TYPES = ["application/octet-stream", "application/zip", "application/json"]


def get_predict_args():
    return {
        "kind": fields.Str(
            load_default="file", validate=validate.OneOf(["file", "zip", "json"])
        ),
        "accept": fields.Str(
            load_default="application/octet-stream", validate=validate.OneOf(TYPES)
        ),
        "seconds": fields.Float(load_default=0.0),
    }


def predict(kind, accept, seconds):
    time.sleep(seconds)
    if kind == "file":
        fd, path = tempfile.mkstemp(suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            f.write(b"payload " * 1000)
        return open(path, "rb")
    if kind == "zip":
        folder = pathlib.Path(tempfile.TemporaryDirectory().name)
        folder.mkdir()
        (folder / "args.txt").write_text(accept)
        shutil.make_archive(str(folder), "zip", root_dir=folder)
        return open(f"{folder}.zip", "rb")
    fd, _path = tempfile.mkstemp(suffix=".tmp")
    os.write(fd, b"intermediate")
    os.close(fd)
    return {"temp_dir": tempfile.gettempdir()}
