"""``deepserve call``, run for real through the installed console scripts.

The same input goes through the command line and through the HTTP API
(``aiohttp_client(create_app(...))``); both must give the same answer.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pty
import queue
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
import pytest_asyncio
from marshmallow import fields as mf

from deepserve import adapters, console, logs
from deepserve.api import create_app
from deepserve.loader import ModelRef
from deepserve.operations.arguments import ArgSpec
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ApiSettings, ExecutorSettings
from deepserve.shell import options
from tests.conftest import GOOD_MODELS, VENV_MODELS, subprocess_env, write_dist

BIN = Path(sys.executable).parent
DEEPSERVE = BIN / "deepserve"
DEEPSERVE_CLI = BIN / "deepserve-cli"
TYPED = ModelRef("typed", "fake_typed", "deepserve.v2.model")
#: oldstyle's text arguments, the same on both sides of each comparison.
TEXT_ARGS = ["--text", "ab", "--count", "2", "--tags", "x", "y"]


@pytest.fixture(scope="module")
def typed_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site where only the ``typed`` fake model is installed."""
    return write_dist(
        tmp_path_factory.mktemp("typed-site"),
        "typed-model",
        {"typed": ("deepserve.v2.model", "fake_typed")},
    )


#: Variables that turn colour on or off; left out unless a test sets them.
COLOUR_VARS = ("FORCE_COLOR", "NO_COLOR", "TERM")


def plain_env(*sites: Path) -> dict[str, str]:
    """:func:`subprocess_env` without the developer's colour settings."""
    env = subprocess_env(*sites)
    for var in COLOUR_VARS:
        env.pop(var, None)
    return env


@pytest.fixture(scope="module")
def own_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site where ``noisy``, ``follow``, ``terse`` and ``unruly``
    (tests/fakes) are installed."""
    return write_dist(
        tmp_path_factory.mktemp("own-site"),
        "call-models",
        {
            "noisy": ("deepserve.v2.model", "fake_noisy"),
            "follow": ("deepserve.v2.model", "fake_follow"),
            "terse": ("deepserve.v2.model", "fake_terse"),
            "unruly": ("deepserve.v2.model", "fake_unruly"),
        },
    )


@pytest.fixture
def env(fake_site: Path, typed_site: Path) -> dict[str, str]:
    """Every fake model installed: the good ones and ``typed``."""
    return plain_env(fake_site, typed_site)


@pytest.fixture
def all_env(fake_site: Path, typed_site: Path, own_site: Path) -> dict[str, str]:
    """Every fake model installed, ``noisy`` and ``follow`` too."""
    return plain_env(fake_site, typed_site, own_site)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The current directory of the command, empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd


def call(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    *,
    script: Path = DEEPSERVE,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    assert script.exists(), f"{script} is not installed (pip install -e .)"
    command = [str(script), *(["call"] if script == DEEPSERVE else []), *args]
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=text, timeout=60
    )


def ok_json(result: subprocess.CompletedProcess[Any]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def error_lines(
    result: subprocess.CompletedProcess[str], status: int
) -> tuple[str, str]:
    """The error line of stderr and the hint line after it ("" when none),
    after checking the status, that they end stderr and that there is no
    traceback and no output."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if ": error: " in line]
    assert len(errors) == 1, result.stderr
    index = errors[0]
    assert index >= len(lines) - 2, result.stderr  # at most a hint after it
    return lines[index], "".join(lines[index + 1 :])


