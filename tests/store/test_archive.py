"""Model archives: round trips, and every kind of hostile archive refused.

Hostile archives are built by hand with tarfile (or byte by byte where
tarfile would refuse to write the lie), then unpacked into ``root/dest``
beside a sentinel directory that must come through untouched.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from deepserve.api.errors import status_for
from deepserve.exceptions import BadArchive, StoreError
from deepserve.store import archive

MiB = 1 << 20


def make_entry(root: Path) -> Path:
    """A store entry like the store writes: nested dirs, binary and empty files."""
    entry = root / "entry"
    (entry / "artifacts" / "nested" / "deeper").mkdir(parents=True)
    (entry / "code" / "pkg").mkdir(parents=True)
    (entry / "artifacts" / "empty-dir").mkdir()
    (entry / "model.json").write_text('{"name": "iris", "version": "1"}')
    (entry / "saved_model.pkl").write_bytes(bytes(range(256)) * 40)
    (entry / "artifacts" / "empty.txt").write_bytes(b"")
    (entry / "artifacts" / "nested" / "deeper" / "weights.bin").write_bytes(
        os.urandom(5 * MiB + 123)
    )
    (entry / "artifacts" / "nested" / "vocabulaire-é.txt").write_text("où\n")
    (entry / "code" / "pkg" / "__init__.py").write_text("X = 1\n")
    return entry


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: file contents, or None for a directory."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        assert not path.is_symlink(), rel
        found[rel] = None if path.is_dir() else path.read_bytes()
    return found


# -- round trips -------------------------------------------------------------


def test_round_trip_keeps_every_file_and_directory(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    target = tmp_path / "iris.tar.gz"
    archive.pack(entry, target)
    dest = tmp_path / "dest"
    dest.mkdir()
    archive.unpack(target, dest)
    assert tree(dest) == tree(entry)
    assert "artifacts/empty-dir" in tree(dest)
    assert not (dest / archive.MANIFEST).exists()


def test_archive_is_a_plain_tar_gz_with_the_manifest_first(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    target = tmp_path / "iris.tar.gz"
    archive.pack(entry, str(target))
    with tarfile.open(target, "r:gz") as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(archive.MANIFEST))
    assert names[0] == archive.MANIFEST
    listed = {m["path"]: m for m in manifest["members"]}
    assert set(listed) == set(names[1:]) == set(tree(entry))
    weights = entry / "artifacts/nested/deeper/weights.bin"
    assert listed["artifacts/nested/deeper/weights.bin"] == {
        "path": "artifacts/nested/deeper/weights.bin",
        "type": "file",
        "size": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    assert listed["artifacts"] == {"path": "artifacts", "type": "dir"}


def test_same_entry_packs_to_the_same_bytes(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    archive.pack(entry, tmp_path / "a.tar.gz")
    os.utime(entry / "model.json", (0, 12345))
    archive.pack(entry, tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()


def test_executable_files_stay_executable_and_nothing_else_becomes_so(
    tmp_path: Path,
) -> None:
    entry = make_entry(tmp_path)
    script = entry / "code" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o700)  # only its owner's bit is looked at
    (entry / "model.json").chmod(0o666)
    target = tmp_path / "iris.tar.gz"
    archive.pack(entry, target)
    with tarfile.open(target, "r:gz") as tar:
        manifest = json.load(tar.extractfile(archive.MANIFEST))
        modes = {m.name: m.mode for m in tar.getmembers()}
    listed = {m["path"]: m for m in manifest["members"]}
    assert listed["code/run.sh"]["executable"] is True
    assert "executable" not in listed["model.json"]
    assert (modes["code/run.sh"], modes["model.json"]) == (0o755, 0o644)

    dest = tmp_path / "dest"
    dest.mkdir()
    old = os.umask(0o027)
    try:
        archive.unpack(target, dest)
    finally:
        os.umask(old)
    assert (dest / "code" / "run.sh").stat().st_mode & 0o7777 == 0o750
    assert (dest / "model.json").stat().st_mode & 0o7777 == 0o640
    assert (dest / "saved_model.pkl").stat().st_mode & 0o111 == 0


def test_archive_gets_ordinary_file_permissions(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    old = os.umask(0o022)
    try:
        archive.pack(entry, tmp_path / "a.tar.gz")
    finally:
        os.umask(old)
    assert (tmp_path / "a.tar.gz").stat().st_mode & 0o777 == 0o644


def test_progress_reaches_the_total_both_ways(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    total = sum(len(data) for data in tree(entry).values() if data is not None)
    packed: list[tuple[int, int]] = []
    archive.pack(entry, tmp_path / "a.tar.gz", progress=lambda *p: packed.append(p))
    dest = tmp_path / "dest"
    dest.mkdir()
    unpacked: list[tuple[int, int]] = []
    archive.unpack(tmp_path / "a.tar.gz", dest, progress=lambda *p: unpacked.append(p))
    for calls in (packed, unpacked):
        assert calls[0] == (0, total)
        assert calls[-1] == (total, total)
        assert len(calls) > 5  # several MiB report as they go, not once
        done = [d for d, _ in calls]
        assert done == sorted(done)
        assert {t for _, t in calls} == {total}


def test_file_urls_are_local_paths(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    url = (tmp_path / "a.tar.gz").as_uri()
    archive.pack(entry, url)
    dest = tmp_path / "dest"
    dest.mkdir()
    archive.unpack(url, dest)
    assert tree(dest) == tree(entry)


@pytest.fixture
def memory_url():
    fsspec = pytest.importorskip("fsspec")
    base = f"memory://deepserve-tests/{uuid.uuid4().hex}"
    yield base
    fs = fsspec.filesystem("memory")
    if fs.exists(base):
        fs.rm(base, recursive=True)


def test_memory_url_round_trip(tmp_path: Path, memory_url: str) -> None:
    entry = make_entry(tmp_path)
    url = f"{memory_url}/iris.tar.gz"
    progress: list[tuple[int, int]] = []
    archive.pack(entry, url, progress=lambda *p: progress.append(p))
    assert progress[-1][0] == progress[-1][1] > 5 * MiB
    dest = tmp_path / "dest"
    dest.mkdir()
    archive.unpack(url, dest)
    assert tree(dest) == tree(entry)


def test_failed_pack_to_a_url_uploads_nothing(tmp_path: Path, memory_url: str):
    import fsspec

    entry = make_entry(tmp_path)
    url = f"{memory_url}/iris.tar.gz"

    def interrupt(done: int, total: int) -> None:
        if done > MiB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        archive.pack(entry, url, progress=interrupt)
    assert not fsspec.filesystem("memory").exists(url)


def test_missing_remote_archive_is_a_store_error(tmp_path: Path, memory_url: str):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StoreError, match="No archive at"):
        archive.unpack(f"{memory_url}/nothing.tar.gz", dest)


def test_urls_without_fsspec_name_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if not installed
    monkeypatch.chdir(tmp_path)
    entry = make_entry(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StoreError, match=r"deepserve\[fsspec\]"):
        archive.pack(entry, "s3://bucket/iris.tar.gz")
    with pytest.raises(StoreError, match=r"deepserve\[fsspec\]"):
        archive.unpack("s3://bucket/iris.tar.gz", dest)
    # The URL was not taken for a relative path ("s3:/bucket/...").
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "entry"]


def test_unknown_url_protocol_is_a_store_error(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(StoreError, match="nosuchproto"):
        archive.pack(make_entry(tmp_path), "nosuchproto://x/a.tar.gz")


# -- pack refuses what it cannot carry safely ----------------------------------


def test_failed_pack_leaves_no_file_at_dest(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    def interrupt(done: int, total: int) -> None:
        if done > MiB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        archive.pack(entry, out / "a.tar.gz", progress=interrupt)
    assert list(out.iterdir()) == []  # neither the archive nor a temp file


def test_failed_pack_keeps_the_previous_archive(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    target = tmp_path / "a.tar.gz"
    target.write_bytes(b"previous export")
    os.mkfifo(entry / "code" / "pipe")
    with pytest.raises(StoreError, match="'code/pipe' is not a regular file"):
        archive.pack(entry, target)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "entry"]


def test_file_changing_while_packed_fails_the_pack(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    weights = entry / "artifacts/nested/deeper/weights.bin"

    def scribble(done: int, total: int) -> None:
        if done > 0:
            with open(weights, "r+b") as f:
                f.seek(4 * MiB)
                f.write(b"changed")

    with pytest.raises(StoreError, match=r"weights\.bin' changed while it was packed"):
        archive.pack(entry, tmp_path / "a.tar.gz", progress=scribble)
    assert not (tmp_path / "a.tar.gz").exists()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("MANIFEST.json", "reserved name"),
        ("back\\slash", "backslash"),
        ("new\nline", "control character"),
    ],
)
def test_pack_refuses_names_unpack_would_refuse(tmp_path, name, problem) -> None:
    entry = make_entry(tmp_path)
    (entry / name).write_text("x")
    with pytest.raises(StoreError, match=problem):
        archive.pack(entry, tmp_path / "a.tar.gz")


@pytest.mark.parametrize("target", ["inside", "../outside"])
def test_pack_refuses_symlinks(tmp_path: Path, target: str) -> None:
    entry = make_entry(tmp_path)
    (entry / "inside").write_text("x")
    (entry / "code" / "link").symlink_to(target)
    with pytest.raises(StoreError, match="'code/link' is a symbolic link"):
        archive.pack(entry, tmp_path / "a.tar.gz")


def test_pack_needs_a_directory_and_a_file_destination(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    with pytest.raises(StoreError, match="not a directory"):
        archive.pack(entry / "model.json", tmp_path / "a.tar.gz")
    with pytest.raises(StoreError, match="is a directory"):
        archive.pack(entry, tmp_path)
    with pytest.raises(StoreError, match=r"'.*missing' does not exist"):
        archive.pack(entry, tmp_path / "missing" / "a.tar.gz")
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"'.*file' is not a directory"):
        archive.pack(entry, tmp_path / "file" / "a.tar.gz")


# -- replacing an archive, and the temp file ------------------------------------


def temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".partial")]


def test_pack_without_overwrite_keeps_an_existing_archive(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    target = tmp_path / "a.tar.gz"
    target.write_bytes(b"previous export")
    with pytest.raises(
        archive.ArchiveExists, match=r"a\.tar\.gz': it already exists"
    ) as err:
        archive.pack(entry, target, overwrite=False)
    assert err.value.dest == str(target)
    assert target.read_bytes() == b"previous export"
    archive.pack(entry, target)  # overwrite=True is the default
    assert target.read_bytes()[:2] == b"\x1f\x8b"
    (tmp_path / "new.tar.gz").unlink(missing_ok=True)
    archive.pack(entry, tmp_path / "new.tar.gz", overwrite=False)
    assert (tmp_path / "new.tar.gz").read_bytes() == target.read_bytes()
    assert temp_files(tmp_path) == []


def appear_at(target: Path, make: Callable[[Path], object]) -> archive.Progress:
    """A progress callback that makes something at ``target`` mid-pack, as
    another process could."""

    def progress(done: int, total: int) -> None:
        if done > MiB and not target.exists():
            make(target)

    return progress


def test_an_archive_appearing_during_a_pack_is_not_replaced(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    target = tmp_path / "a.tar.gz"
    racing = appear_at(target, lambda path: path.write_bytes(b"the other one"))
    with pytest.raises(archive.ArchiveExists):
        archive.pack(entry, target, overwrite=False, progress=racing)
    assert target.read_bytes() == b"the other one"
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("no_links", [errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP])
def test_without_hard_links_the_check_is_a_second_step(tmp_path, monkeypatch, no_links):
    def link(src: object, dst: object) -> None:
        raise OSError(no_links, os.strerror(no_links), src, None, dst)

    monkeypatch.setattr(archive.os, "link", link)  # as on a file system without
    entry = make_entry(tmp_path)
    target = tmp_path / "a.tar.gz"
    archive.pack(entry, target, overwrite=False)
    assert target.read_bytes()[:2] == b"\x1f\x8b"
    with pytest.raises(archive.ArchiveExists):
        archive.pack(entry, target, overwrite=False)
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("overwrite", [True, False])
def test_errors_name_the_destination_never_the_temp_file(tmp_path, overwrite) -> None:
    entry = make_entry(tmp_path)
    target = tmp_path / "a.tar.gz"
    # A directory appears where the archive is to go: the final rename fails.
    racing = appear_at(target, lambda path: (path / "inside").mkdir(parents=True))
    with pytest.raises(StoreError) as err:
        archive.pack(entry, target, overwrite=overwrite, progress=racing)
    assert str(target) in str(err.value)
    assert ".partial" not in str(err.value)
    assert temp_files(tmp_path) == []


def test_a_name_as_long_as_allowed_still_packs(tmp_path: Path) -> None:
    entry = make_entry(tmp_path)
    for name in ("a" * 250 + ".tgz", "é" * 125 + ".tgz"):  # 254 and 254 bytes
        target = tmp_path / name
        archive.pack(entry, target, overwrite=False)
        assert target.is_file()
    assert temp_files(tmp_path) == []


def test_pack_to_a_url_without_overwrite(tmp_path: Path, memory_url: str) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    entry = make_entry(tmp_path)
    url = f"{memory_url}/iris.tar.gz"
    archive.pack(entry, url, overwrite=False)
    with pytest.raises(
        archive.ArchiveExists, match=r"iris\.tar\.gz': it already exists"
    ):
        archive.pack(entry, url, overwrite=False)
    # An object uploaded meanwhile by someone else is not replaced either.
    other = f"{memory_url}/other.tar.gz"

    def racing(done: int, total: int) -> None:
        if done > MiB and not fs.exists(other):
            fs.pipe(other, b"theirs")

    with pytest.raises(archive.ArchiveExists):
        archive.pack(entry, other, overwrite=False, progress=racing)
    assert fs.cat(other) == b"theirs"


# -- unpack refuses hostile and damaged archives -------------------------------


class Site:
    """``root/dest`` to unpack into, beside ``root/sentinel``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dest = root / "dest"
        self.dest.mkdir()
        sentinel = root / "sentinel"
        sentinel.mkdir()
        (sentinel / "keep.txt").write_text("untouched")
        self.archive = root / "evil.tar.gz"

    def outside(self) -> dict[str, bytes | None]:
        return {k: v for k, v in tree(self.root).items() if not k.startswith("dest/")}

    def rejects(self, member: str, problem: str, **limits: int) -> BadArchive:
        before = self.outside()
        with pytest.raises(BadArchive) as caught:
            archive.unpack(self.archive, self.dest, **limits)
        message = str(caught.value)
        assert f"'{member}'" in message, message
        assert problem in message, message
        assert self.outside() == before
        return caught.value


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def info(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields):
    member = tarfile.TarInfo(name)
    member.type = kind
    member.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(member, key, value)
    return member


