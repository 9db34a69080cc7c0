"""``deepserve models``: the model store from the shell, run as a real process."""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepserve import cli_models, picklable_model
from deepserve.cli_models import Progress, duration, progress_line
from deepserve.store import Store
from tests.conftest import subprocess_env

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    status: int
    out: str
    err: str

    @property
    def first_error_line(self) -> str:
        return self.err.splitlines()[0] if self.err else ""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """``DEEPSERVE_HOME`` of the processes run: never the user's own."""
    return tmp_path / "home"


@pytest.fixture
def store(fake_site: Path, home: Path) -> Store:
    """The default store (``$DEEPSERVE_HOME/models``) with three models."""
    import fake_stored

    store = Store(home / "models")
    for factor in (1.0, 2.0):
        picklable_model.save_model(
            "scaler",
            fake_stored.Scaler(factor),
            labels={"factor": str(factor)},
            store=store,
        )
    picklable_model.save_model("other", fake_stored.Scaler(5.0), store=store)
    return store


Run = Callable[..., Result]


@pytest.fixture
def run(fake_site: Path, home: Path) -> Run:
    """Run ``deepserve models ARGS`` in a fresh process: stdout and stderr
    are pipes, as in a script."""

    def run(*args: str, stdin: str = "", **env: str) -> Result:
        environ = subprocess_env(fake_site)
        for var in ("NO_COLOR", "FORCE_COLOR", "COLUMNS"):
            environ.pop(var, None)
        environ["DEEPSERVE_HOME"] = str(home)
        environ.update(env)
        proc = subprocess.run(
            [sys.executable, "-m", "deepserve.cli", "models", *args],
            env=environ,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def tags(store: Store, name: str | None = None) -> set[str]:
    return {m.tag for m in store.list(name)}


def assert_failure(result: Result, command: str, *words: str) -> None:
    """Exit status 1, nothing on stdout, one error line naming ``words``."""
    assert result.status == 1, result
    assert result.out == ""
    assert result.first_error_line.startswith(f"{command}: error: "), result.err
    for word in words:
        assert word in result.first_error_line, (word, result.err)
    assert "Traceback" not in result.err
    assert ".partial" not in result.err


def assert_usage_error(result: Result, command: str, *words: str) -> str:
    """Exit status 2, the error line naming ``words``; returns the hint line."""
    assert result.status == 2, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 2, result.err
    assert lines[0].startswith(f"{command}: error: "), result.err
    for word in words:
        assert word in lines[0], (word, result.err)
    assert f"'{command} --help'" in lines[1]
    return lines[1]


# -- list and get ------------------------------------------------------------------


def test_list_is_a_table_newest_first(store, run):
    result = run("list")
    assert result.status == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split() == ["TAG", "MODULE", "SIZE", "CREATED"]
    assert len(rows) == 3
    listed = [row.split()[0] for row in rows]
    newest_first = sorted(store.list(), key=lambda m: m.info.created, reverse=True)
    assert listed == [m.tag for m in newest_first]
    # Sizes and times for people: units, local time to the second.
    first = newest_first[0]
    local = first.info.created.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert rows[0].split()[2:] == [str(first.info.size), "B", *local.split()]


def test_list_of_one_name(store, run):
    result = run("list", "scaler", "-o", "json")
    assert result.status == 0, result.err
    assert {row["tag"] for row in json.loads(result.out)} == tags(store, "scaler")


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_give_raw_values_the_same_in_list_and_get(store, run, fmt):
    load: Callable[[str], Any] = json.loads if fmt == "json" else yaml.safe_load
    result = run("list", "-o", fmt)
    assert result.status == 0, result.err
    rows = load(result.out)
    assert [row["tag"] for row in rows] == [
        m.tag for m in sorted(store.list(), key=lambda m: m.info.created, reverse=True)
    ]
    for row in rows:
        stored = store.get(row["tag"])
        assert list(row) == list(cli_models.SUMMARY_KEYS)
        assert row["size"] == stored.info.size and isinstance(row["size"], int)
        created = datetime.datetime.fromisoformat(row["created"])
        assert created.tzinfo is not None
        assert created == stored.info.created
        assert row["labels"] == dict(stored.info.labels)
        assert row["path"] == str(stored.path)
        assert (row["name"], row["version"]) == (stored.info.name, stored.info.version)
        # get gives the same values under the same keys, and more.
        got = run("get", row["tag"], "-o", fmt)
        assert got.status == 0, got.err
        full = load(got.out)
        assert {key: full[key] for key in row} == row
        assert full["framework"]["name"] == "cloudpickle"
        assert full["signatures"] == {"predict": {"batchable": False, "batch_dim": 0}}
        assert "format" not in full


def test_get_shows_the_latest_as_yaml_by_default(store, run):
    latest = store.get("scaler:latest")
    result = run("get", "scaler")
    assert result.status == 0, result.err
    info = yaml.safe_load(result.out)
    assert info["tag"] == latest.tag
    assert info["module"] == "deepserve.picklable_model"
    assert info["labels"] == {"factor": "2.0"}
    assert run("get", "scaler:latest").out == result.out


def test_get_as_a_table_is_for_people(store, run):
    latest = store.get("scaler")
    result = run("get", "scaler", "-o", "table")
    assert result.status == 0, result.err
    fields = dict(line.split(None, 1) for line in result.out.splitlines())
    assert fields["tag"] == latest.tag
    assert fields["size"] == f"{latest.info.size} B ({latest.info.size} bytes)"
    assert fields["created"] == latest.info.created.astimezone().strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    assert fields["labels"] == "factor=2.0"
    assert fields["framework"].startswith("cloudpickle (cloudpickle ")


def test_an_empty_store_lists_no_models(run, home):
    (home / "models").mkdir(parents=True)
    result = run("list")
    assert result.status == 0, result.err
    assert result.out == f"No models in the model store {home / 'models'}.\n"
    assert json.loads(run("list", "-o", "json").out) == []


# -- unknown models ------------------------------------------------------------------


@pytest.mark.parametrize("action", ["get", "delete", "export"])
def test_an_unknown_name_suggests_the_closest(store, run, tmp_path, action):
    extra = [str(tmp_path)] if action == "export" else []
    result = run(action, "scalr", *extra)
    command = f"deepserve models {action}"
    assert_failure(result, command, "'scalr'", str(store.root))
    assert result.err.splitlines()[1] == "did you mean 'scaler'?"
    # The user's form of the tag is kept in the suggestion.
    result = run(action, "scalr:latest", *extra)
    assert result.err.splitlines()[1] == "did you mean 'scaler:latest'?"


def test_a_mistyped_tag_suggests_the_stored_tag(store, run):
    tag = store.get("other").tag
    typo = tag.replace("other", "othr")
    result = run("get", typo)
    assert_failure(result, "deepserve models get", "'othr'")
    assert result.err.splitlines()[1] == f"did you mean '{tag}'?"
    # A version typo within a known name.
    wrong = tag[:-1] + ("0" if tag[-1] != "0" else "1")
    result = run("get", wrong)
    assert_failure(result, "deepserve models get", "'other'", f"'{wrong[6:]}'")
    assert result.err.splitlines()[1] == f"did you mean '{tag}'?"


def test_a_version_nothing_like_a_stored_one_points_at_list(store, run, tmp_path):
    result = run("get", "scaler:nothing-like-it")
    assert_failure(result, "deepserve models get", "'scaler'", "'nothing-like-it'")
    assert result.err.splitlines()[1] == (
        "'deepserve models list scaler' lists its versions."
    )
    # With another store than the default, the command to run says which.
    elsewhere = Store(tmp_path / "other store")
    picklable_model.save_model("solo", len, store=elsewhere)
    result = run("get", "solo:nothing-like-it", "--store", str(elsewhere.root))
    assert result.err.splitlines()[1] == (
        f"'deepserve models list solo --store '{elsewhere.root}'' lists its versions."
    )


def test_list_of_an_unknown_name_fails(store, run):
    result = run("list", "othr", "-o", "json")
    assert_failure(result, "deepserve models list", "'othr'")
    assert result.err.splitlines()[1] == "did you mean 'other'?"
    result = run("list", "zzz")
    assert_failure(result, "deepserve models list", "'zzz'")
    assert (
        result.err.splitlines()[1] == "'deepserve models list' lists the stored models."
    )


def test_an_empty_store_says_so(run, home):
    (home / "models").mkdir(parents=True)
    result = run("get", "iris_clf")
    assert_failure(result, "deepserve models get", "'iris_clf'", "is empty")


def test_invalid_tags_are_one_line_failures(store, run):
    result = run("get", "Bad Tag!")
    assert_failure(result, "deepserve models get", "Invalid model tag 'Bad Tag!'")
    assert result.err.count("\n") == 1
    result = run("list", "scaler:v1")
    assert_failure(result, "deepserve models list", "cannot hold ':'")


# -- the store's directory ------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["list"], ["get", "x"], ["delete", "x"], ["export", "x", "out"]]
)
def test_a_store_that_does_not_exist_is_named(run, tmp_path, args):
    missing = tmp_path / "no-such-store"
    result = run(*args, "--store", str(missing))
    action = f"deepserve models {args[0]}"
    assert_failure(result, action, f"model store {missing} does not exist")
    assert len(result.err.splitlines()) == 1
    assert not missing.exists()
    # The default store names the variable that moves it.
    result = run(*args)
    assert_failure(result, action, f"model store {tmp_path / 'home' / 'models'}")
    assert "DEEPSERVE_HOME" in result.err.splitlines()[1]


