"""The classes a DEEPaaS-style model's files travel in (adapters/files.py).

Runs in both venvs: without deepaas (the main one) uploads stay deepserve's
own class; with it (.ci/run's DEEPaaS venv) they are DEEPaaS's too.
"""

from __future__ import annotations

import collections
import importlib.util
import pickle

from deepserve.adapters import files
from deepserve.model import ReturnedFile, UploadedFile

HAS_DEEPAAS = importlib.util.find_spec("deepaas") is not None
Foreign = collections.namedtuple(
    "Foreign", ("name", "filename", "content_type", "original_filename")
)


def test_the_class_depends_on_deepaas_being_installed() -> None:
    cls = files.upload_class()
    assert files.upload_class() is cls  # decided once
    if HAS_DEEPAAS:
        from deepaas.model.v2.wrapper import UploadedFile as Theirs

        assert issubclass(cls, Theirs) and issubclass(cls, UploadedFile)
    else:
        assert cls is UploadedFile


def test_uploads_are_converted_and_nothing_else() -> None:
    cls = files.upload_class()
    upload = UploadedFile("data", "/tmp/f", "text/plain", "f.txt")
    kwargs = {"data": upload, "n": 1, "none": None, "pair": ("a", "b")}
    given = files.to_model(kwargs, cls)
    assert type(given["data"]) is cls
    assert given["data"] == upload  # the same fields, in the same order
    assert given["n"] == 1 and given["none"] is None and given["pair"] == ("a", "b")
    assert kwargs["data"] is upload  # the caller's dict is left alone
    # Pickled and back (a model that records its argument), it stays itself.
    again = pickle.loads(pickle.dumps(given["data"]))
    assert type(again) is cls and again == upload


def test_returned_files_come_back_as_deepserves_class() -> None:
    foreign = Foreign("out", "/tmp/out.png", "image/png", "out.png")
    back = files.returned(foreign)
    assert type(back) is ReturnedFile
    assert back == ReturnedFile("out", "/tmp/out.png", "image/png", "out.png")
    sent_back = files.returned(files.upload_class()(None, "/tmp/u", None, "u.bin"))
    assert type(sent_back) is ReturnedFile and sent_back.original_filename == "u.bin"
    ours = ReturnedFile(filename="/tmp/x")
    assert files.returned(ours) is ours
    for other in ({"a": 1}, b"bytes", ("a", "tuple"), None):
        assert files.returned(other) is other