def manifest(listed_members: dict[str, bytes | None], **overrides) -> bytes:
    listed = []
    for path, data in listed_members.items():
        if data is None:
            listed.append({"path": path, "type": "dir"})
        else:
            listed.append(
                {
                    "path": path,
                    "type": "file",
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    document = {"format": "deepserve-archive", "version": 1, "members": listed}
    document.update(overrides)
    return json.dumps(document).encode()


def forge(
    path: Path,
    members: list[tuple[tarfile.TarInfo, bytes]],
    listed: dict[str, bytes | None] | None = None,
    *,
    manifest_bytes: bytes | None = None,
) -> None:
    """A tar.gz: a manifest of ``listed`` (default: the members), then members."""
    if manifest_bytes is None:
        if listed is None:
            listed = {
                m.name: (None if m.isdir() else data)
                for m, data in members
                if m.isreg() or m.isdir()
            }
        manifest_bytes = manifest(listed)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        if manifest_bytes:
            tar.addfile(
                info("MANIFEST.json", manifest_bytes), io.BytesIO(manifest_bytes)
            )
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)


def test_a_valid_forged_archive_unpacks(site: Site) -> None:
    # The forging helpers make acceptable archives, so the refusals below
    # are down to the one thing each test changes.
    forge(
        site.archive,
        [(info("a", kind=tarfile.DIRTYPE), b""), (info("a/b", b"x"), b"x")],
    )
    archive.unpack(site.archive, site.dest)
    assert tree(site.dest) == {"a": None, "a/b": b"x"}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("{root}/sentinel/evil", "has an absolute path"),
        ("../sentinel/evil", "has a '..' component"),
        ("sub/../../sentinel/evil", "has a '..' component"),
        ("C:/evil", "has an absolute path"),
        ("..\\sentinel\\evil", "backslash"),
        ("./evil", "'.' component"),
        ("sub//evil", "empty or '.' component"),
    ],
)
def test_unsafe_paths(site: Site, name: str, problem: str) -> None:
    name = name.format(root=site.root)
    # The manifest is clean: the member's own header must be caught.
    forge(
        site.archive,
        [(info("sub", kind=tarfile.DIRTYPE), b""), (info(name, b"x"), b"x")],
        {"sub": None},
    )
    site.rejects(name, problem)


