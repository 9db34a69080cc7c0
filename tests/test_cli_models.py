"""``deepserve models``: the model store from the shell, run as a real process."""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepserve import cli_models, picklable_model
from deepserve.cli_models import Progress, duration, progress_line
from deepserve.exceptions import BadArchive
from deepserve.store import Store
from tests.conftest import subprocess_env

ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: What a terminal may obey: C0 controls (but newline), DEL, C1 controls.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


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


@pytest.fixture
def terminal(fake_site: Path, home: Path) -> Callable[..., tuple[int, str]]:
    """Run ``deepserve models ARGS`` on a pseudo-terminal (stdin, stdout and
    stderr, as in an interactive shell), typing ``typed`` once the terminal
    shows a ``[y/N]`` question; return the exit status and everything the
    terminal showed (the typed answer echoed)."""

    def run(*args: str, typed: str = "", **env: str) -> tuple[int, str]:
        environ = subprocess_env(fake_site)
        for var in ("NO_COLOR", "FORCE_COLOR", "COLUMNS"):
            environ.pop(var, None)
        environ.update(DEEPSERVE_HOME=str(home), TERM="xterm", **env)
        master, slave = os.openpty()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deepserve.cli", "models", *args],
                env=environ,
                stdin=slave,
                stdout=slave,
                stderr=slave,
            )
            os.close(slave)
            shown = b""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if not select.select([master], [], [], 1)[0]:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError as exc:  # EIO: the process closed the terminal
                    assert exc.errno == errno.EIO
                    break
                if not chunk:
                    break
                shown += chunk
                if typed and shown.endswith(b"[y/N] "):
                    os.write(master, typed.encode())
            status = proc.wait(timeout=10)
        finally:
            os.close(master)
        return status, shown.decode().replace("\r\n", "\n")

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
    """Exit status 2, the error line naming ``words``; returns the hint line:
    a suggestion alone, or else the pointer at ``--help`` alone."""
    assert result.status == 2, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 2, result.err
    assert lines[0].startswith(f"{command}: error: "), result.err
    for word in words:
        assert word in lines[0], (word, result.err)
    assert re.fullmatch(r"did you mean '[^']+'\?", lines[1]) or (
        lines[1] == f"Try '{command} --help' for help."
    ), lines[1]
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
        assert full["signatures"] == {
            "predict": {
                "batchable": False,
                "batch_dim": 0,
                "inputs": None,
                "outputs": None,
            }
        }
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


def save_with_tensors(store: Store) -> Any:
    import fake_stored

    return picklable_model.save_model(
        "tensors",
        fake_stored.Scaler(2.0),
        signatures={
            "predict": {
                "batchable": True,
                "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}],
            },
            "count": {},
        },
        input_example=[[1.0, 2.0, 3.0, 4.0]],
        store=store,
    )


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_get_shows_each_signatures_tensors(store, run, fmt):
    saved = save_with_tensors(store)
    load: Callable[[str], Any] = json.loads if fmt == "json" else yaml.safe_load
    result = run("get", saved.tag, "-o", fmt)
    assert result.status == 0, result.err
    signatures = load(result.out)["signatures"]
    assert signatures["predict"] == {
        "batchable": True,
        "batch_dim": 0,
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "output-0", "datatype": "FP64", "shape": [-1, 4]}],
    }
    assert signatures["count"]["inputs"] == [
        {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}
    ]
    assert signatures["count"]["outputs"] == [
        {"name": "rows", "datatype": "INT64", "shape": []},
        {"name": "calls", "datatype": "INT64", "shape": []},
    ]