def one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The error line of stderr (see :func:`error_lines`)."""
    return error_lines(result, status)[0]


@pytest_asyncio.fixture
async def typed_client(aiohttp_client, fake_site) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    """The HTTP API over the ``typed`` model, warmed, as a server runs it."""
    served = ServedModel.create(
        TYPED, adapters.build(TYPED), ExecutorSettings(kind="inline")
    )
    registry = Registry([served])
    await registry.start()
    yield await aiohttp_client(create_app(registry, ApiSettings()))
    await registry.close()


def csv_file(directory: Path) -> Path:
    path = directory / "in.csv"
    path.write_bytes(b"a,b\n1,2\n" * 100)
    return path


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def multipart(path: Path, content_type: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(
        "data", path.read_bytes(), filename=path.name, content_type=content_type
    )
    return form


# -- get_metadata --------------------------------------------------------------


@pytest.mark.parametrize("name", ["oldstyle", "classy", "minimal"])
async def test_metadata_is_the_http_metadata(client, env, work, name):
    resp = await client.get(f"/v2/models/{name}/")
    expected = await resp.json()
    del expected["links"]  # where the model is on a server: none here
    # The Open Inference Protocol's keys, which the server merges in.
    for key in ("versions", "platform", "inputs", "outputs"):
        del expected[key]
    assert ok_json(call(["--model-name", name, "get_metadata"], env, work)) == expected


# -- predict: the same input gives the same answer ----------------------------


async def test_predict_with_a_file_matches_http(client, env, work):
    upload = csv_file(work)
    resp = await client.post(
        "/v2/models/oldstyle/predict/?text=ab&count=2&tags=x&tags=y",
        data=multipart(upload, "text/csv"),
    )
    assert resp.status == 200
    over_http = await resp.json()

    result = call(
        ["--model-name", "oldstyle", "predict", "--data", "in.csv", *TEXT_ARGS],
        env,
        work,
    )
    from_shell = ok_json(result)
    for answer in (over_http, from_shell):
        answer["predictions"].pop("pid")
        path = answer["predictions"]["file"].pop("path")
        assert path != str(upload)  # the model read a copy
    assert from_shell == over_http
    assert from_shell["predictions"]["file"]["original_filename"] == "in.csv"
    assert from_shell["predictions"]["warm_calls"] == 1  # warmed, as a server does
    # The user's file is left as it was.
    assert upload.read_bytes() == b"a,b\n1,2\n" * 100


async def test_predict_with_header_and_form_arguments_matches_http(client, env, work):
    form = aiohttp.FormData()
    for weight in ("1", "2.5"):
        form.add_field("weights", weight)
    resp = await client.post(
        "/v2/models/classy/predict/?x=2&label=neg",
        data=form,
        headers={"X-Token": "abc"},
    )
    over_http = await resp.json()
    argv = ["--x", "2", "--label", "neg", "--token", "abc", "--weights", "1", "2.5"]
    from_shell = ok_json(call(["--model-name", "classy", "predict", *argv], env, work))
    over_http.pop("instance"), from_shell.pop("instance")
    assert (
        from_shell
        == over_http
        == {
            "label": "neg:abc:2",
            "score": 7.5,
            "warm_count": 1,
        }
    )


async def test_every_kind_of_argument_matches_http(typed_client, env, work):
    body = {
        "count": "3",
        "ratio": "0.25",
        "loud": True,
        "colour": "green",
        "words": ["a b", "c"],
        "sizes": ["1", "2", "3"],
        "when": "2024-02-29",
        "options": {"k": [1, {"deep": None}]},
    }
    resp = await typed_client.post("/v2/models/typed/predict/", json=body)
    assert resp.status == 200
    over_http = await resp.json()

    argv = [
        "--count", "3", "--ratio", "0.25", "--loud", "--colour", "green",
        "--words", "a b", "c", "--sizes", "1", "2", "--sizes", "3",
        "--when", "2024-02-29", "--options", '{"k": [1, {"deep": null}]}',
    ]  # fmt: skip
    from_shell = ok_json(call(["--model-name", "typed", "predict", *argv], env, work))
    assert from_shell == over_http
    assert from_shell["predictions"] == {
        "count": 3,
        "ratio": 0.25,
        "loud": True,
        "colour": "green",
        "words": ["a b", "c"],
        "sizes": [1, 2, 3],
        "when": "2024-02-29",
        "options": {"k": [1, {"deep": None}]},
        "data": None,
        "warmed": True,
    }


async def test_defaults_and_a_file_match_http(typed_client, env, work):
    upload = work / "picture.png"
    upload.write_bytes(bytes(range(256)))
    resp = await typed_client.post(
        "/v2/models/typed/predict/?count=1&loud=false",
        data=multipart(upload, "image/png"),
    )
    over_http = await resp.json()
    argv = ["--count", "1", "--no-loud", "--data", str(upload)]
    from_shell = ok_json(call(["--model-name", "typed", "predict", *argv], env, work))
    assert from_shell == over_http
    assert from_shell["predictions"]["data"] == {
        "name": "data",
        "original_filename": "picture.png",
        "content_type": "image/png",  # guessed from the extension
        "sha256": hashlib.sha256(bytes(range(256))).hexdigest(),
    }
    assert from_shell["predictions"]["ratio"] == 0.5


async def test_binary_results_are_files_with_the_http_bytes(client, env, work):
    query = "text=ab&count=2&tags=x&tags=y"
    resp = await client.post(
        f"/v2/models/oldstyle/predict/?{query}", headers={"Accept": "application/zip"}
    )
    zipped = await resp.read()
    argv = ["predict", "--accept", "application/zip", *TEXT_ARGS]
    result = call(["--model-name", "oldstyle", *argv], env, work)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "oldstyle-prediction.zip\n"
    # Bytes returned as they are (a zip's timestamps differ between runs).
    assert unzip((work / "oldstyle-prediction.zip").read_bytes()) == unzip(zipped)
    assert unzip(zipped) == {"result.txt": b"abab"}

    resp = await client.post(
        f"/v2/models/oldstyle/predict/?{query}", headers={"Accept": "image/png"}
    )
    png = await resp.read()
    argv = ["predict", "--accept", "image/png", *TEXT_ARGS]
    result = call(["--model-name", "oldstyle", *argv], env, work)
    assert result.stdout == "oldstyle-prediction.png\n", result.stderr
    assert (work / "oldstyle-prediction.png").read_bytes() == png

    # A returned file: under the name the model offers, never overwriting.
    resp = await client.post(
        "/v2/models/files/predict/", headers={"Accept": "text/csv"}
    )
    csv = await resp.read()
    (work / "result.csv").write_text("mine")
    result = call(["--model-name", "files", "predict", "--accept", "text/*"], env, work)
    assert result.stdout == "result-1.csv\n", result.stderr
    assert (work / "result-1.csv").read_bytes() == csv
    assert (work / "result.csv").read_text() == "mine"


async def test_output_option_and_stdout(client, env, work):
    resp = await client.post("/v2/models/files/predict/")
    expected = await resp.read()
    assert len(expected) == 1024
    out = work / "sub" / "result.bin"
    result = call(["--model-name", "files", "predict", "-o", str(out)], env, work)
    assert result.stdout == f"{out}\n", result.stderr
    assert out.read_bytes() == expected

    raw = call(
        ["--model-name", "files", "predict", "--output", "-"], env, work, text=False
    )
    assert raw.returncode == 0 and raw.stdout == expected
    # Before the method name too, for every method.
    meta = work / "meta.json"
    result = call(
        ["--model-name", "minimal", "-o", str(meta), "get_metadata"], env, work
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(meta.read_text())["id"] == "minimal"


def test_a_reader_that_goes_away_is_no_error(env, work):
    command = [str(DEEPSERVE), "call", "--model-name", "files", "predict", "-o", "-"]
    with subprocess.Popen(
        command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # before the result is written: like `| head -c0`
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 1
    assert "Error" not in stderr and "Traceback" not in stderr, stderr


def test_standard_output_gone_leaves_no_descriptor_open(env, work):
    """After the reader went away, standard output is /dev/null, and the
    descriptor opened for it is closed again."""
    code = (
        "import os, sys\n"
        "from deepserve.shell import main\n"
        "def nulls():\n"
        "    found = set()\n"
        "    for fd in map(int, os.listdir('/proc/self/fd')):\n"
        "        try:  # the listing's own descriptor is gone: skipped\n"
        "            if fd > 2 and os.readlink(f'/proc/self/fd/{fd}') == os.devnull:\n"
        "                found.add(fd)\n"
        "        except FileNotFoundError:\n"
        "            pass\n"
        "    return found\n"
        "read, write = os.pipe()\n"
        "os.close(read)  # the reader is gone before anything is written\n"
        "os.dup2(write, 1)\n"
        "os.close(write)\n"
        "before = nulls()\n"
        "status = main(['--model-name', 'files', 'predict', '-o', '-'])\n"
        "left = sorted(nulls() - before)\n"
        "print(status, os.readlink('/proc/self/fd/1'), left, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=work, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "1 /dev/null []", result.stderr


async def test_uploaded_file_returned_as_is(client, env, work):
    upload = csv_file(work)
    result = call(
        [
            "--model-name",
            "files",
            "predict",
            "--accept=application/x-echo",
            "--data=in.csv",
        ],
        env,
        work,
    )
    # Named like the file given; the user's own file is not overwritten.
    assert result.stdout == "in-1.csv\n", result.stderr
    assert (work / "in-1.csv").read_bytes() == upload.read_bytes()


async def test_text_result_goes_to_stdout(client, env, work):
    resp = await client.post(
        "/v2/models/oldstyle/predict/?text=ab&count=2&accept=text/plain"
    )
    assert await resp.text() == "abab"
    result = call(
        ["--model-name", "oldstyle", "predict", "--accept", "text/plain", *TEXT_ARGS],
        env,
        work,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "abab\n"


def test_uploads_are_copies_removed_afterwards(env, work, tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    config = tmp_path / "call.conf"
    config.write_text(f"[DEFAULT]\nupload_dir = {uploads}\nmodel_name = oldstyle\n")
    upload = csv_file(work)
    result = call(
        ["--config-file", str(config), "predict", "--data", str(upload)], env, work
    )
    path = Path(ok_json(result)["predictions"]["file"]["path"])
    assert uploads in path.parents
    assert list(uploads.iterdir()) == []
    assert upload.read_bytes() == b"a,b\n1,2\n" * 100


# -- generated options ---------------------------------------------------------


def test_predict_help_shows_the_generated_options(env, work):
    result = call(["--model-name", "typed", "predict", "--help"], env, work)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())  # argparse wraps lines
    for expected in (
        "--count INT How many (required)",
        "--ratio FLOAT A share, 0 to 100% (default: 0.5)",
        "--loud, --no-loud (default: false)",
        "--colour {red,green,blue} (default: red)",
        "--words [TEXT ...] (any number of values",
        "--sizes [INT ...]",
        "--when DATE (default: none)",
        "--options JSON Free-form settings (JSON; default: {})",
        "--data PATH A file (path of a file to upload; default: none)",
        "--accept TYPE",
        "-o FILE, --output FILE",
    ):
        assert expected in out, (expected, result.stdout)
    assert "usage: deepserve call predict [-h]" in result.stdout


def test_old_style_fields_become_options(env, work):
    result = call(["--model-name", "oldstyle", "predict", "--help"], env, work)
    out = " ".join(result.stdout.split())
    assert "--mode {echo,badrequest,crash,exit,sleep} What to do (default: echo)" in out
    assert "--count INT How many times (default: 1)" in out
    assert "one of application/json, image/png, application/zip, text/plain" in out
    assert "(default: application/json)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "abc"], "argument --count: Not a valid integer."),
        (["--count", "1", "--colour", "pink"], "argument --colour: Must be one of: red, green, blue."),
        (["--count", "1", "--ratio", "2"], "argument --ratio: Must be greater than or equal to 0 and less than or equal to 1."),
        (["--count", "1", "--sizes", "1", "x"], "argument --sizes: item 1: Not a valid integer."),
        (["--count", "1", "--options", "{bad"], "argument --options: not valid JSON"),
        (["--count", "1", "--data", "missing.bin"], "argument --data: no readable file 'missing.bin'"),
        (["--count", "1", "--accept", "text/html"], "argument --accept: Must be one of: application/json."),
        (["--ratio", "0.1"], "the following arguments are required: --count"),
        (["--count", "1", "--nope", "2"], "unknown option '--nope'"),
    ],
)  # fmt: skip
def test_bad_values_name_the_option(env, work, argv, message):
    result = call(["--model-name", "typed", "predict", *argv], env, work)
    line, hint = error_lines(result, 2)
    assert line.startswith("deepserve call predict: error: ")
    assert message in line
    assert hint == "Try 'deepserve call --model-name typed predict --help' for help."


async def test_http_rejects_what_the_command_line_rejects(typed_client):
    resp = await typed_client.post("/v2/models/typed/predict/?count=abc")
    assert resp.status == 422
    assert (await resp.json())["errors"] == {"count": ["Not a valid integer."]}


# -- train and warm ------------------------------------------------------------


def test_train_prints_its_record(env, work):
    upload = csv_file(work)
    result = call(
        ["--model-name", "typed", "train", "--epochs", "4", "--data", "in.csv"],
        env,
        work,
    )
    record = ok_json(result)
    assert record["status"] == "done"
    assert record["result"]["output"] == {
        "epochs": 4,
        "output": "weights.bin",
        "size": upload.stat().st_size,
        "warmed": True,
    }
    assert record["args"] == {
        "epochs": 4,
        "output": "weights.bin",
        "data": {
            "name": "data",
            "original_filename": "in.csv",
            "content_type": "text/csv",
        },
    }
    assert set(record) >= {"uuid", "date", "duration", "finish_date"}
    missing = call(["--model-name", "typed", "train"], env, work)
    assert "required: --data" in one_line_error(missing, 2)


def test_a_model_argument_named_like_a_command_option_keeps_its_name(env, work):
    csv_file(work)
    argv = ["train", "--data", "in.csv", "--output", "w.bin", "-o", "record.json"]
    result = call(["--model-name", "typed", *argv], env, work)
    assert result.stdout == "record.json\n", result.stderr
    record = json.loads((work / "record.json").read_text())
    assert record["result"]["output"]["output"] == "w.bin"
    help_text = call(["--model-name", "typed", "train", "--help"], env, work).stdout
    assert "-o FILE " in help_text and "--output TEXT" in help_text


def test_failing_training_is_one_line_and_traceback_with_debug(env, work):
    result = call(["--model-name", "classy", "train", "--fail"], env, work)
    line = one_line_error(result, 1)
    assert line == (
        "deepserve call: error: Model 'classy' failed with RuntimeError: "
        "the loss diverged"
    )
    debug = call(["--model-name", "classy", "--debug", "train", "--fail"], env, work)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "fake_classy.py" in debug.stderr


def test_model_errors_exit_1(env, work):
    crash = call(["--model-name", "oldstyle", "predict", "--mode", "crash"], env, work)
    assert one_line_error(crash, 1).endswith("failed with ValueError: boom")
    refused = call(
        ["--model-name", "oldstyle", "predict", "--mode", "badrequest"], env, work
    )
    assert one_line_error(refused, 1).endswith(
        "refused the call (400): The text is not acceptable"
    )
    absent = call(["--model-name", "minimal", "train"], env, work)
    assert one_line_error(absent, 1).endswith(
        "Model 'minimal' does not implement 'train'"
    )
    bad = call(
        ["--model-name", "classy", "predict", "--x", "1", "--bad_output"], env, work
    )
    assert "does not match the model's schema" in one_line_error(bad, 1)


@pytest.mark.parametrize("method", ["get_metadata", "predict", "train"])
def test_what_the_model_runs_while_its_result_is_written_stays_off_stdout(
    all_env, work, method
):
    # A value JSON has no type for is written as its str(): model code.
    result = call(["--model-name", "unruly", method], all_env, work)
    answer = ok_json(result)  # standard output: the JSON alone
    written = {
        "get_metadata": lambda: answer["lazy"],
        "predict": lambda: answer["predictions"]["value"],
        "train": lambda: answer["result"]["output"]["value"],
    }[method]()
    assert written == "lazy"
    assert "unruly: printed while written" in result.stderr


@pytest.mark.parametrize("method", ["predict", "train"])
def test_a_model_that_exits_while_its_result_is_written_is_a_failure(
    all_env, work, method
):
    argv = ["--model-name", "unruly", method, "--mode", "exit"]
    line, hint = error_lines(call(argv, all_env, work), 1)
    assert line.startswith(
        "deepserve call: error: Model 'unruly' failed with SystemExit: "
        "sys.exit('unruly: "
    )
    assert hint == ""


def test_a_returned_file_is_named_as_the_http_api_offers_it(all_env, work):
    argv = ["--model-name", "unruly", "predict", "--mode", "file"]
    result = call([*argv, "--accept", "text/csv"], all_env, work)
    assert result.returncode == 0, result.stderr
    # No directory and no control characters, in the file's name or on
    # the terminal: what Content-Disposition offers over HTTP.
    assert result.stdout == "]0;titleevilname.csv\n"
    assert [p.name for p in work.iterdir()] == ["]0;titleevilname.csv"]
    assert (work / "]0;titleevilname.csv").read_bytes() == b"a,b\n"


def test_warm_runs_and_predict_warms_first(typed_site, work, tmp_path):
    env = subprocess_env(typed_site)  # one model installed: no name needed
    if VENV_MODELS:  # unless the venv has its own: then the name, by env
        env["DEEPSERVE_V2_MODEL"] = "typed"
    log = tmp_path / "warm.log"
    env["FAKE_TYPED_WARM_LOG"] = str(log)
    result = call(["warm"], env, work)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "Model 'typed' warmed" in result.stderr
    assert len(log.read_text().splitlines()) == 1

    warm = call(["predict", "--count", "1"], env, work)
    assert ok_json(warm)["predictions"]["warmed"] is True
    assert len(log.read_text().splitlines()) == 2
    # What the model prints is kept off standard output.
    assert "typed: predicting" in warm.stderr

    config = tmp_path / "cold.conf"
    config.write_text("[model:typed]\nwarm = false\n")
    cold = ok_json(
        call(["--config-file", str(config), "predict", "--count=1"], env, work)
    )
    assert cold["predictions"]["warmed"] is False
    assert len(log.read_text().splitlines()) == 2
    # The command line wins over the configuration.
    argv = ["--config-file", str(config), "--warm", "predict", "--count=1"]
    assert ok_json(call(argv, env, work))["predictions"]["warmed"] is True
    for spelling in ("--no-warm", "--nowarm"):  # the latter as for deepserve run
        cold = ok_json(call([spelling, "predict", "--count=1"], env, work))
        assert cold["predictions"]["warmed"] is False
    assert len(log.read_text().splitlines()) == 3


# -- choosing the model ----------------------------------------------------------


def test_several_models_need_a_name(env, work):
    result = call(["get_metadata"], env, work)
    line = one_line_error(result, 2)
    assert "several models are installed" in line
    assert ", ".join(sorted([*GOOD_MODELS, "typed", *VENV_MODELS])) in line
    assert "--model-name" in line


def test_unknown_model_lists_the_installed_ones(env, work):
    line = one_line_error(call(["--model-name", "nope", "warm"], env, work), 1)
    assert "'nope'" in line
    names = ", ".join(sorted([*GOOD_MODELS, "typed", *VENV_MODELS]))
    assert f"available models: {names}" in line


def test_model_that_fails_to_import_is_one_line(fake_site, work, tmp_path):
    broken = write_dist(
        tmp_path, "broken-model", {"broken": ("deepaas.v2.model", "fake_broken")}
    )
    env = subprocess_env(fake_site, broken)
    line = one_line_error(call(["--model-name", "broken", "predict"], env, work), 1)
    assert "'broken'" in line
    assert "ImportError: this package needs a library that is not installed" in line


def test_model_named_by_config_or_deepaas_environment(env, work, tmp_path):
    config = tmp_path / "call.conf"
    config.write_text("[DEFAULT]\nmodel_name = classy\n")
    meta = ok_json(call(["--config-file", str(config), "get_metadata"], env, work))
    assert meta["name"] == "classy"
    # The command line wins over the configuration.
    meta = ok_json(
        call(
            ["--config-file", str(config), "--model-name", "minimal", "get_metadata"],
            env,
            work,
        )
    )
    assert meta["id"] == "minimal"
    env = dict(env, DEEPAAS_V2_MODEL="oldstyle")
    assert ok_json(call(["get_metadata"], env, work))["name"] == "oldstyle"


def test_usage_errors(env, work):
    result = call([], env, work)
    assert result.returncode == 2
    assert "a METHOD is required: get_metadata, warm, predict, train" in result.stderr
    assert error_lines(call(["fly"], env, work), 2) == (
        "deepserve call: error: unknown method 'fly'",
        "methods: get_metadata, warm, predict, train",
    )
    result = call(["--help"], env, work)
    assert result.returncode == 0
    for method in ("get_metadata", "warm", "predict", "train"):
        assert method in result.stdout
    top = subprocess.run(
        [str(DEEPSERVE), "--help"], capture_output=True, text=True, timeout=60
    )
    assert "call " in top.stdout


def test_deepaas_cli_spelling(env, work):
    result = call(
        [
            "--model-name",
            "oldstyle",
            "--deepaas_method_output=meta.json",
            "get_metadata",
        ],
        env,
        work,
        script=DEEPSERVE_CLI,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "meta.json\n"
    assert json.loads((work / "meta.json").read_text())["author"] == "Someone"
    bad = call(["--model-name", "oldstyle", "predict", "--count", "x"], env, work,
               script=DEEPSERVE_CLI)  # fmt: skip
    assert one_line_error(bad, 2).startswith("deepserve-cli predict: error:")


# -- errors: one style, suggestions --------------------------------------------


@pytest.mark.parametrize(
    ("argv", "error", "hint"),
    [
        (["predcit"], "deepserve call: error: unknown method 'predcit'",
         "did you mean 'predict'?"),
        (["get-metadata"], "deepserve call: error: unknown method 'get-metadata'",
         "did you mean 'get_metadata'?"),
        (["--modle-name", "typed", "predict"],
         "deepserve call: error: unknown option '--modle-name'",
         "did you mean '--model-name'?"),
        (["--no-wram", "warm"], "deepserve call: error: unknown option '--no-wram'",
         "did you mean '--no-warm'?"),
        (["--model-name", "oldstyle", "predict", "--txt", "ab"],
         "deepserve call predict: error: unknown option '--txt'",
         "did you mean '--text'?"),
        # Mistyped, not missing: the unknown option is what is reported.
        (["--model-name", "typed", "predict", "--cont=1"],
         "deepserve call predict: error: unknown option '--cont'",
         "did you mean '--count'?"),
        (["--model-name", "typed", "train", "--date", "in.csv"],
         "deepserve call train: error: unknown option '--date'",
         "did you mean '--data'?"),
        (["--model-name", "typed", "predict", "--model-name", "x"],
         "deepserve call predict: error: unknown option '--model-name'",
         "'--model-name' is an option of 'deepserve call': give it before 'predict'"),
        (["--model-name", "typed", "predict", "--count", "1", "extra"],
         "deepserve call predict: error: unexpected argument 'extra'",
         "Try 'deepserve call --model-name typed predict --help' for help."),
        # The help hint repeats the command line, options included...
        (["--no-warm", "--model-name", "typed", "warm", "--nope"],
         "deepserve call warm: error: unknown option '--nope'",
         "Try 'deepserve call --no-warm --model-name typed warm --help' for help."),
    ],
)  # fmt: skip
def test_usage_errors_suggest(all_env, work, argv, error, hint):
    assert error_lines(call(argv, all_env, work), 2) == (error, hint)


@pytest.mark.parametrize("method", ["predict", "train"])
def test_model_arguments_named_like_prefixes_of_call_options(all_env, work, method):
    """--config, --n, --d and --mo abbreviate options of 'deepserve call'
    (--config-file, --no-warm, --debug, --model-name); after the method
    they are the model's own."""
    argv = ["--config", "x.yaml", "--n", "2", "--d", "y", "--mo", "z"]
    answer = ok_json(call(["--model-name", "terse", method, *argv], all_env, work))
    got = answer["predictions"]["got"] if method == "predict" else answer["args"]
    assert got == {"config": "x.yaml", "n": 2, "d": "y", "mo": "z"}
    # In the '--name=value' form, and after '--' too.
    argv = ["--model-name=terse", "--", method, "--n=3", "--config=c"]
    answer = ok_json(call(argv, all_env, work))
    got = answer["predictions"]["got"] if method == "predict" else answer["args"]
    assert got == {"config": "c", "n": 3, "d": "", "mo": ""}


