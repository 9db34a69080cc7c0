"""The local model store: ``<root>/<name>/<version>/`` directories.

Every change is a rename, so readers never see half of one:

- a save writes the new entry in a private temp dir under ``<root>/.tmp``
  and renames it to ``<root>/<name>/<version>`` when complete (a crash
  leaves only the temp dir, which nobody lists);
- versions are unique (time + random suffix), and a rename onto an existing
  non-empty directory fails, so concurrent saves or imports never clobber
  an entry;
- a delete renames the entry into ``.tmp`` first, then removes it.

Each temp dir has a lock file held (``flock``) by the process that writes
it. A temp dir whose lock nobody holds was left by a crashed process; it is
removed by :meth:`Store.clean`, which saves and imports run first.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from deepserve.exceptions import (
    BadArchive,
    BadTag,
    ModelTagNotFound,
    StoreError,
    TagExists,
)
from deepserve.store import archive
from deepserve.store.entry import INFO_FILE, ModelInfo, StoredModel
from deepserve.store.tag import Tag, new_version

LOG = logging.getLogger(__name__)

TMP_DIR = ".tmp"
ARCHIVE_SUFFIX = ".dsmodel"
PENDING = ".pending-"
#: Age after which an unpublished lock file is surely abandoned.
PENDING_TTL = datetime.timedelta(hours=1)
Progress = Callable[[int, int], None]


def archive_name(tag: str) -> str:
    """The file name an export of ``tag`` gets in a directory."""
    return tag.replace(":", "-") + ARCHIVE_SUFFIX


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path``, ``model.json`` excepted."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            if dirpath == str(path) and name == INFO_FILE:
                continue
            file = os.path.join(dirpath, name)
            if not os.path.islink(file):
                total += os.path.getsize(file)
    return total


class Store:
    """A model store rooted at ``root`` (created on first write).

    :param root: the store's directory.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- reading -----------------------------------------------------------

    def get(self, tag: str | Tag) -> StoredModel:
        """The entry named by ``tag`` (``name:latest`` is the newest).

        :raises BadTag: when ``tag`` is not a valid tag.
        :raises ModelTagNotFound: when no entry has it.
        """
        parsed = tag if isinstance(tag, Tag) else Tag.parse(tag)
        if parsed.version is None:
            versions = self._versions(parsed.name)
            if not versions:
                raise ModelTagNotFound(str(parsed), str(self.root))
            return versions[-1]
        path = self.root / parsed.name / parsed.version
        if not (path / INFO_FILE).is_file():
            raise ModelTagNotFound(str(parsed), str(self.root))
        return StoredModel.read(path)

    def list(self, name: str | None = None) -> list[StoredModel]:
        """Every entry (or every version of ``name``), oldest first by name.

        Damaged entries are skipped with a logged warning, so one bad entry
        does not hide the others.
        """
        if name is not None:
            return self._versions(Tag(name).name)
        if not self.root.is_dir():
            return []
        found: list[StoredModel] = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            found.extend(self._versions(child.name))
        return found

    def _versions(self, name: str) -> builtins.list[StoredModel]:
        directory = self.root / name
        if not directory.is_dir():
            return []
        found = []
        for path in directory.iterdir():
            if not (path / INFO_FILE).is_file():
                continue
            try:
                found.append(StoredModel.read(path))
            except StoreError as error:
                LOG.warning("Skipping a damaged store entry: %s", error)
        # Versions encode their creation time, but imported entries may
        # carry versions made elsewhere: order by the recorded time first.
        found.sort(key=lambda m: (m.info.created, m.info.version))
        return found

    # -- writing -----------------------------------------------------------

    def add(
        self,
        name: str,
        write: Callable[[Path, Tag, datetime.datetime], ModelInfo],
    ) -> StoredModel:
        """Save a new version of ``name``, atomically.

        :param write: called with an empty directory, the new tag and the
            creation time; it writes the entry's files there and returns
            the entry's info (its ``size`` is filled in here).
        :returns: the new entry.
        """
        created = datetime.datetime.now(datetime.UTC)
        tag = Tag(name, new_version(created))
        with self._workspace() as work:
            entry = work / "entry"
            entry.mkdir()
            info = write(entry, tag, created)
            info = _with_size(info, tree_size(entry))
            _write_info(entry, info)
            return self._publish(entry, info)

    def delete(self, tag: str | Tag) -> StoredModel:
        """Remove the entry named by ``tag``; returns what was removed.

        :raises ModelTagNotFound: when no entry has it.
        """
        model = self.get(tag)
        with self._workspace() as work:
            try:
                # Out of sight in one step; the slow removal happens in .tmp.
                os.rename(model.path, work / "deleted")
            except FileNotFoundError:
                raise ModelTagNotFound(model.tag, str(self.root)) from None
        with contextlib.suppress(OSError):
            model.path.parent.rmdir()  # only when no version is left
        return model

    def export_model(
        self,
        tag: str | Tag,
        dest: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        overwrite: bool = True,
    ) -> str:
        """Write the entry named by ``tag`` as one archive file.

        :param dest: a file path or URL; an existing directory (or a path or
            URL ending in ``/``) receives ``<name>-<version>.dsmodel``.
        :param overwrite: replace an archive already there; when false, an
            existing file is refused with
            :class:`~deepserve.store.archive.ArchiveExists`.
        :returns: the path or URL written.
        """
        model = self.get(tag)
        target = os.fspath(dest)
        if target.endswith("/") or os.path.isdir(target):
            target = os.path.join(target, archive_name(model.tag))
        archive.pack(model.path, target, progress=progress, overwrite=overwrite)
        return target

    def import_model(
        self,
        src: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        max_member_size: int | None = None,
        max_total_size: int | None = None,
        tag: str | Tag | None = None,
    ) -> StoredModel:
        """Add the model in the archive ``src`` (a path or URL) to the store.

        The archive is unpacked and checked in a temp dir, so on any failure
        the store is left as it was.

        :param tag: the exact ``name:version`` the archive must hold; an
            archive holding another model is refused before it is added.
        :raises BadArchive: when the archive is unsafe or damaged, or does
            not hold ``tag``.
        :raises TagExists: when the store already has the archive's tag.
        """
        expected = None if tag is None else _exact(tag)
        limits: dict[str, int] = {}
        if max_member_size is not None:
            limits["max_member_size"] = max_member_size
        if max_total_size is not None:
            limits["max_total_size"] = max_total_size
        with self._workspace() as work:
            entry = work / "entry"
            entry.mkdir()
            archive.unpack(src, entry, progress=progress, **limits)
            try:
                data = json.loads((entry / INFO_FILE).read_text(encoding="utf-8"))
                info = ModelInfo.from_json(data)
            except FileNotFoundError:
                raise BadArchive(f"{src}: the archive holds no {INFO_FILE}") from None
            except (ValueError, StoreError) as error:
                raise BadArchive(f"{src}: {error}") from None
            if expected is not None and info.tag != str(expected):
                raise BadArchive(
                    f"{src}: the archive holds '{info.tag}', not '{expected}'"
                )
            return self._publish(entry, info)

    def clean(self) -> builtins.list[Path]:
        """Remove temp dirs left by crashed saves, imports and deletes.

        A temp dir is left alone while the process writing it holds its lock.

        :returns: the temp dirs removed.
        """
        tmp = self.root / TMP_DIR
        if not tmp.is_dir():
            return []
        removed = []
        for path in sorted(tmp.iterdir()):
            if path.name.startswith(PENDING):
                _remove_old_pending(path)
            elif path.suffix == ".lock":
                if not path.with_suffix("").exists():
                    _remove_if_unlocked(path, None)
            elif _remove_if_unlocked(path.with_name(path.name + ".lock"), path):
                removed.append(path)
        for path in removed:
            LOG.info("Removed the leftover of an interrupted store write: %s", path)
        return removed

    # -- helpers -----------------------------------------------------------

    @contextlib.contextmanager
    def _workspace(self) -> Iterator[Path]:
        """A private, locked temp dir under the root, removed on exit."""
        tmp = self.root / TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        self.clean()
        ident = f"{os.getpid()}-{secrets.token_hex(6)}"
        work = tmp / ident
        lock_path = tmp / f"{ident}.lock"
        # Lock first, then publish the lock file by a rename: nobody ever
        # sees the lock file unlocked, so clean() cannot take a live dir.
        pending = tmp / f"{PENDING}{ident}"
        stream: IO[bytes] = pending.open("wb")
        try:
            fcntl.flock(stream, fcntl.LOCK_EX)
            os.rename(pending, lock_path)
            work.mkdir()
            try:
                yield work
            finally:
                shutil.rmtree(work, ignore_errors=True)
                lock_path.unlink(missing_ok=True)
        finally:
            pending.unlink(missing_ok=True)
            stream.close()

    def _publish(self, entry: Path, info: ModelInfo) -> StoredModel:
        """Rename a complete entry into place; never over an existing one."""
        target = self.root / info.name / info.version
        for _attempt in range(5):
            if target.exists():
                raise TagExists(info.tag)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(entry, target)
            except FileNotFoundError:
                continue  # a delete removed the name's empty dir meanwhile
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise TagExists(info.tag) from None
                raise
            return StoredModel(target, info)
        raise StoreError(f"Could not create {target}: its parent kept vanishing")