def test_get_as_a_table_shows_each_signatures_tensors(store, run):
    saved = save_with_tensors(store)
    result = run("get", saved.tag, "-o", "table")
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    fields = dict(line.split(None, 1) for line in lines)
    assert fields["signatures"] == "count, predict (batchable, batch_dim=0)"
    assert fields["predict.inputs"] == "x FP64 [-1, 4]"
    assert fields["predict.outputs"] == "output-0 FP64 [-1, 4]"
    assert fields["count.inputs"] == "input-0 FP64 [-1, 4]"
    assert fields["count.outputs"] == "rows INT64 []; calls INT64 []"
    keys = [line.split()[0] for line in lines]
    start = keys.index("signatures")
    assert keys[start : start + 5] == [
        "signatures",
        "count.inputs",
        "count.outputs",
        "predict.inputs",
        "predict.outputs",
    ]
    # Unknown tensors read as "-".
    plain = run("get", "other", "-o", "table")
    fields = dict(line.split(None, 1) for line in plain.out.splitlines())
    assert (fields["predict.inputs"], fields["predict.outputs"]) == ("-", "-")


def test_an_empty_store_lists_no_models(run, home):
    (home / "models").mkdir(parents=True)
    result = run("list")
    assert result.status == 0, result.err
    assert result.out == f"No models in the model store {home / 'models'}.\n"
    assert json.loads(run("list", "-o", "json").out) == []


#: An escape sequence that retitles a terminal window, then one turning it red.
EVIL = "\x1b]0;PWNED\x07\x1b[31m"
SHOWN = "\\x1b]0;PWNED\\x07\\x1b[31m"


def poison(stored: Any) -> dict[str, Any]:
    """Put control characters in every free-text field of ``stored``'s
    model.json, as an archive made by someone else may; return the JSON."""
    path = stored.path / "model.json"
    info = json.loads(path.read_text())
    info["module"] = f"evil{EVIL}"
    info["python_version"] = f"3.11{EVIL}\x9b2J"  # \x9b: CSI in one byte
    info["labels"] = {f"k{EVIL}": f"v{EVIL}\x7f"}
    info["metadata"] = {"note": f"{EVIL}\x85"}
    info["requirements"] = [f"numpy{EVIL}"]
    info["signatures"] = {f"predict{EVIL}": {"batchable": False, "batch_dim": 0}}
    info["framework"]["versions"] = {f"cloudpickle{EVIL}": f"3{EVIL}\n"}
    path.write_text(json.dumps(info))
    return info


def test_control_characters_in_tables_are_escaped(store, run):
    info = poison(store.get("other"))
    result = run("list")
    assert result.status == 0, result.err
    assert not CONTROL.search(result.out), result.out
    row = next(line for line in result.out.splitlines() if line.startswith("other:"))
    assert row.split()[1] == f"evil{SHOWN}"
    result = run("get", "other", "-o", "table")
    assert result.status == 0, result.err
    assert not CONTROL.search(result.out), result.out
    fields = dict(line.split(None, 1) for line in result.out.splitlines())
    assert fields["module"] == f"evil{SHOWN}"
    assert fields["python_version"] == f"3.11{SHOWN}\\x9b2J"
    assert fields["labels"] == f"k{SHOWN}=v{SHOWN}\\x7f"
    assert fields["requirements"] == f"numpy{SHOWN}"
    assert fields["signatures"] == f"predict{SHOWN}"
    assert fields["framework"] == f"cloudpickle (cloudpickle{SHOWN} 3{SHOWN}\\n)"
    # Metadata is shown as JSON, whose escapes are escaped in turn.
    assert fields["metadata"] == '{"note": "\\u001b]0;PWNED\\u0007\\u001b[31m\\x85"}'
    assert info["metadata"]["note"].endswith("\x85")


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_control_characters_in_json_and_yaml_are_escaped_and_read_back(store, run, fmt):
    info = poison(store.get("other"))
    load: Callable[[str], Any] = json.loads if fmt == "json" else yaml.safe_load
    for args in (["list", "other"], ["get", "other"]):
        result = run(*args, "-o", fmt)
        assert result.status == 0, result.err
        assert not CONTROL.search(result.out), result.out
        record = load(result.out)
        record = record[0] if args[0] == "list" else record
        assert record["module"] == info["module"]
        assert record["labels"] == info["labels"]
        if args[0] == "get":
            for key in ("python_version", "metadata", "requirements"):
                assert record[key] == info[key], key
            (method,) = info["signatures"]
            assert record["signatures"] == {
                method: {**info["signatures"][method], "inputs": None, "outputs": None}
            }
            assert record["framework"] == info["framework"]