def test_call_options_may_be_abbreviated_before_the_method(all_env, work, tmp_path):
    config = tmp_path / "terse.conf"
    config.write_text("[DEFAULT]\nmodel_name = terse\n")
    argv = ["--config-f", str(config), "--no-w", "-do", "meta.json", "get_metadata"]
    result = call(argv, all_env, work)
    assert result.stdout == "meta.json\n", result.stderr
    assert json.loads((work / "meta.json").read_text())["id"] == "terse"
    # An ambiguous one is a usage error, named as argparse names it.
    line, hint = error_lines(call(["--n", "--model-name", "terse", "warm"],
                                  all_env, work), 2)  # fmt: skip
    assert line == (
        "deepserve call: error: ambiguous option: --n could match --no-warm, --nowarm"
    )
    assert hint == "Try 'deepserve call --help' for help."


@pytest.mark.parametrize(
    "option", ["--config-file", "--config-dir", "--model-name", "--debug"]
)
def test_call_options_after_the_method_are_named_so(all_env, work, option):
    argv = ["--model-name", "terse", "predict", "--n", "1", option, "x"]
    assert error_lines(call(argv, all_env, work), 2) == (
        f"deepserve call predict: error: unknown option '{option}'",
        f"'{option}' is an option of 'deepserve call': give it before 'predict'",
    )


