"""One operation's arguments, as a model declares them, prepared once.

A model declares its arguments as marshmallow fields, each saying where it
comes from (``location=`` in old DEEPaaS style: query, form, files, headers
or JSON). :class:`ArgSpec` works out once per served model what reading
them needs: the schema that validates the values, which arguments are
files, which names are read where, and the ``accept`` argument when it is
negotiated (:mod:`deepserve.operations.negotiation`) rather than read as
any other. The model's fields are never modified: validation runs on copies.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import marshmallow
from marshmallow import fields as mf

from deepserve import console
from deepserve.operations.negotiation import ACCEPT

Location = Literal["query", "form", "files", "headers", "json"]
#: Where a request carries a name: the query string, or the body (a form, a
#: multipart body or a JSON object), or (declared arguments only) headers.
Place = Literal["query", "body", "headers"]
_ANYWHERE: frozenset[Place] = frozenset({"query", "body"})


_LOCATIONS: dict[str, Location] = {
    "query": "query",
    "querystring": "query",
    "form": "form",
    "formdata": "form",
    "files": "files",
    "file": "files",
    "headers": "headers",
    "header": "headers",
    "json": "json",
    "body": "json",
}


def location_of(field: mf.Field) -> Location:
    """Where an argument is documented to come from."""
    meta = field.metadata
    if meta.get("type") == "file" or meta.get("format") == "binary":
        return "files"
    where = str(meta.get("location", "query")).lower()
    return _LOCATIONS.get(where, "query")


def _declared_location(field: mf.Field) -> Location | None:
    """Where a model said its ``accept`` argument comes from, if it did."""
    if "location" not in field.metadata:
        return None
    where = location_of(field)
    return "form" if where == "json" else where


def external_name(name: str, field: mf.Field) -> str:
    return field.data_key or name


def is_multiple(field: mf.Field) -> bool:
    return isinstance(field, mf.List | mf.Tuple) or bool(
        getattr(field, "is_multiple", False)
    )


class Arg(NamedTuple):
    """One argument, with what parsing needs to know worked out once."""

    name: str
    key: str  # its name in the request (a field's data_key)
    where: Location
    multiple: bool
    field: mf.Field


@dataclasses.dataclass(frozen=True)
class ArgSpec:
    """A model operation's arguments, prepared once per app.

    :param fields: the plugin's fields by argument name (read, never changed).
    :param accept: the ``accept`` field when it is negotiated separately.
    :param accept_from: where an ``accept`` argument is read: ``query``
        (the query string only), ``form`` (the body only), ``headers`` (the
        ``Accept`` header is the argument: nothing else is read), or
        ``None`` when the model did not say (query string or body, as
        DEEPaaS reads it).
    """

    fields: Mapping[str, mf.Field]
    accept: mf.Field | None
    #: Validates the non-file arguments; built once (instances are costly).
    schema: marshmallow.Schema
    #: External names of the arguments that are files, and of the others.
    file_keys: frozenset[str]
    value_keys: frozenset[str]
    plan: tuple[Arg, ...]
    accept_from: Location | None = None
    #: Where each argument is read, by its name in the request.
    reads: Mapping[str, frozenset[Place]] = dataclasses.field(default_factory=dict)
    #: The arguments as an error lists them, sorted: ``count``, ``data
    #: (file)``, ``lang (header)``.
    described: tuple[str, ...] = ()

    @classmethod
    def prepare(
        cls, declared: Mapping[str, mf.Field], *, negotiate_accept: bool
    ) -> ArgSpec:
        accept = declared.get(ACCEPT) if negotiate_accept else None
        kept = {k: f for k, f in declared.items() if not (k == ACCEPT and accept)}
        plain = {
            name: copy.deepcopy(field)
            for name, field in kept.items()
            if location_of(field) != "files"
        }
        schema = marshmallow.Schema.from_dict(plain, name="Arguments")(
            unknown=marshmallow.EXCLUDE
        )
        files = {external_name(n, f) for n, f in kept.items() if n not in plain}
        values = {external_name(n, f) for n, f in plain.items()}
        plan = tuple(
            Arg(n, external_name(n, f), location_of(f), is_multiple(f), f)
            for n, f in kept.items()
        )
        accept_from = _declared_location(accept) if accept is not None else None
        reads, described = _reads(plan, accept is not None, accept_from)
        return cls(
            fields=kept,
            accept=accept,
            schema=schema,
            file_keys=frozenset(files),
            value_keys=frozenset(values),
            plan=plan,
            accept_from=accept_from,
            reads=reads,
            described=described,
        )

    def not_taken(self, name: str, place: Place) -> str:
        """Why ``name``, found in ``place``, is not an argument there."""
        reads = self.reads.get(name)
        if reads is None:
            text = "Unknown argument"
            # Looking for a close name is quadratic in the name's length.
            match = console.suggest(name, self.reads) if len(name) <= 100 else None
            if match:
                text += f" (did you mean '{match}'?)"
            if self.described:
                return f"{text}. This model takes: {', '.join(self.described)}."
            return f"{text}. This model takes no arguments."
        if "headers" in reads:
            header = "Accept" if name == ACCEPT else name
            return f"Read from the '{header}' header only."
        if place == "query":
            if name in self.file_keys:
                return (
                    "A file: send it as a file part of a multipart/form-data "
                    "body, not in the query string."
                )
            return "Read from the request body only, not from the query string."
        return "Read from the query string only, not from the request body."

    def by_location(self, *locations: Location) -> dict[str, mf.Field]:
        return {n: f for n, f in self.fields.items() if location_of(f) in locations}


_PLACES: dict[Location | None, frozenset[Place]] = {
    "query": frozenset({"query"}),
    "form": frozenset({"body"}),
    "files": frozenset({"body"}),
    "headers": frozenset({"headers"}),
}


def _reads(
    plan: tuple[Arg, ...], negotiated: bool, accept_from: Location | None
) -> tuple[dict[str, frozenset[Place]], tuple[str, ...]]:
    """Where :func:`parse` reads each argument, ``accept`` included when it
    is negotiated (read where :func:`_accept` reads it), and the arguments
    as errors list them."""
    reads: dict[str, frozenset[Place]] = {}
    described: dict[str, str] = {}
    for arg in plan:
        if arg.where in ("headers", "files"):
            reads[arg.key] = _PLACES[arg.where]
            kind = "header" if arg.where == "headers" else "file"
            described[arg.key] = f"{arg.key} ({kind})"
        else:
            reads[arg.key] = _ANYWHERE
            described[arg.key] = arg.key
    if negotiated:
        where = accept_from if accept_from in ("query", "form", "headers") else None
        reads[ACCEPT] = _PLACES.get(where, _ANYWHERE)
        header = "headers" in reads[ACCEPT]
        described[ACCEPT] = f"{ACCEPT} (header)" if header else ACCEPT
    return reads, tuple(described[k] for k in sorted(described))


def one_line(messages: Any) -> str:
    """marshmallow's nested validation messages as one line (list items as
    ``item N``), for protocols that report an argument's problem in text."""
    if isinstance(messages, Mapping):
        return "; ".join(
            f"item {key}: {one_line(value)}"
            if isinstance(key, int)
            else f"{key}: {one_line(value)}"
            for key, value in messages.items()
        )
    if isinstance(messages, list | tuple):
        return " ".join(one_line(m) for m in messages)
    return str(messages)
