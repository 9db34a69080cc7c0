"""The classes a DEEPaaS-style model's files travel in.

Models written for DEEPaaS check ``isinstance(arg,
deepaas.model.v2.wrapper.UploadedFile)``. Where ``deepaas`` is importable in
the process that runs the model, file arguments therefore arrive as
:class:`DeepaasUploadedFile`: a subclass of both DEEPaaS's class and
deepserve's own :class:`~deepserve.model.UploadedFile`, with the same
fields, so both kinds of check hold. Without ``deepaas`` they arrive as
deepserve's class. The choice is made once, by the adapter, when it is built
(once per worker), never per request.

Files a model returns come back to deepserve as its own
:class:`~deepserve.model.ReturnedFile`, whichever package's class the model
used, so that nothing but deepserve's classes crosses between processes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from deepserve.adapters.quiet import deepaas_code
from deepserve.model import (
    ReturnedFile,
    UploadedFile,
    as_returned_file,
    is_file_tuple,
)

LOG = logging.getLogger(__name__)

#: The name the combined class has in this module (pickle finds it here).
_COMBINED = "DeepaasUploadedFile"


_lock = threading.Lock()
_chosen: list[type[UploadedFile]] = []


def upload_class() -> type[UploadedFile]:
    """The class file arguments are handed to DEEPaaS-style models in;
    chosen once per process (one class, so that pickling finds it)."""
    with _lock:
        if not _chosen:
            _chosen.append(_choose())
        return _chosen[0]


def _choose() -> type[UploadedFile]:
    try:
        with deepaas_code():
            from deepaas.model.v2 import wrapper
    except ImportError:
        return UploadedFile
    except Exception as exc:  # a broken deepaas must not stop the model
        LOG.warning(
            "deepaas is installed but cannot be imported (%s: %s); file "
            "arguments arrive as deepserve.model.UploadedFile",
            type(exc).__name__,
            exc,
        )
        return UploadedFile
    theirs = getattr(wrapper, "UploadedFile", None)
    if not isinstance(theirs, type) or not issubclass(theirs, tuple):
        return UploadedFile
    if getattr(theirs, "_fields", None) != UploadedFile._fields:
        LOG.warning(
            "deepaas's UploadedFile has fields %s, not %s; file arguments "
            "arrive as deepserve.model.UploadedFile",
            getattr(theirs, "_fields", None),
            UploadedFile._fields,
        )
        return UploadedFile
    combined = type(
        "UploadedFile",
        (UploadedFile, theirs),
        {
            "__slots__": (),
            "__module__": __name__,
            "__qualname__": _COMBINED,
            "__doc__": "An uploaded file, an instance of deepserve's and of "
            "DEEPaaS's UploadedFile alike.",
        },
    )
    return combined


def __getattr__(name: str) -> Any:
    # Lets pickle find the combined class in a process that has not built
    # it yet (a model that returns or records its argument as it came).
    if name == _COMBINED:
        cls = upload_class()
        if cls is not UploadedFile:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_model(kwargs: Mapping[str, Any], cls: type[UploadedFile]) -> dict[str, Any]:
    """The arguments as the model receives them: uploads in ``cls``."""
    if cls is UploadedFile:
        return dict(kwargs)
    return {
        key: cls(*value)
        if isinstance(value, UploadedFile) and type(value) is not cls
        else value
        for key, value in kwargs.items()
    }


def returned(result: Any) -> Any:
    """``result``, with a file in another package's class (DEEPaaS's
    ``ReturnedFile``, an ``UploadedFile`` sent back) as deepserve's
    :class:`~deepserve.model.ReturnedFile`."""
    if type(result) is ReturnedFile or not is_file_tuple(result):
        return result
    return as_returned_file(result)
