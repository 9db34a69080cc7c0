"""The files one call was handed, kept in a directory of their own."""

from __future__ import annotations

import os
import shutil
import tempfile


class Uploads:
    """The files one call was handed; remove them with :meth:`cleanup`.

    :param base_dir: where the call's directory is made (the system's
        temporary directory when ``None``); it is made with the first file.
    """

    def __init__(self, base_dir: str | None) -> None:
        self._base_dir = base_dir
        self._dir: str | None = None

    def new_path(self) -> str:
        """A new empty file of the call's, to write an upload to."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="deepserve-upload-", dir=self._base_dir)
        fd, path = tempfile.mkstemp(dir=self._dir)
        os.close(fd)
        return path

    def cleanup(self) -> None:
        """Remove every file of the call's (again: nothing)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