def test_a_member_name_never_carries_escape_sequences_into_a_message(
    site: Site,
) -> None:
    name = "x\x1b]0;PWNED\x07\x1b[2Jy"
    forge(site.archive, [(info(name, b"x"), b"x")])
    error = site.rejects("x\\x1b]0;PWNED\\x07\\x1b[2Jy", "control character")
    assert "\x1b" not in str(error)


def test_unsafe_path_in_the_manifest_alone(site: Site) -> None:
    forge(site.archive, [], {"../evil": b"x"})
    site.rejects("../evil", "has a '..' component")


@pytest.mark.parametrize(
    ("kind", "target", "problem"),
    [
        (tarfile.SYMTYPE, "../sentinel/keep.txt", "symbolic link to '../sentinel/keep.txt', outside the archive"),
        (tarfile.SYMTYPE, "/etc/passwd", "outside the archive"),
        (tarfile.SYMTYPE, "data", "archives may not contain links"),
        (tarfile.LNKTYPE, "../sentinel/keep.txt", "hard link to '../sentinel/keep.txt', outside the archive"),
        (tarfile.LNKTYPE, "/etc/passwd", "outside the archive"),
        (tarfile.LNKTYPE, "data", "archives may not contain links"),
        (tarfile.SYMTYPE, "..data", "archives may not contain links"),
    ],
    ids=["sym-up", "sym-abs", "sym-in", "hard-up", "hard-abs", "hard-in", "sym-dots"],
)  # fmt: skip
def test_links_are_refused(site: Site, kind: bytes, target: str, problem: str) -> None:
    link = info("link", kind=kind, linkname=target)
    # A file written through the link would land outside dest.
    forge(
        site.archive,
        [(info("data", b"x"), b"x"), (link, b""), (info("link", b"owned"), b"owned")],
        {"data": b"x", "link": b"owned"},
    )
    error = site.rejects("link", problem)
    if "outside" not in problem:
        assert "outside" not in str(error)
    assert (site.root / "sentinel" / "keep.txt").read_text() == "untouched"


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        (tarfile.CHRTYPE, "is a character device"),
        (tarfile.BLKTYPE, "is a block device"),
        (tarfile.FIFOTYPE, "is a FIFO"),
        (tarfile.CONTTYPE, "unsupported tar type"),
        (b"Z", "unsupported tar type"),
    ],
)
def test_special_files_are_refused(site: Site, kind: bytes, problem: str) -> None:
    forge(site.archive, [(info("special", kind=kind), b"")], {"special": b""})
    site.rejects("special", problem)


