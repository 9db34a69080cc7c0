"""The commands README.rst and doc/ show are ones that work as written.

deepserve is not on PyPI: every ``pip install`` of it must name a checkout
(``.``, ``./deepserve``) or a wheel built from one, with extras that exist.
Every ``deepserve`` command shown must be a real command, and the options of
``deepserve run`` and ``deepserve models`` lines must parse.
"""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from deepserve import cli, cli_models, config, console

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.rst", *sorted((ROOT / "doc").rglob("*.rst"))]

#: ``pip install ...`` wherever it is written: console blocks and inline
#: literals (up to a closing backquote, a comment or the end of the line).
PIP = re.compile(r"pip install ([^`#\n]+)")
#: A console line running deepserve (after an optional variable assignment).
COMMAND = re.compile(r"^\s*\$ (?:[A-Z_]+=\S+ )*(deepserve\S*) ?(.*)$", re.M)
#: What deepserve may be installed from: a checkout or a wheel built from it.
LOCAL = re.compile(
    r"^(\.|\./deepserve|\.\./deepserve|dist/deepserve-[^/]*\.whl|"
    r"/[\w./-]*deepserve[\w./-]*)(\[[\w,-]+\])?$"
)


def _extras() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return set(parser["options.extras_require"])


def pip_lines() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for match in PIP.finditer(path.read_text()):
            found.append((path.relative_to(ROOT).as_posix(), match.group(1).strip()))
    return found


def command_lines() -> list[tuple[str, str, str]]:
    """The deepserve command lines shown, except those shown failing on
    purpose (the next line is their ``error:``)."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in COMMAND.finditer(text):
            following = text[match.end() + 1 :].split("\n", 1)[0]
            if ": error: " in following:
                continue
            where = path.relative_to(ROOT).as_posix()
            found.append((where, match.group(1), match.group(2)))
    return found


def test_the_docs_have_install_and_command_lines():
    # The scanners find what they check (a regex gone wrong finds nothing).
    assert len(pip_lines()) >= 8
    assert len(command_lines()) >= 20


@pytest.mark.parametrize(("where", "line"), pip_lines())
def test_deepserve_is_installed_from_a_checkout_or_wheel(where, line):
    words = [w for w in shlex.split(line, comments=True) if not w.startswith("-")]
    for word in words:
        if word.startswith("&&") or word in ("&&", ";"):
            break
        if "deepserve" not in word and word not in (".",) and not word.startswith(".["):
            continue  # another package (s3fs, a model package)
        assert LOCAL.match(word), (
            f"{where}: 'pip install {line}' installs deepserve from '{word}': it "
            "is not on PyPI; use a checkout (./deepserve) or a wheel"
        )
        extras = re.search(r"\[([\w,-]+)\]", word)
        if extras:
            unknown = set(extras.group(1).split(",")) - _extras()
            assert not unknown, f"{where}: no extra {unknown} in setup.cfg"


@pytest.mark.parametrize(("where", "program", "rest"), command_lines())
def test_deepserve_commands_in_the_docs_parse(where, program, rest, tmp_path):
    words = shlex.split(rest, comments=True)
    words = words[: words.index("|")] if "|" in words else words
    if program == "deepserve-cli":
        return  # deepserve call's DEEPaaS name: its options are the model's
    assert program == "deepserve", f"{where}: unknown program {program}"
    command, args = words[0], words[1:]
    assert command in cli.COMMANDS, f"{where}: no command 'deepserve {command}'"
    if command == "run":
        # Parsed as the server would parse them; a config file that is not
        # on this machine is fine, an unknown option or a bad value is not.
        args = [a for a in args if not a.startswith("/etc/")]
        args = [a for a in args if a != "--config-file"]
        try:
            config.load(args, {}, default_config_files=[])
        except console.UsageError as exc:
            pytest.fail(f"{where}: 'deepserve run {rest}': {exc}")
    elif command == "models":
        action = next(a for a in args if not a.startswith("-"))
        assert action in cli_models.ACTIONS, where


def test_readme_examples_upload_files_the_reader_has():
    # Each file an example uploads is created by an earlier line.
    text = (ROOT / "README.rst").read_text()
    uploads = re.finditer(r'@([\w.-]+)"|--data ([\w.-]+)|data="([\w.-]+)"', text)
    seen = 0
    for match in uploads:
        name = next(g for g in match.groups() if g)
        created = re.search(rf"> {re.escape(name)}\n", text[: match.start()])
        assert created, f"README.rst uploads {name} before any line creates it"
        seen += 1
    assert seen >= 3
