"""Models that offer a media range, ``image/*``, as the AI4OS demo app does.

``QueryModel`` leaves the location of ``accept`` unsaid, so it is read
where DEEPaaS reads it (query string or body); ``HeaderModel`` declares
``location="headers"``, as the AI4OS templates do, so only the ``Accept``
header counts. Files come back in a ``ReturnedFile`` of this module's own,
as DEEPaaS's would, as an open file, or as bytes.
"""

import collections
import io
import os
import struct
import tempfile
import zipfile
import zlib

from marshmallow import fields, validate

OFFERED = ["application/json", "image/*", "application/zip"]

ReturnedFile = collections.namedtuple(
    "ReturnedFile", ("name", "filename", "content_type", "original_filename")
)


def png() -> bytes:
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def _png_file(suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix="fake-wildcard-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(png())
    return path


class QueryModel:
    #: Where ``accept`` is declared to come from; None: not said.
    location = None

    def get_metadata(self):
        return {"name": type(self).__name__, "description": "Offers image/*"}

    def get_predict_args(self):
        meta = {"description": "Format of the response."}
        if self.location:
            meta["location"] = self.location
        return {
            "how": fields.Str(
                load_default="typed",
                validate=validate.OneOf(["typed", "named", "bare", "raw"]),
                metadata={"description": "How an image is returned"},
            ),
            "accept": fields.Str(
                load_default="application/json",
                validate=validate.OneOf(OFFERED),
                metadata=meta,
            ),
        }

    def predict(self, how, accept):
        if accept not in OFFERED:  # the model only ever gets its own types
            raise ValueError(f"unexpected accept {accept!r}")
        if accept == "application/json":
            return {"accept": accept}
        if accept == "application/zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("accept.txt", accept)
            return buf.getvalue()
        if how == "typed":  # a concrete type, said by the model
            return ReturnedFile("image", _png_file(""), "image/png", "pixel.png")
        if how == "named":  # a concrete type the file's name tells
            return open(_png_file(".png"), "rb")
        if how == "bare":  # only the bytes tell
            return open(_png_file(""), "rb")
        return b"\x00\x01 not a format anyone knows"  # nothing tells


class HeaderModel(QueryModel):
    location = "headers"