def test_member_over_the_size_limit(site: Site) -> None:
    forge(site.archive, [(info("big", b"x" * 2000), b"x" * 2000)])
    site.rejects("big", "more than the limit of 1000 per member", max_member_size=1000)
    assert tree(site.dest) == {}  # refused from the manifest, before writing


def test_total_over_the_size_limit(site: Site) -> None:
    data = b"y" * 600
    forge(site.archive, [(info(n, data), data) for n in ("a", "b", "c")])
    site.rejects("c", "past the limit of 1500 bytes", max_total_size=1500)


def test_header_claiming_more_than_the_manifest(site: Site) -> None:
    forge(site.archive, [(info("a", b"z" * 5000), b"z" * 5000)], {"a": b"z" * 10})
    site.rejects("a", "claims 5000 bytes, MANIFEST.json says 10")


def gz_tar_bytes(*blocks: bytes) -> bytes:
    return gzip.compress(b"".join(blocks), mtime=0)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


def header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    member = tarfile.TarInfo(name)
    member.size = size
    member.type = kind
    return member.tobuf(format=tarfile.USTAR_FORMAT)


def test_lying_header_cannot_smuggle_data(site: Site) -> None:
    # The header says 10 bytes; 64 KiB follow. The manifest agrees with the
    # header, so only the bytes after the member can give the lie away.
    real = b"0123456789" + b"S" * 65536
    document = manifest({"a": real[:10]})
    site.archive.write_bytes(
        gz_tar_bytes(
            header("MANIFEST.json", len(document)),
            padded(document),
            header("a", 10),
            padded(real),
            bytes(2 * tarfile.BLOCKSIZE),
        )
    )
    site.rejects("a", "unreadable tar header")


