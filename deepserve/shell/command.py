"""``deepserve call``: run an installed model's methods without a server.

This module reads the command line and reports what goes wrong, in the
style of every ``deepserve`` command (:mod:`deepserve.console`)::

    deepserve call predict: error: unknown option '--txt'
    did you mean '--text'?

Exit status: 0 when done, 1 when the model failed or could not be found or
loaded, 2 when the command line is wrong, 130 after Ctrl-C. The work itself
is :mod:`deepserve.shell.runner`'s, imported only once the command line
names a method: ``deepserve call --help`` stays quick.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from deepserve import console

if TYPE_CHECKING:
    from deepserve.settings import LogFormat
from deepserve.exceptions import (
    ConfigError,
    DeepserveError,
    LoaderError,
    ModelFailed,
    ModelHTTPError,
)

#: The methods, as DEEPaaS's ``deepaas-cli`` names them, and what they do.
METHODS = {
    "get_metadata": "print the model's metadata",
    "warm": "run the model's warm()",
    "predict": "run one prediction and output its result",
    "train": "run a training to its end and print its record",
}

DESCRIPTION = """\
Run an installed model's methods in this process, without a server. The
model's arguments are options of its method, read and checked as the HTTP
API reads them; file arguments are paths.
"""

USAGE = """\
%(prog)s [-h] [--model-name NAME] [--config-file PATH]
       [--config-dir DIR] [-d] [--warm | --no-warm] [-o FILE] METHOD [ARGS]"""

EPILOG = (
    "methods:\n"
    + "".join(f"  {m:<14}{h}\n" for m, h in METHODS.items())
    + (
        "\n'%(prog)s METHOD --help' lists the options of a method, the\n"
        "model's arguments included. What the model prints while it runs\n"
        "goes to standard error; standard output holds the result alone."
    )
)


class UsageError(console.UsageError):
    """The command line cannot be carried out as written (exit status 2).

    :param command: the command the message is about, e.g.
        ``deepserve call predict``; ``deepserve call`` when empty.
    :param help_command: the command line that prints the help, e.g.
        ``deepserve call --model-name x predict --help``; ``command --help``
        when empty.
    """

    def __init__(
        self, message: str, *, hint: str = "", command: str = "", help_command: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.command = command
        self.help_command = help_command


class Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of printing
    its usage and exiting, and names the closest option to an unknown one.

    :param typed: the command line as typed up to this parser's options,
        for the hint of an error: ``typed --help`` lists them.
    """

    def __init__(self, *args: Any, typed: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.typed = typed or self.prog

    def error(self, message: str) -> NoReturn:
        raise self._usage_error(message)

    def _usage_error(self, message: str, hint: str = "") -> UsageError:
        # A model argument called 'help' leaves -h alone to ask for help.
        flags = [
            flag
            for action in self._actions
            if isinstance(action, argparse._HelpAction)
            for flag in action.option_strings
        ]
        flag = "--help" if "--help" in flags or not flags else flags[0]
        return UsageError(
            message, hint=hint, command=self.prog, help_command=f"{self.typed} {flag}"
        )

    def parse_all(
        self, args: Sequence[str], *, elsewhere: Mapping[str, str] | None = None
    ) -> argparse.Namespace:
        """Parse ``args``; any word left over is an error.

        :param elsewhere: a hint for options that belong to another command.
        :raises UsageError: naming the first unknown option or argument.
        """
        # Unknown options first: argparse would report a required option as
        # missing when it is only mistyped ("--cont 1" for "--count 1").
        required = [action for action in self._actions if action.required]
        for action in required:
            action.required = False
        try:
            _, extras = self.parse_known_args(list(args))
        finally:
            for action in required:
                action.required = True
        if extras:
            raise self._unknown(extras[0], elsewhere or {})
        return self.parse_known_args(list(args))[0]

    def split_at_positional(self, args: Sequence[str]) -> tuple[list[str], list[str]]:
        """``args`` cut after the first positional word (the method's name).

        What follows it belongs to the method, whatever it looks like: a
        model's ``--n`` or ``--config`` must never be read as an
        abbreviation of one of this parser's options (argparse would look
        for those in every word, the method's included).

        :returns: the words up to the positional one included, and the rest.
        """
        index = 0
        while index < len(args):
            word = args[index]
            index += 1
            if word == "--":  # what follows is positional: the next word
                return list(args[: index + 1]), list(args[index + 1 :])
            if word == "-" or not word.startswith("-"):
                return list(args[:index]), list(args[index:])
            if self._value_follows(word):
                index += 1
        return list(args), []

    def _value_follows(self, word: str) -> bool:
        """Whether option ``word`` takes the next word as its value."""
        if word.startswith("--"):
            flag, equals, _ = word.partition("=")
            if equals:
                return False
            actions = self._long_option(flag)
            # Unknown or ambiguous: parse_all reports it.
            return bool(actions) and all(a.nargs != 0 for a in actions)
        # Short options, grouped maybe: -d, -o FILE, -oFILE, -do FILE.
        for position in range(1, len(word)):
            action = self._option_string_actions.get(f"-{word[position]}")
            if action is None:
                return False
            if action.nargs != 0:
                return position == len(word) - 1
        return False

    def _long_option(self, flag: str) -> list[argparse.Action]:
        """The actions ``flag`` names, as argparse reads it (abbreviated)."""
        exact = self._option_string_actions.get(flag)
        if exact is not None:
            return [exact]
        if not self.allow_abbrev:
            return []
        found: list[argparse.Action] = []
        for option, action in self._option_string_actions.items():
            # flag starts with "--": only long options start with it.
            if option.startswith(flag) and action not in found:
                found.append(action)
        return found

    def visible_options(self) -> list[str]:
        """The option strings ``--help`` shows."""
        return [
            flag
            for action in self._actions
            if action.help != argparse.SUPPRESS
            for flag in action.option_strings
        ]

    def _unknown(self, word: str, elsewhere: Mapping[str, str]) -> UsageError:
        if not word.startswith("-") or word == "-":
            message, hint = f"unexpected argument '{word}'", ""
        else:
            flag = word.partition("=")[0]
            message = f"unknown option '{flag}'"
            hint = elsewhere.get(flag) or console.did_you_mean(
                flag, self.visible_options()
            )
        return self._usage_error(message, hint)


def main(argv: Sequence[str], *, prog: str = "deepserve call") -> int:
    """Run ``deepserve call``; returns the exit status.

    ``0``: done; ``1``: the model failed, or could not be found or loaded;
    ``2``: the command line is wrong (an unknown option, an invalid value);
    ``130``: interrupted.
    """
    try:
        return _main(list(argv), prog)
    except KeyboardInterrupt:
        return console.error(prog, "interrupted", status=console.INTERRUPTED)
    except BrokenPipeError:
        # The reader of our output went away (| head): nothing to report.
        console.discard_stdout()
        return console.FAILURE


def deepserve_cli() -> int:
    """The ``deepserve-cli`` command: ``deepserve call`` under DEEPaaS's name."""
    return main(sys.argv[1:], prog="deepserve-cli")


def describe(exc: DeepserveError) -> str:
    """One line for a model's failure; the user here is the operator."""
    if isinstance(exc, ModelFailed):
        return f"{exc.message}: {exc.detail}"
    if isinstance(exc, ModelHTTPError):
        # aiohttp's default text repeats the status: "400: Bad Request".
        text = exc.message.removeprefix(f"{exc.status}: ")
        return f"Model '{exc.model}' refused the call ({exc.status}): {text}"
    return str(exc)


def _main(argv: list[str], prog: str) -> int:
    parser = call_parser(prog)
    # Everything after the method is the method's, read once the model is.
    head, tail = parser.split_at_positional(argv)
    try:
        ns = parser.parse_all(head)
        ns.args = tail
        _check_method(ns.method)
    except UsageError as exc:
        return _usage(exc, prog)
    except SystemExit as exc:  # --help, printed
        return _exit_status(exc, prog)

    from deepserve import config  # oslo.config: not needed until here

    try:
        settings, debug = config.load(_config_argv(ns), os.environ, prog=prog)
    except console.UsageError as exc:
        return console.usage_error(prog, exc)
    except ConfigError as exc:
        return console.error(prog, str(exc))
    _configure_logging(debug, settings.log_format)

    from deepserve.shell import output, runner  # the model's world: heavy

    typed = argv[: len(argv) - len(ns.args)]
    call = runner.Invocation(
        prog=prog,
        ns=ns,
        typed=" ".join([prog, *map(shlex.quote, typed)]),
        call_options=frozenset(
            flag for action in parser._actions for flag in action.option_strings
        ),
    )
    try:
        return runner.run(call, settings)
    except UsageError as exc:
        return _usage(exc, prog)
    except SystemExit as exc:  # a method's --help, printed
        return _exit_status(exc, prog)
    except LoaderError as exc:
        return console.error(prog, str(exc), hint=exc.hint)
    except output.OutputError as exc:
        return console.error(prog, str(exc))
    except DeepserveError as exc:
        if debug and isinstance(exc, ModelFailed) and exc.traceback:
            print(exc.traceback.rstrip(), file=sys.stderr)
        return console.error(prog, describe(exc))
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        return console.error(
            prog,
            f"unexpected {type(exc).__name__}: {exc}",
            hint="" if debug else "--debug shows the traceback",
        )


def call_parser(prog: str) -> Parser:
    """The parser of ``deepserve call``'s own options, up to the method.

    Give it the words up to the method's name only
    (:meth:`Parser.split_at_positional`).
    """
    parser = Parser(
        prog=prog,
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-name",
        metavar="NAME",
        help="the model to run (default: the only one installed; also read "
        "from the configuration and DEEPSERVE_V2_MODEL or DEEPAAS_V2_MODEL)",
    )
    parser.add_argument(
        "--config-file",
        metavar="PATH",
        action="append",
        default=[],
        help="a configuration file, as for 'deepserve run'; may be repeated",
    )
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="read every *.conf file in DIR",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        help="run warm() before predict and train, as the server does "
        "(default: on, or the configuration's 'warm')",
    )
    # deepserve run's spelling (oslo.config's) works too.
    parser.add_argument(
        "--nowarm", dest="warm", action="store_false", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the result to FILE ('-': standard output, binary "
        "results too) instead of the default place",
    )
    # DEEPaaS's deepaas-cli name for --output, so its scripts keep working.
    parser.add_argument(
        "--deepaas_method_output", dest="output", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "method",
        metavar="METHOD",
        # Optional for argparse, and no choices: a missing or mistyped one
        # gets our own message.
        nargs="?",
        help="get_metadata, warm, predict or train (see below)",
    )
    # The method's options are cut off before parsing: see split_at_positional.
    return parser


def _check_method(method: str | None) -> None:
    if method is None:
        raise UsageError(f"a METHOD is required: {', '.join(METHODS)}")
    if method not in METHODS:
        raise UsageError(
            f"unknown method '{method}'",
            hint=console.did_you_mean(method, METHODS)
            or f"methods: {', '.join(METHODS)}",
        )


def _usage(exc: UsageError, prog: str) -> int:
    command = exc.command or prog
    hint = exc.hint or f"Try '{exc.help_command or command + ' --help'}' for help."
    return console.error(command, exc.message, hint=hint, status=console.USAGE)


def _exit_status(exc: SystemExit, prog: str) -> int:
    code = exc.code
    if code is None or isinstance(code, int):
        return code or 0
    # sys.exit("message"): a message, written as every error is.
    return console.error(prog, str(code))


def _config_argv(ns: argparse.Namespace) -> list[str]:
    """The options that ``deepserve run`` reads too, in its own syntax."""
    argv = []
    for path in ns.config_file:
        argv += ["--config-file", path]
    for path in ns.config_dir:
        argv += ["--config-dir", path]
    if ns.debug:
        argv.append("--debug")
    return argv


def _configure_logging(debug: bool, log_format: LogFormat) -> None:
    """Log to standard error as ``deepserve run`` does: the configuration's
    ``log_format``, the same colours on a terminal (:mod:`deepserve.logs`)."""
    from deepserve import logs

    logs.configure(
        level=logging.DEBUG if debug else logging.INFO, log_format=log_format
    )
