"""Export and import: round trips, and archives that must be refused."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deepserve import class_model, models, picklable_model, python_model
from deepserve import sklearn as ds_sklearn
from deepserve.exceptions import BadArchive, BadTag, TagExists
from deepserve.store import Store, StoredModel
from deepserve.store.archive import ArchiveExists
from tests.store.conftest import run_python
from tests.store.kinds import Doubler, Lookup, Tokenizing
from tests.store.test_frameworks import artifacts_on_disk


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> a digest of its content ("dir" for dirs)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def move(
    saved: StoredModel, source: Store, target: Store, tmp_path: Path
) -> StoredModel:
    """Export from ``source`` into a directory, import into ``target``."""
    out = tmp_path / "exports"
    out.mkdir(exist_ok=True)
    path = models.export_model(saved.tag, out, store=source)
    assert Path(path) == out / f"{saved.info.name}-{saved.info.version}.dsmodel"
    imported = models.import_model(path, store=target)
    assert imported.tag == saved.tag
    assert imported.info == saved.info
    assert imported.path == target.root / saved.info.name / saved.info.version
    return imported


@pytest.fixture
def fresh(tmp_path: Path) -> Store:
    return Store(tmp_path / "fresh")


def test_picklable_round_trip(store: Store, fresh: Store, tmp_path: Path) -> None:
    saved = picklable_model.save_model(
        "doubler",
        Doubler(4),
        labels={"stage": "prod"},
        metadata={"acc": 1.0},
        custom_objects={"split": str.split},
        signatures={"predict": {"batchable": True}},
        store=store,
    )
    imported = move(saved, store, fresh, tmp_path)
    assert picklable_model.load_model(saved.tag, store=fresh).predict([1]) == [4]
    assert imported.custom_objects["split"]("a b") == ["a", "b"]
    assert fresh.get("doubler:latest").info.labels == {"stage": "prod"}


def test_sklearn_round_trip(store: Store, fresh: Store, tmp_path: Path) -> None:
    from sklearn import datasets, tree

    iris = datasets.load_iris()
    clf = tree.DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target)
    saved = ds_sklearn.save_model("iris_clf", clf, store=store)
    move(saved, store, fresh, tmp_path)
    loaded = ds_sklearn.load_model("iris_clf", store=fresh)
    assert loaded.predict(iris.data).tolist() == clf.predict(iris.data).tolist()


def test_class_model_artifacts_resolve_after_import(
    store: Store, fresh: Store, tmp_path: Path
) -> None:
    saved = class_model.save_model(
        "lookup", Lookup, artifacts=artifacts_on_disk(tmp_path), store=store
    )
    move(saved, store, fresh, tmp_path)
    models.delete(saved.tag, store=store)  # nothing may point back at the source
    model = class_model.load_model("lookup", store=fresh)
    assert model.predict(["b", "?"]) == [2, ["cat", "dog", "sub"]]
    for path in class_model.fetch_artifacts("lookup", store=fresh).values():
        assert Path(path).is_relative_to(fresh.root.resolve())
        assert Path(path).exists()


def test_python_model_round_trip(store: Store, fresh: Store, tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a b c")
    saved = python_model.save_model(
        "tok", Tokenizing(), artifacts={"vocab": vocab}, store=store
    )
    move(saved, store, fresh, tmp_path)
    loaded = python_model.load_model(saved.tag, store=fresh)
    assert loaded.predict("c a") == [2, 0]
    assert Path(loaded.context.artifacts["vocab"]).is_relative_to(fresh.root.resolve())


def test_code_paths_travel_with_the_model(
    store: Store, fresh: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "echomodel.py").write_text(
        textwrap.dedent(
            """
            class Echo:
                def __init__(self, artifacts):
                    pass

                def predict(self, data):
                    return ["echo", data]
            """
        )
    )
    monkeypatch.syspath_prepend(str(src))
    import echomodel

    saved = class_model.save_model(
        "echo", echomodel.Echo, code_paths=[src / "echomodel.py"], store=store
    )
    monkeypatch.delitem(sys.modules, "echomodel")
    move(saved, store, fresh, tmp_path)
    (src / "echomodel.py").unlink()
    out = run_python(
        "import sys; from deepserve import class_model; from deepserve.store import Store;"
        "print(class_model.load_model('echo', store=Store(sys.argv[1])).predict(7))",
        str(fresh.root),
    )
    assert out.stdout.strip() == "['echo', 7]"


def test_export_to_a_file_with_progress(store: Store, tmp_path: Path) -> None:
    saved = picklable_model.save_model("doubler", Doubler(), store=store)
    calls: list[tuple[int, int]] = []
    target = tmp_path / "my_model.dsmodel"
    written = models.export_model(
        saved, target, store=store, progress=lambda d, t: calls.append((d, t))
    )
    assert written == str(target)
    assert target.is_file()
    assert calls and calls[-1][0] == calls[-1][1] > 0


def test_export_replaces_an_archive_unless_told_not_to(
    store: Store, tmp_path: Path
) -> None:
    saved = picklable_model.save_model("doubler", Doubler(), store=store)
    target = tmp_path / "my_model.dsmodel"
    target.write_bytes(b"older")
    with pytest.raises(ArchiveExists):
        models.export_model(saved, target, store=store, overwrite=False)
    with pytest.raises(ArchiveExists):
        store.export_model(saved.tag, target, overwrite=False)
    assert target.read_bytes() == b"older"
    models.export_model(saved, target, store=store)
    assert target.read_bytes() != b"older"


def test_importing_a_tag_twice_is_refused(store: Store, tmp_path: Path) -> None:
    saved = picklable_model.save_model("doubler", Doubler(), store=store)
    path = models.export_model(saved, tmp_path, store=store)
    before = snapshot(store.root)
    with pytest.raises(TagExists, match=f"'{saved.tag}' already exists"):
        models.import_model(path, store=store)
    assert snapshot(store.root) == before


def test_an_import_can_insist_on_the_tag_the_archive_holds(
    store: Store, fresh: Store, tmp_path: Path
) -> None:
    one = picklable_model.save_model("doubler", Doubler(), store=store)
    two = picklable_model.save_model("doubler", Doubler(3), store=store)
    path = models.export_model(one, tmp_path, store=store)
    with pytest.raises(BadArchive, match=f"holds '{one.tag}', not '{two.tag}'"):
        fresh.import_model(path, tag=two.tag)
    assert fresh.list() == []
    assert [p for p in fresh.root.rglob("*") if not p.is_dir()] == []
    with pytest.raises(BadTag, match="exact tag"):
        fresh.import_model(path, tag="doubler:latest")
    assert fresh.import_model(path, tag=one.tag).tag == one.tag


# -- archives that must be refused -------------------------------------------


Member = tuple[tarfile.TarInfo, bytes | None]


def read_members(archive: str) -> list[Member]:
    members: list[Member] = []
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            members.append((info, data))
    return members


def write_archive(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def manifested(
    members: list[Member], tamper: Callable[[str, bytes], bytes] | None = None
) -> list[Member]:
    """``members`` with a manifest that lists every one of them truthfully
    (so that only the attack is wrong), then ``tamper`` applied to contents."""
    listed: list[dict[str, Any]] = []
    body = [(i, d) for i, d in members if i.name != "MANIFEST.json"]
    for info, data in body:
        if info.isdir():
            listed.append({"path": info.name, "type": "dir"})
        else:
            content = data or b""
            listed.append(
                {
                    "path": info.name,
                    "type": "file",
                    "size": len(content),
                    "sha256": hashlib.sha256(content).hexdigest(),
                }
            )
    manifest = tarfile.TarInfo("MANIFEST.json")
    document = {"format": "deepserve-archive", "version": 1, "members": listed}
    result: list[Member] = [(manifest, json.dumps(document).encode())]
    for info, data in body:
        if tamper is not None and data is not None:
            data = tamper(info.name, data)
        result.append((info, data))
    return result


def file_member(name: str, data: bytes = b"evil") -> Member:
    return tarfile.TarInfo(name), data


def link_member(name: str, target: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def special_member(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


@pytest.fixture
def good_archive(store: Store, tmp_path: Path) -> str:
    saved = picklable_model.save_model(
        "victim", Doubler(), store=Store(tmp_path / "origin")
    )
    return models.export_model(saved, tmp_path, store=Store(tmp_path / "origin"))


def flip_model(name: str, data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1]) if name == "saved_model.pkl" else data


ATTACKS: dict[str, Callable[[list[Member], Path], tuple[list[Member], str]]] = {
    "absolute path": lambda m, out: (
        manifested([*m, file_member(str(out / "abs.txt"))]),
        str(out / "abs.txt").lstrip("/"),
    ),
    "dot-dot": lambda m, out: (
        manifested([*m, file_member("../../dotdot.txt")]),
        "dotdot.txt",
    ),
    "escaping symlink": lambda m, out: (
        manifested([*m, link_member("artifacts", str(out), tarfile.SYMTYPE)]),
        "artifacts",
    ),
    "escaping hardlink": lambda m, out: (
        manifested([*m, link_member("hard", "../../../etc/passwd", tarfile.LNKTYPE)]),
        "hard",
    ),
    "device file": lambda m, out: (
        manifested([*m, special_member("null", tarfile.CHRTYPE)]),
        "null",
    ),
    "fifo": lambda m, out: (
        manifested([*m, special_member("pipe", tarfile.FIFOTYPE)]),
        "pipe",
    ),
    "bad checksum": lambda m, out: (manifested(m, flip_model), "saved_model.pkl"),
    "missing manifest": lambda m, out: (
        [(i, d) for i, d in m if i.name != "MANIFEST.json"],
        "MANIFEST.json",
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_malicious_archives_are_refused_and_change_nothing(
    attack: str, store: Store, good_archive: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    kept = picklable_model.save_model("kept", Doubler(), store=store)
    members, named = ATTACKS[attack](read_members(good_archive), outside)
    archive = write_archive(tmp_path / "evil.dsmodel", members)
    before = snapshot(store.root)
    with pytest.raises(BadArchive) as caught:
        models.import_model(archive, store=store)
    assert named in str(caught.value)
    assert snapshot(store.root) == before
    assert [m.tag for m in store.list()] == [kept.tag]
    assert snapshot(outside) == {"sentinel": hashlib.sha256(b"untouched").hexdigest()}
    assert not (tmp_path / "dotdot.txt").exists()


def test_an_oversize_member_is_refused(store: Store, good_archive: str) -> None:
    kept = picklable_model.save_model("kept", Doubler(), store=store)
    before = snapshot(store.root)
    with pytest.raises(BadArchive, match="more than the limit of 10 per member"):
        store.import_model(good_archive, max_member_size=10)
    assert snapshot(store.root) == before
    assert store.list() == [kept]
    # The same archive within the limits is fine.
    assert store.import_model(good_archive, max_total_size=10**6).tag.startswith(
        "victim:"
    )


def test_an_archive_without_model_json_is_refused(
    store: Store, good_archive: str, tmp_path: Path
) -> None:
    members = [(i, d) for i, d in read_members(good_archive) if i.name != "model.json"]
    archive = write_archive(tmp_path / "nojson.dsmodel", manifested(members))
    with pytest.raises(BadArchive, match=r"holds no model\.json"):
        models.import_model(archive, store=store)
    assert store.list() == []


def test_a_model_json_pointing_outside_is_refused(
    store: Store, good_archive: str, tmp_path: Path
) -> None:
    def evil_info(name: str, data: bytes) -> bytes:
        if name != "model.json":
            return data
        info = json.loads(data)
        info["code_paths"] = ["/usr/lib/python3"]
        return json.dumps(info).encode()

    archive = write_archive(
        tmp_path / "paths.dsmodel", manifested(read_members(good_archive))
    )
    members = read_members(str(archive))
    body = [(i, evil_info(i.name, d) if d is not None else d) for i, d in members]
    archive = write_archive(tmp_path / "paths2.dsmodel", manifested(body))
    with pytest.raises(BadArchive, match="leaves the entry"):
        models.import_model(archive, store=store)
    assert store.list() == []


def test_export_and_import_through_an_fsspec_url(store: Store, fresh: Store) -> None:
    saved = picklable_model.save_model("doubler", Doubler(7), store=store)
    url = models.export_model(saved.tag, "memory://exports/", store=store)
    assert url == f"memory://exports/doubler-{saved.info.version}.dsmodel"
    imported = models.import_model(url, store=fresh)
    assert imported.info == saved.info
    assert picklable_model.load_model(imported, store=fresh).predict([1]) == [7]


def test_an_imported_older_version_does_not_become_latest(
    store: Store, fresh: Store, tmp_path: Path
) -> None:
    older = picklable_model.save_model("doubler", Doubler(1), store=store)
    newer = picklable_model.save_model("doubler", Doubler(2), store=fresh)
    assert older.info.created < newer.info.created
    move(older, store, fresh, tmp_path)
    assert fresh.get("doubler").tag == newer.tag
    assert [m.tag for m in fresh.list("doubler")] == [older.tag, newer.tag]
