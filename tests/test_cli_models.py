"""``deepserve models``: the model store from the shell."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepserve import cli, picklable_model
from deepserve.store import Store
from tests.conftest import subprocess_env


@pytest.fixture
def store(fake_site: Path, tmp_path: Path) -> Store:
    import fake_stored

    store = Store(tmp_path / "home" / "models")
    for factor in (1.0, 2.0):
        picklable_model.save_model(
            "scaler",
            fake_stored.Scaler(factor),
            labels={"factor": str(factor)},
            store=store,
        )
    picklable_model.save_model("other", fake_stored.Scaler(5.0), store=store)
    return store


def models(store: Store, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run ``deepserve models`` in this process; (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        status = cli.main(["models", "--store", str(store.root), *args])
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return status, out.getvalue(), err.getvalue()


def tags(store: Store, name: str | None = None) -> set[str]:
    return {str(m.tag) for m in store.list(name)}


def test_list_is_a_table_newest_first(store):
    status, out, _ = models(store, "list")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["TAG", "MODULE", "SIZE", "CREATED"]
    assert len(rows) == 3
    listed = [row.split()[0] for row in rows]
    newest_first = sorted(store.list(), key=lambda m: m.info.created, reverse=True)
    assert listed == [str(m.tag) for m in newest_first]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_list_as_json_or_yaml(store, fmt):
    status, out, _ = models(store, "list", "scaler", "-o", fmt)
    assert status == 0
    data: Any = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert {row["tag"] for row in data} == tags(store, "scaler")
    assert {row["labels"]["factor"] for row in data} == {"1.0", "2.0"}


def test_get_shows_the_entry_info(store):
    latest = store.get("scaler:latest")
    status, out, _ = models(store, "get", "scaler", "-o", "json")
    assert status == 0
    info = json.loads(out)
    assert info["tag"] == str(latest.tag)
    assert info["module"] == "deepserve.picklable_model"
    assert info["labels"] == {"factor": "2.0"}
    status, out, _ = models(store, "get", "scaler")  # YAML by default
    assert yaml.safe_load(out)["tag"] == str(latest.tag)


def test_unknown_tag_and_bad_tag_are_one_line_errors(store):
    status, out, err = models(store, "get", "nothing:latest")
    assert status == 1 and out == ""
    assert err.startswith("deepserve models: error:") and "nothing" in err
    assert err.count("\n") == 1
    status, _, err = models(store, "get", "Bad Tag!")
    assert status == 1 and "Traceback" not in err


def test_delete_asks_first(store):
    before = tags(store)
    status, _, err = models(store, "delete", "other", stdin="n\n")
    assert status == 1 and "Nothing deleted" in err
    assert tags(store) == before
    status, out, _ = models(store, "delete", "other", stdin="y\n")
    assert status == 0 and "Deleted other:" in out
    assert tags(store, "other") == set()


def test_delete_with_yes_and_a_bad_tag_deletes_nothing(store):
    before = tags(store)
    status, _, _ = models(store, "delete", "-y", "scaler", "missing:v1")
    assert status == 1
    assert tags(store) == before
    status, _, _ = models(store, "delete", "-y", "scaler")
    assert status == 0
    assert len(tags(store, "scaler")) == 1  # only the latest version went


def test_export_to_a_directory_and_import_into_another_store(store, tmp_path):
    target = Store(tmp_path / "elsewhere")
    latest = str(store.get("scaler").tag)
    status, out, err = models(store, "export", "scaler", str(tmp_path), "--progress")
    assert status == 0, err
    archive = Path(out.strip().rsplit(" to ", 1)[1])
    assert archive.parent == tmp_path and archive.is_file()
    assert "100%" in err  # the progress bar reached the end
    status, out, err = models(target, "import", str(archive), "--no-progress")
    assert status == 0, err
    assert out.strip() == f"Imported {latest}"
    assert err == ""
    assert tags(target) == {latest}
    assert picklable_model.load_model(latest, store=target).factor == 2.0
    # importing the same version again is refused and changes nothing
    status, _, err = models(target, "import", str(archive))
    assert status == 1 and latest in err
    assert tags(target) == {latest}


def test_export_and_import_through_an_fsspec_url(store, tmp_path):
    pytest.importorskip("fsspec")
    target = Store(tmp_path / "elsewhere")
    url = "memory://exports/scaler.tar.gz"
    status, _, err = models(store, "export", "other", url)
    assert status == 0, err
    status, _, err = models(target, "import", url)
    assert status == 0, err
    assert tags(target) == tags(store, "other")


def test_import_of_a_broken_archive_is_refused_with_the_store_unchanged(
    store, tmp_path
):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not an archive")
    before = tags(store)
    status, out, err = models(store, "import", str(bad))
    assert status == 1 and out == ""
    assert err.startswith("deepserve models: error:")
    assert tags(store) == before


def test_models_command_runs_as_a_real_process(store, fake_site):
    proc = subprocess.run(
        [sys.executable, "-m", "deepserve.cli", "models", "list", "-o", "json"],
        env={**subprocess_env(fake_site), "DEEPSERVE_HOME": str(store.root.parent)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert {row["tag"] for row in json.loads(proc.stdout)} == tags(store)