def test_header_claiming_more_than_the_data(site: Site) -> None:
    document = manifest({"a": b"q" * 20000})
    site.archive.write_bytes(
        gz_tar_bytes(
            header("MANIFEST.json", len(document)),
            padded(document),
            header("a", 20000),
            padded(b"q" * 100),
        )
    )
    site.rejects("a", "unexpected end of data")


def test_oversized_pax_header_is_not_read_into_memory(site: Site) -> None:
    document = manifest({})
    site.archive.write_bytes(
        gz_tar_bytes(
            header("MANIFEST.json", len(document)),
            padded(document),
            header("pax", 1 << 32, tarfile.XHDTYPE),
            bytes(4 * tarfile.BLOCKSIZE),
        )
    )
    site.rejects("MANIFEST.json", "more than the 1048576 allowed")


def member_a_then(*tail: bytes) -> bytes:
    """A gzipped tar of the manifest and member ``a`` (``x``), then ``tail``
    in place of the end marker."""
    document = manifest({"a": b"x"})
    return gz_tar_bytes(
        header("MANIFEST.json", len(document)),
        padded(document),
        header("a", 1),
        padded(b"x"),
        *tail,
    )


def test_data_after_the_end_marker(site: Site) -> None:
    site.archive.write_bytes(
        member_a_then(bytes(2 * tarfile.BLOCKSIZE), padded(b"hidden"))
    )
    site.rejects("a", "data follows the end of the archive")


