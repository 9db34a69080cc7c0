"""``deepserve models``: list, inspect, delete, export, import, push and pull
stored models.

Errors follow :mod:`deepserve.console`: ``deepserve models <action>: error:
...`` on stderr, exit status 2 for a wrong command line and 1 for a failure
(an error of the file system included: one line, never a traceback).
Stopped by a signal, an action cleans up (no half-written archive or store
entry is left) and exits with 128 + the signal's number: 130 for Ctrl-C
(SIGINT), 143 for SIGTERM, 129 for SIGHUP.

Everything a stored model's ``model.json`` holds may come from someone
else's archive: control characters in it are escaped before they reach a
terminal (:func:`printable`).

This module is imported by ``deepserve models --help`` and ``deepserve
models list``, which must start fast: the store, YAML and everything heavy
are imported where they are used.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from deepserve import console
from deepserve.exceptions import DeepserveError

if TYPE_CHECKING:
    from deepserve.store import Store, StoredModel

PROG = "deepserve models"
FORMATS = ("table", "json", "yaml")
ACTIONS = ("list", "get", "delete", "export", "import", "push", "pull")
#: Actions that need the store to exist; ``import`` and ``pull`` create it.
READS = ("list", "get", "delete", "export", "push")
#: The keys of a ``list -o json|yaml`` row: the first keys of ``get``'s
#: output, with the same values.
SUMMARY_KEYS = ("tag", "name", "version", "path", "module", "size", "created", "labels")
#: The help of ``push`` and ``pull``'s URL.
_REMOTE_HELP = (
    "the model store at a URL: s3://bucket/prefix, gs://..., file:///dir "
    "(needs deepserve[fsspec] and the protocol's package, such as s3fs)"
)


class Failure(Exception):
    """A failed action: reported as ``<prog>: error: message`` with status 1."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived while an action ran.

    A :class:`BaseException`, as :class:`KeyboardInterrupt` is: the clean-ups
    that run for Ctrl-C (a partial archive removed, a store's temp dir
    deleted) run for it too, and no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: Signals turned into :class:`Stopped` while an action runs (SIGINT is
#: already :class:`KeyboardInterrupt`).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class OutputError(Exception):
    """Standard output could not be written (a closed pipe, a full disk)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class CommandLineError(console.UsageError):
    """A wrong command line, reported for the (sub)command ``prog``."""

    def __init__(self, prog: str, message: str, *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.prog = prog


def main(argv: Sequence[str]) -> int:
    """Run ``deepserve models ...``; return the exit status."""
    parser, actions = _parser()
    prog = PROG
    try:
        with _stop_on_signals():
            _check_leading_options(parser, argv)
            args, extra = parser.parse_known_args(argv)
            if args.action is None:
                raise CommandLineError(
                    PROG,
                    f"an action is required: {', '.join(ACTIONS[:-1])} "
                    f"or {ACTIONS[-1]}",
                )
            prog = actions[args.action].prog
            if extra:
                raise _unexpected(actions[args.action], extra)
            store = _open_store(args)
            status = int(args.run(store, args))
            # Here, not at exit: a write error is reported like any other.
            _say("", end="", flush=True)
            return status
    except CommandLineError as exc:
        return console.usage_error(exc.prog, exc)
    except Failure as exc:
        return console.error(prog, exc.message, hint=exc.hint)
    except DeepserveError as exc:
        return console.error(prog, str(exc), hint=getattr(exc, "hint", ""))
    except KeyboardInterrupt:
        return console.error(prog, "interrupted", status=console.INTERRUPTED)
    except Stopped as exc:
        name = signal.Signals(exc.signum).name
        return console.error(prog, f"stopped by {name}", status=128 + exc.signum)
    except OutputError as exc:
        console.discard_stdout()
        if isinstance(exc.error, BrokenPipeError):
            # The reader went away (`deepserve models list | head`): not
            # worth a message.
            return console.FAILURE
        return console.error(prog, f"cannot write the output: {_os_error(exc.error)}")
    except OSError as exc:
        # A read-only or unreadable store, a file that vanished...
        return console.error(prog, _os_error(exc))


def _os_error(exc: OSError) -> str:
    """``Permission denied: '/path'``: the error, and the file it is about."""
    text = exc.strerror or str(exc) or type(exc).__name__
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    if names:
        text += ": " + " -> ".join(repr(os.fsdecode(n)) for n in names)
    return text


def _say(text: str, *, end: str = "\n", flush: bool = False) -> None:
    """Write ``text`` to standard output; a failure is an :class:`OutputError`."""
    try:
        print(text, end=end, flush=flush)
    except OSError as exc:
        raise OutputError(exc) from exc


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Raise :class:`Stopped` for SIGTERM and SIGHUP while the block runs.

    A signal that is ignored (``nohup`` ignores SIGHUP) stays ignored. After
    the first signal the previous handlers are back, so that a second one
    does what it would have done without this (by default: kill at once,
    cleaning up nothing). Outside the main thread, where Python cannot set
    handlers, nothing changes.
    """
    previous: dict[int, Any] = {}

    def restore() -> None:
        while previous:
            signum, handler = previous.popitem()
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        restore()
        raise Stopped(signum)

    try:
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if handler is signal.SIG_IGN:
                continue
            try:
                signal.signal(signum, stop)
            except ValueError:  # not the main thread
                break
            previous[signum] = handler
        yield
    finally:
        restore()


# -- the command line -----------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`CommandLineError`."""

    def error(self, message: str) -> NoReturn:
        text, hint = _explain(message)
        raise CommandLineError(self.prog, text, hint=hint)


_CHOICE = re.compile(r"argument (?P<arg>[^:]+): invalid choice: (?P<rest>.*)", re.S)
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")


def _explain(message: str) -> tuple[str, str]:
    """argparse's error ``message`` in deepserve's words, and a suggestion
    (``""`` when there is none).

    argparse's wording of an invalid choice differs between Python versions
    (quoted choices until 3.12, suggestions of its own from 3.14): only the
    value and the list of choices are taken from it.
    """
    found = _CHOICE.fullmatch(message)
    if found is None:
        return message, ""
    arg, rest = found["arg"], found["rest"]
    quoted = _QUOTED.match(rest)
    value = rest.split(" ")[0].rstrip(",")
    if quoted:
        try:
            value = str(ast.literal_eval(quoted.group()))
        except (ValueError, SyntaxError):
            value = quoted.group()[1:-1]
    choices: list[str] = []
    if "(choose from " in rest:
        listed = rest.rpartition("(choose from ")[2].removesuffix(")")
        choices = [c.strip().strip("'\"") for c in listed.split(",")]
    suggestion = console.did_you_mean(value, choices)
    if arg == "ACTION":
        text = f"unknown action '{value}'"
    else:
        text = f"argument {arg}: invalid choice '{value}'"
    if choices:
        text += f" (choose from {', '.join(choices)})"
    # The suggestion alone; without one, console.usage_error points at --help.
    return text, suggestion


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [
        option
        for action in parser._actions  # argparse has no public listing
        for option in action.option_strings
    ]


def _unknown_option(parser: argparse.ArgumentParser, word: str) -> CommandLineError:
    option = word.partition("=")[0]
    suggestion = console.did_you_mean(option, _options(parser))
    return CommandLineError(parser.prog, f"unknown option '{option}'", hint=suggestion)


def _unexpected(parser: argparse.ArgumentParser, extra: list[str]) -> CommandLineError:
    """The error for the words ``parser`` did not take."""
    for word in extra:
        if word.startswith("-") and word != "-":
            return _unknown_option(parser, word)
    return CommandLineError(parser.prog, f"unexpected argument '{extra[0]}'")


def _check_leading_options(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> None:
    """Refuse an unknown option before the action.

    argparse would take the word after it for the action and report an
    unknown action instead.
    """
    known = _options(parser)
    words = iter(argv)
    for word in words:
        if word in ("-", "--") or not word.startswith("-"):
            return  # the action, or what argparse makes of it
        option, has_value, _ = word.partition("=")
        # argparse takes any unambiguous prefix of a long option.
        matches = [
            k
            for k in known
            if k == option or (option.startswith("--") and k.startswith(option))
        ]
        if not matches:
            raise _unknown_option(parser, word)
        if matches == ["--store"] and not has_value:
            next(words, None)  # its value


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = _Parser(
        prog=PROG,
        description="Manage the models in the model store.",
        epilog="Run 'deepserve models ACTION --help' for an action's options.",
    )
    parser.set_defaults(action=None)
    _store_option(parser, default=None)
    sub = parser.add_subparsers(title="actions", dest="action", metavar="ACTION")
    actions: dict[str, argparse.ArgumentParser] = {}

    def action(
        name: str, run: Callable[[Store, argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(
            name,
            prog=f"{PROG} {name}",
            help=text,
            description=text[0].upper() + text[1:] + ".",
        )
        command.set_defaults(run=run)
        actions[name] = command
        return command

    ls = action("list", _list, "list stored models, newest first")
    ls.add_argument(
        "name", nargs="?", metavar="NAME", help="only the versions of this model"
    )
    _output_option(ls)
    _store_option(ls)

    get = action("get", _get, "show one stored model's information")
    get.add_argument("tag", metavar="TAG", help="name, name:latest or name:version")
    _output_option(get, default="yaml")
    _store_option(get)

    delete = action("delete", _delete, "delete stored models")
    delete.add_argument(
        "tags", nargs="+", metavar="TAG", help="name, name:latest or name:version"
    )
    delete.add_argument(
        "-y", "--yes", action="store_true", help="do not ask for confirmation"
    )
    _store_option(delete)

    export = action("export", _export, "write a stored model to one archive file")
    export.add_argument("tag", metavar="TAG", help="name, name:latest or name:version")
    export.add_argument(
        "path",
        metavar="PATH",
        help="archive file, directory to write it in (named NAME-VERSION.dsmodel), "
        "or URL (s3://..., memory://...; needs deepserve[fsspec])",
    )
    export.add_argument(
        "-f", "--force", action="store_true", help="replace an existing archive file"
    )
    _progress_option(export)
    _store_option(export)

    imp = action("import", _import, "add the model in an archive to the store")
    imp.add_argument("path", metavar="PATH", help="archive file or URL")
    _progress_option(imp)
    _store_option(imp, creates=True)

    push = action("push", _push, "upload a stored model to a model store at a URL")
    push.add_argument("tag", metavar="TAG", help="name, name:latest or name:version")
    push.add_argument("url", metavar="URL", help=_REMOTE_HELP)
    push.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="replace the version if the store at URL has it",
    )
    _progress_option(push)
    _store_option(push)

    pull = action(
        "pull", _pull, "copy a model from a model store at a URL into the store"
    )
    pull.add_argument(
        "tag",
        metavar="TAG",
        help="name, name:latest or name:version in the store at URL",
    )
    pull.add_argument("url", metavar="URL", help=_REMOTE_HELP)
    _progress_option(pull)
    _store_option(pull, creates=True)
    return parser, actions


def _store_option(
    parser: argparse.ArgumentParser,
    default: Any = argparse.SUPPRESS,
    creates: bool = False,
) -> None:
    """``--store DIR``, on the command and on each action: it may come before
    or after the action (the action's own default leaves the first alone)."""
    parser.add_argument(
        "--store",
        metavar="DIR",
        default=default,
        help="the model store's directory (default: $DEEPSERVE_HOME/models, or "
        "~/deepserve/models)" + ("; created if missing" if creates else ""),
    )


def _output_option(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=default,
        metavar="FORMAT",
        help=f"output format: table, json or yaml (default: {default}); json and "
        "yaml give sizes in bytes and times in ISO 8601",
    )


def _progress_option(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", help="show no progress"
    )


# -- the store ------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> Store:
    from deepserve import models
    from deepserve.store import Store

    store = Store(args.store) if args.store else models.default_store()
    args.store_shown = args.store or str(store.root)
    if store.root.exists() and not store.root.is_dir():
        raise Failure(f"model store {args.store_shown} is not a directory")
    if args.action in READS and not store.root.exists():
        if args.action == "list" and not args.store:
            # A fresh install: nothing was saved yet, and nothing is listed.
            return store
        hint = (
            ""
            if args.store
            else f"Nothing was saved there yet; {models.HOME_ENV} or --store DIR "
            "choose another store."
        )
        raise Failure(f"model store {args.store_shown} does not exist", hint=hint)
    return store


def _find(store: Store, text: str, shown: str) -> StoredModel:
    """The model ``text`` names; else a :class:`Failure` suggesting the
    closest stored name or tag."""
    from deepserve.exceptions import ModelTagNotFound
    from deepserve.store import Tag

    tag = Tag.parse(text)
    try:
        return store.get(tag)
    except ModelTagNotFound:
        raise _missing(store, tag, text, shown) from None


def _missing(store: Store, tag: Any, text: str, shown: str) -> Failure:
    stored = store.list()
    if not stored:
        state = "is empty" if store.root.exists() else "does not exist yet"
        return Failure(f"no model '{text}': the model store {shown} {state}")
    names = sorted({m.info.name for m in stored})
    tags = [m.tag for m in stored]
    if tag.name in names:
        versions = [t for t in tags if t.startswith(f"{tag.name}:")]
        return Failure(
            f"model '{tag.name}' has no version '{tag.version}'",
            hint=console.did_you_mean(str(tag), versions)
            or f"'{PROG} list {tag.name}{_store_words(shown)}' lists its versions.",
        )
    if tag.version is None:
        guess = console.suggest(tag.name, names)
        suggestion = f"{guess}{text[len(tag.name) :]}" if guess else None
    else:
        suggestion = console.suggest(str(tag), tags) or console.suggest(tag.name, names)
    hint = (
        f"did you mean '{suggestion}'?"
        if suggestion
        else f"'{PROG} list{_store_words(shown)}' lists the stored models."
    )
    return Failure(f"no model named '{tag.name}' in the model store {shown}", hint=hint)


def _store_words(shown: str) -> str:
    """`` --store DIR`` to repeat in a suggested command, unless DIR is the
    default store."""
    from deepserve import models

    if Path(shown).expanduser().absolute() == models.default_store().root:
        return ""
    return f" --store {shlex.quote(shown)}"


# -- the actions ----------------------------------------------------------------


def _list(store: Store, args: argparse.Namespace) -> int:
    if args.name is None:
        entries = store.list()
    else:
        from deepserve.store import Tag
        from deepserve.store.tag import check_name

        entries = store.list(check_name(args.name))
        if not entries:
            raise _missing(store, Tag(args.name), args.name, args.store_shown)
    entries.sort(key=lambda m: m.info.created, reverse=True)
    if args.output != "table":
        _dump([_record(m) for m in entries], args.output)
        return 0
    if not entries:
        _say(printable(f"No models in the model store {args.store_shown}."))
        return 0
    rows = [
        [m.tag, m.info.module, _size(m.info.size), _when(m.info.created)]
        for m in entries
    ]
    _say(_table(["TAG", "MODULE", "SIZE", "CREATED"], rows))
    return 0


def _get(store: Store, args: argparse.Namespace) -> int:
    stored = _find(store, args.tag, args.store_shown)
    record = _record(stored, full=True)
    if args.output != "table":
        _dump(record, args.output)
        return 0
    rows = []
    for key, value in record.items():
        rows.append([key, _describe(key, value)])
        if key == "signatures":  # then each one's tensors, a row each
            rows.extend(
                [f"{method}.{side}", _tensors(sig[side])]
                for method, sig in value.items()
                for side in ("inputs", "outputs")
            )
    _say(_table(None, rows))
    return 0


def _delete(store: Store, args: argparse.Namespace) -> int:
    # Every tag is checked first: one unknown tag deletes nothing.
    entries = [_find(store, tag, args.store_shown) for tag in args.tags]
    tags = list(dict.fromkeys(m.tag for m in entries))
    if not args.yes:
        if not console.is_terminal(sys.stdin):
            # Nobody can answer: a script must say --yes, not pipe a "y".
            raise Failure(
                f"{', '.join(tags)} not deleted: standard input is not a "
                "terminal; pass --yes to delete without asking"
            )
        models = f"{len(tags)} model{'s' if len(tags) > 1 else ''}"
        if not _confirm(f"Delete {models}: {', '.join(tags)}? [y/N] "):
            print("Nothing deleted.", file=sys.stderr)
            return console.FAILURE
    for tag in tags:
        store.delete(tag)
        _say(f"{console.paint('Deleted', 'green')} {tag}")
    return 0


def _export(store: Store, args: argparse.Namespace) -> int:
    from deepserve.store.archive import ArchiveExists

    stored = _find(store, args.tag, args.store_shown)
    try:
        with Progress.when(args.progress, f"Exporting {stored.tag}") as bar:
            written = store.export_model(
                stored.tag, args.path, progress=bar, overwrite=args.force
            )
    except ArchiveExists as exc:
        raise Failure(
            f"'{exc.dest}' already exists; use --force to replace it"
        ) from None
    _say(f"{console.paint('Exported', 'green')} {stored.tag} to {printable(written)}")
    return 0


def _import(store: Store, args: argparse.Namespace) -> int:
    from deepserve.exceptions import TagExists
    from deepserve.store.local import TMP_DIR

    created = _missing_dirs(store.root)
    try:
        with Progress.when(args.progress, f"Importing {printable(args.path)}") as bar:
            stored = store.import_model(args.path, progress=bar)
    except BaseException as exc:
        if created:  # a failed import into a new store leaves no empty store
            _remove_empty([store.root / TMP_DIR, *created])
        if isinstance(exc, TagExists):
            raise Failure(
                f"model '{exc.tag}' is already in the model store {args.store_shown}",
                hint=f"'{PROG} delete {exc.tag}' removes it, if it is to be replaced.",
            ) from None
        raise
    if created:
        print(printable(f"Created the model store {args.store_shown}"), file=sys.stderr)
    _say(f"{console.paint('Imported', 'green')} {stored.tag}")
    return 0


def _push(store: Store, args: argparse.Namespace) -> int:
    from deepserve.store.remote import RemoteStore, VersionExists

    stored = _find(store, args.tag, args.store_shown)
    remote = RemoteStore(args.url)
    try:
        with Progress.when(args.progress, f"Pushing {stored.tag}") as bar:
            remote.push(store, stored.tag, overwrite=args.force, progress=bar)
    except VersionExists as exc:
        raise Failure(printable(f"{exc}; use --force to replace it")) from None
    shown = printable(remote.archive_url(stored.tag))
    _say(f"{console.paint('Pushed', 'green')} {stored.tag} to {shown}")
    return 0


def _pull(store: Store, args: argparse.Namespace) -> int:
    from deepserve.exceptions import ModelTagNotFound
    from deepserve.store import Tag
    from deepserve.store.local import TMP_DIR
    from deepserve.store.remote import FETCH_DIR, RemoteStore

    remote = RemoteStore(args.url)
    tag = Tag.parse(args.tag)
    exact = str(tag) if tag.version is not None else remote.resolve(tag)
    with contextlib.suppress(ModelTagNotFound):
        store.get(exact)
        _say(printable(f"{exact} is already in the model store {args.store_shown}"))
        return 0
    created = _missing_dirs(store.root)
    try:
        with Progress.when(args.progress, f"Pulling {exact}") as bar:
            stored = remote.fetch(exact, store.root, progress=bar)
    except BaseException:
        if created:  # a failed pull into a new store leaves no empty store
            for work in (TMP_DIR, FETCH_DIR):
                with contextlib.suppress(OSError):
                    (store.root / work).rmdir()
            _remove_empty(created)
        raise
    if created:
        print(printable(f"Created the model store {args.store_shown}"), file=sys.stderr)
    _say(f"{console.paint('Pulled', 'green')} {stored.tag}")
    return 0


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist, deepest first."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing


def _remove_empty(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            path.rmdir()
        except OSError:
            return  # not empty, or never made: nor are its parents


def _confirm(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


# -- output ---------------------------------------------------------------------


def _record(stored: StoredModel, *, full: bool = False) -> dict[str, Any]:
    """What ``-o json|yaml`` shows: raw values (bytes, ISO 8601 times).

    A ``list`` row is the first keys of ``get``'s record, with the same values.
    """
    info = stored.info.to_json()
    del info["format"]
    record = {
        "tag": stored.tag,
        "name": info.pop("name"),
        "version": info.pop("version"),
        "path": str(stored.path),
        "module": info.pop("module"),
        "size": info.pop("size"),
        "created": info.pop("created"),
        "labels": info.pop("labels"),
    }
    if full:
        record.update(info)
        for sig in record["signatures"].values():  # null: not known
            sig.setdefault("inputs", None)
            sig.setdefault("outputs", None)
    return record


#: What a terminal may take for a command: C0 controls, DEL, C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\x1b``, ``\\n``...),
    safe to write to a terminal: an escape sequence hidden in a label cannot
    retitle the window, recolour the screen or hide what follows."""
    return _CONTROL.sub(
        lambda found: _NAMED.get(found[0]) or f"\\x{ord(found[0]):02x}", text
    )


#: What ``json.dumps`` leaves raw: DEL and the C1 controls.
_JSON_RAW = re.compile(r"[\x7f-\x9f]")


def _dump(data: Any, fmt: str) -> None:
    """``data`` as JSON or YAML, control characters escaped the format's way
    (the values read back unchanged)."""
    if fmt == "json":
        text = json.dumps(data, indent=2, ensure_ascii=False)
        # JSON escapes only the C0 controls; these may appear only in
        # strings, where \u escapes are as good.
        _say(_JSON_RAW.sub(lambda found: f"\\u{ord(found[0]):04x}", text))
        return
    import yaml  # only -o yaml needs it

    # YAML escapes every control character in a double-quoted string.
    _say(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")


def _table(header: list[str] | None, rows: list[list[str]]) -> str:
    """Rows in aligned columns, their control characters escaped; the header
    bold on a terminal."""
    cells = [
        [printable(cell) for cell in row] for row in ([header] if header else []) + rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]

    def line(row: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()

    lines = [line(row) for row in cells]
    if header:
        lines[0] = console.paint(lines[0], "bold")
    return "\n".join(lines)


def _describe(key: str, value: Any) -> str:
    """One field of ``get -o table``, for people."""
    if key == "size":
        return f"{_size(value)} ({value} bytes)"
    if key == "created":
        return _when(datetime.datetime.fromisoformat(value))
    if key == "framework":
        versions = ", ".join(f"{k} {v}" for k, v in value["versions"].items())
        return f"{value['name']} ({versions})" if versions else str(value["name"])
    if key == "signatures":
        return (
            ", ".join(
                f"{method} (batchable, batch_dim={sig['batch_dim']})"
                if sig["batchable"]
                else method
                for method, sig in value.items()
            )
            or "-"
        )
    if key == "metadata":
        return json.dumps(value, ensure_ascii=False) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


def _tensors(specs: list[dict[str, Any]] | None) -> str:
    """A signature's tensors for people: ``input-0 FP64 [-1, 4]; ...``, or
    ``-`` when not known."""
    if specs is None:
        return "-"
    return "; ".join(
        f"{spec['name']} {spec['datatype']} [{', '.join(map(str, spec['shape']))}]"
        for spec in specs
    )


def _size(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``4.2 KiB``, ``1.5 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _when(created: datetime.datetime) -> str:
    """A time for people: local, to the second."""
    return created.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# -- progress -------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``0.4 s``, ``9.5 s``, ``1:05``, ``2:03:04``."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


#: Characters kept for the numbers of a progress line: enough for
#: ``100%  1023.9 MiB / 1023.9 MiB  1023.9 MiB/s  ETA 1:59:59``.
_STATS_ROOM = 57


def progress_line(
    label: str,
    done: int,
    total: int,
    *,
    elapsed: float,
    rate: float | None,
    width: int = 80,
    bar: bool = True,
) -> str:
    """One line of progress, at most ``width`` characters (but for a width
    under 4); with a bar if ``bar`` and the width leaves room for it.

    While running: ``Exporting x  [####----]  45%  1.2 MiB / 2.7 MiB
    3.1 MiB/s  ETA 0:02`` (``rate`` in bytes per second, ``None`` while
    unknown). Once ``done`` reaches ``total``: the total, the time it took
    and the average speed.
    """
    share = min(done / total, 1.0) if total > 0 else 1.0
    # The numbers, fullest first: on a narrow line the speed goes first, then
    # the time, then the byte counts; a number is never cut.
    if done >= total:
        took = duration(elapsed)
        speed = f", {_size(done / elapsed)}/s" if elapsed > 0 and done else ""
        levels = [
            f"100%  {_size(done)} in {took}{speed}",
            f"100%  {_size(done)} in {took}",
            f"100% in {took}",
            "100%",
        ]
    else:
        percent = f"{int(share * 100):3d}%"
        counts = f"{_size(done)} / {_size(total)}"
        speed = f"{_size(rate)}/s" if rate else "-- B/s"
        left = duration((total - done) / rate) if rate else "--:--"
        levels = [
            f"{percent}  {counts}  {speed}  ETA {left}",
            f"{percent}  {counts}  ETA {left}",
            f"{percent}  {counts}",
            percent,
        ]
    # The bar's width depends on the label and the width only, so that it
    # does not jump as the numbers change; it is there only when all the
    # numbers fit too.
    bar_width = min(30, width - len(label) - _STATS_ROOM - 6)
    if bar and bar_width >= 10:
        filled = int(bar_width * share)
        drawn = "[" + "#" * filled + "-" * (bar_width - filled) + "]  "
        levels = [drawn + stats for stats in levels]
    # The label is shortened first, down to a few characters.
    least = min(len(label), 8)
    for stats in levels:
        room = width - len(stats) - 2  # two spaces between the label and the rest
        if room >= least:
            if len(label) > room:
                label = label[: room - 3] + "..."
            return f"{label}  {stats}"
    # Too narrow for a label: the percentage alone.
    return levels[-1].lstrip()[:width]


class Progress:
    """Export or import progress on ``stream``, fed ``(done, total)`` bytes.

    On a terminal one line is redrawn, at most ten times a second; elsewhere
    (``--progress`` to a file or a pipe) a line is written every few
    seconds. The last line tells the time taken and the average speed.

    :param clock: seconds, monotonic (tests pass their own).
    :param terminal: whether ``stream`` is a terminal (default: asked).
    :param width: the line's width (default: the terminal's).
    """

    #: Seconds between redraws on a terminal, and between lines elsewhere.
    REDRAW = 0.1
    LINES = 5.0
    #: Seconds of recent progress the speed is measured on.
    WINDOW = 3.0

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        terminal: bool | None = None,
        width: int | None = None,
    ) -> None:
        self._label = label
        self._stream = stream
        self._clock = clock
        self._terminal = console.is_terminal(stream) if terminal is None else terminal
        self._width = width
        self._start: float | None = None
        self._last_draw: float | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._finished = False
        self._open_line = False

    @classmethod
    def when(cls, wanted: bool | None, label: str) -> Progress | _NoProgress:
        """A progress display on stderr if ``wanted`` (default: if stderr is
        a terminal)."""
        if wanted is None:
            wanted = console.is_terminal(sys.stderr)
        return cls(label, sys.stderr) if wanted else _NoProgress()

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if self._start is None:
            self._start = now
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW:
            self._samples.popleft()
        if done >= total:
            if not self._finished:
                self._finished = True
                self._draw(done, total, now)
            return
        if self._terminal:
            due = self._last_draw is None or now - self._last_draw >= self.REDRAW
        else:
            # Lines in a file or a pipe: none for a short transfer.
            due = now - (self._last_draw or self._start) >= self.LINES
        if due:
            self._draw(done, total, now)

    def rate(self) -> float | None:
        """Bytes per second over the last few seconds; ``None`` until a
        tenth of a second has passed."""
        (first_time, first_done), (last_time, last_done) = (
            self._samples[0],
            self._samples[-1],
        )
        span = last_time - first_time
        return (last_done - first_done) / span if span >= 0.1 else None

    def _draw(self, done: int, total: int, now: float) -> None:
        assert self._start is not None
        self._last_draw = now
        width = self._width or shutil.get_terminal_size((80, 24)).columns
        # The cursor's column is the last one: a full line would wrap.
        text = progress_line(
            self._label,
            done,
            total,
            elapsed=now - self._start,
            rate=self.rate(),
            # A bar in a log file tells nothing the percentage does not.
            width=width - 1 if self._terminal else 200,
            bar=self._terminal,
        )
        if self._terminal:
            self._stream.write(f"\r{text}\033[K")
            self._open_line = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if not self._open_line:
            return
        # A failure's message starts on a clean line: an unfinished bar is
        # wiped; a finished one stays.
        self._stream.write("\n" if self._finished else "\r\033[K")
        self._stream.flush()


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        pass
