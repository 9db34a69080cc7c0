"""Each prediction's own temporary directory, removed once it is answered.

Models written for DEEPaaS write a temporary file per prediction and return
it (``tempfile.mkstemp``, ``NamedTemporaryFile(delete=False)``,
``shutil.make_archive`` next to a ``TemporaryDirectory``...); nobody
removed those, and a long-running server filled its disk. In a worker
process (the ``process`` executor, which runs one call at a time), every
``predict`` and ``predict_batch`` runs with :mod:`tempfile`'s directory set
to a fresh *call space*: ``deepserve-call-<worker pid>-*`` in the worker's
temporary directory. After the call:

- a result that is not a file in the space: the space is removed at once;
- a file in the space (``ReturnedFile``, a path): the space stays until the
  server has sent the answer, then :func:`release` removes it;
- a batch: each item's file moves to a space of its own, so each answer
  removes its own; the batch's space goes.

A process making calls one at a time keeps a :class:`Spaces`: a call that
leaves its space empty (most do) hands it to the next call instead of
removing it, since making and removing a directory was most of a trivial
call's cost in a worker.

A worker that dies mid-call leaves its space behind: :func:`sweep` removes
the spaces of a worker that is gone. Files a model writes elsewhere (its
own directories, paths it chose) are the model's.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from deepserve.model import as_returned_file, is_file_tuple

PREFIX = "deepserve-call-"


def _base() -> str:
    return os.path.realpath(tempfile.gettempdir())


@contextlib.contextmanager
def space(base: str, path: str | None = None) -> Iterator[str]:
    """A call space under ``base`` (a fresh one, or the empty ``path``),
    where :mod:`tempfile` puts what the call creates; removed here if the
    call raises."""
    path = path or _make(base)
    before = tempfile.tempdir
    tempfile.tempdir = path
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        tempfile.tempdir = before


class Spaces:
    """The call spaces of one process that makes calls one at a time, under
    ``base``: an empty space is reused by the next call.

    What a worker leaves behind when it exits or dies (at most one empty
    space, or the space of the call it died in) :func:`sweep` removes.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        #: The space the last call left empty, for the next one.
        self._idle: str | None = None

    def run(self, method: str, call: Callable[[], Any]) -> Any:
        """``call()`` in a call space; its result, as :func:`settle` leaves it."""
        path = self._idle or _make(self.base)
        self._idle = None
        with space(self.base, path):
            result = call()
        if _empty(path) and not _holds_file(method, result, path):
            self._idle = path
            return result
        return settle(method, result, path)

    def close(self) -> None:
        """Remove the space kept for the next call."""
        if self._idle is not None:
            shutil.rmtree(self._idle, ignore_errors=True)
            self._idle = None


def _make(base: str) -> str:
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base)


def _empty(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False  # gone or unreadable: not one to hand on


def _holds_file(method: str, result: Any, path: str) -> bool:
    """Whether ``result`` (each item of a batch) names a file in ``path``."""
    if method == "predict_batch" and isinstance(result, list | tuple):
        return any(_inside(_file_of(item), path) for item in result)
    return _inside(_file_of(result), path)


def settle(method: str, result: Any, path: str) -> Any:
    """What the server gets of a call made in the space at ``path``; the
    space is kept only for files the server still has to send."""
    try:
        if method == "predict_batch" and isinstance(result, list | tuple):
            result = [_own_space(item, path) for item in result]
        elif _inside(_file_of(result), path):
            return result  # released by the server once sent
    finally:
        if not _inside(_file_of(result), path):
            shutil.rmtree(path, ignore_errors=True)
    return result


def release(result: Any) -> None:
    """Remove the call space a sent result's file lies in, if it does."""
    found = space_of(_file_of(result))
    if found is not None:
        shutil.rmtree(found, ignore_errors=True)


def space_of(file: str | None) -> str | None:
    """The call space ``file`` lies in: a ``deepserve-call-*`` directory
    directly in the temporary directory; None when it lies in none."""
    if not file:
        return None
    base = _base()
    current = pathlib.Path(os.path.realpath(file)).parent
    while str(current) != current.anchor:
        if current.name.startswith(PREFIX) and str(current.parent) == base:
            return str(current)
        current = current.parent
    return None


def sweep(pid: int, base: str | None = None) -> None:
    """Remove the call spaces worker ``pid`` left (it died mid-call)."""
    pattern = os.path.join(base or _base(), f"{PREFIX}{pid}-*")
    for path in glob.glob(pattern):
        shutil.rmtree(path, ignore_errors=True)


def _own_space(item: Any, batch_space: str) -> Any:
    """A batch item whose file is in the batch's space, moved to its own."""
    file = _file_of(item)
    if not _inside(file, batch_space):
        return item
    assert file is not None
    own = tempfile.mkdtemp(
        prefix=f"{PREFIX}{os.getpid()}-", dir=os.path.dirname(batch_space)
    )
    target = os.path.join(own, os.path.basename(file))
    shutil.copyfile(file, target)  # a copy: two items may share one file
    if is_file_tuple(item):
        return as_returned_file(item, target)
    return pathlib.Path(target)


def _file_of(result: Any) -> str | None:
    if is_file_tuple(result):
        return str(result.filename)
    if isinstance(result, pathlib.PurePath):
        return str(result)
    return None


def _inside(file: str | None, directory: str) -> bool:
    if not file:
        return False
    real = os.path.realpath(file)
    return real.startswith(os.path.realpath(directory) + os.sep)