def test_an_archive_member_name_is_escaped_in_the_error(run, tmp_path, home):
    evil = tmp_path / "evil.dsmodel"
    with tarfile.open(evil, "w:gz") as tar:
        member = tarfile.TarInfo(EVIL)
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    # The error itself is safe to show, wherever it is shown (a log...).
    with pytest.raises(BadArchive) as caught:
        Store(tmp_path / "store").import_model(evil)
    assert str(caught.value).endswith(f"the first member is '{SHOWN}'")
    result = run("import", str(evil))
    assert_failure(result, "deepserve models import", f"the first member is '{SHOWN}'")
    assert not CONTROL.search(result.err), result.err


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
def test_a_store_named_that_does_not_exist_is_an_error(run, tmp_path, args):
    missing = tmp_path / "no-such-store"
    result = run(*args, "--store", str(missing))
    action = f"deepserve models {args[0]}"
    assert_failure(result, action, f"model store {missing} does not exist")
    assert len(result.err.splitlines()) == 1
    assert not missing.exists()


@pytest.mark.parametrize(
    "args", [["get", "x"], ["delete", "x"], ["export", "x", "out"]]
)
def test_a_model_cannot_be_in_a_default_store_that_does_not_exist(run, home, args):
    result = run(*args)
    action = f"deepserve models {args[0]}"
    assert_failure(result, action, f"model store {home / 'models'} does not exist")
    # The hint names the variable that moves it.
    assert "DEEPSERVE_HOME" in result.err.splitlines()[1]
    assert not home.exists()


