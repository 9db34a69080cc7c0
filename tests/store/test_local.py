"""The store's layout, atomic saves, deletes and clean-up of crashed saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepserve import picklable_model
from deepserve.exceptions import BadTag, ModelTagNotFound, StoreError
from deepserve.store import Store
from deepserve.store.local import TMP_DIR
from tests.store.conftest import ROOT, python_env, run_python
from tests.store.kinds import Doubler


def test_save_get_list_delete(store: Store) -> None:
    first = picklable_model.save_model("calc", Doubler(2), store=store)
    second = picklable_model.save_model("calc", Doubler(3), store=store)
    other = picklable_model.save_model("other", Doubler(4), store=store)

    assert first.path == store.root / "calc" / first.info.version
    assert (first.path / "model.json").is_file()
    assert store.get(first.tag) == first
    assert store.get("calc") == second
    assert store.get("calc:latest") == second
    assert [m.tag for m in store.list()] == [first.tag, second.tag, other.tag]
    assert [m.tag for m in store.list("calc")] == [first.tag, second.tag]
    assert store.list("nothing") == []

    assert store.delete("calc:latest") == second
    assert not second.path.exists()
    assert store.get("calc") == first
    store.delete(first.tag)
    assert not (store.root / "calc").exists()
    with pytest.raises(ModelTagNotFound, match="'calc:latest' is not in the store"):
        store.get("calc")
    with pytest.raises(ModelTagNotFound):
        store.delete(first.tag)
    assert [m.tag for m in store.list()] == [other.tag]


def test_latest_is_the_newest_of_many(store: Store) -> None:
    saved = [
        picklable_model.save_model("many", Doubler(n), store=store) for n in range(6)
    ]
    assert [m.info.version for m in saved] == sorted(m.info.version for m in saved)
    assert [m.info.created for m in saved] == sorted(m.info.created for m in saved)
    assert store.get("many").tag == saved[-1].tag
    assert [m.tag for m in store.list("many")] == [m.tag for m in saved]


def test_empty_store_and_bad_tags(store: Store) -> None:
    assert store.list() == []
    with pytest.raises(ModelTagNotFound):
        store.get("missing:v1")
    with pytest.raises(BadTag):
        store.get("Missing")
    with pytest.raises(BadTag):
        store.list("a:b")


def test_a_damaged_entry_is_skipped_in_lists(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    good = picklable_model.save_model("calc", Doubler(), store=store)
    bad = picklable_model.save_model("calc", Doubler(), store=store)
    (bad.path / "model.json").write_text("{not json")
    assert [m.tag for m in store.list()] == [good.tag]
    assert "damaged" in caplog.text
    with pytest.raises(StoreError, match=r"model\.json"):
        store.get(bad.tag)


def test_model_json_paths_cannot_leave_the_entry(store: Store) -> None:
    model = picklable_model.save_model("calc", Doubler(), store=store)
    data = json.loads((model.path / "model.json").read_text())
    data["artifacts"] = {"secret": "../../../etc/passwd"}
    (model.path / "model.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match="leaves the entry"):
        store.get(model.tag)


SAVER = """
import sys, time
from pathlib import Path
from deepserve import picklable_model
from deepserve.store import Store
from tests.store.kinds import Doubler
store, start, proc = Store(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
while not start.exists():
    time.sleep(0.01)
for n in range(4):
    picklable_model.save_model("shared", Doubler(), metadata={"proc": proc, "n": n}, store=store)
"""


def test_concurrent_saves_of_one_name_never_clobber(
    store: Store, tmp_path: Path
) -> None:
    start = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, str(store.root), str(start), str(i)],
            env=python_env(),
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    start.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
    models = store.list("shared")
    assert len(models) == 16
    assert len({m.info.version for m in models}) == 16
    assert sorted((m.info.metadata["proc"], m.info.metadata["n"]) for m in models) == [
        (p, n) for p in range(4) for n in range(4)
    ]
    for model in models:
        assert picklable_model.load_model(model, store=store).predict([1]) == [2]
    assert not any((store.root / TMP_DIR).iterdir())


INTERRUPTED = """
import sys, time
from pathlib import Path
from deepserve import picklable_model
from deepserve.store import Store
from tests.store.kinds import Doubler

class SlowToPickle:
    def __reduce__(self):
        Path(sys.argv[2]).touch()
        time.sleep(120)
        return (SlowToPickle, ())

picklable_model.save_model(
    "victim", Doubler(), custom_objects={"slow": SlowToPickle()}, store=Store(sys.argv[1])
)
"""


def test_an_interrupted_save_is_invisible_and_cleaned(
    store: Store, tmp_path: Path
) -> None:
    kept = picklable_model.save_model("victim", Doubler(), store=store)
    started = tmp_path / "pickling"
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(store.root), str(started)],
        env=python_env(),
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, "the saver died before pickling"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Mid-save: the half-written entry exists, but only in .tmp.
        tmp = store.root / TMP_DIR
        half = [p for p in tmp.iterdir() if p.is_dir()]
        assert len(half) == 1
        assert (half[0] / "entry" / "saved_model.pkl").is_file()
        assert [m.tag for m in store.list()] == [kept.tag]
        assert store.get("victim") == kept
        # A live save's temp dir is not taken by a clean-up.
        assert store.clean() == []
        assert half[0].exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [m.tag for m in store.list()] == [kept.tag]
    assert store.get("victim:latest") == kept
    assert half[0].exists()
    # The next write cleans the crashed save's leftovers up.
    newer = picklable_model.save_model("victim", Doubler(), store=store)
    assert not half[0].exists()
    assert [p.name for p in tmp.iterdir()] == []
    assert store.get("victim") == newer


def test_delete_removes_the_entry_in_one_step(store: Store) -> None:
    model = picklable_model.save_model("calc", Doubler(), store=store)
    deleted = store.delete(model.tag)
    assert deleted.tag == model.tag
    assert not (store.root / TMP_DIR / "deleted").exists()
    assert store.list() == []


def test_store_root_is_expanded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Store("~/models").root == tmp_path / "models"


def test_code_runs_in_fresh_interpreters(store: Store) -> None:
    model = picklable_model.save_model("calc", Doubler(5), store=store)
    out = run_python(
        "import sys; from deepserve import picklable_model; from deepserve.store import Store;"
        "print(picklable_model.load_model(sys.argv[2], store=Store(sys.argv[1])).predict([2]))",
        str(store.root),
        model.tag,
    )
    assert out.stdout.strip() == "[10]"