def test_help_hint_names_the_help_option_the_model_leaves(all_env, work):
    # ...and asks for -h where the model has an argument called 'help'.
    result = call(["--model-name", "noisy", "predict", "--text"], all_env, work)
    line, hint = error_lines(result, 2)
    assert line.startswith("deepserve call predict: error: argument --text")
    assert hint == "Try 'deepserve call --model-name noisy predict -h' for help."


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--model-name"], "--model-name"),
        (["--model-name", "typed", "predict", "--count"], "--count"),
        (["--model-name", "typed", "train", "--data"], "--data"),
    ],
)
def test_missing_values_are_usage_errors(env, work, argv, option):
    line, hint = error_lines(call(argv, env, work), 2)
    # argparse words these differently across Python versions: the meaning.
    assert f"argument {option}" in line and "expected" in line
    assert hint.startswith("Try 'deepserve call") and hint.endswith(
        " --help' for help."
    )


def test_unknown_model_names_the_closest(all_env, work):
    demo = call(["--model-name", "demoo", "get_metadata"], all_env, work)
    line, hint = error_lines(demo, 1)
    assert line.startswith("deepserve call: error: Model 'demoo' not found")
    assert hint == "did you mean 'demo'?"
    _, hint = error_lines(call(["--model-name", "oldstyl", "warm"], all_env, work), 1)
    assert hint == "did you mean 'oldstyle'?"


