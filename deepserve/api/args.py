"""Read a model's arguments from a request.

Each argument is looked for where its field says (``location=`` in old
DEEPaaS style): file arguments in a multipart body, header arguments in the
headers, and every other argument in the query string, a form body or a JSON
body; an argument given both in the query string and in the body is
refused. What to read and where comes from the operation's
:class:`~deepserve.operations.arguments.ArgSpec`. Uploads are streamed to
files in a per-request directory, never held whole in memory;
:class:`~deepserve.operations.uploads.Uploads` removes them.

Names a request carries in its query string or body that are not read
there (typos, mostly) are collected in an :class:`UnknownArgs`: served and
named in a response header and the log, or refused with a 422, as the
``unknown-arguments`` option says. Headers are never arguments unless the
model declares them, so they are never reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import marshmallow
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict, MultiMapping

from deepserve.exceptions import (
    BadInput,
    InsufficientStorage,
    MalformedRequest,
    PayloadTooLarge,
)
from deepserve.model import UploadedFile
from deepserve.operations.arguments import Arg, ArgSpec, Place
from deepserve.operations.negotiation import ACCEPT
from deepserve.operations.uploads import Uploads

LOG = logging.getLogger(__name__)

CHUNK = 256 * 1024
MISSING_MSG = "Missing data for required field."

#: Response header naming what a request carried that the model does not take.
HEADER = "Deepserve-Unknown-Arguments"
#: Most names listed in the header, the log line and a 422.
MAX_LISTED = 20
#: Longest name shown in the header or the log, once escaped.
MAX_SHOWN = 64
#: Longest name kept (and shown in a 422's JSON body).
MAX_KEPT = 100
#: Most distinct names collected from one request.
MAX_TRACKED = 1000
#: What a shown name keeps as it is; the rest is percent-encoded as in a URL
#: (``%``, ``,``, quotes, spaces, control characters, non-ASCII).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '%,"\\')


def shown_name(name: str) -> str:
    """``name`` fit for a header or a log line: printable ASCII without
    spaces, commas or quotes (so no header or log line can be forged), at
    most :data:`MAX_SHOWN` characters, plus ``...`` when cut (between two
    characters, never inside one's escape)."""
    shown: list[str] = []
    size = 0
    for char in name:
        piece = quote(char, safe=_SAFE, errors="backslashreplace")
        size += len(piece)
        if size > MAX_SHOWN:
            return "".join(shown) + "..."
        shown.append(piece)
    return "".join(shown)


def _kept(name: str) -> str:
    return name if len(name) <= MAX_KEPT else name[:MAX_KEPT] + "..."


@dataclasses.dataclass
class UnknownArgs:
    """What a request carried in its query string or body that is not read
    there: names the model does not take, or takes from elsewhere.

    :func:`parse` fills it in; with ``reject`` it refuses the request (422).
    """

    reject: bool = False
    #: Name (cut to :data:`MAX_KEPT`) -> where it was first found.
    names: dict[str, Place] = dataclasses.field(default_factory=dict)
    #: Whether more than :data:`MAX_TRACKED` names came; the rest are not kept.
    overflow: bool = False

    def __bool__(self) -> bool:
        return bool(self.names)

    def add(self, name: str, place: Place) -> None:
        if not name:
            return  # a value without a name: nothing to name, no argument
        name = _kept(name)
        if name in self.names:
            return
        if len(self.names) >= MAX_TRACKED:
            self.overflow = True
            return
        self.names[name] = place

    def listed(self) -> list[str]:
        """The first :data:`MAX_LISTED` names, sorted."""
        return sorted(self.names)[:MAX_LISTED]

    def more(self) -> str:
        """`` (and 3 more)`` when some names are not listed."""
        extra = len(self.names) - MAX_LISTED
        if self.overflow:
            return f" (and over {max(extra, 0)} more)"
        return f" (and {extra} more)" if extra > 0 else ""

    def listing(self) -> str:
        """The header's value: ``a, b`` and `` (and N more)`` when cut; the
        names escaped by :func:`shown_name`."""
        shown = dict.fromkeys(shown_name(n) for n in self.listed())
        return ", ".join(shown) + self.more()

    def mark(self, response: web.StreamResponse) -> None:
        """Name them in ``response``'s :data:`HEADER` (if it has not gone)."""
        if self.names and not response.prepared:
            response.headers[HEADER] = self.listing()

    def log(self, model: str, operation: str) -> None:
        """One warning line naming them (escaped and cut, as in the header)."""
        LOG.warning(
            "Model '%s' does not take these %s arguments, which were ignored: %s",
            model,
            operation,
            self.listing(),
        )

    def errors(self, spec: ArgSpec) -> dict[str, list[str]]:
        """A 422's ``errors`` entries, one per listed name."""
        return {n: [spec.not_taken(n, self.names[n])] for n in self.listed()}


@dataclasses.dataclass
class _Body:
    form: MultiDict[str]
    files: dict[str, UploadedFile]
    json: Mapping[str, Any]
    #: Names of the multipart parts read and dropped (no argument's).
    dropped: UnknownArgs = dataclasses.field(default_factory=UnknownArgs)


#: What a request without a body carries there (never changed: a body that
#: is read gets a _Body of its own).
_NO_BODY = _Body(form=MultiDict(), files={}, json={})


async def parse(
    request: web.Request,
    spec: ArgSpec,
    uploads: Uploads,
    max_size: int,
    *,
    max_upload: int = 0,
    unknown: UnknownArgs | None = None,
) -> dict[str, Any]:
    """Parse and validate the arguments.

    :param max_size: bytes a request may have read into memory (a JSON or
        url-encoded body, multipart text fields); 0: no limit.
    :param max_upload: bytes of files a request may stream to disk; 0: no
        limit.
    :param unknown: filled in with the names the request carries where they
        are not read; when it says ``reject`` and there are some, they are
        invalid arguments.
    :returns: the keyword arguments for the model; a negotiated ``accept``
        argument, when given (not as a header), among them as text, for
        :func:`~deepserve.operations.negotiation.negotiate` to take.
    :raises BadInput: naming every invalid argument.
    :raises PayloadTooLarge: naming the limit that was passed.
    """
    body = await _read_body(request, spec, uploads, _Limits(max_size, max_upload))
    unknown = unknown if unknown is not None else UnknownArgs()
    _find_unknown(request.query, body, spec, unknown)
    raw: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    sources = (request.query, body.form)
    for arg in spec.plan:
        if arg.where == "files":
            _take_file(arg, body, kwargs, errors)
        elif arg.where == "headers":
            if arg.key in request.headers:
                raw[arg.key] = request.headers[arg.key]
        else:
            value = _lookup(arg.key, arg.multiple, sources, body.json)
            if value is _TWICE:
                errors[arg.key] = [TWICE_MSG]
            elif value is not _ABSENT:
                raw[arg.key] = value
    accept = _accept(spec, sources, body.json)
    if accept is _TWICE:
        errors[ACCEPT] = [TWICE_MSG]
    try:
        loaded = spec.schema.load(raw)
    except marshmallow.ValidationError as err:
        errors.update(_as_dict(err.messages))
        loaded = {}
    refused = unknown.errors(spec) if unknown.reject else {}
    if errors or refused:
        message = _refusal(sorted(errors), unknown if refused else None)
        for name, problems in refused.items():
            errors.setdefault(name, []).extend(problems)
        raise BadInput(message, errors=errors)
    kwargs.update(loaded)
    # A JSON null is no preference, not the type "None".
    if accept is not _ABSENT and accept is not None:
        kwargs[ACCEPT] = str(accept)
    return kwargs


def _find_unknown(
    query: MultiMapping[str], body: _Body, spec: ArgSpec, found: UnknownArgs
) -> None:
    for name in query:
        if "query" not in spec.reads.get(name, ()):
            found.add(name, "query")
    for name in (*body.form, *body.json, *body.dropped.names):
        if "body" not in spec.reads.get(name, ()):
            found.add(name, "body")
    found.overflow |= body.dropped.overflow


def _refusal(invalid: list[str], unknown: UnknownArgs | None) -> str:
    """``Invalid arguments: a, b; unknown arguments: c (and 2 more)``."""
    parts = [f"invalid arguments: {', '.join(invalid)}"] if invalid else []
    if unknown:
        parts.append(
            f"unknown arguments: {', '.join(unknown.listed())}{unknown.more()}"
        )
    text = "; ".join(parts)
    return text[:1].upper() + text[1:]


_ABSENT = object()
#: An argument given both in the query string and in the body.
_TWICE = object()
TWICE_MSG = "Given both in the query string and in the body; give it once."


def _accept(
    spec: ArgSpec,
    sources: tuple[MultiMapping[str], MultiMapping[str]],
    json_body: Mapping[str, Any],
) -> Any:
    """The ``accept`` argument, looked for only where the model declared
    it; ``_ABSENT`` when a header location makes it the ``Accept`` header."""
    if spec.accept is None or spec.accept_from == "headers":
        return _ABSENT
    query, form = sources
    if spec.accept_from == "query":
        return query.get(ACCEPT, _ABSENT)
    if spec.accept_from == "form":
        return form.get(ACCEPT, json_body.get(ACCEPT, _ABSENT))
    return _lookup(ACCEPT, False, sources, json_body)


def _lookup(
    key: str,
    multiple: bool,
    multidicts: tuple[MultiMapping[str], ...],
    json_body: Mapping[str, Any],
) -> Any:
    """The value of ``key``: ``_ABSENT`` when nowhere, ``_TWICE`` when the
    query string and the body (form or JSON) both have it."""
    query, form = multidicts
    in_body = key in form or key in json_body
    if key in query:
        if in_body:
            return _TWICE
        return query.getall(key) if multiple else query[key]
    if key in form:
        return form.getall(key) if multiple else form[key]
    return json_body.get(key, _ABSENT)


def _take_file(
    arg: Arg, body: _Body, kwargs: dict[str, Any], errors: dict[str, Any]
) -> None:
    if arg.key in body.files:
        kwargs[arg.name] = body.files[arg.key]
    elif arg.key in body.form or arg.key in body.json:
        errors[arg.key] = [
            "Must be a file upload (multipart/form-data with a filename)."
        ]
    elif arg.field.required:
        errors[arg.key] = [MISSING_MSG]
    elif arg.field.load_default is not marshmallow.missing:
        default = arg.field.load_default
        kwargs[arg.name] = default() if callable(default) else default


def _as_dict(messages: Any) -> dict[str, Any]:
    return dict(messages) if isinstance(messages, Mapping) else {"_schema": messages}


class _Limits(NamedTuple):
    memory: int
    upload: int

    def check_length(self, length: int, multipart: bool) -> None:
        """Refuse a body whose declared length is over its limits at once."""
        if not multipart:
            if self.memory and length > self.memory:
                raise PayloadTooLarge(self.memory)
        elif self.memory and self.upload and length > self.memory + self.upload:
            raise PayloadTooLarge(self.upload, "upload-max-size")


async def _read_body(
    request: web.Request, spec: ArgSpec, uploads: Uploads, limits: _Limits
) -> _Body:
    if not request.body_exists:
        return _NO_BODY
    body = _Body(form=MultiDict(), files={}, json={})
    ctype = request.content_type
    limits.check_length(request.content_length or 0, ctype == "multipart/form-data")
    if ctype == "multipart/form-data":
        await _read_multipart(request, spec, uploads, limits, body)
    elif ctype == "application/x-www-form-urlencoded":
        form = await _whole(request.post(), limits)
        body.form = MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
    elif ctype == "application/json" or ctype.endswith("+json"):
        raw = await _whole(request.read(), limits)
        try:
            data = json.loads(raw) if raw.strip() else {}
            deep = _too_deep(data)
        except ValueError as err:
            raise MalformedRequest(f"The JSON body is not valid JSON: {err}") from None
        except RecursionError:
            deep = True  # deeper than the parser goes
        if deep:
            raise MalformedRequest(
                f"The JSON body is nested too deeply (over {MAX_JSON_DEPTH} levels)"
            )
        if not isinstance(data, dict):
            raise MalformedRequest("The JSON body must be an object of arguments")
        body.json = data
    return body


_T = TypeVar("_T")

#: Deepest JSON body read: deeper ones could not even be handed to a worker
#: (pickle recurses too), and no model's arguments need more.
MAX_JSON_DEPTH = 100


def _too_deep(data: Any) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return False


async def _whole(reading: Awaitable[_T], limits: _Limits) -> _T:
    """A body read whole by aiohttp, which enforces ``client_max_size``
    itself (the app is built with it) on bodies sent without a length."""
    try:
        return await reading
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(limits.memory) from None


async def _read_multipart(
    request: web.Request,
    spec: ArgSpec,
    uploads: Uploads,
    limits: _Limits,
    body: _Body,
) -> None:
    """Files go to temp files (counted against the upload limit); the text
    fields the model takes are kept in memory (against the memory limit);
    other parts are read and dropped (against the upload limit)."""
    file_keys = spec.file_keys
    in_memory = on_disk = 0

    def count(n: int) -> None:
        nonlocal on_disk
        on_disk += n
        if limits.upload and on_disk > limits.upload:
            raise PayloadTooLarge(limits.upload, "upload-max-size")

    def keep(n: int) -> None:
        nonlocal in_memory
        in_memory += n
        if limits.memory and in_memory > limits.memory:
            raise PayloadTooLarge(limits.memory)

    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise MalformedRequest("Nested multipart bodies are not supported")
            name = part.name or ""
            if name in file_keys and part.filename is not None:
                if name in body.files:
                    await _drain(part, count)
                    continue
                # The client's filename is metadata only: the file is
                # written under a name of our own making.
                with _disk_full_is_507():
                    path = uploads.new_path()
                    with open(path, "wb") as out:
                        while chunk := await part.read_chunk(CHUNK):
                            count(len(chunk))
                            out.write(chunk)
                body.files[name] = UploadedFile(
                    name=name,
                    filename=path,
                    content_type=part.headers.get("Content-Type"),
                    original_filename=part.filename,
                )
            elif name in file_keys or name in spec.value_keys or name == ACCEPT:
                data = bytearray()
                while chunk := await part.read_chunk(CHUNK):
                    keep(len(chunk))
                    data.extend(chunk)
                charset = part.get_charset(default="utf-8")
                body.form.add(name, data.decode(charset, errors="replace"))
            else:
                body.dropped.add(name, "body")
                await _drain(part, count)
    except (ValueError, AssertionError, HttpProcessingError) as err:
        # HttpProcessingError: a part's headers are not valid HTTP headers.
        reason = getattr(err, "message", None) or err
        raise MalformedRequest(f"The multipart body cannot be read: {reason}") from None


@contextlib.contextmanager
def _disk_full_is_507() -> Iterator[None]:
    """A full disk (or quota) while an upload is written: a 507 the client
    can act on, not a 500; the request's files are removed by its
    :class:`Uploads`, as for any other error."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage() from None
        raise


async def _drain(part: BodyPartReader, count: Any) -> None:
    while chunk := await part.read_chunk(CHUNK):
        count(len(chunk))