def test_a_fresh_install_lists_no_models(run, home):
    """Nothing saved yet: the default store's directory does not exist."""
    result = run("list")
    assert result.status == 0, result.err
    assert result.out == f"No models in the model store {home / 'models'}.\n"
    assert result.err == ""
    for fmt in ("json", "yaml"):
        result = run("list", "-o", fmt)
        assert (result.status, result.out, result.err) == (0, "[]\n", ""), result
    # A name cannot be found there: a failure, saying why.
    result = run("list", "iris_clf")
    assert_failure(result, "deepserve models list", "'iris_clf'", "does not exist yet")
    assert not home.exists()  # listing creates nothing


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


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[str]:
    """``directory`` (and all below it) not writable while the block runs;
    yields the error a write gets.

    Root writes in any directory whatever its mode: for root it is a
    read-only bind mount of itself (skipped where mounting is not allowed).
    """
    if os.geteuid() != 0:
        dirs = [directory, *(p for p in directory.rglob("*") if p.is_dir())]
        for path in dirs:
            path.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            for path in dirs:
                path.chmod(0o755)
        return
    mount = subprocess.run(
        ["mount", "--bind", str(directory), str(directory)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"root cannot be stopped from writing: mount: {mount.stderr}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(directory)],
            check=True,
            capture_output=True,
        )
        yield "Read-only file system"
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_a_read_only_store_is_a_one_line_failure(store, run, tmp_path):
    archive = tmp_path / "other.dsmodel"
    assert run("export", "other", str(archive)).status == 0
    run("delete", "-y", "other")
    before = tags(store)
    with read_only(store.root) as problem:
        imported = run("import", str(archive))
        deleted = run("delete", "-y", "scaler")
    for result, action in ((imported, "import"), (deleted, "delete")):
        # The error and the file it is about, quoted: a file in the store.
        assert_failure(
            result, f"deepserve models {action}", f"{problem}: '{store.root}/"
        )
        assert len(result.err.splitlines()) == 1, result.err
    assert tags(store) == before
    assert run("import", str(archive)).status == 0  # once writable again


def unreadable_directory(tmp_path: Path) -> contextlib.AbstractContextManager[Path]:
    """A directory whose listing fails."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0)
        return contextlib.nullcontext(locked)  # pytest's clean-up copes
    # Root reads any directory of a disk; /proc refuses some, in some places.
    try:
        Store("/proc/1").list()
    except OSError:
        return contextlib.nullcontext(Path("/proc/1"))
    pytest.skip("nothing here is unreadable to root: /proc/1 can be listed")


@pytest.mark.parametrize("args", [["list"], ["list", "-o", "json"], ["get", "x"]])
def test_an_unreadable_store_is_a_one_line_failure(run, tmp_path, args):
    with unreadable_directory(tmp_path) as directory:
        result = run(*args, "--store", str(directory))
    assert_failure(result, f"deepserve models {args[0]}", f"'{directory}")
    assert re.fullmatch(r"[^:]+: error: [A-Z][a-z ]+: '[^']+'\n", result.err), result
    # A name no file system takes is a failure too, never a traceback.
    result = run(*args, "--store", str(tmp_path / ("x" * 300)))
    assert_failure(result, f"deepserve models {args[0]}")
    assert len(result.err.splitlines()) <= 2, result.err


@pytest.mark.parametrize("buffered", [True, False])
def test_an_output_that_cannot_be_written_is_a_one_line_failure(
    store, fake_site, home, buffered
):
    env = {**subprocess_env(fake_site), "DEEPSERVE_HOME": str(home)}
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "deepserve.cli", "models", "list", "-o", "json"],
            env=env,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert proc.stderr == (
        "deepserve models list: error: cannot write the output: "
        "No space left on device\n"
    )
    assert proc.returncode == 1


# -- command line errors ----------------------------------------------------------


def test_no_action_is_a_usage_error(run):
    result = run()
    assert_usage_error(result, "deepserve models", "an action is required", "list")


def test_unknown_action_suggests_the_closest(run):
    hint = assert_usage_error(run("lst"), "deepserve models", "unknown action 'lst'")
    assert hint == "did you mean 'list'?"
    hint = assert_usage_error(run("frobnicate"), "deepserve models", "'frobnicate'")
    assert hint == "Try 'deepserve models --help' for help."


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
    assert hint == f"did you mean '{suggested}'?"


def test_an_unknown_option_without_a_close_one_points_at_help(run):
    hint = assert_usage_error(
        run("list", "--zzzzzz"), "deepserve models list", "unknown option '--zzzzzz'"
    )
    assert hint == "Try 'deepserve models list --help' for help."


def test_missing_and_extra_arguments(run):
    assert_usage_error(run("get"), "deepserve models get", "required", "TAG")
    assert_usage_error(run("export", "x"), "deepserve models export", "PATH")
    assert_usage_error(run("push", "x"), "deepserve models push", "URL")
    assert_usage_error(run("pull"), "deepserve models pull", "TAG", "URL")
    assert_usage_error(run("list", "a", "b"), "deepserve models list", "'b'")
    assert_usage_error(run("list", "-o"), "deepserve models list", "-o/--output")


def test_an_invalid_output_format_suggests_the_closest(run):
    hint = assert_usage_error(
        run("list", "-o", "jsno"),
        "deepserve models list",
        "'jsno'",
        "table, json, yaml",
    )
    assert hint == "did you mean 'json'?"


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
    shown, hint = cli_models._explain(message)
    assert shown == (text.replace('"', "'") if text else message)
    # The suggestion alone: without one, the caller points at --help.
    assert hint == (f"did you mean '{suggested}'?" if suggested else "")


def test_every_action_documents_its_options(run):
    for action, options in {
        "list": ["--store DIR", "-o FORMAT"],
        "get": ["--store DIR", "-o FORMAT"],
        "delete": ["--store DIR", "-y, --yes"],
        "export": ["--store DIR", "-f, --force", "--progress", "--no-progress"],
        "import": ["--store DIR", "--progress", "created if missing"],
        "push": ["--store DIR", "-f, --force", "--progress", "TAG", "URL"],
        "pull": ["--store DIR", "--progress", "created if missing", "TAG", "URL"],
    }.items():
        result = run(action, "--help")
        assert result.status == 0
        assert result.out.startswith(f"usage: deepserve models {action} ")
        for option in options:
            assert option in result.out, (action, option)


# -- delete ---------------------------------------------------------------------------


def test_delete_asks_first_on_a_terminal(store, terminal):
    before = tags(store)
    other = store.get("other").tag
    status, shown = terminal("delete", "other", typed="n\n")
    assert status == 1, shown
    assert shown.startswith(f"Delete 1 model: {other}? [y/N] ")
    assert shown.endswith("Nothing deleted.\n")
    assert tags(store) == before
    status, shown = terminal("delete", "other", typed="y\n")
    assert status == 0, shown
    assert ANSI.sub("", shown).endswith(f"Deleted {other}\n")
    assert tags(store, "other") == set()


@pytest.mark.parametrize("stdin", ["y\n", ""])
def test_delete_without_a_terminal_needs_yes(store, run, stdin):
    """A script cannot answer the question: it must say --yes, and is told
    so at once, without the question."""
    before = tags(store)
    other, scaler = store.get("other").tag, store.get("scaler").tag
    result = run("delete", "other", "scaler", stdin=stdin)
    assert_failure(result, "deepserve models delete")
    assert result.err == (
        f"deepserve models delete: error: {other}, {scaler} "
        "not deleted: standard input is not a terminal; pass --yes to delete "
        "without asking\n"
    )
    assert tags(store) == before
    result = run("delete", "other", "--yes", stdin=stdin)
    assert result.status == 0, result.err
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


def test_an_unwritable_directory_is_named_not_the_temp_file(store, run, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked) as problem:
        result = run("export", "scaler", str(locked / "a.dsmodel"))
    assert_failure(
        result, "deepserve models export", f"'{locked / 'a.dsmodel'}'", problem
    )
    assert list(locked.iterdir()) == []


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


# -- push and pull ------------------------------------------------------------------


def test_push_and_pull_through_a_directory_url(store, run, tmp_path):
    url = (tmp_path / "remote").as_uri()
    older, latest = sorted(
        tags(store, "scaler"), key=lambda t: store.get(t).info.created
    )
    result = run("push", "scaler", url)
    assert result.status == 0, result.err
    version = latest.partition(":")[2]
    assert result.out == f"Pushed {latest} to {url}/scaler/{version}.dsmodel\n"
    assert result.err == ""  # no progress for a pipe
    assert run("push", older, url).status == 0
    # A version the store at the URL has is replaced only with --force.
    result = run("push", latest, url)
    assert_failure(
        result,
        "deepserve models push",
        f"'{latest}' is already in the store at {url}; use --force",
    )
    assert run("push", "scaler", url, "--force").status == 0
    # pull: name:latest is the newest pushed; a new store is created.
    new = tmp_path / "new" / "store"
    result = run("pull", "scaler:latest", url, "--store", str(new))
    assert result.status == 0, result.err
    assert result.out == f"Pulled {latest}\n"
    assert result.err == f"Created the model store {new}\n"
    assert tags(Store(new)) == {latest}
    assert picklable_model.load_model(latest, store=Store(new)).factor == 2.0
    assert sorted(p.name for p in new.iterdir()) == [".fetch", ".tmp", "scaler"]
    assert [p for p in new.rglob("*") if p.is_file() and ".fetch" in p.parts] == []
    # Pulled again: nothing to do.
    result = run("pull", "scaler", url, "--store", str(new))
    assert (result.status, result.err) == (0, "")
    assert result.out == f"{latest} is already in the model store {new}\n"
    result = run("pull", older, url, "--store", str(new), "--progress")
    assert result.status == 0, result.err
    assert result.out == f"Pulled {older}\n"
    assert re.fullmatch(rf"Pulling {older}  100%  .*\n", result.err), result.err
    assert tags(Store(new)) == {older, latest}


def test_push_needs_a_stored_model(store, run, tmp_path):
    url = (tmp_path / "remote").as_uri()
    result = run("push", "scaler:0000000000000000", url)
    assert_failure(result, "deepserve models push", "no version '0000000000000000'")
    assert not (tmp_path / "remote").exists()


def test_pull_errors_are_one_line_and_leave_nothing(store, run, tmp_path):
    url = (tmp_path / "remote").as_uri()
    new = tmp_path / "new" / "store"
    result = run("pull", "scaler", url, "--store", str(new))
    assert_failure(
        result, "deepserve models pull", f"No model store at {url} (not found: "
    )
    assert run("push", "other", url).status == 0
    for tag in ("scaler", "other:0000000000000000"):
        result = run("pull", tag, url, "--store", str(new))
        shown = tag if ":" in tag else f"{tag}:latest"
        assert_failure(
            result,
            "deepserve models pull",
            f"Model '{shown}' is not in the store at {url}",
        )
    # A damaged archive: refused, and the new store is removed again.
    other = store.get("other")
    archive = tmp_path / "remote" / "other" / f"{other.info.version}.dsmodel"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    result = run("pull", "other", url, "--store", str(new))
    assert_failure(
        result,
        "deepserve models pull",
        f"Unsafe or damaged archive '{url}/other/{other.info.version}.dsmodel'",
    )
    assert not (tmp_path / "new").exists()


def test_push_and_pull_through_s3(store, run, s3, tmp_path):
    """The endpoint comes from fsspec's FSSPEC_S3_ENDPOINT_URL, the
    credentials from s3fs's AWS variables, as a user would set them."""
    url = f"s3://{s3.new_bucket()}/models"
    latest = store.get("scaler").tag
    result = run("push", "scaler", url, **s3.env())
    assert result.status == 0, result.err
    assert result.out.startswith(f"Pushed {latest} to {url}/scaler/")
    new = tmp_path / "pulled"
    result = run("pull", "scaler", url, "--store", str(new), **s3.env())
    assert result.status == 0, result.err
    assert result.out == f"Pulled {latest}\n"
    assert tags(Store(new)) == {latest}


def test_s3_errors_are_one_line(store, run, s3, tmp_path):
    missing = f"s3://no-such-bucket-{os.getpid()}/models"
    result = run("pull", "scaler", missing, **s3.env())
    assert_failure(
        result,
        "deepserve models pull",
        f"No model store at {missing} (not found: The specified bucket does not exist)",
    )
    result = run("push", "scaler", missing, **s3.env())
    assert_failure(
        result, "deepserve models push", missing, "The specified bucket does not exist"
    )
    url = f"s3://{s3.new_bucket()}/models"
    result = run("pull", "scaler", url, **s3.env(credentials=False))
    assert_failure(
        result, "deepserve models pull", f"'{url}/scaler/'", "no credentials"
    )
    assert "AWS_ACCESS_KEY_ID" in result.err.splitlines()[1]
    assert len(result.err.splitlines()) == 2


@pytest.fixture
def big(fake_site: Path, home: Path, tmp_path: Path) -> str:
    """The tag of a model of 100 MiB of random bytes in the default store:
    its export takes a second or two."""
    import fake_stored

    blob = tmp_path / "blob.bin"
    with blob.open("wb") as out:
        for _ in range(100):
            out.write(os.urandom(1 << 20))
    saved = picklable_model.save_model(
        "big",
        fake_stored.Scaler(1.0),
        artifacts={"blob": str(blob)},
        store=Store(home / "models"),
    )
    blob.unlink()
    return saved.tag


def start_export(
    fake_site: Path, home: Path, tag: str, dest: Path, **popen: Any
) -> subprocess.Popen[str]:
    """Start ``deepserve models export TAG DEST``; return once it has
    written part of the archive."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepserve.cli", "models", "export", tag, str(dest)],
        env={**subprocess_env(fake_site), "DEEPSERVE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with contextlib.suppress(FileNotFoundError):
            if any(
                p.name.endswith(".partial") and p.stat().st_size > 0
                for p in dest.iterdir()
            ):
                return proc
        time.sleep(0.005)
    proc.kill()
    pytest.fail("the export wrote nothing in a minute")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_an_export_without_leaving_a_partial_archive(
    big, fake_site, home, tmp_path, signum
):
    dest = tmp_path / "exports"
    dest.mkdir()
    proc = start_export(fake_site, home, big, dest)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert err == f"deepserve models export: error: stopped by {name}\n"
    assert out == ""
    assert proc.returncode == 128 + signum  # 143 for SIGTERM, 129 for SIGHUP
    assert list(dest.iterdir()) == []


def test_an_ignored_sighup_stays_ignored(big, fake_site, home, tmp_path):
    """``nohup deepserve models export ...`` outlives its terminal."""
    dest = tmp_path / "exports"
    dest.mkdir()
    proc = start_export(
        fake_site,
        home,
        big,
        dest,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, "")
    assert out.startswith(f"Exported {big} to ")
    assert [p.name for p in dest.iterdir()] == [big.replace(":", "-") + ".dsmodel"]


def test_the_signal_handlers_are_restored(store):
    before = [signal.getsignal(signum) for signum in cli_models.STOP_SIGNALS]
    assert cli_models.main(["list", "-o", "json", "--store", str(store.root)]) == 0
    assert cli_models.main(["get", "missing", "--store", str(store.root)]) == 1
    assert [signal.getsignal(signum) for signum in cli_models.STOP_SIGNALS] == before


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


#: The numbers of a progress line, from all of them to the fewest: the
#: speed goes first, then the time left, then the byte counts.
RUNNING = [
    "45%  45.0 MiB / 100.0 MiB  5.0 MiB/s  ETA 0:11",
    "45%  45.0 MiB / 100.0 MiB  ETA 0:11",
    "45%  45.0 MiB / 100.0 MiB",
    "45%",
]
FINISHED = [
    "100%  3.0 GiB in 1:15, 41.0 MiB/s",
    "100%  3.0 GiB in 1:15",
    "100% in 1:15",
    "100%",
]


@pytest.mark.parametrize(
    ("done", "total", "rate", "levels"),
    [(45 << 20, 100 << 20, 5 << 20, RUNNING), (3 << 30, 3 << 30, 1.0, FINISHED)],
)
def test_a_narrow_progress_line_drops_numbers_never_cuts_them(
    done, total, rate, levels
):
    label = "Exporting some_long_model_name:1k1m9zarmy58xwc8"
    shown = []
    for width in range(4, 121):
        line = progress_line(label, done, total, elapsed=75, rate=rate, width=width)
        assert len(line) <= width, (width, line)
        level = next(i for i, numbers in enumerate(levels) if line.endswith(numbers))
        # Before the numbers: nothing, or the label (maybe shortened) and
        # a bar.
        head = re.sub(r"\s*\[[#-]+\]", "", line[: -len(levels[level])]).rstrip()
        assert head == "" or label.startswith(head.removesuffix("...")), line
        assert head == label or len(head) <= 8 or head.endswith("..."), line
        shown.append(level)
    # The wider the line, the more numbers; all of them on a wide one.
    assert shown == sorted(shown, reverse=True)
    assert shown[-1] == 0 and shown[0] == len(levels) - 1
    assert set(shown) == set(range(len(levels))), shown


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


def test_colour_on_a_terminal_and_never_with_no_color(store, terminal):
    status, shown = terminal("list")
    assert status == 0, shown
    assert shown.startswith("\x1b[1mTAG")
    status, error = terminal("get", "nothing")
    assert status == 1
    assert error.startswith("deepserve models get: \x1b[1;31merror:\x1b[0m no model")
    for args in (["list"], ["get", "nothing"]):
        status, plain = terminal(*args, NO_COLOR="1")
        assert "\x1b" not in plain
        assert plain == ANSI.sub("", shown if args == ["list"] else error)


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


@pytest.mark.parametrize("buffered", [True, False])
def test_a_closed_pipe_is_not_a_traceback(store, fake_site, home, buffered):
    """``deepserve models list | head -0``: exit status 1, and nothing said.

    Python buffers standard output to a pipe unless PYTHONUNBUFFERED is set:
    the write fails at exit then, unless the command flushed it itself.
    """
    env = {**subprocess_env(fake_site), "DEEPSERVE_HOME": str(home)}
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "deepserve.cli", "models", "list", "-o", "json"],
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (1, "")