def test_a_model_that_exits_is_a_failure(all_env, work):
    result = call(["--model-name", "noisy", "predict", "--text", "exit"], all_env, work)
    assert error_lines(result, 1) == (
        "deepserve call: error: Model 'noisy' failed with SystemExit: sys.exit(3)",
        "",
    )


def test_usage_errors_and_help_skip_the_models_imports(env, work):
    """'call --help' and a mistyped method answer without importing the
    server's modules (or oslo.config): they answer at once."""
    code = (
        "import contextlib, io, sys\n"
        "from deepserve.shell import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        "    status = [main(['--help']), main(['predcit'])]\n"
        "heavy = ('aiohttp', 'marshmallow', 'oslo_config', 'sqlalchemy', 'apispec')\n"
        "print(status, [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=work, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout == "[0, 2] []\n", result.stderr


# -- --help: the help alone ----------------------------------------------------------

HELP_CALLS = [
    ["--help"],
    ["predict", "--help"],  # no model installed: the demo, without a notice
    ["--model-name", "demo", "train", "--help"],
    ["--model-name", "noisy", "predict", "-h"],
    ["--model-name", "noisy", "train", "--help"],
    ["--model-name", "noisy", "get_metadata", "--he"],
    ["--model-name", "noisy", "warm", "-h"],
    ["--model-name", "oldstyle", "predict", "--help"],
    ["--model-name", "typed", "train", "--help"],
    # The DEEPaaS package of .ci/run's DEEPaaS venv, where installed.
    *(["--model-name", name, "predict", "--help"] for name in VENV_MODELS),
]


@pytest.mark.parametrize("argv", HELP_CALLS, ids=" ".join)
def test_help_is_all_there_is(all_env, own_site, work, argv):
    env = plain_env() if "--model-name" not in argv else all_env
    for script in (DEEPSERVE, DEEPSERVE_CLI):
        result = call(argv, env, work, script=script)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        prog = "deepserve call" if script == DEEPSERVE else "deepserve-cli"
        methods = ("get_metadata", "warm", "predict", "train")
        method = next((word for word in argv if word in methods), None)
        usage = f"usage: {prog} {method} [-h]" if method else f"usage: {prog} [-h]"
        assert result.stdout.startswith(usage), result.stdout


def test_what_the_model_writes_on_import_is_kept_when_it_is_no_help(all_env, work):
    # --help is noisy's own argument here: a prediction, not the help.
    argv = ["--model-name", "noisy", "predict", "--help", "me"]
    result = call(argv, all_env, work)
    assert ok_json(result) == {
        "status": "OK",
        "predictions": {"text": "hi", "help": "me"},
    }
    for line in (
        "noisy: printed on import",
        "noisy: written to fd 1 on import",
        "noisy: written to fd 2 on import",
        "WARNING fake_noisy: noisy: a log record on import",
        "UserWarning: noisy: a warning on import",
        "noisy: reading the predict arguments",
    ):
        assert line in result.stderr
    # And with no help asked for, as it comes, standard output left alone.
    meta = call(["--model-name", "noisy", "get_metadata"], all_env, work)
    assert ok_json(meta)["description"] == "Talks when imported"
    assert "noisy: written to fd 1 on import" in meta.stderr


# -- train: its output as it comes ---------------------------------------------


class StderrLines:
    """The lines a process writes to its standard error, read as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._read, args=(proc.stderr,), daemon=True
        )
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, *texts: str, timeout: float = 90) -> None:
        """Read until a line has each of ``texts``; fail after ``timeout``."""
        missing = set(texts)
        deadline = time.monotonic() + timeout
        while missing:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"never came: {sorted(missing)}; came: {self.seen}")
            if line is None:
                pytest.fail(f"stderr ended without {sorted(missing)}: {self.seen}")
            self.seen.append(line)
            missing = {t for t in missing if t not in line}

    def rest(self) -> list[str]:
        self._thread.join(timeout=60)
        while (line := self._queue.get_nowait()) is not None:
            self.seen.append(line)
        return self.seen


STEP_ONE = (
    "step 1: printed",
    "step 1: written to fd 1",
    "step 1: printed by a child process",
    "INFO fake_follow: step 1: logged",
    "step 1: written to sys.__stdout__",
)


def test_train_streams_its_output_then_prints_the_record(all_env, work, tmp_path):
    go = tmp_path / "go"
    command = [str(DEEPSERVE), "call", "--model-name", "follow", "train",
               "--until", str(go)]  # fmt: skip
    with subprocess.Popen(
        command, env=all_env, cwd=work, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        try:
            lines = StderrLines(proc)
            # The training waits for 'go': what it wrote so far came already.
            lines.wait_for(*STEP_ONE)
            assert proc.poll() is None
            go.touch()
            assert proc.stdout is not None
            out = proc.stdout.read()
            assert proc.wait(timeout=60) == 0
        finally:
            proc.kill()
    seen = lines.rest()
    assert any("step 2: printed" in line for line in seen[len(STEP_ONE) :]), seen
    # Standard output: the record, nothing the training wrote.
    record = json.loads(out)
    assert record["status"] == "done"
    assert record["result"]["output"] == {"steps": 2}
    assert record["args"] == {"until": str(go)}


def test_ctrl_c_stops_a_training_with_status_130(all_env, work, tmp_path):
    command = [str(DEEPSERVE), "call", "--model-name", "follow", "train",
               "--until", str(tmp_path / "never")]  # fmt: skip
    with subprocess.Popen(
        command, env=all_env, cwd=work, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        try:
            lines = StderrLines(proc)
            lines.wait_for(*STEP_ONE)
            proc.send_signal(signal.SIGINT)
            assert proc.stdout is not None
            out = proc.stdout.read()
            assert proc.wait(timeout=60) == 130
        finally:
            proc.kill()
    assert out == ""
    rest = lines.rest()
    assert rest[-1] == "deepserve call: error: interrupted\n", rest
    assert not any("Traceback" in line for line in rest)


# -- colour: on a terminal's standard error only -----------------------------------


def on_a_terminal(
    argv: list[str], env: dict[str, str], cwd: Path
) -> tuple[int, str, str]:
    """Run with standard error on a terminal and standard output on a pipe:
    the status, standard output, and what the terminal showed."""
    master, slave = pty.openpty()
    try:
        with subprocess.Popen(
            [str(DEEPSERVE), "call", *argv], env=env, cwd=cwd,
            stdout=subprocess.PIPE, stderr=slave,
        ) as proc:  # fmt: skip
            os.close(slave)
            slave = -1
            shown = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side closed
                    break
                if not chunk:
                    break
                shown += chunk
            assert proc.stdout is not None
            out = proc.stdout.read().decode()
            status = proc.wait(timeout=60)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    return status, out, shown.decode()


RED_ERROR = "\x1b[1;31merror:\x1b[0m"


def level(name: str) -> str:
    """A log level's name as ``deepserve run`` colours it on a terminal."""
    return console.paint(name, *logs.ColourFormatter.STYLES[name], force=True)


WARNING = level("WARNING")


def test_colour_on_a_terminal_never_on_standard_output(all_env, work):
    env = dict(all_env, TERM="xterm")
    status, out, shown = on_a_terminal(["predcit"], env, work)
    assert status == 2 and out == ""
    assert f"deepserve call: {RED_ERROR} unknown method 'predcit'" in shown
    # Log lines have their level in colour; the metadata is plain JSON.
    status, out, shown = on_a_terminal(
        ["--model-name", "noisy", "get_metadata"], env, work
    )
    assert status == 0
    assert WARNING in shown
    assert "\x1b" not in out and json.loads(out)["name"] == "noisy"


def test_log_levels_have_the_colours_of_deepserve_run(all_env, work):
    env = dict(all_env, TERM="xterm")
    status, out, shown = on_a_terminal(["--model-name", "noisy", "warm"], env, work)
    assert status == 0 and out == ""
    assert f" {WARNING} fake_noisy: noisy: a log record on import" in shown
    assert f" {level('INFO')} deepserve.shell: Model 'noisy' warmed in " in shown
    # As deepserve run has them: WARNING bold yellow, INFO green.
    assert WARNING == "\x1b[1;33mWARNING\x1b[0m"
    assert level("INFO") == "\x1b[32mINFO\x1b[0m"


def test_no_colour_with_no_color_or_through_a_pipe(all_env, work):
    env = dict(all_env, TERM="xterm", NO_COLOR="1")
    status, _, shown = on_a_terminal(["predcit"], env, work)
    assert status == 2
    assert "deepserve call: error: unknown method 'predcit'" in shown
    assert "\x1b" not in shown
    piped = call(["--model-name", "noisy", "predict", "--txt"], all_env, work)
    assert piped.returncode == 2 and "\x1b" not in piped.stderr
    assert "WARNING fake_noisy" in piped.stderr


def test_forced_colour_leaves_results_plain(all_env, work):
    env = dict(all_env, FORCE_COLOR="1")
    meta = call(["--model-name", "typed", "get_metadata"], env, work)
    assert "\x1b" not in meta.stdout and ok_json(meta)["name"] == "typed"
    result = call(["--model-name", "noisy", "predict", "--text", "x"], env, work)
    assert "\x1b" not in result.stdout and ok_json(result)["predictions"]["text"] == "x"
    assert WARNING in result.stderr
    failed = call(["--model-name", "oldstyle", "predict", "--mode", "crash"], env, work)
    assert failed.returncode == 1 and RED_ERROR in failed.stderr


# -- options, in this process ----------------------------------------------------


def parse_options(
    fields: dict[str, Any], argv: list[str], reserved: frozenset[str] = frozenset()
) -> dict[str, Any]:
    spec = ArgSpec.prepare(fields, negotiate_accept=False)
    parser = argparse.ArgumentParser(prog="test", exit_on_error=False)
    opts = options.add_options(parser, spec, set(reserved), title="arguments")
    return options.load(spec, opts, parser.parse_args(argv))


def test_tuple_nested_and_lists_of_nested_values():
    inner = {"a": mf.Int(required=True)}
    declared = {
        "pair": mf.Tuple((mf.Int(), mf.Str())),
        "point": mf.Nested(inner),
        "points": mf.List(mf.Nested(inner), load_default=[]),
        "flag": mf.Bool(required=True),
    }
    argv = ["--pair", "1", "x", "--point", '{"a": 2}', "--points", '{"a": 3}']
    assert parse_options(declared, [*argv, "--no-flag"]) == {
        "pair": (1, "x"),
        "point": {"a": 2},
        "points": [{"a": 3}],
        "flag": False,
    }
    with pytest.raises(options.OptionError, match=r"argument --point: a: Missing"):
        parse_options(declared, ["--point", "{}", "--flag"])
    with pytest.raises(options.OptionError, match=r"argument --points: not valid JSON"):
        parse_options(declared, ["--points", "[", "--flag"])


def test_argument_that_cannot_be_an_option_is_reported():
    declared = {"accept": mf.Str()}
    with pytest.raises(options.OptionError, match=r"'accept'.*--accept"):
        parse_options(declared, [], frozenset({"--accept"}))
    with pytest.raises(options.OptionError, match=r"'two words'"):
        parse_options({"two words": mf.Str()}, [])


def test_the_configured_log_format_is_used(env, work, tmp_path):
    # log_format = json in a config file: call's own log lines are JSON too,
    # as deepserve run would write them.
    conf = tmp_path / "json.conf"
    conf.write_text("[DEFAULT]\nlog_format = json\n")
    result = call(
        ["--config-file", str(conf), "--model-name", "minimal", "warm"], env, work
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert any("warmed in" in r["message"] for r in records)
    assert {r["logger"] for r in records} >= {"deepserve.shell"}
