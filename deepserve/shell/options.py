"""Command-line options generated from a model's argument fields.

An option collects the text typed on the command line, as a query string
would carry it. The values are then loaded by the very schema the HTTP API
loads them with (:class:`deepserve.operations.arguments.ArgSpec`), so
``deepserve call`` and the API accept, convert and reject the same values.
The plugin's fields are only read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any, Literal

import marshmallow
from marshmallow import fields as mf
from marshmallow import validate

from deepserve.operations.arguments import Arg, ArgSpec, one_line

#: How an option reads its values: one text, several texts, an on/off flag,
#: a JSON document, or the path of a file to upload.
Kind = Literal["value", "multiple", "flag", "json", "file"]

#: Placeholders shown in ``--help``, most specific field class first.
_METAVARS: tuple[tuple[type[mf.Field], str], ...] = (
    (mf.Boolean, "BOOL"),
    (mf.Integer, "INT"),
    (mf.Float, "FLOAT"),
    (mf.Decimal, "DECIMAL"),
    (mf.Number, "NUMBER"),
    (mf.Date, "DATE"),
    (mf.DateTime, "DATETIME"),
    (mf.Time, "TIME"),
    (mf.TimeDelta, "NUMBER"),
    (mf.UUID, "UUID"),
    (mf.Url, "URL"),
    (mf.Email, "EMAIL"),
    (mf.String, "TEXT"),
    (mf.Mapping, "JSON"),
    (mf.Nested, "JSON"),
)
#: Fields whose values are structures: typed as JSON on the command line.
_STRUCTURED = (mf.Mapping, mf.Nested)


@dataclasses.dataclass(frozen=True)
class Option:
    """One model argument as a command-line option.

    :param arg: the argument, as the HTTP layer plans to read it.
    :param flag: the option string shown in messages, e.g. ``--count``.
    :param dest: where :mod:`argparse` stores the option's value.
    """

    arg: Arg
    flag: str
    dest: str
    kind: Kind


class OptionError(Exception):
    """A value given on the command line is invalid; ``str()`` says why."""


def _kind(arg: Arg) -> Kind:
    if arg.where == "files":
        return "file"
    if isinstance(arg.field, mf.Boolean):
        return "flag"
    if arg.multiple:
        return "multiple"
    if isinstance(arg.field, _STRUCTURED) or arg.where == "json":
        # Over HTTP an argument of the JSON body arrives as parsed JSON.
        return "json"
    return "value"


def _choices(field: mf.Field) -> list[Any]:
    """The values a field allows: its ``OneOf`` choices or old ``enum=``."""
    for validator in getattr(field, "validators", []):
        if isinstance(validator, validate.OneOf):
            return list(validator.choices)
    enum = field.metadata.get("enum")
    return list(enum) if isinstance(enum, list | tuple) else []


def _metavar(field: mf.Field) -> str:
    choices = _choices(field)
    if choices:
        return "{" + ",".join(str(c) for c in choices) + "}"
    for cls, name in _METAVARS:
        if isinstance(field, cls):
            return name
    return "VALUE"


def _default_text(field: mf.Field) -> str | None:
    """The default as ``--help`` shows it, or ``None`` when it has none."""
    default = field.load_default
    if default is marshmallow.missing or callable(default):
        return None
    if isinstance(default, str):
        return default
    if default is None:
        return "none"
    return json.dumps(default, default=str)


def _help(field: mf.Field, kind: Kind) -> str:
    notes = []
    if kind == "multiple":
        notes.append("any number of values; the option may be repeated")
    elif kind == "json":
        notes.append("JSON")
    elif kind == "file":
        notes.append("path of a file to upload")
    if field.required:
        notes.append("required")
    else:
        default = _default_text(field)
        if default is not None:
            notes.append(f"default: {default}")
    description = str(field.metadata.get("description") or "").strip()
    text = " ".join(
        filter(None, [description, f"({'; '.join(notes)})" if notes else ""])
    )
    # argparse formats help with %: a literal one must be doubled.
    return text.replace("%", "%%")


def add_options(
    parser: argparse.ArgumentParser,
    spec: ArgSpec,
    reserved: set[str],
    *,
    title: str,
) -> list[Option]:
    """Add one option per argument of ``spec``, in a group of ``parser``.

    :param reserved: option strings the command already uses; an argument
        that needs one of them is reported, never silently dropped.
    :param title: the group's title in ``--help``.
    :raises OptionError: when an argument's name cannot be an option.
    """
    group = parser.add_argument_group(title)
    reserved = set(reserved)
    options = []
    for index, arg in enumerate(spec.plan):
        kind = _kind(arg)
        flag = f"--{arg.name}"
        wanted = {flag, f"--no-{arg.name}"} if kind == "flag" else {flag}
        clash = wanted & reserved
        if clash or not arg.name or arg.name.startswith("-") or " " in arg.name:
            raise OptionError(
                f"argument '{arg.name}' cannot be given as an option "
                f"({', '.join(sorted(clash)) or 'not a valid option name'})"
            )
        reserved |= wanted
        dest = f"arg_{index}"
        common: dict[str, Any] = {
            "dest": dest,
            "help": _help(arg.field, kind),
            "required": bool(arg.field.required),
            # Absent options stay absent: the schema applies the defaults,
            # as it does for a request that leaves them out.
            "default": argparse.SUPPRESS,
        }
        if kind == "flag":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif kind == "multiple":
            inner = _inner(arg.field)
            group.add_argument(
                flag,
                action="extend",
                nargs="*",
                metavar=_metavar(inner) if inner else "VALUE",
                **common,
            )
        else:
            metavar = "PATH" if kind == "file" else _metavar(arg.field)
            group.add_argument(flag, metavar=metavar, **common)
        options.append(Option(arg, flag, dest, kind))
    return options


def _inner(field: mf.Field) -> mf.Field | None:
    if isinstance(field, mf.List):
        return field.inner
    if isinstance(field, mf.Tuple) and field.tuple_fields:
        return field.tuple_fields[0]
    return None


def _raw_values(options: list[Option], ns: argparse.Namespace) -> dict[str, Any]:
    """The values given, keyed as in a request, ready for the schema.

    :raises OptionError: when a JSON value does not parse.
    """
    raw: dict[str, Any] = {}
    for opt in options:
        if opt.kind == "file" or not hasattr(ns, opt.dest):
            continue
        value = getattr(ns, opt.dest)
        if opt.kind == "json":
            value = _json(opt, value)
        elif opt.kind == "multiple":
            items = _inner_fields(opt.arg.field, len(value))
            value = [
                _json(opt, v) if isinstance(f, _STRUCTURED) else v
                for v, f in zip(value, items, strict=True)
            ]
        raw[opt.arg.key] = value
    return raw


def _inner_fields(field: mf.Field, count: int) -> list[mf.Field | None]:
    if isinstance(field, mf.Tuple):
        known: list[mf.Field | None] = list(field.tuple_fields)
        return (known + [None] * count)[:count]
    return [_inner(field)] * count


def _json(opt: Option, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise OptionError(f"argument {opt.flag}: not valid JSON: {err}") from None


def load(
    spec: ArgSpec, options: list[Option], ns: argparse.Namespace
) -> dict[str, Any]:
    """Load the non-file values with the HTTP API's own schema.

    :returns: the model's keyword arguments (files are left out).
    :raises OptionError: naming the option of every invalid value.
    """
    raw = _raw_values(options, ns)
    try:
        loaded: dict[str, Any] = spec.schema.load(raw)
    except marshmallow.ValidationError as err:
        flags = {opt.arg.key: opt.flag for opt in options}
        messages = err.messages if isinstance(err.messages, Mapping) else {}
        problems = [
            f"argument {flags.get(key, key)}: {one_line(msg)}"
            for key, msg in sorted(messages.items())
        ] or [f"invalid arguments: {one_line(err.messages)}"]
        raise OptionError("; ".join(problems)) from None
    return loaded


def files(
    options: list[Option], ns: argparse.Namespace
) -> tuple[dict[str, Any], list[tuple[Option, str]]]:
    """The file arguments: defaults of those not given, paths of the others.

    :returns: keyword arguments for the files left out (their defaults, as
        the HTTP API fills them in), and each given option with its path.
    :raises OptionError: when a path is not a readable file.
    """
    defaults: dict[str, Any] = {}
    given: list[tuple[Option, str]] = []
    for opt in options:
        if opt.kind != "file":
            continue
        path = getattr(ns, opt.dest, None)
        if path is None:
            default = opt.arg.field.load_default
            if default is not marshmallow.missing:
                defaults[opt.arg.name] = default() if callable(default) else default
        elif not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise OptionError(f"argument {opt.flag}: no readable file '{path}'")
        else:
            given.append((opt, path))
    return defaults, given