def test_missing_end_marker(site: Site) -> None:
    site.archive.write_bytes(member_a_then())
    site.rejects("a", "no end marker")


def test_endless_zero_padding(site: Site) -> None:
    # Zeros compress to almost nothing: reading them must stop somewhere.
    site.archive.write_bytes(
        member_a_then(bytes(archive.MAX_PADDING + 4 * tarfile.BLOCKSIZE))
    )
    site.rejects("a", "data follows the end of the archive")


def test_bad_checksum(site: Site) -> None:
    forge(site.archive, [(info("a", b"evil"), b"evil")], {"a": b"good"})
    site.rejects("a", "does not match its SHA-256")


def test_missing_manifest(site: Site) -> None:
    forge(site.archive, [(info("a", b"x"), b"x")], manifest_bytes=b"")
    site.rejects("MANIFEST.json", "is missing: the first member is 'a'")


def test_manifest_not_first(site: Site) -> None:
    document = manifest({"a": b"x"})
    forge(
        site.archive,
        [(info("a", b"x"), b"x"), (info("MANIFEST.json", document), document)],
        manifest_bytes=b"",
    )
    site.rejects("MANIFEST.json", "is missing")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (manifest({}, format="tarball"), "not a deepserve-archive version 1"),
        (manifest({}, version=2), "not a deepserve-archive version 1"),
        (manifest({}, members={"a": 1}), "'members' is not a list"),
        (json.dumps({"format": "deepserve-archive", "version": 1, "members": [{"path": "a", "type": "file", "size": True, "sha256": "0" * 64}]}).encode(), "'a' has no valid size"),
        (json.dumps({"format": "deepserve-archive", "version": 1, "members": [{"path": "a", "type": "file", "size": 1, "sha256": "xyz"}]}).encode(), "'a' has no valid sha256"),
        (json.dumps({"format": "deepserve-archive", "version": 1, "members": [{"path": "a", "type": "file", "size": 1, "sha256": "0" * 64 + "\n"}]}).encode(), "'a' has no valid sha256"),
        (json.dumps({"format": "deepserve-archive", "version": 1, "members": [{"path": "a", "type": "file", "size": 1, "sha256": "0" * 64, "executable": "yes"}]}).encode(), "'a' has an 'executable' that is not true or false"),
        (json.dumps({"format": "deepserve-archive", "version": 1, "members": [{"path": "a", "type": "link"}]}).encode(), "'a' has type 'link'"),
        (json.dumps({"format": "deepserve-archive", "version": 1, "members": [{"path": "a", "type": "dir"}, {"path": "a", "type": "dir"}]}).encode(), "'a' is listed twice"),
        (json.dumps({"format": "deepserve-archive", "version": 1, "members": [{"path": "a/b", "type": "dir"}]}).encode(), "'a/b' is in 'a', not a listed directory"),
    ],
)  # fmt: skip
def test_malformed_manifest(site: Site, document: bytes, problem: str) -> None:
    forge(site.archive, [], manifest_bytes=document)
    site.rejects("MANIFEST.json", problem)


