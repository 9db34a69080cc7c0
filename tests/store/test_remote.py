"""Model stores at URLs: push, resolve and fetch into a node-local cache,
on ``file://``, ``memory://`` and a real S3 API (moto's server, tests/s3.py)."""

from __future__ import annotations

import contextlib
import datetime
import json
import multiprocessing
import os
import pickle
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deepserve import adapters, loader, picklable_model
from deepserve.exceptions import (
    BadArchive,
    BadTag,
    ModelTagNotFound,
    StoreError,
    TagExists,
)
from deepserve.store import Store, StoredModel
from deepserve.store.remote import (
    FETCH_DIR,
    RemoteStore,
    RemoteStoreError,
    VersionExists,
    default_cache_root,
)
from tests.s3 import S3
from tests.store.kinds import Doubler

fsspec = pytest.importorskip("fsspec")


@dataclass
class Where:
    """A remote store under test, and the file system to look at it with."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)

    def store(self) -> RemoteStore:
        return RemoteStore(self.url, storage_options=self.options)

    @property
    def fs(self) -> Any:
        return fsspec.core.url_to_fs(self.url, **self.options)[0]

    def path(self, rel: str) -> str:
        root = fsspec.core.url_to_fs(self.url, **self.options)[1].rstrip("/")
        return f"{root}/{rel}"

    def read(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(rel)))

    def write(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self.path(rel), data)
        self.fs.invalidate_cache()

    def remove(self, rel: str) -> None:
        self.fs.rm_file(self.path(rel))
        self.fs.invalidate_cache()

    def listing(self, name: str) -> set[str]:
        self.fs.invalidate_cache()
        return {
            p.rstrip("/").rsplit("/", 1)[-1]
            for p in self.fs.ls(self.path(name), detail=False)
        }


def _file(tmp_path: Path) -> Iterator[Where]:
    yield Where((tmp_path / "remote").as_uri())


def _memory() -> Iterator[Where]:
    where = Where(f"memory://deepserve-tests/{uuid.uuid4().hex}")
    yield where
    with contextlib.suppress(FileNotFoundError):
        where.fs.rm(where.path(""), recursive=True)


def _s3(s3: S3) -> Iterator[Where]:
    yield Where(f"s3://{s3.new_bucket()}/models", s3.options())


@pytest.fixture(params=["file", "memory", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    """Each kind of remote store, empty."""
    if request.param == "file":
        yield from _file(tmp_path)
    elif request.param == "memory":
        yield from _memory()
    else:
        yield from _s3(request.getfixturevalue("s3"))


@pytest.fixture(params=["file", "s3"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    """A remote store other processes can reach too (not memory://)."""
    if request.param == "file":
        yield from _file(tmp_path)
    else:
        yield from _s3(request.getfixturevalue("s3"))


@pytest.fixture
def source(tmp_path: Path) -> Store:
    return Store(tmp_path / "source")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def two_versions(source: Store) -> tuple[StoredModel, StoredModel]:
    older = picklable_model.save_model("doubler", Doubler(2), store=source)
    newer = picklable_model.save_model("doubler", Doubler(3), store=source)
    assert older.info.created < newer.info.created
    return older, newer


def left_in(cache: Path) -> list[str]:
    """Every file under the cache (directories left empty do not count)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


# -- push and resolve -------------------------------------------------------


def test_push_then_resolve_latest_of_two_versions(where: Where, source: Store):
    older, newer = two_versions(source)
    remote = where.store()
    # Pushed newest first: latest is the newest created, not the last pushed.
    assert remote.push(source, "doubler:latest") == newer.tag
    assert remote.push(source, older.tag) == older.tag
    assert remote.versions("doubler") == [older.info.version, newer.info.version]
    assert remote.resolve("doubler") == newer.tag
    assert remote.resolve("doubler:latest") == newer.tag
    assert remote.resolve(older.tag) == older.tag
    v1, v2 = older.info.version, newer.info.version
    assert where.listing("doubler") == {
        f"{v1}.dsmodel",
        f"{v1}.json",
        f"{v2}.dsmodel",
        f"{v2}.json",
    }
    assert remote.archive_url(older.tag) == f"{where.url}/doubler/{v1}.dsmodel"
    # The archive is the one export_model writes; the .json its model.json.
    exported = source.export_model(older.tag, source.root.parent / "x.dsmodel")
    assert where.read(f"doubler/{v1}.dsmodel") == Path(exported).read_bytes()
    assert where.read(f"doubler/{v1}.json") == (older.path / "model.json").read_bytes()


def test_latest_follows_the_recorded_creation_time(where: Where, source: Store):
    older, newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    remote.push(source, newer.tag)
    # The older version's model.json now says it was created later: the
    # version strings sort the other way, and they are not what counts.
    rel = f"doubler/{older.info.version}.json"
    info = json.loads(where.read(rel))
    info["created"] = (newer.info.created + datetime.timedelta(days=1)).isoformat()
    where.write(rel, json.dumps(info).encode())
    assert older.info.version < newer.info.version
    assert remote.resolve("doubler:latest") == older.tag
    assert remote.versions("doubler") == [newer.info.version, older.info.version]


def test_push_refuses_an_existing_version_unless_asked(where: Where, source: Store):
    older, _newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    with pytest.raises(VersionExists, match=f"'{older.tag}' is already in the store"):
        remote.push(source, older.tag)
    rel = f"doubler/{older.info.version}.dsmodel"
    where.write(rel, b"replaced?")
    with pytest.raises(TagExists):
        remote.push(source, older.tag)
    assert where.read(rel) == b"replaced?"
    assert remote.push(source, older.tag, overwrite=True) == older.tag
    assert where.read(rel) != b"replaced?"


def test_an_archive_without_its_json_is_no_version(where: Where, source: Store):
    older, newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    remote.push(source, newer.tag)
    # What a push interrupted between its two uploads leaves.
    where.remove(f"doubler/{newer.info.version}.json")
    assert remote.versions("doubler") == [older.info.version]
    assert remote.resolve("doubler") == older.tag
    with pytest.raises(ModelTagNotFound):
        remote.resolve(newer.tag)
    # The next push of that version completes it, without overwrite.
    assert remote.push(source, newer.tag) == newer.tag
    assert remote.resolve("doubler") == newer.tag


def test_a_damaged_json_is_skipped_with_a_warning(
    where: Where, source: Store, caplog: pytest.LogCaptureFixture
):
    older, newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    remote.push(source, newer.tag)
    where.write(f"doubler/{newer.info.version}.json", b"{not json")
    assert remote.versions("doubler") == [older.info.version]
    assert f"{newer.info.version}.json" in caplog.text
    # A .json naming another version than its key is damaged too.
    where.write(
        f"doubler/{newer.info.version}.json",
        where.read(f"doubler/{older.info.version}.json"),
    )
    assert remote.versions("doubler") == [older.info.version]
    assert f"names '{older.tag}'" in caplog.text


def test_a_missing_model_or_version_names_the_tag_and_the_url(
    where: Where, source: Store
):
    older, _newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    assert remote.versions("nothing") == []
    for tag in ("nothing", "nothing:latest", "doubler:0000000000000000"):
        with pytest.raises(ModelTagNotFound) as caught:
            remote.resolve(tag)
        message = str(caught.value)
        assert "\n" not in message
        shown = tag if ":" in tag else f"{tag}:latest"
        assert message == f"Model '{shown}' is not in the store at {where.url}"


def test_a_store_that_is_not_there_is_one_line(tmp_path: Path):
    remote = RemoteStore((tmp_path / "nowhere").as_uri())
    with pytest.raises(RemoteStoreError) as caught:
        remote.resolve("doubler")
    assert str(caught.value) == (
        f"No model store at {remote.url} (not found: No such file or directory)"
    )


def test_invalid_tags_and_urls_are_refused(tmp_path: Path):
    remote = RemoteStore(tmp_path.as_uri())
    with pytest.raises(BadTag):
        remote.resolve("Doubler")
    with pytest.raises(BadTag):
        remote.versions("a:b")
    with pytest.raises(BadTag, match="exact tag"):
        remote.archive_url("doubler:latest")
    for url in ("", "   ", "s3://", "file:///"):
        with pytest.raises(StoreError, match=r"URL|names no path"):
            RemoteStore(url)


def test_without_fsspec_the_error_names_the_extra(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "fsspec", None)  # as if not installed
    with pytest.raises(StoreError, match=r"pip install 'deepserve\[fsspec\]'"):
        RemoteStore("memory://x/models").versions("doubler")


def test_a_remote_store_pickles_and_works_after(where: Where, source: Store):
    older, _newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    copy = pickle.loads(pickle.dumps(remote))
    assert copy.url == remote.url
    assert copy.resolve("doubler") == older.tag


# -- fetch -------------------------------------------------------------------


def test_fetch_into_a_cache_then_build_and_call(where: Where, source: Store, cache):
    _older, newer = two_versions(source)
    remote = where.store()
    remote.push(source, newer.tag)
    seen: list[tuple[int, int]] = []
    stored = remote.fetch("doubler:latest", cache, progress=lambda *p: seen.append(p))
    assert stored.tag == newer.tag
    assert stored.path == cache / "doubler" / newer.info.version
    assert stored.info == newer.info
    assert seen[-1][0] == seen[-1][1] > 0
    # What a replica does next: a reference to the cache's entry, built and
    # called as every stored model is.
    (ref,) = loader.select({}, [stored.tag], store=Store(cache))
    assert (ref.source, ref.store, ref.version) == (
        "store",
        str(cache),
        newer.info.version,
    )
    model = adapters.build(ref)
    assert model.call("predict", {"data": [1, 2]}) == [3, 6]
    assert left_in(cache) == sorted(
        str(p.relative_to(cache)) for p in stored.path.rglob("*") if p.is_file()
    )


def test_a_cached_version_is_not_fetched_again(where: Where, source: Store, cache):
    older, _newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    first = remote.fetch(older.tag, cache)
    seen: list[tuple[int, int]] = []
    # name:latest asks the remote store which version that is, and finds
    # it in the cache: nothing is downloaded.
    again = remote.fetch("doubler", cache, progress=lambda *p: seen.append(p))
    assert (again.tag, again.path, seen) == (older.tag, first.path, [])
    # Gone from the remote store: the exact tag is served from the cache
    # without reaching it.
    where.remove(f"doubler/{older.info.version}.dsmodel")
    where.remove(f"doubler/{older.info.version}.json")
    again = remote.fetch(older.tag, cache, progress=lambda *p: seen.append(p))
    assert (again.path, seen) == (first.path, [])


def test_fetch_uses_the_default_cache(
    where: Where, source: Store, tmp_path, monkeypatch
):
    older, _newer = two_versions(source)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    where.store().push(source, older.tag)
    stored = where.store().fetch(older.tag)
    assert stored.path == tmp_path / "xdg" / "deepserve" / "models" / "doubler" / (
        older.info.version
    )


def test_the_default_cache_root(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_root() == tmp_path / "deepserve" / "models"
    home = Path("~").expanduser()
    for value in ("", "relative/dir"):  # ignored, as XDG says
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert default_cache_root() == home / ".cache" / "deepserve" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_root() == home / ".cache" / "deepserve" / "models"


def test_a_swapped_archive_is_refused_and_the_cache_left_clean(
    where: Where, source: Store, cache
):
    older, newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    remote.push(source, newer.tag)
    # A valid archive, of another version, under the older one's key.
    v1, v2 = older.info.version, newer.info.version
    where.write(f"doubler/{v1}.dsmodel", where.read(f"doubler/{v2}.dsmodel"))
    with pytest.raises(BadArchive) as caught:
        remote.fetch(older.tag, cache)
    message = str(caught.value)
    assert f"holds '{newer.tag}', not '{older.tag}'" in message
    assert remote.archive_url(older.tag) in message
    assert ".part" not in message
    assert Store(cache).list() == []
    assert left_in(cache) == []


def test_a_corrupt_archive_is_refused_and_the_cache_left_clean(
    where: Where, source: Store, cache
):
    saved = picklable_model.save_model(
        "doubler", Doubler(), metadata={"pad": "x" * 5000}, store=source
    )
    remote = where.store()
    remote.push(source, saved.tag)
    rel = f"doubler/{saved.info.version}.dsmodel"
    data = bytearray(where.read(rel))
    data[len(data) // 2] ^= 0xFF
    where.write(rel, bytes(data))
    with pytest.raises(BadArchive) as caught:
        remote.fetch(saved.tag, cache)
    assert str(caught.value).startswith(
        f"Unsafe or damaged archive '{remote.archive_url(saved.tag)}'"
    )
    assert "\n" not in str(caught.value)
    assert Store(cache).list() == []
    assert left_in(cache) == []


def test_a_missing_archive_is_one_line_and_changes_nothing(
    where: Where, source: Store, cache
):
    older, _newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    where.remove(f"doubler/{older.info.version}.dsmodel")
    with pytest.raises(RemoteStoreError) as caught:
        remote.fetch(older.tag, cache)
    message = str(caught.value)
    assert message.startswith(
        f"Cannot download '{remote.archive_url(older.tag)}': not found"
    )
    assert "\n" not in message
    assert left_in(cache) == []


def test_a_cache_that_cannot_be_written_is_a_store_error(
    where: Where, source: Store, tmp_path
):
    older, _newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    cache = tmp_path / "a-file"
    cache.write_text("not a directory")
    with pytest.raises(StoreError) as caught:
        remote.fetch(older.tag, cache)
    assert str(caught.value) == (
        f"Cannot fetch '{older.tag}' into the cache {cache}: Not a directory: "
        f"'{cache / FETCH_DIR}'"
    )


def test_the_download_of_a_fetch_that_died_is_removed(
    where: Where, source: Store, cache
):
    older, newer = two_versions(source)
    remote = where.store()
    remote.push(source, older.tag)
    remote.push(source, newer.tag)
    # What a fetch killed during its download leaves: its lock file (no
    # longer locked by anyone) and a part of the archive.
    work = cache / FETCH_DIR
    work.mkdir(parents=True)
    dead = f"doubler@{older.info.version}"
    (work / f"{dead}.lock").write_bytes(b"")
    (work / f"{dead}.dsmodel.part").write_bytes(b"half an archive")
    remote.fetch(newer.tag, cache)
    assert left_in(cache / FETCH_DIR) == []
    # And a fetch of the version it was fetching works.
    assert remote.fetch(older.tag, cache).tag == older.tag
    assert left_in(cache / FETCH_DIR) == []


def _fetch_in_child(
    remote: RemoteStore,
    tag: str,
    cache: str,
    barrier: Any,
    results: Any,
) -> None:
    downloaded: list[int] = []
    try:
        barrier.wait(timeout=60)
        stored = remote.fetch(
            tag, cache, progress=lambda done, total: downloaded.append(done)
        )
        results.put(("ok", str(stored.path), bool(downloaded)))
    except BaseException as exc:
        results.put(("error", repr(exc), False))


def test_concurrent_fetches_of_one_tag_import_it_once(
    shared: Where, source: Store, cache, tmp_path: Path
):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(8 << 20))  # long enough for the fetches to meet
    saved = picklable_model.save_model(
        "doubler", Doubler(), artifacts={"blob": str(blob)}, store=source
    )
    remote = shared.store()
    remote.push(source, saved.tag)
    context = multiprocessing.get_context("spawn")
    count = 4
    barrier = context.Barrier(count)
    results = context.Queue()
    children = [
        context.Process(
            target=_fetch_in_child,
            args=(remote, "doubler:latest", str(cache), barrier, results),
        )
        for _ in range(count)
    ]
    for child in children:
        child.start()
    try:
        answers = [results.get(timeout=120) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    assert [a[0] for a in answers] == ["ok"] * count, answers
    assert {a[1] for a in answers} == {str(cache / "doubler" / saved.info.version)}
    assert sum(a[2] for a in answers) == 1, "exactly one process downloads"
    assert [m.tag for m in Store(cache).list()] == [saved.tag]
    assert left_in(cache / FETCH_DIR) == []
    stored = Store(cache).get(saved.tag)
    assert Path(stored.artifacts["blob"]).read_bytes() == blob.read_bytes()


# -- S3 errors ---------------------------------------------------------------


def test_a_missing_bucket_is_one_line_naming_the_url(s3: S3, source: Store, cache):
    older, _newer = two_versions(source)
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/models"
    remote = RemoteStore(url, storage_options=s3.options())
    for call in (
        lambda: remote.resolve("doubler"),
        lambda: remote.resolve(older.tag),
        lambda: remote.fetch("doubler", cache),
    ):
        with pytest.raises(RemoteStoreError) as caught:
            call()
        assert str(caught.value) == (
            f"No model store at {url} (not found: The specified bucket does not exist)"
        )
    with pytest.raises(RemoteStoreError) as caught:
        remote.push(source, older.tag)
    assert str(caught.value) == (
        f"Cannot upload to '{url}/doubler/{older.info.version}.dsmodel': "
        "not found (The specified bucket does not exist)"
    )
    assert not (cache / "doubler").exists()


def test_permission_denied_is_one_line_naming_the_url(s3: S3, source: Store, cache):
    older, _newer = two_versions(source)
    bucket = s3.new_bucket()
    remote = RemoteStore(f"s3://{bucket}/models", storage_options=s3.options())
    remote.push(source, older.tag)
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    fs = s3.filesystem()
    fs.call_s3("put_bucket_policy", Bucket=bucket, Policy=json.dumps(deny))
    with pytest.raises(RemoteStoreError) as caught:
        remote.fetch(older.tag, cache)
    assert str(caught.value).startswith(
        f"Cannot read '{remote.url}/doubler/{older.info.version}.json': "
        "permission denied"
    )
    with pytest.raises(RemoteStoreError, match="permission denied"):
        remote.push(source, older.tag, overwrite=True)
    assert left_in(cache) == []
