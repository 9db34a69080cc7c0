"""Model archives: one ``.tar.gz`` file per store entry, safe to import.

An archive is a gzip-compressed POSIX (pax) tar file. Its first member is
``MANIFEST.json``; the entry's directories and regular files follow, each
directory before what it holds. The manifest lists every other member with
its type and, for files, its size and SHA-256::

    {"format": "deepserve-archive", "version": 1,
     "members": [{"path": "artifacts", "type": "dir"},
                 {"path": "code/run.sh", "type": "file", "size": 40,
                  "sha256": "5e8f2a...", "executable": true},
                 {"path": "model.json", "type": "file", "size": 312,
                  "sha256": "9f86d08..."}]}

The one permission carried is whether a file is executable (a script or a
program among a model's code or artifacts): such a file is executable again
once unpacked. Nothing else (owners, other mode bits, times) is.

Archives hold regular files and directories only: :func:`pack` refuses an
entry holding a link, a device or a FIFO, and :func:`unpack` refuses every
link, internal or not, so no path in an unpacked entry can lead outside it.

:func:`unpack` trusts nothing it reads. Before it writes a member it checks
the member's name, type, size and place in the manifest; while writing it
counts the bytes it actually gets (not the size a header claims) against
the limits; after writing it checks the checksum; at the end it checks that
nothing follows the tar end marker and that no manifest entry is missing.
It never asks :mod:`tarfile` to extract anything: it creates every file and
directory itself, inside ``dest``, with exclusive creation, and never
creates links. (``tarfile``'s ``filter="data"`` is not used: Python 3.11.0
to 3.11.3, which ``python_requires`` allows, lack it; it has needed security
fixes of its own as late as 2025; it allows internal links; and it checks
neither sizes, checksums nor duplicate members.)
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import secrets
import stat
import tarfile
import tempfile
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from deepserve.exceptions import BadArchive, StoreError

#: ``progress(done_bytes, total_bytes)``, called as file contents are
#: written into (by :func:`pack`) or out of (by :func:`unpack`) an archive.
Progress = Callable[[int, int], None]

MANIFEST = "MANIFEST.json"
FORMAT = "deepserve-archive"
VERSION = 1

_GiB = 1 << 30
#: Default bound on one member: larger than the weight files of models one
#: serves from a single machine, small enough to stop a runaway import.
DEFAULT_MAX_MEMBER_SIZE = 32 * _GiB
#: Default bound on all members together.
DEFAULT_MAX_TOTAL_SIZE = 64 * _GiB
#: The manifest is read into memory; 16 MiB lists some 100 000 members.
MAX_MANIFEST_SIZE = 16 << 20
#: Zero padding accepted after the tar end marker (writers pad to a record,
#: 10 KiB by default); anything else there is refused.
MAX_PADDING = 1 << 20

#: Bytes per read and write. It also bounds any single read tarfile makes:
#: tarfile reads pax and GNU long-name headers into memory whole, so a
#: header claiming gigabytes must fail, not fill the memory.
_CHUNK = 1 << 20
_COMPRESSLEVEL = 6
_BLOCK = tarfile.BLOCKSIZE
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Backslashes and drive letters are path syntax on Windows; control
# characters garble logs and terminals.
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Errors of os.link where the file system has no hard links.
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS}
_KINDS = {
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
}


class ArchiveExists(StoreError):
    """An export's destination already holds a file, and replacing it was
    not asked for (``overwrite=False``)."""

    def __init__(self, dest: str) -> None:
        super().__init__(
            f"Cannot export to '{dest}': it already exists "
            "(pass overwrite=True to replace it)"
        )
        #: The destination, as the caller named it.
        self.dest = dest


@dataclass(frozen=True)
class _Member:
    """A manifest entry: ``size``, ``sha256`` and ``executable`` are empty
    for directories."""

    path: str
    is_dir: bool
    size: int = 0
    sha256: str = ""
    executable: bool = False


def _name_problem(name: str) -> str | None:
    """Why ``name`` may not be a member's path, or ``None`` when it may.

    A member path is relative, POSIX-style, valid UTF-8, without ``..``,
    ``.`` or empty components, control characters or backslashes.
    """
    if not name:
        return "has an empty name"
    if name.startswith("/") or _DRIVE.match(name):
        return "has an absolute path"
    if _BAD_CHARS.search(name):
        return "has a control character or backslash in its name"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "has a name that is not valid UTF-8"
    parts = name.split("/")
    if ".." in parts:
        return "has a '..' component"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' component"
    return None


# -- pack ------------------------------------------------------------------


def pack(
    entry: Path,
    dest: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    overwrite: bool = True,
) -> None:
    """Write the entry directory's files as one archive.

    :param entry: the directory to pack; it may hold only directories and
        regular files, and no top-level ``MANIFEST.json``.
    :param dest: the archive to write: a local path, a ``file://`` URL, or
        any URL fsspec handles (``s3://``, ``memory://``...) when the
        ``fsspec`` extra is installed.
    :param progress: called with ``(done_bytes, total_bytes)`` of file
        contents written; it reaches the total when the archive is complete.
    :param overwrite: replace a file already at ``dest``; when false, such a
        file makes the pack fail with :class:`ArchiveExists`, checked before
        packing starts and again, atomically for a local path, when the
        archive is put in place.
    :raises ArchiveExists: when ``dest`` exists and ``overwrite`` is false.
    :raises StoreError: when the entry cannot be packed or ``dest`` cannot
        be written; errors name ``dest``, never the temp file. A failed pack
        leaves nothing under ``dest``'s name: the archive is written to a
        temp file next to it and renamed (for a remote URL, written to a
        local temp file, then uploaded).
    """
    entry = Path(entry)
    shown = os.fspath(dest)
    try:
        manifest = _manifest(entry, _scan(entry))
        local = _local_path(dest)
        if local is None:
            _pack_remote(entry, manifest, shown, progress, overwrite)
        else:
            _pack_local(entry, manifest, local, shown, progress, overwrite)
    except OSError as err:
        raise StoreError(f"Cannot pack '{entry}' into '{shown}': {err}") from err


def _scan(entry: Path) -> list[_Member]:
    """The entry's directories and files, each directory before its contents.

    Files get their sizes later, from the bytes actually hashed.
    """
    if not entry.is_dir():
        raise StoreError(f"Cannot pack '{entry}': it is not a directory")
    found: list[_Member] = []
    # An explicit stack rather than recursion: nesting depth is unbounded.
    stack: list[tuple[Path, str]] = [(entry, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as listing:
            children = sorted(listing, key=lambda child: child.name)
        subdirs: list[tuple[Path, str]] = []
        for child in children:
            name = prefix + child.name
            problem = _name_problem(name)
            if problem is not None:
                raise StoreError(f"Cannot pack '{entry}': '{name}' {problem}")
            if name == MANIFEST:
                raise StoreError(
                    f"Cannot pack '{entry}': '{MANIFEST}' is a reserved name"
                )
            if child.is_symlink():
                raise StoreError(
                    f"Cannot pack '{entry}': '{name}' is a symbolic link; "
                    "archives hold only regular files and directories"
                )
            if child.is_dir(follow_symlinks=False):
                found.append(_Member(name, is_dir=True))
                subdirs.append((Path(child.path), name + "/"))
            elif child.is_file(follow_symlinks=False):
                mode = child.stat(follow_symlinks=False).st_mode
                found.append(
                    _Member(name, is_dir=False, executable=bool(mode & stat.S_IXUSR))
                )
            else:
                raise StoreError(
                    f"Cannot pack '{entry}': '{name}' is not a regular file "
                    "or directory"
                )
        stack.extend(subdirs)
    # Sorting by components puts each directory before what it holds.
    return sorted(found, key=lambda member: member.path.split("/"))


def _manifest(entry: Path, members: list[_Member]) -> list[_Member]:
    """``members`` with the size and SHA-256 of every file."""
    hashed: list[_Member] = []
    for member in members:
        if member.is_dir:
            hashed.append(member)
            continue
        digest = hashlib.sha256()
        size = 0
        with open(entry / member.path, "rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        hashed.append(
            _Member(member.path, False, size, digest.hexdigest(), member.executable)
        )
    return hashed


def _manifest_bytes(members: list[_Member]) -> bytes:
    listed: list[dict[str, Any]] = []
    for member in members:
        if member.is_dir:
            listed.append({"path": member.path, "type": "dir"})
        else:
            listed.append(
                {
                    "path": member.path,
                    "type": "file",
                    "size": member.size,
                    "sha256": member.sha256,
                    # Only when true: archives of entries without executables
                    # stay what version 1 always wrote.
                    **({"executable": True} if member.executable else {}),
                }
            )
    document = {"format": FORMAT, "version": VERSION, "members": listed}
    return json.dumps(document, indent=1).encode("utf-8")


def _pack_local(
    entry: Path,
    manifest: list[_Member],
    dest: Path,
    shown: str,
    progress: Progress | None,
    overwrite: bool,
) -> None:
    if dest.is_dir():
        raise StoreError(f"Cannot pack into '{shown}': it is a directory")
    if not overwrite and os.path.lexists(dest):
        raise ArchiveExists(shown)
    if not dest.parent.is_dir():
        problem = "is not a directory" if dest.parent.exists() else "does not exist"
        raise StoreError(
            f"Cannot write the archive '{shown}': '{dest.parent}' {problem}"
        )
    # The temp name adds 26 bytes: a long name is cut so that it still fits
    # in the 255 bytes most file systems allow.
    stem = dest.name.encode("utf-8", "surrogateescape")[:200]
    tmp = (
        dest.parent
        / f".{stem.decode('utf-8', 'ignore')}.{secrets.token_hex(8)}.partial"
    )
    try:
        # os.open rather than mkstemp: the archive gets the permissions the
        # umask gives any new file, not mkstemp's 0600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as err:
        raise _cannot_write(shown, err) from err
    try:
        try:
            with open(fd, "wb") as out:
                _write(entry, manifest, out, progress)
                out.flush()
                os.fsync(out.fileno())
            _put_in_place(tmp, dest, shown, overwrite)
        except OSError as err:
            if err.filename is not None and os.fspath(err.filename) != str(tmp):
                raise  # reading the entry failed: the error names its file
            # Writing the temp file or renaming it failed: the error names
            # what the caller asked for, never the temp file.
            raise _cannot_write(shown, err) from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _cannot_write(shown: str, err: OSError) -> StoreError:
    return StoreError(f"Cannot write the archive '{shown}': {err.strerror or err}")


def _put_in_place(tmp: Path, dest: Path, shown: str, overwrite: bool) -> None:
    """Rename the complete temp file to ``dest``; when ``overwrite`` is false,
    only if nothing is there, checked atomically where hard links exist."""
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        # A link fails if dest exists, however recently it appeared.
        os.link(tmp, dest)
    except FileExistsError:
        raise ArchiveExists(shown) from None
    except OSError as err:
        if err.errno not in _NO_LINKS:
            raise
        # No hard links on this file system: check, then rename.
        if os.path.lexists(dest):
            raise ArchiveExists(shown) from None
        os.rename(tmp, dest)
        return
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _pack_remote(
    entry: Path,
    manifest: list[_Member],
    url: str,
    progress: Progress | None,
    overwrite: bool,
) -> None:
    fs, path = _filesystem(url)
    if not overwrite and fs.exists(path):
        raise ArchiveExists(url)
    with tempfile.TemporaryDirectory(prefix="deepserve-pack-") as tmpdir:
        local = Path(tmpdir) / "archive.tar.gz"
        with open(local, "wb") as out:
            _write(entry, manifest, out, progress)
        # Checked again after the packing, which may take long; remote
        # file systems offer no atomic "create if absent" to do better.
        if not overwrite and fs.exists(path):
            raise ArchiveExists(url)
        try:
            # Object stores make an upload visible only once it is complete.
            fs.put_file(str(local), path)
        except OSError as err:
            raise StoreError(
                f"Cannot upload the archive to '{url}': {err.strerror or err}"
            ) from err


def _write(
    entry: Path,
    manifest: list[_Member],
    out: IO[bytes],
    progress: Progress | None,
) -> None:
    total = sum(member.size for member in manifest)
    done = 0
    # mtime=0 and fixed member metadata: the same entry packs to the same
    # bytes, whoever packs it and whenever.
    with (
        gzip.GzipFile(
            filename="", mode="wb", fileobj=out, compresslevel=_COMPRESSLEVEL, mtime=0
        ) as compressed,
        tarfile.TarFile(
            fileobj=compressed,
            mode="w",
            format=tarfile.PAX_FORMAT,
            copybufsize=_CHUNK,
        ) as tar,
    ):
        document = _manifest_bytes(manifest)
        tar.addfile(_tarinfo(MANIFEST, len(document)), io.BytesIO(document))
        if progress is not None:
            progress(0, total)
        for member in manifest:
            if member.is_dir:
                tar.addfile(_tarinfo(member.path, 0, directory=True))
                continue

            def counted(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(done, total)

            with open(entry / member.path, "rb") as source:
                reader = _HashingReader(source, counted)
                try:
                    tar.addfile(
                        _tarinfo(
                            member.path, member.size, executable=member.executable
                        ),
                        reader,
                    )
                except OSError as err:
                    raise StoreError(
                        f"Cannot pack '{entry}': reading '{member.path}' failed "
                        f"({err}); did it change while it was packed?"
                    ) from err
            if reader.hexdigest() != member.sha256:
                raise StoreError(
                    f"Cannot pack '{entry}': '{member.path}' changed while it "
                    "was packed"
                )


def _tarinfo(
    name: str, size: int, *, directory: bool = False, executable: bool = False
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    if directory:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.mode = 0o755 if executable else 0o644
    return info


class _HashingReader:
    """Reads a file for tarfile, hashing and counting what it hands over."""

    def __init__(self, source: IO[bytes], counted: Callable[[int], None]) -> None:
        self._source = source
        self._counted = counted
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._digest.update(data)
        self._counted(len(data))
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


# -- unpack ----------------------------------------------------------------


def unpack(
    src: str | os.PathLike[str],
    dest: Path,
    *,
    max_member_size: int = DEFAULT_MAX_MEMBER_SIZE,
    max_total_size: int = DEFAULT_MAX_TOTAL_SIZE,
    progress: Progress | None = None,
) -> None:
    """Extract a packed archive into the empty existing directory ``dest``.

    :param src: the archive: a local path, a ``file://`` URL, or any URL
        fsspec handles when the ``fsspec`` extra is installed.
    :param dest: an existing, empty local directory.
    :param max_member_size: refuse a member larger than this many bytes.
    :param max_total_size: refuse an archive whose members hold more bytes
        than this in total.
    :param progress: called with ``(done_bytes, total_bytes)`` of file
        contents written; it reaches the total when all are written.
    :raises BadArchive: naming the member and the problem when the archive
        is unsafe or damaged. Nothing is ever written outside ``dest``, but
        after an error ``dest`` holds an unverified part of the archive: the
        caller deletes it.
    :raises StoreError: when ``src`` cannot be read or ``dest`` is unusable.
    """
    if isinstance(dest, str) and _URL.match(dest):
        raise StoreError(f"Cannot unpack into '{dest}': it must be a local directory")
    dest = Path(dest)
    try:
        if any(dest.iterdir()):
            raise StoreError(f"Cannot unpack into '{dest}': it is not empty")
    except (FileNotFoundError, NotADirectoryError):
        raise StoreError(
            f"Cannot unpack into '{dest}': it is not an existing directory"
        ) from None
    with _open_source(src) as raw:
        _Unpacker(str(src), dest, max_member_size, max_total_size, progress).run(raw)


@contextlib.contextmanager
def _open_source(src: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    local = _local_path(src)
    try:
        if local is not None:
            source: IO[bytes] = open(local, "rb")  # noqa: SIM115
        else:
            fs, path = _filesystem(str(src))
            source = fs.open(path, "rb")
    except FileNotFoundError:
        raise StoreError(f"No archive at '{src}'") from None
    except OSError as err:
        raise StoreError(f"Cannot read the archive '{src}': {err}") from err
    with source:
        yield source


class _Guard:
    """The decompressed tar stream, as tarfile sees it.

    It refuses oversized single reads (see ``_CHUNK``) and backward seeks
    (which would make gzip decompress from the start again), and remembers
    the last block read, so the caller can tell a proper end marker from a
    header tarfile could not parse (tarfile ends the archive silently there).
    """

    def __init__(self, stream: gzip.GzipFile) -> None:
        self._stream = stream
        self.last = b""

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > _CHUNK:
            raise tarfile.ReadError(
                f"a header asks for {size} bytes, more than the {_CHUNK} allowed"
            )
        self.last = self._stream.read(size)
        return self.last

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < self._stream.tell():
            raise tarfile.ReadError("members are out of order")
        return self._stream.seek(offset)

    def tell(self) -> int:
        return self._stream.tell()

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("the archive is read-only")

    def close(self) -> None:
        """Nothing to do: the gzip stream is closed by its owner."""


class _Unpacker:
    def __init__(
        self,
        src: str,
        dest: Path,
        max_member_size: int,
        max_total_size: int,
        progress: Progress | None,
    ) -> None:
        self.src = src
        self.dest = dest
        self.max_member_size = max_member_size
        self.max_total_size = max_total_size
        self.progress = progress
        self.expected: dict[str, _Member] = {}
        self.seen: set[str] = set()
        self.dirs: set[str] = set()
        self.total = 0
        self.done = 0
        #: Where reading is, for errors tarfile or gzip raise.
        self.where = "at its start"

    def bad(self, name: str, problem: str) -> BadArchive:
        return BadArchive(
            f"Unsafe or damaged archive '{self.src}': member {_named(name)} {problem}"
        )

    def run(self, raw: IO[bytes]) -> None:
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                guard = _Guard(stream)
                with tarfile.TarFile(fileobj=guard, mode="r") as tar:
                    self._read_manifest(tar)
                    while (member := tar.next()) is not None:
                        self._extract(tar, member)
                self._check_end(guard)
        except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as err:
            if self.where == "at its start":
                raise BadArchive(
                    f"Unsafe or damaged archive '{self.src}': it is not a "
                    f"gzip-compressed tar file ({err})"
                ) from None
            raise BadArchive(
                f"Unsafe or damaged archive '{self.src}': {self.where}: "
                f"cannot be read ({err or type(err).__name__})"
            ) from None
        except OSError as err:
            raise StoreError(f"Cannot read the archive '{self.src}': {err}") from err
        missing = sorted(set(self.expected) - self.seen)
        if missing:
            raise self.bad(
                missing[0], f"is listed in {MANIFEST} but missing from the archive"
            )

    def _read_manifest(self, tar: tarfile.TarFile) -> None:
        first = tar.next()
        if first is None:
            raise BadArchive(f"Unsafe or damaged archive '{self.src}': it is empty")
        if first.name != MANIFEST:
            # The name comes from the archive: escaped, never raw to a terminal.
            raise self.bad(MANIFEST, f"is missing: the first member is {first.name!r}")
        if not first.isreg() or first.type == tarfile.CONTTYPE:
            raise self.bad(MANIFEST, "is not a regular file")
        if first.size > MAX_MANIFEST_SIZE:
            raise self.bad(
                MANIFEST, f"is larger than the limit of {MAX_MANIFEST_SIZE} bytes"
            )
        self.where = f"member '{MANIFEST}'"
        reader = tar.extractfile(first)
        assert reader is not None  # a regular file always has a reader
        # In chunks: a single read() would ask _Guard for all of it at once.
        data = b"".join(iter(lambda: reader.read(_CHUNK), b""))
        self.where = f"after member '{MANIFEST}'"
        self.expected = self._parse_manifest(data)
        self.seen.add(MANIFEST)
        listed = 0
        for member in self.expected.values():
            if member.size > self.max_member_size:
                raise self.bad(
                    member.path,
                    f"holds {member.size} bytes, more than the limit of "
                    f"{self.max_member_size} per member",
                )
            listed += member.size
            if listed > self.max_total_size:
                raise self.bad(
                    member.path,
                    f"takes the archive past the limit of {self.max_total_size} "
                    "bytes in all",
                )
        self.total = listed
        if self.progress is not None:
            self.progress(0, self.total)

    def _parse_manifest(self, data: bytes) -> dict[str, _Member]:
        def bad(problem: str) -> BadArchive:
            return self.bad(MANIFEST, f"is malformed: {problem}")

        try:
            document = json.loads(data)
        except (UnicodeDecodeError, ValueError) as err:
            raise bad(f"not JSON ({err})") from None
        if not isinstance(document, dict):
            raise bad("not a JSON object")
        if document.get("format") != FORMAT or document.get("version") != VERSION:
            raise bad(f"not a {FORMAT} version {VERSION} manifest")
        listed = document.get("members")
        if not isinstance(listed, list):
            raise bad("'members' is not a list")
        members: dict[str, _Member] = {}
        for item in listed:
            member = self._parse_member(item, bad)
            if member.path in members or member.path == MANIFEST:
                raise bad(f"'{member.path}' is listed twice")
            members[member.path] = member
        for member in members.values():
            parent = posixpath.dirname(member.path)
            if parent and not (parent in members and members[parent].is_dir):
                raise bad(f"'{member.path}' is in '{parent}', not a listed directory")
        return members

    def _parse_member(self, item: Any, bad: Callable[[str], BadArchive]) -> _Member:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise bad(f"a member is not an object with a 'path': {item!r:.80}")
        path: str = item["path"]
        problem = _name_problem(path)
        if problem is not None:
            raise self.bad(path, problem)
        kind = item.get("type")
        if kind == "dir":
            return _Member(path, is_dir=True)
        if kind != "file":
            raise bad(f"'{path}' has type {kind!r}, not 'file' or 'dir'")
        size = item.get("size")
        sha256 = item.get("sha256")
        # bool is an int too; a size of `true` is malformed.
        if type(size) is not int or size < 0:
            raise bad(f"'{path}' has no valid size")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise bad(f"'{path}' has no valid sha256")
        executable = item.get("executable", False)
        if not isinstance(executable, bool):
            raise bad(f"'{path}' has an 'executable' that is not true or false")
        return _Member(path, False, size, sha256, executable)

    def _extract(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = info.name
        problem = _name_problem(name)
        if problem is not None:
            raise self.bad(name, problem)
        if name in self.seen:
            raise self.bad(name, "appears twice")
        self.seen.add(name)
        self._check_type(info)
        expected = self.expected.get(name)
        if expected is None:
            raise self.bad(name, f"is not listed in {MANIFEST}")
        parent = posixpath.dirname(name)
        if parent and parent not in self.dirs:
            raise self.bad(name, f"comes before its directory '{parent}'")
        if expected.is_dir != info.isdir():
            listed = "a directory" if expected.is_dir else "a file"
            raise self.bad(name, f"is listed in {MANIFEST} as {listed}")
        target = self.dest.joinpath(*name.split("/"))
        if info.isdir():
            self._mkdir(name, target)
            self.dirs.add(name)
            self.where = f"after member {_named(name)}"
            return
        if info.size > self.max_member_size:
            raise self.bad(
                name,
                f"claims {info.size} bytes, more than the limit of "
                f"{self.max_member_size} per member",
            )
        if info.size != expected.size:
            raise self.bad(
                name, f"claims {info.size} bytes, {MANIFEST} says {expected.size}"
            )
        self.where = f"member {_named(name)}"
        self._write(tar, info, expected, target)
        self.where = f"after member {_named(name)}"

    def _check_type(self, info: tarfile.TarInfo) -> None:
        name = info.name
        if info.issym() or info.islnk():
            if info.issym():
                kind = "symbolic link"
                resolved = posixpath.join(posixpath.dirname(name), info.linkname)
            else:
                kind = "hard link"
                resolved = info.linkname
            normal = posixpath.normpath(resolved)
            escapes = (
                info.linkname.startswith("/")
                or normal == ".."
                or normal.startswith("../")
            )
            where = ", outside the archive" if escapes else ""
            raise self.bad(
                name,
                f"is a {kind} to '{info.linkname}'{where}; archives may not "
                "contain links",
            )
        if info.type in _KINDS:
            raise self.bad(name, f"is {_KINDS[info.type]}")
        if info.issparse():
            raise self.bad(name, "is a sparse file")
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            raise self.bad(name, f"has the unsupported tar type {info.type!r}")

    def _mkdir(self, name: str, target: Path) -> None:
        with self._creating(name):
            os.mkdir(target)

    @contextlib.contextmanager
    def _creating(self, name: str) -> Iterator[None]:
        try:
            yield
        except FileExistsError:
            # Only when the file system folds names another member uses.
            raise self.bad(name, "collides with another member") from None
        except OSError as err:
            raise StoreError(
                f"Cannot write '{name}' into '{self.dest}': {err}"
            ) from err

    def _write(
        self,
        tar: tarfile.TarFile,
        info: tarfile.TarInfo,
        expected: _Member,
        target: Path,
    ) -> None:
        name = info.name
        reader = tar.extractfile(info)
        assert reader is not None  # regular files always have one
        digest = hashlib.sha256()
        size = 0
        with self._creating(name):
            out = open(target, "xb")  # noqa: SIM115 (closed by the next line)
        with out, reader:
            # The limits apply to the bytes actually read, whatever a header
            # or the manifest claims. (tarfile hands over exactly the header's
            # size, checked above; these checks keep holding if it ever
            # does not, e.g. for a member type that expands.)
            while chunk := reader.read(_CHUNK):
                size += len(chunk)
                self.done += len(chunk)
                if size > expected.size:
                    raise self.bad(
                        name,
                        f"holds more than the {expected.size} bytes {MANIFEST} says",
                    )
                if size > self.max_member_size or self.done > self.max_total_size:
                    raise self.bad(name, "takes the archive past its size limits")
                digest.update(chunk)
                try:
                    out.write(chunk)
                except OSError as err:
                    raise StoreError(
                        f"Cannot write '{name}' into '{self.dest}': {err}"
                    ) from err
                if self.progress is not None:
                    self.progress(self.done, self.total)
        if size != expected.size:
            raise self.bad(name, f"holds {size} bytes, {MANIFEST} says {expected.size}")
        if digest.hexdigest() != expected.sha256:
            raise self.bad(name, f"does not match its SHA-256 in {MANIFEST}")
        if expected.executable:
            # Executable by whoever may read it: the umask decided who that
            # is when the file was created. Never more (no set-id bits).
            with self._creating(name):
                mode = stat.S_IMODE(os.stat(target).st_mode)
                os.chmod(target, mode | (mode & 0o444) >> 2)

    def _check_end(self, guard: _Guard) -> None:
        """The archive ended at a real end marker, followed only by zeros.

        Reading to the end also makes gzip check its CRC and length.
        """
        if guard.last != bytes(_BLOCK):
            found = "an unreadable tar header" if guard.last else "no end marker"
            raise BadArchive(
                f"Unsafe or damaged archive '{self.src}': {self.where}: {found} "
                "(truncated or tampered with)"
            )
        padding = 0
        while chunk := guard.read(_CHUNK):
            padding += len(chunk)
            if chunk.count(0) != len(chunk) or padding > MAX_PADDING:
                raise BadArchive(
                    f"Unsafe or damaged archive '{self.src}': {self.where}: data "
                    "follows the end of the archive"
                )


#: Control characters and DEL, written escaped when a member's name is shown.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _named(name: str) -> str:
    """A member's name, quoted, for a message: an archive made to attack
    the reader's terminal shows its escape sequences, not their effect."""
    return "'" + _CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", name) + "'"


# -- where archives live ---------------------------------------------------


def _local_path(target: str | os.PathLike[str]) -> Path | None:
    """``target`` as a local path, or ``None`` when it is a remote URL."""
    if not isinstance(target, str) or not _URL.match(target):
        return Path(target)
    parts = urllib.parse.urlsplit(target)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        # Imported here: urllib.request pulls in ssl, http and email.
        from urllib.request import url2pathname

        return Path(url2pathname(parts.path))
    return None


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system serving ``url``, and the path within it."""
    try:
        import fsspec
    except ImportError:
        raise StoreError(
            f"Cannot use '{url}': archive URLs need fsspec; install it with "
            "pip install 'deepserve[fsspec]'"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        # e.g. s3:// without s3fs, or an unknown protocol.
        raise StoreError(f"Cannot use '{url}': {err}") from err
    return fs, str(path)