def _exact(tag: str | Tag) -> Tag:
    """``tag`` parsed; it must name one version, not ``name:latest``."""
    parsed = tag if isinstance(tag, Tag) else Tag.parse(tag)
    if parsed.version is None:
        raise BadTag(str(parsed), "an exact tag name:version is needed here")
    return parsed


def _with_size(info: ModelInfo, size: int) -> ModelInfo:
    return dataclasses.replace(info, size=size)


def _write_info(entry: Path, info: ModelInfo) -> None:
    with (entry / INFO_FILE).open("w", encoding="utf-8") as stream:
        json.dump(info.to_json(), stream, indent=2, sort_keys=True)
        stream.write("\n")


def _remove_if_unlocked(lock_path: Path, work: Path | None) -> bool:
    """Remove ``work`` and its lock file unless a live process holds it."""
    try:
        stream = lock_path.open("rb")
    except FileNotFoundError:
        if work is None:
            return False
        # A dir without its lock file: a cleaner died halfway through it.
        shutil.rmtree(work, ignore_errors=True)
        return True
    with stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
    return work is not None


def _remove_old_pending(path: Path) -> None:
    # A pending lock file lives for microseconds, between its creation and
    # its rename; taking a young one could break a save that is starting.
    try:
        age = datetime.datetime.now().timestamp() - path.stat().st_mtime
    except FileNotFoundError:
        return
    if age > PENDING_TTL.total_seconds():
        path.unlink(missing_ok=True)