def test_manifest_larger_than_one_read(site: Site) -> None:
    # Tar headers are read with a bound; the manifest is not a header.
    document = manifest({"a": b"x"}) + b" " * (3 * MiB)
    forge(site.archive, [(info("a", b"x"), b"x")], manifest_bytes=document)
    archive.unpack(site.archive, site.dest)
    assert tree(site.dest) == {"a": b"x"}


def test_manifest_over_its_size_limit(site: Site) -> None:
    forge(site.archive, [], manifest_bytes=b" " * (archive.MAX_MANIFEST_SIZE + 1))
    site.rejects("MANIFEST.json", "larger than the limit")


def test_extra_member(site: Site) -> None:
    forge(
        site.archive,
        [(info("a", b"x"), b"x"), (info("extra", b"y"), b"y")],
        {"a": b"x"},
    )
    site.rejects("extra", "is not listed in MANIFEST.json")


def test_missing_member(site: Site) -> None:
    forge(site.archive, [(info("a", b"x"), b"x")], {"a": b"x", "gone": b"y"})
    site.rejects("gone", "listed in MANIFEST.json but missing from the archive")


def test_duplicate_member(site: Site) -> None:
    forge(site.archive, [(info("a", b"x"), b"x"), (info("a", b"x"), b"x")], {"a": b"x"})
    site.rejects("a", "appears twice")


