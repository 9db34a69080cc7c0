"""A model store at a URL, and fetching from it into a node-local cache.

A remote store is a prefix in object storage (``s3://bucket/models``,
``gs://...``), a directory (``file:///srv/models``) or anything else fsspec
reaches (``memory://`` in tests). It holds one archive per version, in the
format :meth:`Store.export_model <deepserve.store.Store.export_model>`
writes (:mod:`deepserve.store.archive`)::

    URL/NAME/VERSION.dsmodel   the version's archive
    URL/NAME/VERSION.json      a copy of its model.json, uploaded after it

A version exists once its ``VERSION.json`` does. A push uploads the archive
first, so a reader never finds a version whose archive is still on its way;
an archive without its ``.json`` is what an interrupted push left, and the
next push of that version replaces it.

``NAME:latest`` is the version whose ``model.json`` records the latest
creation time (ties broken by the version string), as in the local store.
Versions made by deepserve sort by creation time as strings too, but an
imported archive may carry a version made elsewhere: the ``.json`` copies
order versions without downloading archives. They only name and order
versions; what a fetch imports is checked from the archive itself, which
must hold the very tag asked for.

Uploads: where the URL is a local directory, a file is written under a
temp name and renamed into place; object stores make an object visible
only once its upload is complete, so there it is written directly (a
"rename" there is a copy). Refusing to replace a version is a check before
the upload: object stores offer fsspec no "create if absent".

:meth:`RemoteStore.fetch` imports a version into a local :class:`Store`
used as a cache (by default :func:`default_cache_root`). Several processes
on one node may fetch the same tag at once: they take turns on a lock file
(``flock``) under ``<cache>/.fetch/``, the first downloads and imports, the
others find the version in the cache and use it. The import is the store's
own (every check of :func:`archive.unpack <deepserve.store.archive.unpack>`,
then a rename into place), so no process ever sees half a version, and a
damaged, tampered or swapped archive leaves nothing in the cache.

Credentials and endpoints are fsspec's: the backend's own variables and
files (for ``s3://``, s3fs reads ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``~/.aws/...``), fsspec's configuration
(``FSSPEC_S3_ENDPOINT_URL`` for an S3-compatible endpoint), or
``storage_options`` passed to :class:`RemoteStore`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import posixpath
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deepserve.exceptions import (
    BadArchive,
    BadTag,
    DeepserveError,
    ModelTagNotFound,
    StoreError,
    TagExists,
)
from deepserve.store.archive import Progress
from deepserve.store.entry import INFO_FILE, ModelInfo, StoredModel
from deepserve.store.local import ARCHIVE_SUFFIX, Store
from deepserve.store.tag import Tag

LOG = logging.getLogger(__name__)

#: Suffix of a version's ``model.json`` copy in a remote store.
INFO_SUFFIX = ".json"
#: The directory of a cache's fetch locks and downloads, under its root.
FETCH_DIR = ".fetch"
_PART = ".part"
#: Characters of a file system's error kept in a message.
_REASON_LENGTH = 300


class RemoteStoreError(StoreError):
    """The store at a URL cannot be used: it is not there (a missing
    bucket), or credentials are missing, or access is denied, or the
    file system failed.

    :param url: the URL the failed operation was about.
    :param hint: a line for the person at the terminal, or ``""``.
    """

    def __init__(self, message: str, *, url: str, hint: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.hint = hint


class VersionExists(TagExists):
    """A push would replace a version the remote store already has."""

    def __init__(self, tag: str, url: str) -> None:
        DeepserveError.__init__(self, f"Model '{tag}' is already in the store at {url}")
        self.tag = tag
        self.url = url


def default_cache_root() -> Path:
    """The node-local cache of fetched models:
    ``$XDG_CACHE_HOME/deepserve/models``, by default
    ``~/.cache/deepserve/models`` (the variable is read on every call; a
    relative value is ignored, as the XDG specification says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = "~/.cache"
    return Path(base).expanduser() / "deepserve" / "models"


class RemoteStore:
    """The model store at ``url`` (see the module's documentation).

    :param url: the store's URL: ``s3://bucket/prefix``, ``gs://...``,
        ``file:///dir``, or any URL fsspec handles (with the ``fsspec``
        extra and the protocol's package, such as ``s3fs``).
    :param storage_options: keyword arguments for the fsspec file system
        (e.g. ``{"endpoint_url": ...}`` for s3fs); by default fsspec's
        configuration and the backend's environment apply.

    Nothing is reached until a method is called. An instance can be
    pickled (without its file system, made again where it is used).
    """

    def __init__(
        self, url: str, *, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(url, str) or not url.strip():
            raise StoreError(
                f"A store at a URL needs its URL, e.g. s3://bucket/models, not {url!r}"
            )
        stripped = url.rstrip("/")
        if not stripped or stripped.endswith(":"):
            raise StoreError(f"Cannot use '{url}' as a model store: it names no path")
        #: The store's URL, without a trailing ``/``.
        self.url = stripped
        self._options = dict(storage_options or {})
        self._fs: Any = None
        self._root = ""

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None, "_root": ""}

    # -- reading -----------------------------------------------------------

    def versions(self, name: str) -> list[str]:
        """The versions of ``name`` in the store, oldest first (the newest,
        ``name:latest``, last); ``[]`` when it has none.

        A version whose ``.json`` is damaged or names another model is
        skipped with a logged warning.

        :raises BadTag: when ``name`` is not a valid name.
        :raises RemoteStoreError: when the store cannot be listed.
        """
        return [info.version for info in self._infos(Tag(name).name)]

    def resolve(self, tag: str | Tag) -> str:
        """The exact tag ``name:version`` that ``tag`` (``name``,
        ``name:latest`` or ``name:version``) names in this store.

        :raises BadTag: when ``tag`` is not a valid tag.
        :raises ModelTagNotFound: naming the tag and the URL, when the store
            has no such version (or no version of the name).
        :raises RemoteStoreError: when the store cannot be reached.
        """
        parsed = _parse(tag)
        if parsed.version is None:
            infos = self._infos(parsed.name)
            if not infos:
                raise ModelTagNotFound(str(parsed), self.url)
            return infos[-1].tag
        return self._info(parsed).tag

    def archive_url(self, tag: str | Tag) -> str:
        """The URL of the archive of the exact tag ``name:version``."""
        exact = _exact(tag)
        return f"{self.url}/{exact.name}/{exact.version}{ARCHIVE_SUFFIX}"

    # -- writing -----------------------------------------------------------

    def push(
        self,
        store: Store,
        tag: str | Tag,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """Upload the version of ``store`` that ``tag`` names.

        :param tag: ``name``, ``name:latest`` or ``name:version`` in
            ``store``.
        :param overwrite: replace the version if the remote store has it.
        :param progress: called with ``(done_bytes, total_bytes)`` of the
            archive's upload.
        :returns: the exact tag pushed.
        :raises ModelTagNotFound: when ``store`` has no such model.
        :raises VersionExists: when the remote store has the version and
            ``overwrite`` is false.
        :raises RemoteStoreError: when the store cannot be written.
        """
        stored = store.get(tag)
        exact = Tag(stored.info.name, stored.info.version)
        if not overwrite:
            self._refuse_existing(exact)
        with tempfile.TemporaryDirectory(prefix="deepserve-push-") as tmp:
            packed = Path(tmp) / f"{exact.version}{ARCHIVE_SUFFIX}"
            store.export_model(exact, packed)
            info = Path(tmp) / f"{exact.version}{INFO_SUFFIX}"
            info.write_bytes((stored.path / INFO_FILE).read_bytes())
            if not overwrite:
                self._refuse_existing(exact)  # again: packing may take long
            self._upload(packed, exact, ARCHIVE_SUFFIX, progress)
            self._upload(info, exact, INFO_SUFFIX, None)
        return str(exact)

    # -- fetching ----------------------------------------------------------

    def fetch(
        self,
        tag: str | Tag,
        cache_root: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
    ) -> StoredModel:
        """The version ``tag`` names, imported into the store at
        ``cache_root`` (default: :func:`default_cache_root`) unless it is
        already there.

        An exact ``name:version`` already in the cache is returned without
        reaching the remote store; ``name:latest`` is resolved here first.
        Safe to call from several processes at once (see the module's
        documentation): one downloads and imports, the others wait for it
        and return the same entry.

        :param progress: called with ``(done_bytes, total_bytes)`` of the
            archive's download (not called when nothing is downloaded).
        :returns: the cache's entry: its ``tag`` is exact, and its store
            root is ``cache_root``.
        :raises ModelTagNotFound: when the remote store has no such version.
        :raises BadArchive: when the archive is damaged, unsafe or holds
            another model; the cache is left as it was.
        :raises RemoteStoreError: when the remote store cannot be read.
        """
        cache = Store(cache_root if cache_root is not None else default_cache_root())
        parsed = _parse(tag)
        if parsed.version is not None:
            found = _cached(cache, parsed)
            if found is not None:
                return found
        exact = Tag.parse(self.resolve(parsed))
        try:
            found = _cached(cache, exact)
            if found is not None:
                return found
            with _fetch_lock(cache.root, exact) as work:
                found = _cached(cache, exact)
                if found is not None:
                    return found  # fetched by another process meanwhile
                return self._import(cache, exact, work, progress)
        except OSError as err:  # the cache's own directory, not the remote
            raise StoreError(
                f"Cannot fetch '{exact}' into the cache {cache.root}: {_os_error(err)}"
            ) from err

    def _import(
        self, cache: Store, exact: Tag, work: Path, progress: Progress | None
    ) -> StoredModel:
        part = work / f"{_stem(exact)}{ARCHIVE_SUFFIX}{_PART}"
        _sweep(work)
        shown = self.archive_url(exact)
        fs, _root = self._filesystem()
        try:
            with _reaching("download", shown):
                fs.get_file(
                    self._key(exact, ARCHIVE_SUFFIX),
                    str(part),
                    callback=_callback(progress),
                )
            if progress is not None:
                size = part.stat().st_size
                progress(size, size)
            try:
                return cache.import_model(part, tag=exact)
            except TagExists:
                # Imported meanwhile by a process that took no fetch lock
                # (a `deepserve models import` of the same archive).
                return cache.get(exact)
            except StoreError as err:
                raise _renamed(err, str(part), shown) from None
        finally:
            part.unlink(missing_ok=True)

    # -- helpers -----------------------------------------------------------

    def _filesystem(self) -> tuple[Any, str]:
        """The fsspec file system and the store's path within it."""
        if self._fs is None:
            try:
                import fsspec
            except ImportError:
                raise StoreError(
                    f"Cannot use '{self.url}': a model store at a URL needs "
                    "fsspec; install it with pip install 'deepserve[fsspec]'"
                ) from None
            with _reaching("use", self.url):
                fs, root = fsspec.core.url_to_fs(self.url, **self._options)
            self._fs, self._root = fs, str(root).rstrip("/")
        return self._fs, self._root

    def _key(self, exact: Tag, suffix: str) -> str:
        _fs, root = self._filesystem()
        return f"{root}/{exact.name}/{exact.version}{suffix}"

    def _infos(self, name: str) -> list[ModelInfo]:
        """The valid versions of ``name``, oldest first."""
        fs, root = self._filesystem()
        directory = f"{root}/{name}"
        shown = f"{self.url}/{name}/"
        with _reaching("list", shown):
            fs.invalidate_cache(directory)  # s3fs, gcsfs cache listings
            try:
                listed = fs.ls(directory, detail=False)
            except FileNotFoundError:
                self._check_root()
                return []
        leaves = {posixpath.basename(str(path).rstrip("/")) for path in listed}
        versions = sorted(
            leaf.removesuffix(INFO_SUFFIX)
            for leaf in leaves
            if leaf.endswith(INFO_SUFFIX)
            and leaf.removesuffix(INFO_SUFFIX) + ARCHIVE_SUFFIX in leaves
        )
        paths = [f"{directory}/{version}{INFO_SUFFIX}" for version in versions]
        if not paths:
            return []
        with _reaching("read", shown):
            contents = fs.cat(paths, on_error="return")
        by_leaf = {
            posixpath.basename(str(path)): data for path, data in contents.items()
        }
        found = []
        for version in versions:
            where = f"{shown}{version}{INFO_SUFFIX}"
            data = by_leaf.get(f"{version}{INFO_SUFFIX}")
            if data is None or isinstance(data, FileNotFoundError):
                continue  # removed since the listing
            if isinstance(data, BaseException):
                raise _translate("read", where, data) from data
            try:
                found.append(_parse_info(data, name, version, where))
            except StoreError as err:
                LOG.warning("Skipping a damaged version in %s: %s", self.url, err)
        found.sort(key=lambda info: (info.created, info.version))
        return found

    def _info(self, exact: Tag) -> ModelInfo:
        """The ``.json`` of the exact tag ``exact``."""
        fs, _root = self._filesystem()
        key = self._key(exact, INFO_SUFFIX)
        where = f"{self.url}/{exact.name}/{exact.version}{INFO_SUFFIX}"
        with _reaching("read", where):
            try:
                data = fs.cat_file(key)
            except FileNotFoundError:
                self._check_root()
                raise ModelTagNotFound(str(exact), self.url) from None
        assert exact.version is not None
        return _parse_info(data, exact.name, exact.version, where)

    def _check_root(self) -> None:
        """Raise :class:`RemoteStoreError` when the store's own path (its
        bucket, its directory) is not there."""
        fs, root = self._filesystem()
        with _reaching("list", self.url):
            fs.invalidate_cache(root)
            try:
                fs.ls(root, detail=False)
            except FileNotFoundError as err:
                raise RemoteStoreError(
                    f"No model store at {self.url} (not found: {_reason(err)})",
                    url=self.url,
                ) from None

    def _present(self, key: str, shown: str) -> bool:
        fs, _root = self._filesystem()
        with _reaching("check", shown):
            fs.invalidate_cache(posixpath.dirname(key))
            try:
                fs.info(key)
            except FileNotFoundError:
                return False
        return True

    def _refuse_existing(self, exact: Tag) -> None:
        # Only the .json makes a version: an archive alone is the leftover
        # of an interrupted push, replaced.
        key = self._key(exact, INFO_SUFFIX)
        if self._present(key, self.archive_url(exact)):
            raise VersionExists(str(exact), self.url)

    def _upload(
        self, local: Path, exact: Tag, suffix: str, progress: Progress | None
    ) -> None:
        from fsspec.implementations.local import LocalFileSystem

        fs, _root = self._filesystem()
        key = self._key(exact, suffix)
        shown = f"{self.url}/{exact.name}/{exact.version}{suffix}"
        with _reaching("upload to", shown):
            if not isinstance(fs, LocalFileSystem):
                fs.put_file(str(local), key, callback=_callback(progress))
            else:
                directory = posixpath.dirname(key)
                fs.makedirs(directory, exist_ok=True)
                tmp = f"{directory}/.{posixpath.basename(key)}.{secrets.token_hex(8)}"
                try:
                    fs.put_file(str(local), tmp, callback=_callback(progress))
                    os.replace(tmp, key)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        if progress is not None:
            size = local.stat().st_size
            progress(size, size)


# -- tags and model.json copies --------------------------------------------


def _parse(tag: str | Tag) -> Tag:
    return tag if isinstance(tag, Tag) else Tag.parse(tag)


def _exact(tag: str | Tag) -> Tag:
    parsed = _parse(tag)
    if parsed.version is None:
        raise BadTag(str(parsed), "an exact tag name:version is needed here")
    return parsed


def _stem(exact: Tag) -> str:
    """``name@version``: a file name no two tags share (``@`` is in no
    name or version)."""
    return f"{exact.name}@{exact.version}"


def _parse_info(data: bytes, name: str, version: str, where: str) -> ModelInfo:
    try:
        info = ModelInfo.from_json(json.loads(data))
    except (ValueError, StoreError) as err:
        raise StoreError(f"{where}: {err}") from None
    if (info.name, info.version) != (name, version):
        raise StoreError(f"{where}: it names '{info.tag}', not '{name}:{version}'")
    return info


def _cached(cache: Store, exact: Tag) -> StoredModel | None:
    try:
        return cache.get(exact)
    except ModelTagNotFound:
        return None


# -- errors ----------------------------------------------------------------


@contextlib.contextmanager
def _reaching(action: str, url: str) -> Iterator[None]:
    """Turn what a file system raises into a one-line
    :class:`RemoteStoreError` naming ``url``.

    The file system is the boundary: its backends raise their own errors
    (``botocore``'s, Google's), not only ``OSError``. ``FileNotFoundError``
    is left to the caller inside the block, which knows what is missing.
    """
    try:
        yield
    except DeepserveError:
        raise
    except Exception as err:
        raise _translate(action, url, err) from err


def _translate(action: str, url: str, err: BaseException) -> RemoteStoreError:
    reason = _reason(err)
    hint = ""
    if isinstance(err, PermissionError):
        problem = f"permission denied ({reason})"
    elif isinstance(err, FileNotFoundError):
        problem = f"not found ({reason})"
    elif "credential" in type(err).__name__.lower():
        problem = f"no credentials ({reason})"
        hint = (
            "The file system reads its credentials the way its package does; "
            "for s3://, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or ~/.aws/."
        )
    else:
        problem = reason
    return RemoteStoreError(f"Cannot {action} '{url}': {problem}", url=url, hint=hint)


def _reason(err: BaseException) -> str:
    """An error's message on one line, with its type unless it is an
    ``OSError`` (whose message says enough)."""
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    text = " ".join(str(text).split())
    if not isinstance(err, OSError):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if len(text) > _REASON_LENGTH:
        text = text[: _REASON_LENGTH - 3] + "..."
    return text or type(err).__name__


def _os_error(err: OSError) -> str:
    """``Permission denied: '/path'``: the error and the file it is about."""
    text = err.strerror or str(err) or type(err).__name__
    if err.filename is not None:
        text += f": '{os.fsdecode(err.filename)}'"
    return text


def _renamed(err: StoreError, part: str, url: str) -> StoreError:
    """``err`` naming the archive's URL instead of the downloaded file."""
    if type(err) not in (StoreError, BadArchive):
        return err
    return type(err)(str(err).replace(part, url))


def _callback(progress: Progress | None) -> Any:
    """An fsspec callback reporting to ``progress``."""
    from fsspec.callbacks import Callback, NoOpCallback

    if progress is None:
        return NoOpCallback()

    def report(size: int | None, value: int, **_kwargs: Any) -> None:
        if size:
            progress(min(value, size), size)

    return Callback(hooks={"progress": report})


# -- the cache's locks -------------------------------------------------------


@contextlib.contextmanager
def _fetch_lock(root: Path, exact: Tag) -> Iterator[Path]:
    """Hold the fetch lock of ``exact`` in the cache at ``root``; yields the
    directory of locks and downloads.

    The holder removes the lock file before it lets go: a process that
    then gets the lock of a file no longer there starts over on a new one.
    """
    work = root / FETCH_DIR
    path = work / f"{_stem(exact)}.lock"
    while True:
        work.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield work
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _sweep(work: Path) -> None:
    """Remove the downloads of fetches that died (their lock is free)."""
    for part in work.glob(f"*{ARCHIVE_SUFFIX}{_PART}"):
        stem = part.name.removesuffix(f"{ARCHIVE_SUFFIX}{_PART}")
        lock = work / f"{stem}.lock"
        # Taken as a fetch takes it (created if missing): a fetch that
        # starts meanwhile waits, then starts over on a new lock file.
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its fetch is alive
            if _same_file(fd, lock):
                LOG.info("Removing the download of a fetch that died: %s", part)
                part.unlink(missing_ok=True)
                lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
