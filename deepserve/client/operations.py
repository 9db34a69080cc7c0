"""A model's operations as the server documents them, and requests for them.

The server's OpenAPI document says where it reads each argument: ``in:
query`` and ``in: header`` parameters, ``multipart/form-data`` properties
(``format: binary`` for files) and ``application/json`` properties (the
model's JSON-only arguments, and every non-file argument again as an
alternative). :meth:`Operation.encode` follows it:

- header arguments go in headers, file arguments in a multipart body;
- query arguments go in the query string when their value fits one (a
  scalar or a list of scalars, lists as repeated keys);
- the others go in a JSON body, which keeps their types (numbers, lists,
  objects, ``null``); when files are sent the body is multipart instead and
  they become form fields (objects as JSON text), where the server reads
  them too. A ``None`` that cannot be sent as ``null`` is left out, so the
  server applies the argument's default.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

from deepserve.client.errors import ArgumentError
from deepserve.client.uploads import Upload

Where = Literal["query", "header", "form", "file", "json"]
#: The operations a client can run, by name: (path below the model, method).
PATHS = {"predict": ("predict/", "post"), "train": ("train/", "post")}
PREDICTION_REF = "#/components/schemas/Prediction"
JSON = "application/json"
MULTIPART = "multipart/form-data"


@dataclasses.dataclass(frozen=True)
class Argument:
    """One argument of an operation.

    :param name: its name in requests (and in calls to the client).
    :param where: where the server documents it: ``query``, ``header``,
        ``form``, ``file`` or ``json``.
    :param required: whether the operation needs it.
    :param schema: its JSON schema in the document.
    """

    name: str
    where: Where
    required: bool
    schema: Mapping[str, Any]

    @property
    def description(self) -> str | None:
        found = self.schema.get("description")
        return str(found) if found is not None else None


@dataclasses.dataclass
class Encoded:
    """The parts of one request; ``json`` and ``uploads`` never both."""

    query: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    uploads: list[tuple[str, Upload]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Operation:
    """A model's ``predict`` or ``train``, as the OpenAPI document has it.

    :param model: the model's name.
    :param name: ``predict`` or ``train``.
    :param arguments: by name, in the document's order.
    :param envelope: whether JSON answers wrap the model's output as
        ``{"status": "OK", "predictions": ...}`` (no response schema).
    """

    model: str
    name: str
    arguments: Mapping[str, Argument]
    envelope: bool

    @classmethod
    def find(
        cls, document: Mapping[str, Any], model: str, name: str
    ) -> Operation | None:
        """The operation, or None when the document does not have it."""
        below, method = PATHS[name]
        path = document.get("paths", {}).get(f"/v2/models/{model}/{below}")
        op = path.get(method) if isinstance(path, Mapping) else None
        if not isinstance(op, Mapping):
            return None
        return cls(model, name, _arguments(op), _envelope(op))

    def encode(self, arguments: Mapping[str, Any], files: Mapping[str, Any]) -> Encoded:
        """Place every argument where the server reads it.

        :param arguments: values by argument name; file arguments may be
            given here too.
        :param files: values of file arguments.
        :raises ArgumentError: for a name the operation does not take, a
            name given twice, or a non-file argument given as a file.
        """
        self._check(arguments, files)
        out = Encoded()
        for name, value in {**arguments, **files}.items():
            if self.arguments[name].where == "file" and value is not None:
                out.uploads.append((name, Upload.of(name, value)))
        multipart = bool(out.uploads)
        body: dict[str, Any] = {}
        for name, value in arguments.items():
            where = self.arguments[name].where
            if where == "file":
                continue
            if where == "header":
                if value is not None:
                    out.headers[name] = _text(value)
            elif where == "query" and _fits_query(value):
                out.query.extend(_pairs(name, value))
            elif multipart:
                if value is not None:
                    out.form.extend(_pairs(name, value))
            else:
                body[name] = value
        if body:
            out.json = body
        return out

    def _check(self, arguments: Mapping[str, Any], files: Mapping[str, Any]) -> None:
        valid = self.arguments.keys()
        unknown = sorted((set(arguments) | set(files)) - set(valid))
        what = f"{self.name.capitalize()} of model '{self.model}'"
        if unknown:
            names = ", ".join(repr(n) for n in unknown)
            raise ArgumentError(f"{what} takes no argument {names}", valid=valid)
        twice = sorted(set(arguments) & set(files))
        if twice:
            raise ArgumentError(
                f"{what}: {', '.join(repr(n) for n in twice)} given both as an "
                f"argument and in files"
            )
        not_files = sorted(n for n in files if self.arguments[n].where != "file")
        if not_files:
            file_args = [n for n, a in self.arguments.items() if a.where == "file"]
            raise ArgumentError(
                f"{what}: {', '.join(repr(n) for n in not_files)} is not a file "
                f"argument; its file arguments: {', '.join(file_args) or 'none'}"
            )


def undocumented(arguments: Mapping[str, Any], files: Mapping[str, Any]) -> Encoded:
    """A request for an operation the document lacks: the server will say why.

    Arguments go in a JSON body (or as form fields beside files), so that
    none is silently dropped.
    """
    out = Encoded()
    for name, value in files.items():
        if value is not None:
            out.uploads.append((name, Upload.of(name, value)))
    if out.uploads:
        for name, value in arguments.items():
            if value is not None:
                out.form.extend(_pairs(name, value))
    elif arguments:
        out.json = dict(arguments)
    return out


def _arguments(op: Mapping[str, Any]) -> dict[str, Argument]:
    found: dict[str, Argument] = {}
    for param in op.get("parameters", []):
        where: Where
        if param.get("in") == "query":
            where = "query"
        elif param.get("in") == "header":
            where = "header"
        else:  # path parameters are the client's business, not the caller's
            continue
        name = str(param["name"])
        schema = dict(param.get("schema", {}))
        if "description" in param:
            schema.setdefault("description", param["description"])
        found[name] = Argument(name, where, bool(param.get("required")), schema)
    content = op.get("requestBody", {}).get("content", {})
    body: tuple[tuple[str, Where], ...] = ((MULTIPART, "form"), (JSON, "json"))
    for media, default in body:
        schema = content.get(media, {}).get("schema", {})
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            if name not in found:
                where = "file" if prop.get("format") == "binary" else default
                found[name] = Argument(name, where, name in required, dict(prop))
    return found


def _envelope(op: Mapping[str, Any]) -> bool:
    ok = op.get("responses", {}).get("200", {}).get("content", {})
    schema = ok.get(JSON, {}).get("schema", {})
    return bool(schema.get("$ref") == PREDICTION_REF)


_SCALARS = (str, int, float, bool)


def _fits_query(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(isinstance(v, _SCALARS) for v in value)
    return isinstance(value, _SCALARS)


def _text(value: Any) -> str:
    """A value as the server's form and query parsing reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def _pairs(name: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, list | tuple):
        return [(name, _text(v)) for v in value]
    return [(name, _text(value))]
