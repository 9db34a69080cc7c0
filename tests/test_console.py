"""deepserve.console: the one error style, suggestions and colour rules."""

from __future__ import annotations

import io

import pytest

from deepserve import console


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_colour_env(monkeypatch):
    for var in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    ("word", "choices", "expected"),
    [
        ("runn", ["run", "models", "call"], "run"),
        ("model", ["run", "models", "call"], "models"),
        ("--listen_port", ["--listen-port", "--listen-ip"], "--listen-port"),
        ("LIST", ["list", "get"], "list"),  # case folded
        ("iris_cfl", ["iris_clf", "demo"], "iris_clf"),
        ("fly", ["run", "models", "call"], None),
        ("", ["run"], None),
        ("run", [], None),
    ],
)
def test_suggest_the_closest_choice(word, choices, expected):
    assert console.suggest(word, choices) == expected
    assert console.did_you_mean(word, choices) == (
        f"did you mean '{expected}'?" if expected else ""
    )


def test_colour_only_on_a_terminal(monkeypatch):
    assert console.colour_on(Tty())
    assert not console.colour_on(io.StringIO())  # a pipe or a file
    monkeypatch.setenv("NO_COLOR", "1")
    assert not console.colour_on(Tty())
    monkeypatch.setenv("FORCE_COLOR", "1")  # wins over NO_COLOR
    assert console.colour_on(io.StringIO())
    monkeypatch.setenv("FORCE_COLOR", "0")
    assert not console.colour_on(Tty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not console.colour_on(Tty())


def test_paint():
    assert console.paint("x", "bold", "red", stream=Tty()) == "\033[1;31mx\033[0m"
    assert console.paint("x", "bold", stream=io.StringIO()) == "x"
    assert console.paint("x", "green", stream=io.StringIO(), force=True) == (
        "\033[32mx\033[0m"
    )
    assert console.paint("x", stream=Tty()) == "x"


def test_error_is_one_line_with_its_hint():
    out = io.StringIO()
    status = console.error(
        "deepserve models", "no model\n  'x'", hint="did you mean 'y'?", stream=out
    )
    assert status == console.FAILURE
    assert out.getvalue() == (
        "deepserve models: error: no model 'x'\ndid you mean 'y'?\n"
    )
    tty = Tty()
    console.usage_error("deepserve run", console.UsageError("bad"), stream=tty)
    assert tty.getvalue() == (
        "deepserve run: \033[1;31merror:\033[0m bad\n"
        "\033[2mTry 'deepserve run --help' for help.\033[0m\n"
    )


def test_control_characters_never_reach_the_terminal():
    out = io.StringIO()
    console.error(
        "deepserve models",
        "no model 'evil\x1b]0;PWNED\x07\x1b[2J' here\x9b",
        hint="did you mean 'x\x1b[31m'?",
        stream=out,
    )
    assert out.getvalue() == (
        "deepserve models: error: no model 'evil\\x1b]0;PWNED\\x07\\x1b[2J' "
        "here\\x9b\ndid you mean 'x\\x1b[31m'?\n"
    )
    assert console.printable("tab\there, é ü 漢") == "tab\there, é ü 漢"