def test_a_store_that_is_a_file_is_refused(run, tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    for args in (["list"], ["import", "x.dsmodel"]):
        result = run(*args, "--store", str(file))
        assert_failure(result, f"deepserve models {args[0]}", "is not a directory")


def test_store_option_before_or_after_the_action(store, run, tmp_path):
    elsewhere = Store(tmp_path / "elsewhere")
    picklable_model.save_model("solo", len, store=elsewhere)
    root = str(elsewhere.root)
    before = run("--store", root, "list", "-o", "json")
    after = run("list", "--store", root, "-o", "json")
    equals = run("list", f"--store={root}", "-o", "json")
    assert before.status == after.status == equals.status == 0
    assert before.out == after.out == equals.out
    assert [row["tag"] for row in json.loads(after.out)] == [elsewhere.get("solo").tag]
    # Given twice, the one after the action counts.
    result = run("--store", str(store.root), "list", "--store", root, "-o", "json")
    assert result.out == after.out


# -- command line errors ----------------------------------------------------------


def test_no_action_is_a_usage_error(run):
    result = run()
    assert_usage_error(result, "deepserve models", "an action is required", "list")


def test_unknown_action_suggests_the_closest(run):
    hint = assert_usage_error(run("lst"), "deepserve models", "unknown action 'lst'")
    assert hint.startswith("did you mean 'list'?")
    hint = assert_usage_error(run("frobnicate"), "deepserve models", "'frobnicate'")
    assert "did you mean" not in hint


@pytest.mark.parametrize(
    ("args", "command", "unknown", "suggested"),
    [
        (["list", "--outptu", "json"], "deepserve models list", "--outptu", "--output"),
        (["list", "--outptu=json"], "deepserve models list", "--outptu", "--output"),
        (["--sotre", "x", "list"], "deepserve models", "--sotre", "--store"),
        (
            ["export", "a", "b", "--froce"],
            "deepserve models export",
            "--froce",
            "--force",
        ),
        (["delete", "a", "--yse"], "deepserve models delete", "--yse", "--yes"),
    ],
)
def test_unknown_option_suggests_the_closest(run, args, command, unknown, suggested):
    hint = assert_usage_error(run(*args), command, f"unknown option '{unknown}'")
    assert hint.startswith(f"did you mean '{suggested}'?")


def test_missing_and_extra_arguments(run):
    assert_usage_error(run("get"), "deepserve models get", "required", "TAG")
    assert_usage_error(run("export", "x"), "deepserve models export", "PATH")
    assert_usage_error(run("list", "a", "b"), "deepserve models list", "'b'")
    assert_usage_error(run("list", "-o"), "deepserve models list", "-o/--output")


def test_an_invalid_output_format_suggests_the_closest(run):
    hint = assert_usage_error(
        run("list", "-o", "jsno"),
        "deepserve models list",
        "'jsno'",
        "table, json, yaml",
    )
    assert hint.startswith("did you mean 'json'?")


@pytest.mark.parametrize(
    ("message", "text", "suggested"),
    [
        # Python 3.11 quotes the choices; 3.12 does not; 3.14 may suggest itself.
        (
            "argument ACTION: invalid choice: 'lst' (choose from 'list', 'get')",
            "unknown action 'lst' (choose from list, get)",
            "list",
        ),
        (
            "argument ACTION: invalid choice: 'lst' (choose from list, get)",
            "unknown action 'lst' (choose from list, get)",
            "list",
        ),
        (
            "argument ACTION: invalid choice: 'lst', maybe you meant 'list'? "
            "(choose from list, get)",
            "unknown action 'lst' (choose from list, get)",
            "list",
        ),
        (
            'argument -o/--output: invalid choice: "it\'s" (choose from table, json)',
            'argument -o/--output: invalid choice "it\'s" (choose from table, json)',
            "",
        ),
        ("the following arguments are required: TAG", "", ""),
    ],
)
def test_argparse_messages_of_every_python_version(message, text, suggested):
    shown, hint = cli_models._explain(message, "deepserve models")
    assert shown == (text.replace('"', "'") if text else message)
    if suggested:
        assert (
            hint
            == f"did you mean '{suggested}'? Try 'deepserve models --help' for help."
        )
    else:
        assert hint == ""


def test_every_action_documents_its_options(run):
    for action, options in {
        "list": ["--store DIR", "-o FORMAT"],
        "get": ["--store DIR", "-o FORMAT"],
        "delete": ["--store DIR", "-y, --yes"],
        "export": ["--store DIR", "-f, --force", "--progress", "--no-progress"],
        "import": ["--store DIR", "--progress", "created if missing"],
    }.items():
        result = run(action, "--help")
        assert result.status == 0
        assert result.out.startswith(f"usage: deepserve models {action} ")
        for option in options:
            assert option in result.out, (action, option)


# -- delete ---------------------------------------------------------------------------


def test_delete_asks_first(store, run):
    before = tags(store)
    result = run("delete", "other", stdin="n\n")
    assert result.status == 1 and "Nothing deleted" in result.err
    assert "Delete 1 model: other:" in result.err
    assert tags(store) == before
    result = run("delete", "other", stdin="y\n")
    assert result.status == 0 and result.out.startswith("Deleted other:")
    assert tags(store, "other") == set()


def test_delete_with_yes_and_an_unknown_tag_deletes_nothing(store, run):
    before = tags(store)
    result = run("delete", "-y", "scaler", "missing:v1")
    assert_failure(result, "deepserve models delete", "'missing'")
    assert tags(store) == before
    result = run("delete", "-y", "scaler", "--store", str(store.root))
    assert result.status == 0, result.err
    assert len(tags(store, "scaler")) == 1  # only the latest version went


# -- export and import ------------------------------------------------------------------


def test_export_to_a_directory_and_import_into_another_store(store, run, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    latest = store.get("scaler").tag
    result = run("export", "scaler", str(tmp_path))
    assert result.status == 0, result.err
    assert result.err == ""  # no progress for a pipe
    archive = Path(result.out.strip().rsplit(" to ", 1)[1])
    assert result.out.startswith(f"Exported {latest} to ")
    assert archive.parent == tmp_path and archive.is_file()
    result = run("import", str(archive), "--store", str(target))
    assert result.status == 0, result.err
    assert result.out == f"Imported {latest}\n"
    assert result.err == ""
    assert tags(Store(target)) == {latest}
    assert picklable_model.load_model(latest, store=Store(target)).factor == 2.0
    # Importing the same version again is refused and changes nothing.
    result = run("import", str(archive), "--store", str(target))
    assert_failure(result, "deepserve models import", latest, str(target))
    assert f"'deepserve models delete {latest}'" in result.err.splitlines()[1]
    assert tags(Store(target)) == {latest}


def test_export_never_replaces_an_archive_without_force(store, run, tmp_path):
    dest = tmp_path / "scaler.dsmodel"
    dest.write_bytes(b"an archive made earlier")
    result = run("export", "scaler", str(dest))
    assert_failure(result, "deepserve models export", f"'{dest}' already exists")
    assert "--force" in result.first_error_line
    assert dest.read_bytes() == b"an archive made earlier"
    # Also when the file name comes from the tag, in a directory.
    named = tmp_path / cli_name(store, "scaler")
    named.write_bytes(b"earlier")
    result = run("export", "scaler", str(tmp_path))
    assert_failure(result, "deepserve models export", f"'{named}' already exists")
    assert named.read_bytes() == b"earlier"
    for force in ("--force", "-f"):
        result = run("export", "scaler", str(dest), force)
        assert result.status == 0, result.err
        assert dest.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    # Nothing else was left beside the archives: no temp files.
    assert {p.name for p in tmp_path.iterdir()} == {"home", dest.name, named.name}


def cli_name(store: Store, tag: str) -> str:
    return store.get(tag).tag.replace(":", "-") + ".dsmodel"


def test_export_errors_name_the_users_path_not_a_temp_file(store, run, tmp_path):
    result = run("export", "scaler", str(tmp_path / "missing" / "a.dsmodel"))
    assert_failure(
        result,
        "deepserve models export",
        f"'{tmp_path / 'missing' / 'a.dsmodel'}'",
        f"'{tmp_path / 'missing'}' does not exist",
    )
    # A name as long as file systems allow: the temp file's longer name
    # must not make the export fail.
    long = tmp_path / ("m" * 245 + ".dsmodel")
    result = run("export", "scaler", str(long))
    assert result.status == 0, result.err
    assert long.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only directories")
def test_an_unwritable_directory_is_named_not_the_temp_file(store, run, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run("export", "scaler", str(locked / "a.dsmodel"))
    finally:
        locked.chmod(0o755)
    assert_failure(
        result, "deepserve models export", f"'{locked / 'a.dsmodel'}'", "Permission"
    )


def test_import_creates_a_store_that_does_not_exist(store, run, tmp_path):
    exported = run("export", "other", str(tmp_path))
    archive = exported.out.strip().rsplit(" to ", 1)[1]
    new = tmp_path / "new" / "store"
    result = run("import", archive, "--store", str(new))
    assert result.status == 0, result.err
    assert result.err == f"Created the model store {new}\n"
    assert tags(Store(new)) == tags(store, "other")


def test_a_failed_import_into_a_new_store_leaves_nothing(run, tmp_path):
    bad = tmp_path / "bad.dsmodel"
    bad.write_bytes(b"this is not an archive")
    new = tmp_path / "new" / "store"
    result = run("import", str(bad), "--store", str(new))
    assert_failure(result, "deepserve models import", str(bad))
    assert not (tmp_path / "new").exists()
    result = run("import", str(tmp_path / "missing.dsmodel"), "--store", str(new))
    assert_failure(result, "deepserve models import", "No archive at")
    assert not (tmp_path / "new").exists()


def test_a_broken_archive_changes_nothing(store, run, tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not an archive")
    before = tags(store)
    assert_failure(run("import", str(bad)), "deepserve models import", str(bad))
    assert tags(store) == before


def test_export_and_import_through_an_fsspec_url(store, fake_site, tmp_path):
    pytest.importorskip("fsspec")
    # The memory file system lives in one process: one script runs both.
    target = tmp_path / "elsewhere"
    code = f"""
import sys
from deepserve.cli_models import main
url = "memory://exports/other.dsmodel"
root = {str(store.root)!r}
assert main(["export", "other", url, "--store", root]) == 0
assert main(["export", "other", url, "--store", root]) == 1
assert main(["export", "other", url, "--store", root, "--force"]) == 0
assert main(["import", url, "--store", {str(target)!r}]) == 0
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(fake_site),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "'memory://exports/other.dsmodel' already exists; use --force" in proc.stderr
    assert tags(Store(target)) == tags(store, "other")


# -- progress -------------------------------------------------------------------------


def test_progress_is_shown_when_asked_for(store, run, tmp_path):
    result = run("export", "scaler", str(tmp_path), "--progress")
    assert result.status == 0, result.err
    # A pipe gets whole lines; a short export only its last one.
    assert re.fullmatch(
        r"Exporting scaler:\w+  100%  \d+ B in \d+\.\d s(, [\d.]+ \w+/s)?\n",
        result.err,
    ), result.err
    archive = result.out.strip().rsplit(" to ", 1)[1]
    result = run("import", archive, "--store", str(tmp_path / "b"), "--progress")
    assert result.status == 0, result.err
    assert "Importing" in result.err and "100%" in result.err
    result = run("export", "scaler", str(tmp_path), "-f", "--no-progress")
    assert result.status == 0 and result.err == ""


def test_progress_line_while_running():
    line = progress_line(
        "Exporting iris:v1", 45 << 20, 100 << 20, elapsed=9.0, rate=5 << 20, width=120
    )
    assert line == (
        "Exporting iris:v1  [#############-----------------]   45%  "
        "45.0 MiB / 100.0 MiB  5.0 MiB/s  ETA 0:11"
    )
    unknown = progress_line("x", 1, 10, elapsed=0.0, rate=None, width=100)
    assert unknown.endswith("10%  1 B / 10 B  -- B/s  ETA --:--")
    plain = progress_line("x", 1, 10, elapsed=1, rate=1.0, width=100, bar=False)
    assert plain == "x   10%  1 B / 10 B  1 B/s  ETA 9.0 s"


def test_progress_line_at_the_end_tells_time_and_speed():
    line = progress_line(
        "Importing a", 3 << 30, 3 << 30, elapsed=75, rate=1.0, width=120
    )
    assert line.endswith(
        "[##############################]  100%  3.0 GiB in 1:15, 41.0 MiB/s"
    )
    assert progress_line("x", 0, 0, elapsed=0, rate=None).endswith("100%  0 B in 0.0 s")


@pytest.mark.parametrize("width", [20, 40, 60, 80, 120])
def test_progress_line_fits_the_width_and_the_bar_does_not_jump(width):
    label = "Exporting some_long_model_name:1k1m9zarmy58xwc8"
    lines = [
        progress_line(label, done, 1 << 30, elapsed=1, rate=rate, width=width)
        for done, rate in [(0, None), (1, 1.0), (500 << 20, 900 << 20)]
    ]
    assert all(len(line) <= width for line in lines), lines
    bars = [line.find("]") for line in lines]
    assert len(set(bars)) == 1, lines


def test_durations():
    assert [duration(s) for s in (0, 0.44, 9.94, 10, 65, 3600 + 62)] == [
        "0.0 s", "0.4 s", "9.9 s", "0:10", "1:05", "1:01:02"
    ]  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_terminal_redraws_ten_times_a_second_at_most():
    clock, stream = Clock(), io.StringIO()
    total = 100 << 20
    with Progress("Exporting a", stream, clock=clock, terminal=True, width=100) as bar:
        for step in range(101):  # 1 MiB every 20 ms: 50 MiB/s
            bar(step << 20, total)
            clock.now += 0.02
    frames = stream.getvalue().split("\r")[1:]
    # 2 s: a frame per tenth of a second at most (and at least every
    # 0.12 s, the first step past 0.1 s), and the last.
    assert 2 / 0.12 <= len(frames) <= 2 / 0.1 + 1
    assert all(frame.endswith("\x1b[K") for frame in frames[:-1])
    assert frames[-1].endswith(" in 2.0 s, 50.0 MiB/s\x1b[K\n")
    for frame in frames[2:-1]:
        found = re.search(r"(\d+)%.* 50\.0 MiB/s  ETA (\d\.\d) s", frame)
        assert found, frame
        share, eta = int(found[1]), float(found[2])
        assert abs(eta - (100 - share) / 50) <= 0.15, frame


def test_progress_speed_follows_the_last_seconds():
    clock, stream = Clock(), io.StringIO()
    bar = Progress("x", stream, clock=clock, terminal=True, width=100)
    done = 0
    for _ in range(100):  # 10 s at 1 MiB/s...
        bar(done, 1 << 30)
        done += 1 << 17
        clock.now += 0.125
    for _ in range(40):  # ...then 5 s at 8 MiB/s
        bar(done, 1 << 30)
        done += 1 << 20
        clock.now += 0.125
    rate = bar.rate()
    assert rate is not None and abs(rate - (8 << 20)) / (8 << 20) < 0.01


def test_progress_to_a_file_writes_a_line_every_few_seconds():
    clock, stream = Clock(), io.StringIO()
    with Progress("Importing a", stream, clock=clock, terminal=False) as bar:
        for step in range(121):  # 12 s
            bar(step, 120)
            clock.now += 0.1
    lines = stream.getvalue().splitlines()
    assert not set("\r\x1b[") & set(stream.getvalue())
    assert len(lines) == 3  # at 5 s, at 10 s, and the end
    assert re.search(r" 4[12]%  5[01] B / 120 B  10 B/s  ETA [67]\.\d s$", lines[0])
    assert lines[-1].endswith("100%  120 B in 0:12, 10 B/s")


def test_a_failed_transfer_wipes_its_bar():
    clock, stream = Clock(), io.StringIO()
    bar = Progress("x", stream, clock=clock, terminal=True, width=80)
    with pytest.raises(KeyboardInterrupt), bar:
        bar(0, 10)
        raise KeyboardInterrupt
    assert stream.getvalue().endswith("\r\x1b[K")


# -- colour ---------------------------------------------------------------------------


def test_colour_only_when_forced_on_a_pipe_and_never_with_no_color(store, run):
    plain = run("list")
    assert plain.status == 0 and "\x1b[" not in plain.out
    coloured = run("list", FORCE_COLOR="1")
    assert coloured.out.startswith("\x1b[1mTAG")
    assert ANSI.sub("", coloured.out) == plain.out
    assert "\x1b[" not in run("list", NO_COLOR="1").out
    # Errors: the label in colour, the text the same.
    error = run("get", "nothing", FORCE_COLOR="1")
    assert error.err.startswith("deepserve models get: \x1b[")
    assert ANSI.sub("", error.err) == run("get", "nothing").err
    deleted = run("delete", "-y", "other", FORCE_COLOR="1")
    assert deleted.out.startswith("\x1b[32mDeleted\x1b[0m other:")


# -- a real process ---------------------------------------------------------------------


def test_list_imports_nothing_heavy(store, fake_site):
    code = f"""
import sys
from deepserve.cli_models import main
assert main(["list", "-o", "json", "--store", {str(store.root)!r}]) == 0
heavy = ["aiohttp", "sqlalchemy", "marshmallow", "oslo_config", "apispec", "yaml",
         "cloudpickle"]
print([name for name in heavy if name in sys.modules], file=sys.stderr)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(fake_site),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "[]"


def test_a_closed_pipe_is_not_a_traceback(store, fake_site, home):
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepserve.cli", "models", "list", "-o", "json"],
        env={**subprocess_env(fake_site), "DEEPSERVE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written
    with proc.stderr:
        err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "Error" not in err, err