def test_duplicate_manifest(site: Site) -> None:
    document = manifest({})
    forge(site.archive, [(info("MANIFEST.json", document), document)], {})
    site.rejects("MANIFEST.json", "appears twice")


def test_member_before_its_directory(site: Site) -> None:
    forge(
        site.archive,
        [(info("d/a", b"x"), b"x"), (info("d", kind=tarfile.DIRTYPE), b"")],
        {"d": None, "d/a": b"x"},
    )
    site.rejects("d/a", "comes before its directory 'd'")


def test_member_of_the_wrong_type(site: Site) -> None:
    forge(site.archive, [(info("d", kind=tarfile.DIRTYPE), b"")], {"d": b"x"})
    site.rejects("d", "is listed in MANIFEST.json as a file")


def test_sparse_member(site: Site) -> None:
    # An old-GNU sparse member: it stores 512 bytes and expands to 1 GiB.
    block = bytearray(header("sparse", 512, tarfile.GNUTYPE_SPARSE))
    block[386:410] = b"%011o\0%011o\0" % (0, 512)  # one (offset, size) pair
    block[483:495] = b"%011o\0" % (1 << 30)  # the expanded size
    block[148:156] = b" " * 8
    block[148:155] = b"%06o\0" % sum(block)
    document = manifest({"sparse": b"x" * 512})
    site.archive.write_bytes(
        gz_tar_bytes(
            header("MANIFEST.json", len(document)),
            padded(document),
            bytes(block),
            b"x" * 512,
            bytes(2 * tarfile.BLOCKSIZE),
        )
    )
    site.rejects("sparse", "is a sparse file")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not a gzip-compressed tar file"),
        (b"PK\x03\x04 not a tarball at all", "not a gzip-compressed tar file"),
        (
            gzip.compress(b"plain text, not tar " * 100),
            "not a gzip-compressed tar file",
        ),
        (gzip.compress(bytes(10240)), "it is empty"),
    ],
)
def test_not_a_tarball(site: Site, data: bytes, problem: str) -> None:
    site.archive.write_bytes(data)
    before = site.outside()
    with pytest.raises(BadArchive, match=problem):
        archive.unpack(site.archive, site.dest)
    assert site.outside() == before


def test_truncated_gzip_names_the_member_being_read(site: Site, tmp_path) -> None:
    entry = make_entry(tmp_path / "src")
    archive.pack(entry, tmp_path / "good.tar.gz")
    data = (tmp_path / "good.tar.gz").read_bytes()
    site.archive.write_bytes(data[: len(data) // 2])
    site.rejects("artifacts/nested/deeper/weights.bin", "cannot be read")


def test_gzip_crc_is_checked(site: Site, tmp_path) -> None:
    forge(tmp_path / "good.tar.gz", [(info("a", b"x"), b"x")])
    data = bytearray((tmp_path / "good.tar.gz").read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    site.archive.write_bytes(bytes(data))
    site.rejects("a", "CRC check failed")


# -- where unpack writes ------------------------------------------------------


def test_unpack_needs_an_empty_existing_local_directory(tmp_path: Path) -> None:
    forge(tmp_path / "a.tar.gz", [(info("a", b"x"), b"x")])
    with pytest.raises(StoreError, match="not an existing directory"):
        archive.unpack(tmp_path / "a.tar.gz", tmp_path / "missing")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        archive.unpack(tmp_path / "a.tar.gz", tmp_path / "full")
    with pytest.raises(StoreError, match="must be a local directory"):
        archive.unpack(tmp_path / "a.tar.gz", "memory://x/y")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="No archive at"):
        archive.unpack(tmp_path / "none.tar.gz", tmp_path / "empty")


def test_bad_archive_is_a_client_error() -> None:
    error = BadArchive("Unsafe or damaged archive 'x': member 'y' is a FIFO")
    assert isinstance(error, StoreError)
    assert status_for(error) == 400
    assert str(error) == "Unsafe or damaged archive 'x': member 'y' is a FIFO"
